//! The live entry feed: [`Client::watch`], a stream of every committed ledger
//! entry from a sequence number on, that survives replica deaths.
//!
//! It reads `Arbor.WatchEntries` from one replica at a time (any replica
//! serves it from its own applied state). When that stream breaks — the
//! replica died, shut down, or the connection dropped — it reopens the feed
//! on the next configured endpoint from the last sequence number it handed
//! out + 1, so the consumer sees every entry exactly once, in order, whatever
//! replica it came from.
//!
//! Every entry is checked before it is handed out: its sequence number is the
//! one expected, its hash matches its contents, and it links to the previous
//! entry (`prev_hash`), across reconnects too. A replica that sends anything
//! else is treated as failed and the next one is tried.
//!
//! Failures are retried, rotating over the endpoints (backing off after each
//! full round) until none has served the feed for the client's timeout
//! ([`Client::with_timeout`]); then the stream yields `Unavailable` and ends.
//! A request every replica refuses (`OUT_OF_RANGE`: `from_seq` absurdly far
//! ahead) ends it with that error after one round. The stream never ends
//! otherwise: drop it to stop watching.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arbor_proto::ledger::{Entry, Head};
use arbor_proto::pb;
use arbor_proto::pb::arbor_client::ArborClient;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tonic::{Code, Status, Streaming};

use crate::client::{describe, Client, ATTEMPT_TIMEOUT};
use crate::error::ClientError;

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Client {
    /// Every committed ledger entry with `seq >= from_seq`, in order, each
    /// exactly once: first those already committed, then new ones as they
    /// are applied. Resumes on another replica after a disconnect (see the
    /// [module docs](crate::watch)). The stream does not end unless the
    /// cluster stays unreachable for the client's timeout or refuses the
    /// request; it yields that error last.
    pub fn watch(&self, from_seq: u64) -> WatchStream {
        let progress = Arc::new(Progress {
            next: AtomicU64::new(from_seq),
            resumes: AtomicU64::new(0),
            serving: Mutex::new(None),
        });
        let feed = Feed {
            client: self.clone(),
            next: from_seq,
            last: None,
            stream: None,
            idx: self.preferred(),
            opened: false,
            failing_since: None,
            failures: 0,
            refusals: 0,
            backoff: BACKOFF_START,
            done: false,
            progress: progress.clone(),
        };
        WatchStream {
            inner: futures::stream::unfold(feed, Feed::step).boxed(),
            progress,
        }
    }
}

/// The stream [`Client::watch`] returns.
pub struct WatchStream {
    inner: BoxStream<'static, Result<pb::LedgerEntry, ClientError>>,
    progress: Arc<Progress>,
}

struct Progress {
    next: AtomicU64,
    resumes: AtomicU64,
    serving: Mutex<Option<String>>,
}

impl WatchStream {
    /// The sequence number of the next entry the stream will yield.
    pub fn next_seq(&self) -> u64 {
        self.progress.next.load(Ordering::SeqCst)
    }

    /// How many times the feed was reopened after a broken stream.
    pub fn resumes(&self) -> u64 {
        self.progress.resumes.load(Ordering::SeqCst)
    }

    /// The endpoint the feed is read from now, if a stream is open.
    pub fn serving(&self) -> Option<String> {
        self.progress
            .serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Stream for WatchStream {
    type Item = Result<pb::LedgerEntry, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

struct Feed {
    client: Client,
    /// The sequence number of the next entry to yield.
    next: u64,
    /// The last entry yielded, to check the next one links to it.
    last: Option<Head>,
    /// The open stream and its endpoint.
    stream: Option<(String, Streaming<pb::LedgerEntry>)>,
    /// The endpoint to open the next stream on.
    idx: usize,
    /// A stream was opened before (the next open is a resume).
    opened: bool,
    /// When the current run of failures began (no stream opened since).
    failing_since: Option<Instant>,
    /// Failures since an entry was last received.
    failures: usize,
    /// Refusals in a row (`OUT_OF_RANGE`, `UNIMPLEMENTED`, a bad entry).
    refusals: usize,
    backoff: Duration,
    done: bool,
    progress: Arc<Progress>,
}

type Step = Option<(Result<pb::LedgerEntry, ClientError>, Feed)>;

impl Feed {
    async fn step(mut self) -> Step {
        if self.done {
            return None;
        }
        loop {
            let Some((name, stream)) = self.stream.as_mut() else {
                let (name, channel) = self.client.endpoint_channel(self.idx);
                let req = pb::WatchRequest {
                    from_seq: self.next,
                };
                let opened = tokio::time::timeout(
                    ATTEMPT_TIMEOUT,
                    ArborClient::new(channel).watch_entries(req),
                )
                .await;
                match opened {
                    Ok(Ok(r)) => self.open(name, r.into_inner()),
                    Ok(Err(s)) => {
                        if let Some(err) = self.failed(&name, s).await {
                            return self.end(err);
                        }
                    }
                    Err(_) => {
                        let s = Status::deadline_exceeded(format!(
                            "no answer within {} ms",
                            ATTEMPT_TIMEOUT.as_millis()
                        ));
                        if let Some(err) = self.failed(&name, s).await {
                            return self.end(err);
                        }
                    }
                }
                continue;
            };
            let name = name.clone();
            let failure = match stream.message().await {
                Ok(Some(e)) => match self.check(&e) {
                    Ok(head) => {
                        self.received(head);
                        return Some((Ok(e), self));
                    }
                    Err(why) => Status::data_loss(why),
                },
                Ok(None) => Status::unavailable("the replica ended the stream"),
                Err(s) => s,
            };
            self.stream = None;
            *self
                .progress
                .serving
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            if let Some(err) = self.failed(&name, failure).await {
                return self.end(err);
            }
        }
    }

    fn open(&mut self, name: String, stream: Streaming<pb::LedgerEntry>) {
        if self.opened {
            self.progress.resumes.fetch_add(1, Ordering::SeqCst);
        }
        self.opened = true;
        self.failing_since = None;
        *self
            .progress
            .serving
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(name.clone());
        self.stream = Some((name, stream));
    }

    /// The entry's head if it is the expected next entry, hashes correctly
    /// and links to the previous one.
    fn check(&self, p: &pb::LedgerEntry) -> Result<Head, String> {
        if p.seq != self.next {
            return Err(format!("sent entry {} where {} was due", p.seq, self.next));
        }
        let e = Entry::from_pb(p)?;
        match (&self.last, e.seq) {
            (Some(prev), _) => e.verify_link(Some(prev))?,
            (None, 0) => e.verify_link(None)?,
            // The first entry after a later start: only its own hash can be checked.
            (None, _) if e.compute_hash() != e.hash => {
                return Err(format!("entry {}: hash does not match its contents", e.seq))
            }
            (None, _) => {}
        }
        Ok(e.head())
    }

    fn received(&mut self, head: Head) {
        self.next = head.seq + 1;
        self.last = Some(head);
        self.progress.next.store(self.next, Ordering::SeqCst);
        self.failures = 0;
        self.refusals = 0;
        self.backoff = BACKOFF_START;
    }

    /// Records a failure at endpoint `name` and moves to the next endpoint,
    /// backing off after each full round. Returns the error to end with when
    /// retrying cannot help or the deadline has passed.
    async fn failed(&mut self, name: &str, s: Status) -> Option<ClientError> {
        let n = self.client.endpoints().len();
        let last = format!("{name}: {}", describe(&s));
        match s.code() {
            // The request itself is wrong: every replica would say the same.
            Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated => {
                return Some(ClientError::from_status(&s));
            }
            // This replica cannot serve it (too far behind, too old, or sent a
            // bad entry); another may. Give up once every one has refused.
            Code::OutOfRange | Code::Unimplemented | Code::DataLoss => {
                self.refusals += 1;
                if self.refusals >= n {
                    return Some(ClientError::Status {
                        code: s.code(),
                        message: format!("every replica refused the feed; last: {last}"),
                    });
                }
            }
            _ => self.refusals = 0,
        }
        let now = Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        let timeout = self.client.timeout();
        if now.duration_since(since) >= timeout {
            return Some(ClientError::Unavailable(format!(
                "no replica served the feed from seq {} for {} ms; last error from {last}",
                self.next,
                timeout.as_millis()
            )));
        }
        self.failures += 1;
        self.idx = (self.idx + 1) % n;
        if self.failures.is_multiple_of(n) {
            let left = timeout.saturating_sub(now.duration_since(since));
            tokio::time::sleep(self.backoff.min(left)).await;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        None
    }

    fn end(mut self, err: ClientError) -> Step {
        self.done = true;
        Some((Err(err), self))
    }
}
