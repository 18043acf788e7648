//! `arbor-node dev` (three replicas in one process) and the `arbor` CLI, as a
//! newcomer runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use arbor_client::{Client, TlsOptions, Transport};

use crate::bins::{cli_bin, node_bin};
use crate::replica::Process;
use crate::wait::{wait_until, TIMEOUT};

/// Per-invocation deadline of a CLI command.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `arbor-node dev --data-dir DIR --base-port P`.
pub struct DevCluster {
    process: Process,
    data_dir: PathBuf,
    base_port: u16,
    env: BTreeMap<String, String>,
}

impl DevCluster {
    /// Starts the dev cluster and waits until it serves (see [`DevCluster::wait_ready`]).
    pub async fn start(data_dir: &Path, base_port: u16, log: PathBuf) -> DevCluster {
        let args = vec![
            "dev".to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--base-port".into(),
            base_port.to_string(),
        ];
        let mut process = Process::new("arbor-node dev", &node_bin(), args, log);
        process.start();
        let mut dev = DevCluster {
            process,
            data_dir: data_dir.to_path_buf(),
            base_port,
            env: BTreeMap::new(),
        };
        dev.wait_ready().await;
        dev
    }

    /// Waits for `dev.env` and for the three replicas to answer with one
    /// leader and the genesis entry applied.
    pub async fn wait_ready(&mut self) {
        let env_path = self.data_dir.join("dev.env");
        let process = &self.process;
        self.env = wait_until("dev.env to be written", TIMEOUT, async || {
            if let Some(st) = process.exited() {
                panic!(
                    "arbor-node dev exited ({st}); log:\n{}",
                    process.log_tail(60)
                );
            }
            let text = std::fs::read_to_string(&env_path).map_err(|e| e.to_string())?;
            let env = parse_env(&text);
            if env.contains_key("ARBOR_ENDPOINTS")
                && env.contains_key("ARBOR_OPERATOR_KEY")
                && env.contains_key("ARBOR_CACERT")
            {
                Ok(env)
            } else {
                Err(format!(
                    "dev.env holds {:?}",
                    env.keys().collect::<Vec<_>>()
                ))
            }
        })
        .await;
        let endpoints = self.endpoint_list();
        assert_eq!(endpoints.len(), 3, "dev.env endpoints: {endpoints:?}");
        let ca = std::fs::read(&self.env["ARBOR_CACERT"]).expect("read the dev CA");
        let transport = Transport::Tls(TlsOptions::new(ca));
        let transport = &transport;
        for (i, ep) in endpoints.iter().enumerate() {
            let port = (self.base_port + i as u16).to_string();
            assert!(ep.contains(&port), "endpoint {ep} is not on port {port}");
        }
        wait_until(
            "the dev cluster to elect a leader and apply genesis",
            TIMEOUT,
            async || {
                if let Some(st) = process.exited() {
                    panic!(
                        "arbor-node dev exited ({st}); log:\n{}",
                        process.log_tail(60)
                    );
                }
                let mut leaders = Vec::new();
                for ep in &endpoints {
                    let s = Client::local_status(transport, ep)
                        .await
                        .map_err(|e| format!("{ep}: {e}"))?;
                    if !s.has_entries {
                        return Err(format!("{ep} has no entries yet"));
                    }
                    if s.members.iter().filter(|m| m.voter).count() != 3 {
                        return Err(format!("{ep} sees members {:?}", s.members));
                    }
                    if s.state == "Leader" {
                        leaders.push(ep.clone());
                    }
                }
                if leaders.len() == 1 {
                    Ok(())
                } else {
                    Err(format!("leaders: {leaders:?}"))
                }
            },
        )
        .await;
    }

    /// `ARBOR_ENDPOINTS` as written in `dev.env`.
    pub fn endpoints(&self) -> &str {
        &self.env["ARBOR_ENDPOINTS"]
    }

    fn endpoint_list(&self) -> Vec<String> {
        self.endpoints()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// `ARBOR_OPERATOR_KEY` as written in `dev.env`.
    pub fn operator_key(&self) -> PathBuf {
        PathBuf::from(&self.env["ARBOR_OPERATOR_KEY"])
    }

    /// Every variable `dev.env` exports.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Runs `arbor --endpoints E --output json ARGS...`.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        let mut full = vec![
            "--endpoints",
            self.endpoints(),
            "--cacert",
            &self.env["ARBOR_CACERT"],
            "--output",
            "json",
        ];
        full.extend_from_slice(args);
        run_cli(&full).await
    }

    /// SIGTERM; panics unless the process exits cleanly.
    pub async fn stop(&self) {
        let st = self.process.stop(Duration::from_secs(30)).await;
        assert!(
            st.success(),
            "arbor-node dev did not exit cleanly ({st}); log:\n{}",
            self.process.log_tail(40)
        );
    }

    /// Starts the same command again on the same data dir and waits until it serves.
    pub async fn restart(&mut self) {
        self.process.start();
        self.wait_ready().await;
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- arbor-node dev log tail: {} -----\n{}",
                self.process.log_path().display(),
                self.process.log_tail(80)
            );
        }
    }
}

/// `export KEY=VALUE` lines (quotes stripped); other lines ignored.
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            if k.is_empty() || k.starts_with('#') {
                return None;
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// What one CLI invocation did.
#[derive(Debug)]
pub struct CliOutput {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics unless the command exited 0.
    pub fn ok(self) -> CliOutput {
        assert_eq!(self.code, Some(0), "arbor {:?} failed:\n{self}", self.args);
        self
    }

    /// stdout parsed as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("arbor {:?}: stdout is not JSON ({e}):\n{self}", self.args))
    }

    /// stdout and stderr together.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the `arbor` CLI with `args` (no implicit flags).
pub async fn run_cli(args: &[&str]) -> CliOutput {
    let mut cmd = tokio::process::Command::new(cli_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ARBOR_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let out: Output = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("arbor {args:?} did not finish within {CLI_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("run arbor {args:?}: {e}"));
    CliOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_env_lines_are_parsed() {
        let env = parse_env(
            "# arbor dev cluster\nexport ARBOR_ENDPOINTS=127.0.0.1:7101,127.0.0.1:7102\nexport ARBOR_OPERATOR_KEY=\"/tmp/x/operator.key\"\n",
        );
        assert_eq!(env["ARBOR_ENDPOINTS"], "127.0.0.1:7101,127.0.0.1:7102");
        assert_eq!(env["ARBOR_OPERATOR_KEY"], "/tmp/x/operator.key");
        assert_eq!(env.len(), 2);
    }
}
