//! Linearizable reads in batches: one ReadIndex round serves every read that
//! was waiting when it started.
//!
//! A linearizable read on the leader needs two things (Raft §6.4, ReadIndex):
//! the commit index at some moment after the read arrived, and a quorum's
//! acknowledgement of a heartbeat sent after that moment, which proves no
//! other leader had been elected by then. openraft's
//! `get_read_linearizer(ReadIndex)` gives both, but one call per read costs a
//! message to the raft core and a heartbeat broadcast per read.
//!
//! [`ReadIndex::linearize`] queues the read; a round starts whenever reads are
//! queued and fewer than [`ROUNDS_IN_FLIGHT`] rounds are running. A round
//! takes every read queued so far, then asks openraft for one linearizer
//! (one core message, one heartbeat broadcast, one quorum acknowledgement)
//! and hands it to each of them; each then waits until this replica has
//! applied up to its read index. A read never joins a round that has already
//! started: the round in progress may have taken its commit index before that
//! read arrived, so it could miss a write acknowledged in between. It joins
//! the next round to start — at once if fewer than [`ROUNDS_IN_FLIGHT`] are
//! running (rounds overlap: a read that arrives just after one began does not
//! wait for it to end), else when one ends.
//!
//! So every read of a round arrived before the round asked for its
//! linearizer: the commit index it reads at is at least that of every write
//! acknowledged before the read arrived, and the leadership confirmation was
//! sent after the read arrived — exactly what one round per read gives. A
//! deposed leader cannot complete a round (no quorum acknowledges it), and
//! the round fails after openraft's wait (one leader lease), as a lone
//! ReadIndex read would. The cost per read is a queue push and a oneshot;
//! under load a read waits for at most the rest of the earliest running
//! round plus one whole round, and with fewer rounds running, one round.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use openraft::error::RaftError;
use openraft::ReadPolicy;
use tokio::sync::oneshot;

use crate::types::TypeConfig;
use crate::Raft;

type Linearizer = openraft::raft::linearizable_read::Linearizer<TypeConfig>;

/// Why a round gave no linearizer.
#[derive(Clone, Debug)]
pub enum ReadError {
    /// This replica does not lead (any more): route the read again.
    NotLeader,
    /// Leadership could not be confirmed by a quorum in time.
    NoQuorum,
    /// Raft is not running on this replica.
    Stopped(String),
}

type RoundResult = Result<Linearizer, ReadError>;

/// The most read-index rounds running at once. Two: a read arriving during a
/// round starts the next one at once instead of waiting out the first (the
/// latency of a read at low concurrency is about one round, not one and a
/// half), while under load every round still serves all the reads that queued
/// during the one before.
pub const ROUNDS_IN_FLIGHT: usize = 2;

/// The read-index batcher of one replica. Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct ReadIndex {
    raft: Raft,
    rounds: Rounds<RoundResult>,
}

impl ReadIndex {
    pub fn new(raft: Raft) -> ReadIndex {
        let r = raft.clone();
        ReadIndex {
            raft,
            rounds: Rounds::new(ROUNDS_IN_FLIGHT, move || {
                let raft = r.clone();
                Box::pin(async move {
                    raft.get_read_linearizer(ReadPolicy::ReadIndex)
                        .await
                        .map_err(classify)
                })
            }),
        }
    }

    /// Returns once this replica's state machine reflects every write
    /// acknowledged before the call, with this replica's leadership
    /// confirmed by a quorum after the call began.
    pub async fn linearize(&self) -> Result<(), ReadError> {
        let linearizer = match self.rounds.join().await {
            Some(r) => r?,
            None => return Err(ReadError::Stopped("the read round was dropped".into())),
        };
        linearizer
            .await_ready(&self.raft)
            .await
            .map(|_| ())
            .map_err(|e| ReadError::Stopped(e.to_string()))
    }
}

fn classify(
    e: RaftError<TypeConfig, openraft::error::LinearizableReadError<TypeConfig>>,
) -> ReadError {
    if e.forward_to_leader().is_some() {
        return ReadError::NotLeader;
    }
    match e {
        RaftError::APIError(_) => ReadError::NoQuorum,
        e => ReadError::Stopped(e.to_string()),
    }
}

type Confirm<T> = dyn Fn() -> BoxFuture<'static, T> + Send + Sync;

/// Rounds of `confirm`: each serves every caller of [`Rounds::join`] that
/// was queued when the round began; at most `limit` run at a time.
struct Rounds<T> {
    queue: Arc<Mutex<Queue<T>>>,
    confirm: Arc<Confirm<T>>,
}

impl<T> Clone for Rounds<T> {
    fn clone(&self) -> Self {
        Rounds {
            queue: self.queue.clone(),
            confirm: self.confirm.clone(),
        }
    }
}

struct Queue<T> {
    /// Round tasks running (each runs rounds until nobody waits).
    running: usize,
    limit: usize,
    waiting: Vec<oneshot::Sender<T>>,
}

impl<T: Clone + Send + 'static> Rounds<T> {
    fn new(
        limit: usize,
        confirm: impl Fn() -> BoxFuture<'static, T> + Send + Sync + 'static,
    ) -> Rounds<T> {
        Rounds {
            queue: Arc::new(Mutex::new(Queue {
                running: 0,
                limit: limit.max(1),
                waiting: Vec::new(),
            })),
            confirm: Arc::new(confirm),
        }
    }

    /// The result of the first round that begins after this call
    /// (`None` if the round task was dropped, at shutdown).
    async fn join(&self) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.waiting.push(tx);
            let start = q.running < q.limit;
            if start {
                q.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().run());
        }
        rx.await.ok()
    }

    /// Runs rounds until nobody is waiting.
    async fn run(self) {
        loop {
            let batch = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if q.waiting.is_empty() {
                    q.running -= 1;
                    return;
                }
                std::mem::take(&mut q.waiting)
            };
            // Started only now: every caller in `batch` was queued before.
            let r = (self.confirm)().await;
            for tx in batch {
                let _ = tx.send(r.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::Notify;

    /// A caller queued while a round runs gets the next round's result, never
    /// the running one's; callers queued together share one round.
    #[tokio::test]
    async fn a_caller_arriving_during_a_round_waits_for_the_next() {
        let started = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Notify::new());
        let (s, g) = (started.clone(), gate.clone());
        let rounds = Rounds::new(1, move || {
            let (s, g) = (s.clone(), g.clone());
            Box::pin(async move {
                let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                g.notified().await;
                n
            })
        });
        let first = tokio::spawn({
            let r = rounds.clone();
            async move { r.join().await }
        });
        while started.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        // Round 1 is running: these two arrive during it.
        let late: Vec<_> = (0..2)
            .map(|_| {
                let r = rounds.clone();
                tokio::spawn(async move { r.join().await })
            })
            .collect();
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert_eq!(first.await.unwrap(), Some(1));
        while started.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in late {
            assert_eq!(
                t.await.unwrap(),
                Some(2),
                "served by the round it arrived during"
            );
        }
        // Nobody waits any more: no third round starts by itself, and the
        // next caller starts one.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(started.load(Ordering::SeqCst), 2);
        let next = tokio::spawn({
            let r = rounds.clone();
            async move { r.join().await }
        });
        while started.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert_eq!(next.await.unwrap(), Some(3));
    }

    /// With two rounds allowed, a caller arriving during a round starts a
    /// second one at once (it does not wait for the first to end) and is
    /// never served by the round that began before it; with both running, a
    /// caller waits for one to end and gets a round that began after it.
    #[tokio::test]
    async fn overlapping_rounds_serve_only_callers_queued_before_them() {
        let started = Arc::new(AtomicU64::new(0));
        let gates: Arc<Vec<Notify>> = Arc::new((0..4).map(|_| Notify::new()).collect());
        let (s, g) = (started.clone(), gates.clone());
        let rounds = Rounds::new(2, move || {
            let (s, g) = (s.clone(), g.clone());
            Box::pin(async move {
                let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                g[n as usize - 1].notified().await;
                n
            })
        });
        let join = |r: &Rounds<u64>| {
            let r = r.clone();
            tokio::spawn(async move { r.join().await })
        };
        let wait_started = |n: u64| {
            let started = started.clone();
            async move {
                while started.load(Ordering::SeqCst) < n {
                    tokio::task::yield_now().await;
                }
            }
        };
        let first = join(&rounds);
        wait_started(1).await;
        // Round 1 is still running: the second caller's round starts anyway.
        let second = join(&rounds);
        wait_started(2).await;
        // Both running: these two queue for the next round to start.
        let late = [join(&rounds), join(&rounds)];
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(started.load(Ordering::SeqCst), 2, "at most two rounds run");
        gates[1].notify_one();
        assert_eq!(second.await.unwrap(), Some(2));
        wait_started(3).await;
        gates[0].notify_one();
        assert_eq!(first.await.unwrap(), Some(1));
        gates[2].notify_one();
        for t in late {
            assert_eq!(t.await.unwrap(), Some(3), "a round that began after them");
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            3,
            "no round without callers"
        );
    }
}
