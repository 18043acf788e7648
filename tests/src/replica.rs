//! One `arbor-node` child process: its arguments, data dir and log file.
//!
//! stdout and stderr go to `log.txt` beside the data dir; every start appends
//! a marker line, so one file tells the story of a replica across restarts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A replica (or any long-running arbor process) the harness owns.
pub struct Process {
    pub name: String,
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    starts: u32,
}

impl Process {
    /// Describes a process; nothing runs until [`Process::start`].
    pub fn new(name: impl Into<String>, bin: &Path, args: Vec<String>, log: PathBuf) -> Process {
        Process {
            name: name.into(),
            bin: bin.to_path_buf(),
            args,
            log,
            child: Mutex::new(None),
            starts: 0,
        }
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Spawns the process. Panics if it is already running.
    pub fn start(&mut self) {
        let mut slot = self.child.lock().unwrap();
        assert!(slot.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        writeln!(
            log,
            "===== arbor test harness: start #{} of {}: {} {}",
            self.starts,
            self.name,
            self.bin.display(),
            self.args.join(" ")
        )
        .expect("write log marker");
        let err = log.try_clone().expect("clone log file");
        let mut cmd = Command::new(&self.bin);
        clean_env(&mut cmd);
        // Plain logs: they are read in files, not terminals.
        cmd.env("NO_COLOR", "1");
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} ({}): {e}", self.name, self.bin.display()));
        *slot = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// Whether the harness believes the process runs (it was started and not stopped).
    pub fn is_started(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    /// The exit status if the process was started and has exited on its own.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut slot = self.child.lock().unwrap();
        slot.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }

    /// SIGKILL (a crash) and reap. No-op when not running.
    pub fn kill(&self) -> Option<ExitStatus> {
        self.signal(libc::SIGKILL);
        let child = self.child.lock().unwrap().take();
        child.map(|mut c| c.wait().expect("wait for killed child"))
    }

    /// SIGSTOP: the process freezes (a hung replica, or one cut off from the network).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM and wait up to `timeout` for the process to exit. Panics (after
    /// a SIGKILL) if it does not. Returns the exit status.
    pub async fn stop(&self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                self.child.lock().unwrap().take();
                return st;
            }
            if start.elapsed() > timeout {
                self.kill();
                panic!(
                    "{} did not exit within {timeout:?} of SIGTERM; log tail:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of the log file (reads at most the last 256 KiB).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a text file.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(256 * 1024);
    let _ = f.seek(SeekFrom::Start(from));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes `ARBOR_*` variables inherited from the developer's shell (say, a
/// sourced `dev.env`): the node reads its configuration from them, and the
/// tests pass everything as flags.
pub fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ARBOR_") {
            cmd.env_remove(k);
        }
    }
}

/// Makes the child get SIGKILL when the test process dies, so a test killed
/// by a timeout does not leave replicas running.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}
