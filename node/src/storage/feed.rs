//! The applied-head feed: how many ledger entries this replica has applied,
//! published by the state machine after each write and watched by the live
//! entry feed (`api/watch.rs`), so a watcher wakes up as soon as an entry is
//! readable instead of polling.
//!
//! The value is the next sequence number (`head.seq + 1`, 0 before genesis).
//! It is published only after the entry's batch is written, so every entry
//! below it is readable through [`super::LedgerReader`]. The sender lives in
//! the state machine alone: when raft shuts down and drops the state machine,
//! every receiver sees the channel close, which ends open streams.

use tokio::sync::watch;

/// Publishing side, owned by the state machine.
pub(crate) struct HeadPublisher {
    tx: watch::Sender<u64>,
}

impl HeadPublisher {
    pub(crate) fn new(next_seq: u64) -> Self {
        HeadPublisher {
            tx: watch::Sender::new(next_seq),
        }
    }

    /// Announces that entries below `next_seq` are applied and readable.
    pub(crate) fn publish(&self, next_seq: u64) {
        self.tx.send_if_modified(|v| {
            let changed = *v != next_seq;
            *v = next_seq;
            changed
        });
    }

    pub(crate) fn subscribe(&self) -> AppliedHead {
        AppliedHead(self.tx.subscribe())
    }
}

/// Receiving side: the next sequence number this replica will apply.
#[derive(Clone, Debug)]
pub struct AppliedHead(watch::Receiver<u64>);

impl AppliedHead {
    /// The next sequence number as last published.
    pub fn next_seq(&self) -> u64 {
        *self.0.borrow()
    }

    /// Waits until an entry with `seq` is applied. Returns the published
    /// next sequence number (> `seq`), or `None` once the state machine is
    /// gone (the replica is shutting down).
    pub async fn wait_past(&mut self, seq: u64) -> Option<u64> {
        self.0.wait_for(|next| *next > seq).await.ok().map(|v| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_published_and_ends_when_dropped() {
        let p = HeadPublisher::new(3);
        let mut head = p.subscribe();
        assert_eq!(head.next_seq(), 3);
        assert_eq!(head.wait_past(2).await, Some(3));
        let waiter = tokio::spawn({
            let mut head = head.clone();
            async move { head.wait_past(4).await }
        });
        p.publish(4);
        p.publish(6);
        assert_eq!(waiter.await.unwrap(), Some(6));
        let waiter = tokio::spawn(async move { head.wait_past(10).await });
        drop(p);
        assert_eq!(waiter.await.unwrap(), None);
    }
}
