//! What the replica tells health checkers (`grpc.health.v1`, on both ports)
//! and when it gives up and exits.
//!
//! SERVING (for the server as a whole, `""`, and for `arbor.v1.Arbor` and
//! `arbor.v1.Raft`) only while all of these hold:
//!
//! - raft's core runs (openraft has not stopped on a fatal or storage error);
//! - storage has reported no corruption ([`crate::storage::Fault`]);
//! - the replica is not recovering (`arbor-node recover`, see [`Recovery`]);
//! - it knows a leader it can reach: a follower has a current leader (openraft
//!   forgets it when the leader's heartbeats stop and an election starts); a
//!   leader has had a quorum acknowledge it within the maximum election
//!   timeout (a leader cut off from the majority turns NOT_SERVING).
//!
//! NOT_SERVING otherwise. When raft's core has stopped or storage is corrupt
//! the replica will never serve again: [`Monitor::stopped`] resolves with the
//! reason, the binary logs it and exits non-zero, so a supervisor restarts it
//! (and a replica whose data is damaged then refuses to start, loudly, until
//! an operator runs `arbor-node recover`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::storage::Fault;
use crate::types::NodeId;
use crate::Raft;

/// The services whose status is reported (besides the whole server, `""`).
pub const SERVICES: [&str; 2] = ["arbor.v1.Arbor", "arbor.v1.Raft"];

/// The marker `arbor-node recover` leaves in the data directory.
pub const RECOVERING_MARKER: &str = "RECOVERING";

/// A replica rebuilt by `arbor-node recover` starts with an empty log, and
/// one whose write-ahead log was found damaged at start with what was
/// consistent before the damage. Until it has caught up with what the
/// cluster had committed when it first heard from a leader, it must not vote
/// (its shorter log would grant its vote to a candidate missing entries it
/// had acknowledged before the loss, and the vote it gave in the current
/// term may be forgotten), nor start elections (it could win with a log
/// missing committed entries), and it does not serve reads. The marker file
/// makes this survive a restart.
#[derive(Clone)]
pub struct Recovery {
    active: Arc<AtomicBool>,
    marker: PathBuf,
}

impl Recovery {
    pub fn load(data_dir: &Path) -> Recovery {
        let marker = data_dir.join(RECOVERING_MARKER);
        Recovery {
            active: Arc::new(AtomicBool::new(marker.exists())),
            marker,
        }
    }

    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Enters recovery (storage found damaged at start): the marker first,
    /// so that a crash before catching up leaves the replica recovering.
    pub fn begin(&self) -> std::io::Result<()> {
        std::fs::write(&self.marker, b"damaged write-ahead log salvaged at start\n")?;
        self.active.store(true, Ordering::Release);
        Ok(())
    }

    fn finish(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.active.store(false, Ordering::Release);
        Ok(())
    }
}

/// Watches raft and storage, keeps the health reporter and metrics current.
pub struct Monitor {
    stopped: watch::Receiver<Option<String>>,
}

impl Monitor {
    /// Resolves with the reason once the replica can never serve again.
    pub fn stopped(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.stopped.clone();
        async move {
            loop {
                if let Some(r) = rx.borrow_and_update().clone() {
                    return r;
                }
                if rx.changed().await.is_err() {
                    return "health monitor ended".into();
                }
            }
        }
    }
}

pub struct Watch {
    pub id: NodeId,
    pub raft: Raft,
    pub reporter: HealthReporter,
    pub fault: Fault,
    pub recovery: Recovery,
    pub metrics: Metrics,
    /// A leader not acknowledged by a quorum for this long is NOT_SERVING.
    pub quorum_timeout: Duration,
}

impl Watch {
    pub fn spawn(self) -> Monitor {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(self.run(tx));
        Monitor { stopped: rx }
    }

    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for s in SERVICES {
            self.reporter.set_service_status(s, status).await;
        }
    }

    async fn run(self, stopped: watch::Sender<Option<String>>) {
        let mut rx = self.raft.metrics();
        let mut faults = self.fault.subscribe();
        let mut last: Option<ServingStatus> = None;
        let mut leader = None;
        loop {
            let (status, stop) = self.evaluate(&mut leader);
            if last != Some(status) {
                match status {
                    ServingStatus::Serving => info!(node = self.id, "health: SERVING"),
                    _ => warn!(node = self.id, "health: NOT_SERVING"),
                }
                self.set(status).await;
                self.metrics
                    .serving
                    .set(i64::from(status == ServingStatus::Serving));
                last = Some(status);
            }
            if let Some(reason) = stop {
                error!(node = self.id, reason = %reason, "replica out of service for good");
                let _ = stopped.send(Some(reason));
                return;
            }
            // Re-evaluated on every raft metrics change (at most every
            // 50 ms), on a storage fault, and at least every 250 ms (the
            // quorum acknowledgement ages without any change).
            tokio::time::sleep(Duration::from_millis(50)).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = rx.changed() => {}
                _ = faults.changed() => {}
            }
        }
    }

    /// The status now, and the reason if the replica can never serve again.
    fn evaluate(&self, last_leader: &mut Option<NodeId>) -> (ServingStatus, Option<String>) {
        if let Some(f) = self.fault.get() {
            self.metrics.storage_fault.set(1);
            return (
                ServingStatus::NotServing,
                Some(format!("storage corruption detected: {f}")),
            );
        }
        let m = self.raft.metrics().borrow_watched().clone();
        if let Err(e) = &m.running_state {
            return (
                ServingStatus::NotServing,
                Some(format!("raft core stopped: {e}")),
            );
        }
        if m.current_leader != *last_leader {
            self.metrics.raft_leader_changes.inc();
            *last_leader = m.current_leader;
        }
        if self.recovery.active() {
            // Caught up: what the leader reported committed is applied here.
            let committed = m.cluster_committed.map(|l| l.index);
            let applied = m.last_applied.map(|l| l.index);
            if m.current_leader.is_some() && committed.is_some() && applied >= committed {
                match self.recovery.finish() {
                    Ok(()) => {
                        self.raft.runtime_config().elect(true);
                        info!(
                        node = self.id,
                        applied = ?applied,
                        "recovery complete: caught up with the cluster; voting and serving again"
                        )
                    }
                    Err(e) => {
                        warn!(node = self.id, error = %e, "cannot remove the recovery marker")
                    }
                }
            } else {
                self.metrics.recovering.set(1);
                return (ServingStatus::NotServing, None);
            }
        }
        self.metrics.recovering.set(0);
        let serving = match (m.state, m.current_leader) {
            (_, None) => false,
            (ServerState::Leader, Some(_)) => {
                let voters = m.membership_config.membership().voter_ids().count();
                match &m.last_quorum_acked {
                    Some(t) => t.elapsed() < self.quorum_timeout,
                    None => voters <= 1,
                }
            }
            (_, Some(_)) => true,
        };
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        (status, None)
    }
}

/// On the client port: while the replica recovers, every `arbor.v1` call is
/// answered UNAVAILABLE (its state is behind: even a `local` read would be
/// stale); health and reflection still answer.
#[derive(Clone)]
pub struct RecoveryGate {
    pub recovery: Recovery,
}

impl<S> tower_layer::Layer<S> for RecoveryGate {
    type Service = Gated<S>;
    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            recovery: self.recovery.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    recovery: Recovery,
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Gated<S>
where
    S: tonic::codegen::Service<
        tonic::codegen::http::Request<B>,
        Response = tonic::codegen::http::Response<tonic::body::Body>,
    >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        if self.recovery.active() && req.uri().path().starts_with("/arbor.v1.") {
            let status = crate::api::status::unavailable(
                "this replica is recovering (rebuilt by `arbor-node recover`, catching up \
                 with the cluster): ask another replica",
                None,
            );
            return Box::pin(async move { Ok(status.into_http()) });
        }
        Box::pin(self.inner.call(req))
    }
}

/// A vote request reaching a recovering replica is refused (the candidate
/// counts no vote from it: always safe in raft).
pub fn refuse_vote_while_recovering(recovery: &Recovery) -> Result<(), tonic::Status> {
    if recovery.active() {
        return Err(crate::api::status::unavailable(
            "this replica is recovering and does not vote until it has caught up",
            None,
        ));
    }
    Ok(())
}

/// `arbor-node recover`: moves the damaged storage of the (stopped) replica
/// in `data_dir` aside and leaves the [`RECOVERING_MARKER`]. Its identity key
/// and bootstrap marker stay. Returns where the old storage went.
pub fn recover(data_dir: &Path) -> std::io::Result<PathBuf> {
    let db = data_dir.join("db");
    if !db.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} holds no replica storage (no db/)", data_dir.display()),
        ));
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = data_dir.join(format!("damaged-{stamp}"));
    std::fs::create_dir_all(&aside)?;
    // The marker first: a crash in between leaves a replica that will not
    // vote, never one that votes with a half-removed log.
    std::fs::write(data_dir.join(RECOVERING_MARKER), b"arbor-node recover\n")?;
    for name in ["db", "snapshots"] {
        let from = data_dir.join(name);
        if from.exists() {
            std::fs::rename(&from, aside.join(name))?;
        }
    }
    Ok(aside)
}
