//! The live entry feed: `Arbor.WatchEntries`.
//!
//! Any replica serves it from its own applied state, never forwarding:
//! entries are immutable once applied, so a follower streams exactly what the
//! leader would, a few milliseconds later. The stream reads the backlog from
//! [`LedgerReader`] in pages of [`PAGE`] entries, and once it has caught up
//! waits on the state machine's applied-head channel ([`AppliedHead`]),
//! which is published right after each entry is written: no polling.
//!
//! A stream is pulled by tonic as the client reads it (HTTP/2 flow control),
//! so a slow watcher holds at most one page in memory. It ends only with an
//! error: `UNAVAILABLE` when the replica shuts down (the state machine, and
//! with it the channel's sender, is dropped), `INTERNAL` if a read fails.

use std::collections::VecDeque;
use std::pin::Pin;

use arbor_proto::ledger::Entry;
use arbor_proto::pb;
use futures::Stream;
use tonic::Status;

use super::client_api::ArborApi;
use super::status;
use crate::storage::{AppliedHead, LedgerReader};

/// Entries read from RocksDB at a time while catching up.
pub const PAGE: usize = 256;

/// How far past this replica's next sequence number a watch may start.
pub const MAX_AHEAD: u64 = 1_000_000;

/// The server stream of `WatchEntries`.
pub type EntryStream = Pin<Box<dyn Stream<Item = Result<pb::LedgerEntry, Status>> + Send>>;

impl ArborApi {
    /// Starts a feed of every entry from `req.from_seq` on.
    pub(super) fn watch(&self, req: pb::WatchRequest) -> Result<EntryStream, Status> {
        let next = self.applied.next_seq();
        if req.from_seq > next.saturating_add(MAX_AHEAD) {
            return Err(Status::out_of_range(format!(
                "from_seq {} is more than {MAX_AHEAD} past this replica's next entry ({next}); \
                 watch from a sequence number at most {}",
                req.from_seq,
                next.saturating_add(MAX_AHEAD)
            )));
        }
        tracing::debug!(from_seq = req.from_seq, next, "watch started");
        let feed = Feed {
            reader: self.reader.clone(),
            head: self.applied.clone(),
            next: req.from_seq,
            page: VecDeque::new(),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(feed, Feed::step)))
    }
}

struct Feed {
    reader: LedgerReader,
    head: AppliedHead,
    /// The sequence number of the next entry to send.
    next: u64,
    /// Entries read but not yet sent, from `next` on.
    page: VecDeque<Entry>,
    /// An error was sent: the stream is over.
    done: bool,
}

impl Feed {
    async fn step(mut self) -> Option<(Result<pb::LedgerEntry, Status>, Feed)> {
        if self.done {
            return None;
        }
        loop {
            if let Some(e) = self.page.pop_front() {
                self.next = e.seq + 1;
                return Some((Ok(e.to_pb()), self));
            }
            match self.reader.entries(self.next, PAGE) {
                Err(e) => return self.fail(status::internal(format!("watch: {e}"))),
                Ok(page) => match page.first().map(|e| e.seq) {
                    Some(first) if first != self.next => {
                        let why = format!(
                            "watch: the ledger has no entry {} (next stored is {first})",
                            self.next
                        );
                        return self.fail(status::internal(why));
                    }
                    Some(_) => self.page = page.into(),
                    // Caught up: wait until the state machine applies `next`.
                    // The channel's current value is checked first, so an
                    // entry applied since the read is not missed.
                    None => {
                        if self.head.wait_past(self.next).await.is_none() {
                            let why = format!(
                                "replica is shutting down; watch again from seq {} elsewhere",
                                self.next
                            );
                            return self.fail(status::unavailable(why, None));
                        }
                    }
                },
            }
        }
    }

    fn fail(mut self, s: Status) -> Option<(Result<pb::LedgerEntry, Status>, Feed)> {
        tracing::debug!(next = self.next, error = %s.message(), "watch ended");
        self.done = true;
        Some((Err(s), self))
    }
}
