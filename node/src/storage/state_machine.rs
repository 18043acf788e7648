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
//! Each `apply` call (one stream of committed entries) is written as ONE
//! RocksDB write batch, in chunks of at most [`MAX_BATCH_WRITES`] writes.
//! The next command must see the previous commands' effects, so every write
//! also goes into an in-memory overlay that the deciding reader consults
//! before RocksDB (see [`super::overlay`]); [`put_effect`] is the one place
//! that maps an effect to writes, so new kinds of records flow through it.
//! Responses are handed to the waiting clients only after the batch holding
//! their entry is written.
//!
//! The batches are written unsynced. That loses nothing acknowledged: an
//! entry is applied only once it is committed, i.e. in the synced raft log of
//! a majority, so an applied entry lost in a crash is applied again from the
//! log on restart (openraft re-applies after `last_applied`, which is in the
//! same batch as the entries it covers). Any later synced write (a log
//! append, a vote) makes it durable too, since everything shares one
//! write-ahead log.
//!
//! A failed or corrupted read while deciding stops the state machine with an
//! error (openraft treats it as fatal) rather than deciding on wrong data.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use arbor_proto::ledger::{command_id, Entry};
use arbor_proto::rules::{self, Effect, Refusal};
use futures::{Stream, StreamExt};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use prost::Message;
use rocksdb::DB;
use serde::Serialize;

use super::feed::{AppliedHead, HeadPublisher};
use super::keys::*;
use super::leases;
use super::overlay::PendingWrites;
use super::record;
use super::snapshot::{self, SnapshotData, SnapshotFiles};
use super::CheckedView;
use super::{io_err, LedgerReader, ReadError};
use crate::types::{Outcome, Request, Response, TypeConfig};

type LogEntry = EntryOf<TypeConfig>;

/// Writes per RocksDB batch before it is written and its clients answered
/// (an entry is ~5 writes; the leader commits a few hundred at a time).
const MAX_BATCH_WRITES: usize = 4096;

/// The state machine store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct StateMachineStore {
    pub(super) db: Arc<DB>,
    reader: LedgerReader,
    pub(super) snapshots: Arc<SnapshotFiles>,
    /// The order map's upper levels (`order_map::NodeCache`).
    map_cache: Arc<super::order_map::NodeCache>,
    /// Announces each applied entry to the live feed (see `feed.rs`).
    head_feed: Arc<HeadPublisher>,
    pub(super) metrics: crate::metrics::Metrics,
}

impl StateMachineStore {
    pub(crate) fn new(
        db: Arc<DB>,
        snapshot_dir: PathBuf,
        fault: super::Fault,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        let reader = LedgerReader::new(db.clone(), fault);
        catch_up_order_map(&reader);
        let next_seq = next_seq(&reader);
        StateMachineStore {
            reader,
            db,
            snapshots: Arc::new(SnapshotFiles::new(snapshot_dir)),
            map_cache: Arc::default(),
            head_feed: Arc::new(HeadPublisher::new(next_seq)),
            metrics,
        }
    }

    /// The applied head as the state machine publishes it, for the live feed.
    pub fn applied_head(&self) -> AppliedHead {
        self.head_feed.subscribe()
    }

    /// Tells the live feed about everything written so far.
    fn publish_head(&self) {
        self.head_feed.publish(next_seq(&self.reader));
    }

    /// Where snapshots from peers are received (the snapshot directory).
    pub fn snapshot_inbox(&self) -> snapshot::SnapshotInbox {
        self.snapshots.inbox()
    }

    /// A read-only view of the applied state, for the API.
    pub fn reader(&self) -> LedgerReader {
        self.reader.clone()
    }

    /// Applies one committed raft log entry, writes it and returns what it
    /// produced. Tests call this directly to see the responses;
    /// [`RaftStateMachine::apply`] batches many entries per write instead.
    pub fn apply_entry(&self, entry: &LogEntry) -> io::Result<Response> {
        self.map_cache.begin();
        let mut w = PendingWrites::new(self.db.clone());
        let reader = self.reader.with_overlay(w.overlay());
        let response = self.decide_entry(&reader, &mut w, entry)?;
        self.write_pending(&mut w, &entry.log_id)?;
        self.publish_head();
        Ok(response)
    }

    /// Decides one committed entry against `reader` (which sees `w`) and
    /// adds its writes to `w`, except the last applied log id, which
    /// [`Self::write_pending`] adds once per batch.
    fn decide_entry(
        &self,
        reader: &LedgerReader,
        w: &mut PendingWrites,
        entry: &LogEntry,
    ) -> io::Result<Response> {
        let response = match &entry.payload {
            EntryPayload::Blank => Response::Noop,
            EntryPayload::Membership(m) => {
                let stored: StoredMembershipOf<TypeConfig> =
                    StoredMembership::new(Some(entry.log_id), m.clone());
                put_json(w, CF_SM_META, KEY_MEMBERSHIP, &stored)?;
                Response::Noop
            }
            EntryPayload::Normal(req) => {
                apply_request(reader, w, &self.map_cache, req, &self.metrics).map_err(|e| {
                    io_err(
                        format_args!("apply raft log entry {}", entry.log_id.index),
                        e,
                    )
                })?
            }
        };
        Ok(response)
    }
}

impl StateMachineStore {
    /// Records `last` (the last entry decided into `w`) as the last applied
    /// log id and writes the pending batch; the order map's node cache then
    /// counts the nodes it staged as written (or is emptied if the write
    /// failed).
    fn write_pending(&self, w: &mut PendingWrites, last: &LogIdOf<TypeConfig>) -> io::Result<()> {
        put_json(w, CF_SM_META, KEY_LAST_APPLIED, last)?;
        // Unsynced on purpose: see the module doc.
        let written = w.write();
        match written {
            Ok(()) => self.map_cache.written(),
            Err(_) => self.map_cache.clear(),
        }
        written.map_err(|e| {
            io_err(
                format_args!("write applied entries up to {}", last.index),
                e,
            )
        })
    }
}

/// Decides one command against `reader` and adds its writes to `w`.
fn apply_request(
    reader: &LedgerReader,
    w: &mut PendingWrites,
    map_cache: &super::order_map::NodeCache,
    req: &Request,
    metrics: &crate::metrics::Metrics,
) -> Result<Response, ApplyError> {
    let (id, command) = match rules::decode(&req.command) {
        Ok(a) => (
            command_id(&a.envelope.signer, &a.envelope.command),
            rules::command_name(&a.command),
        ),
        Err(r) => return Ok(refused(&r)),
    };
    if let Some(seq) = reader.command_seq(&id)? {
        let original = reader.entry(seq)?.ok_or_else(|| {
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

    let head = reader.head()?;
    let seq = head.map(|h| h.seq + 1).unwrap_or(0);
    let time_ms = arbor_proto::ledger::entry_time(head.as_ref(), req.time_ms);
    let view = CheckedView::new(reader);
    // Empty: not recorded (genesis, tests): the key is not compared.
    let verified_key = (!req.verified_key.is_empty()).then_some(req.verified_key.as_slice());
    let decision = rules::apply(&view, &req.command, seq, time_ms, req.genesis, verified_key);
    // Hold deadlines of the orders the rules read, for the lease index.
    let mut holds = view.take_holds();
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
        d.code.as_str().into(),
        d.message,
        d.order_id,
        d.order_prev_seq,
    );
    for effect in d.effects {
        put_effect(reader, w, &mut holds, effect)?;
    }
    w.put(CF_COMMANDS, &id, &u64_key(seq));
    w.put(CF_LEDGER, &u64_key(seq), &entry.to_pb().encode_to_vec());
    put_json(w, CF_SM_META, KEY_HEAD, &entry.head())?;
    super::merkle_tree::after_entry(reader, w, seq, &entry.hash)?;
    super::order_map::after_entry(reader, w, map_cache, seq)?;
    tracing::debug!(seq, code = %entry.code, "ledger entry appended");
    metrics.applied(command, entry.accepted, &entry.code);
    Ok(Response::Appended {
        seq,
        outcome: outcome(&entry),
        hash: entry.hash,
    })
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
    #[error(transparent)]
    Map(#[from] super::order_map::MapError),
}

fn refused(r: &Refusal) -> Response {
    tracing::debug!(code = r.code(), reason = %r, "command refused");
    Response::Refused {
        code: r.kind(),
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
    w: &mut PendingWrites,
    cf_name: &'static str,
    key: &[u8],
    value: &impl Serialize,
) -> io::Result<()> {
    put_encoded(w, cf_name, key, serde_json::to_vec(value))
}

/// A state record the rules read on every command (`super::record`).
fn put_record(
    w: &mut PendingWrites,
    cf_name: &'static str,
    key: &[u8],
    value: &impl Serialize,
) -> io::Result<()> {
    put_encoded(w, cf_name, key, record::encode(value))
}

fn put_encoded(
    w: &mut PendingWrites,
    cf_name: &'static str,
    key: &[u8],
    bytes: Result<Vec<u8>, impl std::fmt::Display>,
) -> io::Result<()> {
    let bytes =
        bytes.map_err(|e| io_err(format_args!("encode {cf_name}/{}", display_key(key)), e))?;
    w.put(cf_name, key, &bytes);
    Ok(())
}

/// Writes one effect of a decision, as `MemState::put` does. The one place
/// that maps an effect to records.
fn put_effect(
    reader: &LedgerReader,
    w: &mut PendingWrites,
    holds: &mut [(String, Option<u64>)],
    effect: Effect,
) -> io::Result<()> {
    match effect {
        Effect::PutParty(p) => {
            w.put(CF_PARTY_KEYS, &p.public_key, p.party_id.as_bytes());
            put_record(w, CF_PARTIES, p.party_id.as_bytes(), &p)
        }
        Effect::PutOrder(o) => {
            // The lease index follows the order: its hold deadline before
            // this entry as the rules read it, else (an order they did not
            // read) read again through the overlay, so earlier entries of
            // this batch count.
            let after = o.hold_deadline();
            let before = match holds.iter_mut().find(|(id, _)| *id == o.order_id) {
                // A later write of the same order starts from this one.
                Some((_, h)) => std::mem::replace(h, after),
                None => reader
                    .order(&o.order_id)
                    .map_err(|e| io_err(format_args!("read order {}", o.order_id), e))?
                    .and_then(|old| old.hold_deadline()),
            };
            let (delete, put) = leases::index_writes(before, &o);
            if let Some(k) = delete {
                w.delete(CF_LEASES, &k);
            }
            if let Some(k) = put {
                w.put(CF_LEASES, &k, &[]);
            }
            put_record(w, CF_ORDERS, o.order_id.as_bytes(), &o)
        }
        Effect::PutRef {
            channel,
            external_id,
            order_id,
        } => {
            w.put(
                CF_REFS,
                &ref_key(&channel, &external_id),
                order_id.as_bytes(),
            );
            Ok(())
        }
        Effect::PutProfile(p) => put_record(w, CF_PROFILES, p.node.as_bytes(), &p),
        Effect::PutStats { node, stats } => put_record(w, CF_STATS, node.as_bytes(), &stats),
        Effect::PutConfig(c) => put_json(w, CF_SM_META, KEY_CONFIG, &c),
        Effect::PutMembership(m) => put_json(w, CF_SM_META, KEY_REPLICAS, &m),
        Effect::PutDeliveryCode { hash, order_id } => {
            w.put(CF_REFS, &delivery_code_key(&hash), order_id.as_bytes());
            Ok(())
        }
    }
}

/// Builds the order map if the database predates it (see
/// `order_map::catch_up`); a failure is logged, and checkpoints then say
/// the map is missing.
fn catch_up_order_map(reader: &LedgerReader) {
    if let Err(e) = super::order_map::catch_up(reader) {
        tracing::error!(error = %e, "cannot build the order map from the ledger");
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
        let started = std::time::Instant::now();
        let mut batch_entries = 0u64;
        self.map_cache.begin();
        let mut w = PendingWrites::new(self.db.clone());
        let reader = self.reader.with_overlay(w.overlay());
        let mut replies = Vec::new();
        let mut last = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch_entries += 1;
            let response = self.decide_entry(&reader, &mut w, &entry)?;
            last = Some(entry.log_id);
            if let Some(responder) = responder {
                replies.push((responder, response));
            }
            if w.len() >= MAX_BATCH_WRITES {
                self.write_pending(&mut w, &entry.log_id)?;
                self.publish_head();
                last = None;
                for (responder, response) in replies.drain(..) {
                    responder.send(response);
                }
            }
        }
        if let Some(last) = last {
            self.write_pending(&mut w, &last)?;
            self.publish_head();
        }
        self.metrics
            .apply_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .apply_batch_entries
            .observe(batch_entries as f64);
        // Only now is every entry of the stream written.
        for (responder, response) in replies {
            responder.send(response);
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
        // The map is replaced (and may be rebuilt below): nothing cached holds.
        self.map_cache.clear();
        let installed = snapshot::install(self, meta, snapshot);
        self.map_cache.clear();
        installed?;
        self.metrics.snapshot("installed");
        // The tree is derived from the ledger, not carried (see merkle_tree.rs).
        super::merkle_tree::ensure_built(&self.reader)?;
        catch_up_order_map(&self.reader);
        self.publish_head();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, SnapshotData>>, io::Error> {
        snapshot::current(self)
    }
}
