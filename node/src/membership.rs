//! The leader moves raft's membership towards the ledger's.
//!
//! The ledger records the *desired membership* (genesis's members, then
//! every accepted `AddReplica` and `RemoveReplica`: `rules::Membership`).
//! Raft's membership is what actually replicates and votes. On every
//! replica a background task waits for the metrics to change (an applied
//! entry, a new leader, a replication report; at most every 100 ms) or half
//! a second, and while this replica leads it takes one step towards the
//! desired membership:
//!
//! 1. a raft member the ledger no longer lists is removed (voters and
//!    learners alike), unless that would leave no voter: then it waits
//!    until a listed replica has been added and promoted (2, 3);
//! 2. a listed replica raft does not know is added as a learner;
//! 3. a learner within [`CAUGHT_UP_LAG`] log entries of the leader's log is
//!    promoted to voter.
//!
//! Every step is read from the current state, so it is idempotent: a new
//! leader, or the same one after a crash, resumes where the last left off.
//! Nothing happens before genesis, or when the ledger records no member at
//! all (a ledger whose genesis predates membership records).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ChangeMembers;
use tracing::{debug, info, warn};

use crate::storage::LedgerReader;
use crate::types::{Member, NodeId};
use crate::Raft;

/// A learner this close to the leader's last log index is promoted.
pub const CAUGHT_UP_LAG: u64 = 64;

const MIN_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Starts the reconciler on this replica (it acts only while leading).
pub fn spawn(raft: Raft, reader: LedgerReader) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // One receiver for the task's life: `changed` then waits for changes
        // after the last one seen (a fresh clone would see them all as new).
        let mut rx = raft.metrics();
        loop {
            if raft.is_leader() {
                match step(&raft, &reader).await {
                    Ok(Step::Idle) => {}
                    Ok(Step::Changed) => continue,
                    Err(e) => warn!(error = %e, "membership step failed; retrying"),
                }
            }
            // Metrics change with every replication report: look at most
            // every MIN_PAUSE, and at least every MAX_PAUSE.
            tokio::time::sleep(MIN_PAUSE).await;
            let _ = tokio::time::timeout(MAX_PAUSE, rx.changed()).await;
            if rx.borrow_watched().running_state.is_err() {
                debug!("raft stopped: membership reconciler ends");
                return;
            }
        }
    })
}

enum Step {
    /// Nothing to do now (in line, or waiting for a learner to catch up).
    Idle,
    /// A membership change was committed: look again at once.
    Changed,
}

async fn step(raft: &Raft, reader: &LedgerReader) -> Result<Step, String> {
    let Some(desired) = reader.desired_membership().map_err(|e| e.to_string())? else {
        return Ok(Step::Idle);
    };
    if desired.replicas.is_empty() {
        return Ok(Step::Idle);
    }
    let metrics = raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let nodes: BTreeMap<NodeId, Member> =
        membership.nodes().map(|(id, n)| (*id, n.clone())).collect();

    // 1. Remove what the ledger no longer lists.
    let stale: BTreeSet<NodeId> = nodes
        .keys()
        .filter(|id| !desired.replicas.contains_key(id))
        .copied()
        .collect();
    let remaining = voters.iter().filter(|v| !stale.contains(v)).count();
    if !stale.is_empty() && remaining == 0 {
        // Every voter is to go: first add and promote a listed replica (below).
        debug!(?stale, "removal waits until a listed replica is a voter");
    } else if !stale.is_empty() {
        let stale_voters: BTreeSet<NodeId> = stale.intersection(&voters).copied().collect();
        let change = if stale_voters.is_empty() {
            ChangeMembers::RemoveNodes(stale.clone())
        } else {
            // Removing a voter (retain = false) drops its node as well.
            ChangeMembers::RemoveVoters(stale_voters)
        };
        raft.change_membership(change, false)
            .await
            .map_err(|e| format!("remove {stale:?}: {e}"))?;
        info!(removed = ?stale, "replicas removed from raft's membership, as the ledger says");
        return Ok(Step::Changed);
    }

    // 2. Add every listed replica raft does not know, as a learner.
    for (id, r) in &desired.replicas {
        if nodes.contains_key(id) {
            continue;
        }
        let node = Member {
            addr: r.addr.clone(),
            peer_addr: r.peer_addr.clone(),
        };
        raft.add_learner(*id, node.clone(), false)
            .await
            .map_err(|e| format!("add learner {id}: {e}"))?;
        info!(member = id, %node, "replica added as a learner, as the ledger says");
        return Ok(Step::Changed);
    }

    // 3. Promote the learners that have caught up.
    let last = metrics.last_log_index.unwrap_or(0);
    let caught_up: BTreeSet<NodeId> = desired
        .replicas
        .keys()
        .filter(|id| !voters.contains(id))
        .filter(|id| {
            metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .and_then(|matched| matched.as_ref().map(|l| l.index()))
                .is_some_and(|m| last.saturating_sub(m) <= CAUGHT_UP_LAG)
        })
        .copied()
        .collect();
    if caught_up.is_empty() {
        return Ok(Step::Idle);
    }
    raft.change_membership(ChangeMembers::AddVoterIds(caught_up.clone()), false)
        .await
        .map_err(|e| format!("promote {caught_up:?}: {e}"))?;
    info!(promoted = ?caught_up, "learners promoted to voters");
    Ok(Step::Changed)
}
