//! `arbor-node dev`: a complete local three-replica cluster in one process.
//!
//! Like `vault server -dev`: ports on 127.0.0.1 (base, base+1, base+2), data
//! under one directory, an operator key generated on first start, the cluster
//! bootstrapped, TLS on both ports with a local CA and replica certificates
//! generated on first start under `DIR/tls/`. The ports chosen on first
//! start are kept in `dev.json` (written only once all nine were found free: client, peer and metrics)
//! so a restart on the same directory finds the same membership and
//! resumes. Peer ports are the client ports + 100. Each replica directory
//! is locked for the process ([`lock_data_dir`]).

use openraft::async_runtime::WatchReceiver;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::{start_node, NodeHandle};

pub const OPERATOR_PARTY: &str = "operator";

#[derive(Serialize, Deserialize)]
struct DevState {
    /// Client ports of replicas 1, 2, 3.
    ports: [u16; 3],
}

/// Distance from a replica's client port to its peer port.
const PEER_PORT_OFFSET: u16 = 100;
/// Each replica's Prometheus endpoint is at its client port + this.
const METRICS_PORT_OFFSET: u16 = 200;

/// The dev cluster's CA and replica certificates, created once.
fn ensure_certs(dir: &Path) -> anyhow::Result<()> {
    let tls = dir.join("tls");
    if !tls.join(crate::certs::CA_CERT).exists() {
        crate::certs::create_ca(&tls, "arbor-dev")?;
    }
    for id in 1..=3u64 {
        if !tls.join(format!("replica-{id}.pem")).exists() {
            crate::certs::issue_replica(
                &tls,
                id,
                &["127.0.0.1".into(), "localhost".into()],
                &tls,
                3650,
            )?;
        }
    }
    Ok(())
}

fn load_or_create_operator(path: &Path) -> anyhow::Result<SigningKey> {
    crate::identity::load_or_create_key_file(path, OPERATOR_PARTY)
        .map(|id| id.key)
        .map_err(|e| anyhow::anyhow!("operator key: {e}"))
}

/// The ports of this data directory: those of its first start (kept in
/// `dev.json`, the membership in its ledger names them), else three free
/// ones from `base_port` (7101 unless given). Nothing is saved until every
/// port (client and peer) was found free, so a first start that fails on a
/// port clash leaves nothing behind and a retry with `--base-port` works.
fn ports(dir: &Path, base_port: Option<u16>) -> anyhow::Result<[u16; 3]> {
    let path = dir.join("dev.json");
    if path.exists() {
        let s: DevState = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .map_err(|e| anyhow::anyhow!("{} is damaged: {e}", path.display()))?;
        if let Some(b) = base_port.filter(|b| *b != s.ports[0]) {
            anyhow::bail!(
                "{} was first started on ports {}-{} and its cluster membership names them; \
                 --base-port {b} cannot move it (drop --base-port, or use a new --data-dir)",
                dir.display(),
                s.ports[0],
                s.ports[2]
            );
        }
        return Ok(s.ports);
    }
    let base_port = base_port.unwrap_or(DEFAULT_BASE_PORT);
    anyhow::ensure!(
        base_port > 0 && base_port < u16::MAX - 2 - METRICS_PORT_OFFSET,
        "--base-port must leave room for three client ports, three peer ports (+{PEER_PORT_OFFSET}) and three metrics ports (+{METRICS_PORT_OFFSET})"
    );
    let s = DevState {
        ports: [base_port, base_port + 1, base_port + 2],
    };
    for p in s
        .ports
        .iter()
        .flat_map(|p| [*p, p + PEER_PORT_OFFSET, p + METRICS_PORT_OFFSET])
    {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", p)) {
            anyhow::bail!(
                "port {p} on 127.0.0.1 is not free ({e}): the dev cluster needs ports {}-{}, \
                 {}-{} and {}-{}; pick another range with --base-port N (nothing was saved in {})",
                s.ports[0],
                s.ports[2],
                s.ports[0] + PEER_PORT_OFFSET,
                s.ports[2] + PEER_PORT_OFFSET,
                s.ports[0] + METRICS_PORT_OFFSET,
                s.ports[2] + METRICS_PORT_OFFSET,
                dir.display()
            );
        }
    }
    std::fs::write(&path, serde_json::to_string(&s)?)?;
    Ok(s.ports)
}

/// The first client port of a new dev cluster when `--base-port` is not given.
pub const DEFAULT_BASE_PORT: u16 = 7101;

/// The pid file beside a replica's data (`DIR/arbor-node.pid`).
pub const PID_FILE: &str = "arbor-node.pid";

/// Takes the data directory for this process: an exclusive lock on
/// `DIR/arbor-node.pid`, which then holds this process's pid. Another
/// process holding it is named: "already running (pid N)". The lock lasts
/// as long as the returned file is open (the OS drops it when the process
/// ends, however it ends).
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(PID_FILE);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                "another process".to_string()
            } else {
                format!("pid {pid}")
            };
            anyhow::bail!(
                "arbor-node is already running on {} ({who}, holding {}); stop it first, or use another data directory",
                dir.display(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
    f.set_len(0)?;
    f.seek(std::io::SeekFrom::Start(0))?;
    writeln!(f, "{}", std::process::id())?;
    f.flush()?;
    Ok(f)
}

/// Runs the dev cluster until Ctrl-C or SIGTERM.
/// `base_port` is `--base-port` (`None`: 7101 on first start).
pub async fn run(data_dir: PathBuf, base_port: Option<u16>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    // Before anything else: a second instance is named, not left to fail on
    // a port or a RocksDB lock.
    let _locks = (1..=3)
        .map(|id| lock_data_dir(&data_dir.join(format!("node-{id}"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ports = ports(&data_dir, base_port)?;
    let key_path = data_dir.join("operator.key");
    let op_key = load_or_create_operator(&key_path)?;
    let op_pub = op_key.verifying_key().to_bytes();
    ensure_certs(&data_dir)?;
    let tls_dir = data_dir.join("tls");
    let ca_path = tls_dir.join(crate::certs::CA_CERT);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peer_addrs: Vec<String> = ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p + PEER_PORT_OFFSET))
        .collect();
    let members: Vec<String> = addrs
        .iter()
        .zip(&peer_addrs)
        .enumerate()
        .map(|(i, (a, p))| format!("{}={a}/{p}", i + 1))
        .collect();

    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let cfg = NodeConfig {
            id,
            listen: addr.clone(),
            peer_listen: peer_addrs[i].clone(),
            tls: crate::tls::TlsConfig {
                ca_file: Some(ca_path.clone()),
                cert_file: Some(tls_dir.join(format!("replica-{id}.pem"))),
                key_file: Some(tls_dir.join(format!("replica-{id}.key"))),
                ..Default::default()
            },
            data_dir: data_dir.join(format!("node-{id}")),
            metrics_listen: Some(format!("127.0.0.1:{}", ports[i] + METRICS_PORT_OFFSET)),
            bootstrap: id == 1,
            members: if id == 1 { members.clone() } else { Vec::new() },
            operators: if id == 1 {
                vec![format!("{OPERATOR_PARTY}={}", hex::encode(op_pub))]
            } else {
                Vec::new()
            },
            ..NodeConfig::default()
        };
        let node = start_node(cfg)
            .await
            .map_err(|e| anyhow::anyhow!("replica {id} on {addr}: {e}"))?;
        nodes.push(node);
    }

    wait_ready(&nodes).await?;
    enroll_replicas(&nodes, &op_key, &ca_path).await?;
    let endpoints = addrs.join(",");
    let env_path = data_dir.join("dev.env");
    std::fs::write(
        &env_path,
        format!(
            "export ARBOR_ENDPOINTS={endpoints}\nexport ARBOR_OPERATOR_KEY={}\nexport ARBOR_CACERT={}\n",
            key_path.display(),
            ca_path.display()
        ),
    )?;
    println!(
        "arbor dev cluster is up: 3 replicas, data in {}",
        data_dir.display()
    );
    for (i, a) in addrs.iter().enumerate() {
        let metrics = nodes[i]
            .metrics_addr
            .map(|m| format!(", metrics http://{m}/metrics"))
            .unwrap_or_default();
        println!(
            "  replica {} at {a} (peer port {}{metrics})",
            i + 1,
            peer_addrs[i]
        );
    }
    println!(
        "TLS:          CA {} (clients need it: ARBOR_CACERT)",
        ca_path.display()
    );
    println!(
        "operator key: {} (party id \"{OPERATOR_PARTY}\")",
        key_path.display()
    );
    println!("environment:  source {}", env_path.display());
    println!("then try:     arbor cluster status");
    println!("stop with Ctrl-C; start again on the same directory to resume");

    let stopped = futures::future::select_all(nodes.iter().map(|n| Box::pin(n.stopped())));
    let failed = tokio::select! {
        _ = shutdown_signal() => None,
        (reason, i, _) = stopped => Some(format!("replica {} out of service: {reason}", i + 1)),
    };
    println!("stopping...");
    for n in nodes {
        n.shutdown().await;
    }
    println!("stopped; data kept in {}", data_dir.display());
    match failed {
        Some(why) => anyhow::bail!(why),
        None => Ok(()),
    }
}

/// Waits until the genesis entry exists and all three replicas are voters.
async fn wait_ready(nodes: &[NodeHandle]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = nodes[0].raft.metrics().borrow_watched().clone();
        let voters = m.membership_config.membership().voter_ids().count();
        let leader = m.current_leader.is_some();
        let genesis = nodes.iter().all(|n| matches!(n.reader.head(), Ok(Some(_))));
        if voters == nodes.len() && leader && genesis {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("cluster not ready after 60 s (voters {voters}, leader known {leader}, genesis on all {genesis})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Enrols each replica's checkpoint-signing key (role replica) with the
/// operator key, once, so that checkpoints can be verified from the ledger.
async fn enroll_replicas(
    nodes: &[NodeHandle],
    op: &SigningKey,
    ca_path: &Path,
) -> anyhow::Result<()> {
    use arbor_proto::pb;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let ca = std::fs::read(ca_path)?;
    let channel = Endpoint::from_shared(format!("https://{}", nodes[0].addr))?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?
        .connect()
        .await?;
    let mut client = pb::arbor_client::ArborClient::new(channel);
    let cluster_id = nodes[0]
        .reader
        .config()?
        .map(|c| c.cluster_id)
        .ok_or_else(|| anyhow::anyhow!("no genesis yet"))?;
    for n in nodes {
        if n.reader.party(&n.identity.name)?.is_some() {
            continue;
        }
        let cmd = pb::Command {
            nonce: rand::random(),
            body: Some(pb::command::Body::EnrollParty(pb::EnrollParty {
                party_id: n.identity.name.clone(),
                role: pb::Role::Replica as i32,
                kind: pb::NodeKind::Unspecified as i32,
                public_key: n.identity.public_key().to_vec(),
                channel_names: Vec::new(),
            })),
        };
        let reply = client
            .submit(arbor_proto::ledger::sign_command(
                op,
                &cluster_id,
                OPERATOR_PARTY,
                &cmd,
            ))
            .await
            .map_err(|s| anyhow::anyhow!("enrol {}: {}", n.identity.name, s.message()))?
            .into_inner();
        let accepted = reply.outcome.as_ref().map(|o| o.accepted).unwrap_or(false);
        anyhow::ensure!(accepted, "enrol {}: {:?}", n.identity.name, reply.outcome);
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_pid_holding_it() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).unwrap();
        let pid = std::fs::read_to_string(dir.path().join(PID_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let e = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("already running") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        lock_data_dir(dir.path()).unwrap();
    }

    #[test]
    fn ports_are_saved_only_when_free_and_base_port_is_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        // A range whose second port is taken: refused, nothing saved.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        if busy > 1 && busy < u16::MAX - 2 - PEER_PORT_OFFSET {
            let e = ports(dir.path(), Some(busy - 1)).unwrap_err().to_string();
            assert!(
                e.contains(&format!("port {busy}")) && e.contains("--base-port"),
                "{e}"
            );
            assert!(!dir.path().join("dev.json").exists());
        }
        drop(taken);
        // A free range is saved; a later different --base-port is an error, not ignored.
        let free = loop {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let p = l.local_addr().unwrap().port();
            drop(l);
            if p < u16::MAX - 2 - PEER_PORT_OFFSET && ports(dir.path(), Some(p)).is_ok() {
                break p;
            }
        };
        assert_eq!(ports(dir.path(), None).unwrap(), [free, free + 1, free + 2]);
        assert_eq!(ports(dir.path(), Some(free)).unwrap()[0], free);
        let e = ports(dir.path(), Some(free + 10)).unwrap_err().to_string();
        assert!(e.contains("cannot move it"), "{e}");
    }
}
