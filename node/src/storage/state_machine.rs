//! The raft state machine: applies committed commands to the ledger with the
//! pure rules of `arbor_proto::rules`, exactly as `rules::MemState::apply`
//! does in memory.
//!
//! Per normal entry: a command whose id was applied before answers
//! `Duplicate` with the original entry's outcome; a refusal answers
//! `Refused` and writes nothing but the last applied log id; anything else
//! becomes the next ledger entry, written with its effects, its command id,
//! the new head and the last applied log id in one atomic batch.
//!
//! Entries are applied one at a time: the next command is decided against
//! RocksDB after the previous batch is written, so it sees its effects.
//! The batches are written unsynced: the raft log below is synced, so an
//! applied entry lost in a crash is applied again from the log on restart
//! (and any later synced write — a log append, a vote — makes it durable,
//! since everything shares one write-ahead log).
//!
//! A failed or corrupted read while deciding stops the state machine with an
//! error (openraft treats it as fatal) rather than deciding on wrong data.

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use arbor_proto::ledger::{command_id, Entry};
use arbor_proto::rules::{
    self, ClusterConfig, Effect, NodeStats, Order, Party, Profile, Refusal, StateView,
};
use futures::{Stream, StreamExt};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use prost::Message;
use rocksdb::{WriteBatch, DB};
use serde::Serialize;

use super::feed::{AppliedHead, HeadPublisher};
use super::keys::*;
use super::snapshot::{self, SnapshotData, SnapshotFiles};
use super::{cf, io_err, LedgerReader, ReadError};
use crate::raft::types::Outcome;
use crate::raft::{Request, Response, TypeConfig};

type LogEntry = EntryOf<TypeConfig>;

/// The state machine store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct StateMachineStore {
    pub(super) db: Arc<DB>,
    reader: LedgerReader,
    pub(super) snapshots: Arc<SnapshotFiles>,
    /// Announces each applied entry to the live feed (see `feed.rs`).
    head_feed: Arc<HeadPublisher>,
}

impl StateMachineStore {
    pub(crate) fn new(db: Arc<DB>, snapshot_dir: PathBuf) -> Self {
        let reader = LedgerReader::new(db.clone());
        let next_seq = next_seq(&reader);
        StateMachineStore {
            reader,
            db,
            snapshots: Arc::new(SnapshotFiles::new(snapshot_dir)),
            head_feed: Arc::new(HeadPublisher::new(next_seq)),
        }
    }

    /// The applied head as the state machine publishes it, for the live feed.
    pub fn applied_head(&self) -> AppliedHead {
        self.head_feed.subscribe()
    }

    /// A read-only view of the applied state, for the API.
    pub fn reader(&self) -> LedgerReader {
        self.reader.clone()
    }

    /// Applies one committed raft log entry and returns what it produced.
    /// [`RaftStateMachine::apply`] calls this for every entry; tests call it
    /// directly to see the responses.
    pub fn apply_entry(&self, entry: &LogEntry) -> io::Result<Response> {
        let mut batch = WriteBatch::default();
        put_json(
            &self.db,
            &mut batch,
            CF_SM_META,
            KEY_LAST_APPLIED,
            &entry.log_id,
        )?;
        let response = match &entry.payload {
            EntryPayload::Blank => Response::Noop,
            EntryPayload::Membership(m) => {
                let stored: StoredMembershipOf<TypeConfig> =
                    StoredMembership::new(Some(entry.log_id), m.clone());
                put_json(&self.db, &mut batch, CF_SM_META, KEY_MEMBERSHIP, &stored)?;
                Response::Noop
            }
            EntryPayload::Normal(req) => self.apply_request(req, &mut batch).map_err(|e| {
                io_err(
                    format_args!("apply raft log entry {}", entry.log_id.index),
                    e,
                )
            })?,
        };
        // Unsynced on purpose: see the module doc.
        self.db.write(batch).map_err(|e| {
            io_err(
                format_args!("write applied entry {}", entry.log_id.index),
                e,
            )
        })?;
        if let Response::Appended { seq, .. } = &response {
            self.head_feed.publish(seq + 1);
        }
        Ok(response)
    }

    /// Decides one command and adds its writes to `batch`.
    fn apply_request(&self, req: &Request, batch: &mut WriteBatch) -> Result<Response, ApplyError> {
        let id = match rules::decode(&req.command) {
            Ok(a) => command_id(&a.envelope.signer, &a.envelope.command),
            Err(r) => return Ok(refused(&r)),
        };
        if let Some(seq) = self.reader.command_seq(&id)? {
            let original = self.reader.entry(seq)?.ok_or_else(|| {
                ApplyError::Missing(format!(
                    "command id {} maps to missing entry {seq}",
                    hex::encode(id)
                ))
            })?;
            return Ok(Response::Duplicate {
                seq,
                outcome: outcome(&original),
                hash: original.hash,
            });
        }

        let head = self.reader.head()?;
        let seq = head.map(|h| h.seq + 1).unwrap_or(0);
        let time_ms = arbor_proto::ledger::entry_time(head.as_ref(), req.time_ms);
        let view = CheckedView::new(&self.reader);
        // Empty: not recorded (genesis, tests): the key is not compared.
        let verified_key = (!req.verified_key.is_empty()).then_some(req.verified_key.as_slice());
        let decision = rules::apply(&view, &req.command, seq, time_ms, req.genesis, verified_key);
        view.finish()?;
        let d = match decision {
            Ok(d) => d,
            Err(r) => return Ok(refused(&r)),
        };

        let entry = Entry::next(
            head.as_ref(),
            time_ms,
            req.command.clone(),
            d.accepted,
            d.code,
            d.message,
            d.order_id,
            d.order_prev_seq,
        );
        for effect in d.effects {
            put_effect(&self.db, batch, effect)?;
        }
        batch.put_cf(cf(&self.db, CF_COMMANDS), id, u64_key(seq));
        batch.put_cf(
            cf(&self.db, CF_LEDGER),
            u64_key(seq),
            entry.to_pb().encode_to_vec(),
        );
        put_json(&self.db, batch, CF_SM_META, KEY_HEAD, &entry.head())?;
        tracing::debug!(seq, code = %entry.code, "ledger entry appended");
        Ok(Response::Appended {
            seq,
            outcome: outcome(&entry),
            hash: entry.hash,
        })
    }
}

/// The sequence number after the applied head (0 before genesis; 0 too if
/// the head cannot be read, which only delays watchers until the next entry).
fn next_seq(reader: &LedgerReader) -> u64 {
    match reader.head() {
        Ok(h) => h.map_or(0, |h| h.seq + 1),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the chain head for the live feed");
            0
        }
    }
}

/// Why applying a command stopped: the state could not be read or written.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] io::Error),
    #[error("{0}")]
    Missing(String),
}

fn refused(r: &Refusal) -> Response {
    tracing::debug!(code = r.code(), reason = %r, "command refused");
    Response::Refused {
        code: r.code().to_string(),
        message: r.to_string(),
    }
}

fn outcome(e: &Entry) -> Outcome {
    Outcome {
        accepted: e.accepted,
        code: e.code.clone(),
        message: e.message.clone(),
    }
}

fn put_json(
    db: &DB,
    batch: &mut WriteBatch,
    cf_name: &str,
    key: &[u8],
    value: &impl Serialize,
) -> io::Result<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| io_err(format_args!("encode {cf_name}/{}", display_key(key)), e))?;
    batch.put_cf(cf(db, cf_name), key, bytes);
    Ok(())
}

/// Writes one effect of a decision, as `MemState::put` does.
fn put_effect(db: &DB, batch: &mut WriteBatch, effect: Effect) -> io::Result<()> {
    match effect {
        Effect::PutParty(p) => {
            batch.put_cf(cf(db, CF_PARTY_KEYS), &p.public_key, p.party_id.as_bytes());
            put_json(db, batch, CF_PARTIES, p.party_id.as_bytes(), &p)
        }
        Effect::PutOrder(o) => put_json(db, batch, CF_ORDERS, o.order_id.as_bytes(), &o),
        Effect::PutRef {
            channel,
            external_id,
            order_id,
        } => {
            batch.put_cf(
                cf(db, CF_REFS),
                ref_key(&channel, &external_id),
                order_id.as_bytes(),
            );
            Ok(())
        }
        Effect::PutProfile(p) => put_json(db, batch, CF_PROFILES, p.node.as_bytes(), &p),
        Effect::PutStats { node, stats } => put_json(db, batch, CF_STATS, node.as_bytes(), &stats),
        Effect::PutConfig(c) => put_json(db, batch, CF_SM_META, KEY_CONFIG, &c),
    }
}

/// A [`StateView`] over the reader that remembers the first failed read
/// instead of panicking, so that `apply` can stop with an error.
struct CheckedView<'a> {
    reader: &'a LedgerReader,
    failed: RefCell<Option<ReadError>>,
}

impl<'a> CheckedView<'a> {
    fn new(reader: &'a LedgerReader) -> Self {
        CheckedView {
            reader,
            failed: RefCell::new(None),
        }
    }

    fn keep<T>(&self, r: Result<Option<T>, ReadError>) -> Option<T> {
        r.unwrap_or_else(|e| {
            self.failed.borrow_mut().get_or_insert(e);
            None
        })
    }

    /// The first read that failed, if any.
    fn finish(self) -> Result<(), ReadError> {
        self.failed.into_inner().map_or(Ok(()), Err)
    }
}

impl StateView for CheckedView<'_> {
    fn party(&self, party_id: &str) -> Option<Party> {
        self.keep(self.reader.party(party_id))
    }
    fn order(&self, order_id: &str) -> Option<Order> {
        self.keep(self.reader.order(order_id))
    }
    fn order_by_ref(&self, channel: &str, external_id: &str) -> Option<String> {
        self.keep(self.reader.order_by_ref(channel, external_id))
    }
    fn party_by_key(&self, public_key: &[u8]) -> Option<String> {
        self.keep(self.reader.party_by_key(public_key))
    }
    fn has_genesis(&self) -> bool {
        self.keep(self.reader.head()).is_some()
    }
    fn profile(&self, node: &str) -> Option<Profile> {
        self.keep(self.reader.profile(node))
    }
    fn stats(&self, node: &str) -> Option<NodeStats> {
        self.keep(self.reader.stats(node))
    }
    fn config(&self) -> Option<ClusterConfig> {
        self.keep(self.reader.config())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let last = self
            .reader
            .last_applied_log_id()
            .map_err(|e| io_err("read applied state", e))?;
        let membership = self
            .reader
            .membership()
            .map_err(|e| io_err("read applied state", e))?;
        Ok((last, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = self.apply_entry(&entry)?;
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        snapshot::install(self, meta, snapshot.into_inner())?;
        self.head_feed.publish(next_seq(&self.reader));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, SnapshotData>>, io::Error> {
        snapshot::current(self)
    }
}
