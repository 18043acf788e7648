//! The live entry feed: `Arbor.WatchEntries`.
//!
//! Any replica serves it from its own applied state, never forwarding:
//! entries are immutable once applied, so a follower streams exactly what the
//! leader would, a few milliseconds later. The stream reads the backlog from
//! [`LedgerReader`] a page at a time, and once it has caught up waits on the
//! state machine's applied-head channel ([`AppliedHead`]), which is
//! published right after each entry is written: no polling.
//!
//! Bounded (`limits.rs`): a replica serves at most `limits.max-watch-streams`
//! streams at once (beyond, `RESOURCE_EXHAUSTED` naming the limit; the slot
//! is given back when the stream is dropped), and a page holds at most
//! `limits.watch-buffer-entries` entries and `limits.max-reply-bytes` bytes
//! (one entry at least; an entry bigger than that alone ends the stream
//! `RESOURCE_EXHAUSTED` naming `max-reply-bytes`).
//!
//! A stream is pulled by tonic as the client reads it (HTTP/2 flow control),
//! so a slow watcher is never disconnected for being slow: the replica reads
//! the ledger at the watcher's pace, and one that stops reading pins one page
//! plus what the connection's send buffers hold (about two entries). It ends
//! only with an error: `UNAVAILABLE` when the replica shuts down (the state
//! machine, and with it the channel's sender, is dropped), `INTERNAL` if a
//! read fails.

use std::collections::VecDeque;

use arbor_proto::ledger::Entry;
use arbor_proto::pb;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use super::client_api::ArborApi;
use super::status;
use crate::limits::entry_too_big;
use crate::storage::{AppliedHead, LedgerReader};

/// How far past this replica's next sequence number a watch may start.
pub const MAX_AHEAD: u64 = 1_000_000;

pub use super::EntryStream;

impl ArborApi {
    /// Starts a feed of every entry from `req.from_seq` on.
    pub(super) fn watch(&self, req: pb::WatchRequest) -> Result<EntryStream, Status> {
        let next = self.applied.next_seq();
        if req.from_seq > next.saturating_add(MAX_AHEAD) {
            return Err(status::out_of_range(format!(
                "from_seq {} is more than {MAX_AHEAD} past this replica's next entry ({next}); \
                 watch from a sequence number at most {}",
                req.from_seq,
                next.saturating_add(MAX_AHEAD)
            )));
        }
        let slot = self.limits.watch_slot()?;
        tracing::debug!(from_seq = req.from_seq, next, "watch started");
        let limits = &self.limits.limits;
        let feed = Feed {
            _slot: slot,
            page_entries: limits.watch_buffer_entries,
            page_bytes: limits.max_reply_bytes,
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
    /// This stream's slot of `max-watch-streams`.
    _slot: OwnedSemaphorePermit,
    /// Most entries, and bytes, read ahead (`watch-buffer-entries`, `max-reply-bytes`).
    page_entries: usize,
    page_bytes: usize,
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
            // Each entry is one gRPC message: 5 bytes of framing.
            let read =
                self.reader
                    .entries_within(self.next, self.page_entries, self.page_bytes, |n| n + 5);
            match read {
                Err(e) => return self.fail(status::internal(format!("watch: {e}"))),
                Ok((_, bytes)) if bytes > self.page_bytes => {
                    let too_big = entry_too_big(self.next, bytes, self.page_bytes);
                    return self.fail(too_big);
                }
                Ok((page, _)) => match page.first().map(|e| e.seq) {
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
