//! The two stages of [`super::verify_export`] before the signature workers:
//! the chain stage ([`Chain`]: reading, framing, hashing, links, the Merkle
//! frontier) and the replay stage ([`Walk`]: the rules replay, queueing
//! signatures); and the checks after the last entry.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::VerifyingKey;
use prost::Message;

use super::export::{hashes, ExportHeader, ExportReader};
use super::sigs::SigBatch;
use super::summary::{CheckpointSummary, Summary, TrustSummary};
use super::trust::Trust;
use super::{AuditError, Frontier};
use crate::ledger::checkpoint::{verify_note, Checkpoint, NoteKey};
use crate::ledger::merkle::{leaf_hash, verify_consistency, Hash};
use crate::ledger::{Entry, Head};
use crate::pb;
use crate::rules::{self, Applied, Code, MemState, Refusal};

/// Entries the chain stage has checked, handed to the replay stage in this
/// many at a time.
const CHUNK: usize = 256;

/// Checked entries (with their offsets), in order.
pub(crate) type Chunk = Vec<(u64, Entry)>;

/// The chain stage (the calling thread): reading, framing, sequence
/// continuity, each entry's hash and link, the Merkle frontier.
pub(crate) struct Chain<'t> {
    expected: u64,
    total: u64,
    prev: Option<Head>,
    frontier: Frontier,
    accepted: u64,
    rejected: u64,
    head_hash: Hash,
    /// Entries read and checked.
    done: u64,
    /// The pinned trust the verdict rests on, if any.
    trust: Option<&'t Trust>,
    /// The size of the trust's saved checkpoint, and the root the walk
    /// computed at that size (when the range reaches it).
    anchor: Option<(u64, Option<Hash>)>,
}

/// The replay stage (its own thread when the export starts at genesis):
/// the rules replay and the signatures it queues for the workers.
pub(crate) struct Walk<'t> {
    replay: bool,
    state: MemState,
    /// Signer -> (entry that set its key, name, key): refreshed when a rotation moves `key_seq`.
    keys: HashMap<String, (u64, Arc<str>, VerifyingKey)>,
    cluster_id: Option<String>,
    signatures: u64,
    batch_size: usize,
    batch: SigBatch,
    tx: Option<SyncSender<SigBatch>>,
    trust: Option<&'t Trust>,
}

impl<'t> Chain<'t> {
    pub(crate) fn new(h: &ExportHeader, frontier: Frontier, trust: Option<&'t Trust>) -> Chain<'t> {
        let anchor = trust
            .and_then(|t| t.checkpoint.as_ref())
            .map(|c| c.checkpoint.size)
            .map(|size| (size, (size == frontier.size()).then(|| frontier.root())));
        Chain {
            expected: h.from_seq,
            total: h.entry_count,
            prev: None,
            frontier,
            accepted: 0,
            rejected: 0,
            head_hash: [0; 32],
            done: 0,
            trust,
            anchor,
        }
    }

    /// Reads and checks every entry, handing each checked one to `to` (the
    /// replay stage) in chunks, in order. Returns the first failure of these
    /// checks; the entries before it have all been handed on. Stops early
    /// (`Ok`) when a worker found a bad signature or the replay stage ended
    /// (its own failure, which is earlier, is the one to report).
    /// `replayed` is what the progress reports when there is a replay stage.
    pub(crate) fn run<R: Read>(
        &mut self,
        reader: &mut ExportReader<R>,
        to: Option<SyncSender<Chunk>>,
        stop: &AtomicBool,
        progress: &mut Option<&mut dyn FnMut(u64, u64)>,
        replayed: &AtomicU64,
    ) -> Result<(), AuditError> {
        const EVERY: u64 = 8192;
        let mut next_report = EVERY;
        let mut chunk = Vec::with_capacity(if to.is_some() { CHUNK } else { 0 });
        let handed_on = to.is_some();
        let result = loop {
            let (offset, e) = match reader.next_entry() {
                Ok(Some(next)) => next,
                Ok(None) => break Ok(()),
                Err(err) => break Err(err),
            };
            if let Err(what) = self.entry(&e) {
                break Err(AuditError::Entry {
                    seq: self.expected,
                    offset: Some(offset),
                    what,
                });
            }
            self.expected += 1;
            self.done += 1;
            if let Some(tx) = &to {
                chunk.push((offset, e));
                if chunk.len() >= CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    if tx.send(full).is_err() {
                        return Ok(());
                    }
                }
            }
            if self.done == next_report {
                next_report += EVERY;
                if stop.load(Ordering::Relaxed) {
                    // A worker found a bad signature; it is the error to report.
                    return Ok(());
                }
                if let Some(p) = progress.as_mut() {
                    let done = if handed_on {
                        replayed.load(Ordering::Relaxed)
                    } else {
                        self.done
                    };
                    p(done, self.total);
                }
            }
        };
        if let (Some(tx), false) = (&to, chunk.is_empty()) {
            let _ = tx.send(chunk);
        }
        result
    }

    /// All checks of one entry that the chain stage makes.
    fn entry(&mut self, e: &Entry) -> Result<(), String> {
        if e.seq != self.expected {
            return Err(format!(
                "found entry {} where entry {} belongs (an entry is missing, duplicated or out of order)",
                e.seq, self.expected
            ));
        }
        match &self.prev {
            // A range that starts after genesis: its first link cannot be checked.
            None if e.seq > 0 => {
                if e.compute_hash() != e.hash {
                    return Err("hash does not match its contents".into());
                }
            }
            prev => e
                .verify_link(prev.as_ref())
                .map_err(|m| strip_entry(&m, e.seq))?,
        }
        if let (0, Some(t)) = (e.seq, self.trust) {
            if e.hash != t.genesis_hash {
                return Err(format!(
                    "the genesis entry's hash is {}, but the trust pins genesis {}: this is not the ledger the trust is for",
                    hex::encode(e.hash),
                    hex::encode(t.genesis_hash)
                ));
            }
        }
        self.frontier.push(leaf_hash(&e.hash));
        if let Some((size, seen)) = &mut self.anchor {
            if *size == e.seq + 1 {
                *seen = Some(self.frontier.root());
            }
        }
        if e.accepted {
            self.accepted += 1;
        } else {
            self.rejected += 1;
        }
        self.prev = Some(e.head());
        self.head_hash = e.hash;
        Ok(())
    }

    /// Entries read and checked so far.
    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

impl<'t> Walk<'t> {
    pub(crate) fn new(
        replay: bool,
        expected_entries: u64,
        batch_size: usize,
        tx: SyncSender<SigBatch>,
        trust: Option<&'t Trust>,
    ) -> Walk<'t> {
        let mut state = MemState::default();
        // Every appended entry's command id is kept: room for them up
        // front instead of rehashing as the map grows (a header's count is
        // not trusted beyond a bound).
        if replay {
            state
                .commands
                .reserve(expected_entries.min(1 << 20) as usize);
        }
        Walk {
            replay,
            state,
            keys: HashMap::new(),
            cluster_id: None,
            signatures: 0,
            batch_size,
            batch: SigBatch::with_capacity(batch_size),
            tx: Some(tx),
            trust,
        }
    }

    /// Replays the chunks the chain stage hands on, until it closes the
    /// channel, the replay fails (the first failing entry), or a worker
    /// found a bad signature. `replayed` counts the entries replayed.
    pub(crate) fn run(
        &mut self,
        from: Receiver<Chunk>,
        stop: &AtomicBool,
        replayed: &AtomicU64,
    ) -> Result<(), AuditError> {
        for chunk in from {
            for (offset, e) in &chunk {
                self.replay(e).map_err(|what| AuditError::Entry {
                    seq: e.seq,
                    offset: Some(*offset),
                    what,
                })?;
            }
            replayed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Applies the entry's command to the replayed state and compares.
    fn replay(&mut self, e: &Entry) -> Result<(), String> {
        // Decoded once, for the rules and for the signature.
        let a = match rules::decode(&e.command) {
            Ok(a) => a,
            Err(r) => return Err(self.undecodable(e, r)),
        };
        let env = &a.envelope;
        // The signer's key as it stands before this entry: an entry that
        // rotates its own signer's key is signed with the old one.
        let key = if e.seq == 0 {
            None
        } else {
            self.signer_key(&env.signer)?
        };
        match self
            .state
            .append(&a, &e.command, e.time_ms, e.seq == 0, Some(e))
        {
            None => {
                let mine = self.state.entries.last().expect("just appended");
                if mine != e {
                    return Err(mismatch(e, mine));
                }
            }
            Some(Applied::Appended(mine)) => return Err(mismatch(e, &mine)),
            Some(Applied::Duplicate(s)) => {
                return Err(format!(
                    "its command was already applied at entry {s}; a resend is never appended again"
                ))
            }
            Some(Applied::Refused(r)) => return Err(refused(&r)),
        }
        // Only the head matters to the replay; keep memory flat.
        if self.state.entries.len() > 1 {
            self.state.entries.swap_remove(0);
        }
        if e.seq == 0 {
            if let Some(pb::command::Body::Genesis(g)) = &a.command.body {
                if let Some(t) = self.trust.filter(|t| t.cluster_id != g.cluster_id) {
                    return Err(format!(
                        "the genesis names cluster {:?}, but the trust pins cluster {:?}",
                        g.cluster_id, t.cluster_id
                    ));
                }
                self.cluster_id = Some(g.cluster_id.clone());
            }
            return Ok(());
        }
        let (name, key) = key.ok_or_else(|| format!("signer {} is not enrolled", env.signer))?;
        self.signature(e.seq, env, name, key)
    }

    /// The error for a command the rules refuse to decode, with the checks
    /// that come before the rules' in the order they are made: the envelope
    /// must decode, and the signer's enrolled key must be usable.
    fn undecodable(&mut self, e: &Entry, r: Refusal) -> String {
        let env = match pb::SignedCommand::decode(e.command.as_slice()) {
            Ok(env) => env,
            Err(err) => return format!("command envelope does not decode: {err}"),
        };
        if e.seq != 0 {
            if let Err(m) = self.signer_key(&env.signer) {
                return m;
            }
        }
        refused(&r)
    }

    /// The key in force for `signer` in the replayed state (None if not enrolled).
    fn signer_key(&mut self, signer: &str) -> Result<Option<(Arc<str>, VerifyingKey)>, String> {
        let Some(party) = self.state.parties.get(signer) else {
            return Ok(None);
        };
        if let Some((seq, name, key)) = self.keys.get(signer) {
            if *seq == party.key_seq {
                return Ok(Some((name.clone(), *key)));
            }
        }
        let key = <[u8; 32]>::try_from(party.public_key.as_slice())
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .filter(|k| !k.is_weak())
            .ok_or_else(|| format!("the key enrolled for {signer} is not a usable ed25519 key"))?;
        let name: Arc<str> = Arc::from(signer);
        self.keys
            .insert(signer.to_string(), (party.key_seq, name.clone(), key));
        Ok(Some((name, key)))
    }

    /// Queues the command's signature with the key the replay authorized it under.
    fn signature(
        &mut self,
        seq: u64,
        env: &pb::SignedCommand,
        name: Arc<str>,
        key: VerifyingKey,
    ) -> Result<(), String> {
        let sig: &[u8; 64] = env.signature.as_slice().try_into().map_err(|_| {
            format!(
                "command signature is {} bytes, expected 64",
                env.signature.len()
            )
        })?;
        // Every signature names the cluster id the genesis entry fixed.
        let cluster_id = self
            .cluster_id
            .as_deref()
            .ok_or("no genesis entry before it: the cluster id its signature names is unknown")?;
        self.batch
            .push(seq, name, key, sig, cluster_id, &env.command);
        self.signatures += 1;
        if self.batch.len() >= self.batch_size {
            self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) {
        if self.batch.len() == 0 {
            return;
        }
        let b = std::mem::replace(&mut self.batch, SigBatch::with_capacity(self.batch_size));
        if let Some(tx) = &self.tx {
            // A send fails only when every worker is gone, i.e. panicked: join reports it.
            let _ = tx.send(b);
        }
    }

    /// Sends the last batch and closes the channel, so the workers finish.
    pub(crate) fn close(&mut self) {
        self.flush();
        self.tx = None;
    }

    /// The checks after the last entry: Merkle root and checkpoint signatures.
    pub(crate) fn finish(
        self,
        chain: Chain<'_>,
        h: &ExportHeader,
        cp: Checkpoint,
        started: Instant,
    ) -> Result<Summary, AuditError> {
        let size = h.to_seq + 1;
        let root = chain.frontier.root();
        let what_root = if h.from_seq == 0 {
            format!("the Merkle root over entries 0..={}", h.to_seq)
        } else {
            format!(
                "the Merkle root over entries 0..={} (computed from the header's prefix and the exported entries)",
                h.to_seq
            )
        };
        if size == cp.size {
            if root != cp.root {
                return Err(AuditError::Checkpoint(format!(
                    "{what_root} is {}, the checkpoint's root is {}",
                    hex::encode(root),
                    hex::encode(cp.root)
                )));
            }
        } else {
            verify_consistency(size, cp.size, &root, &cp.root, &hashes(&h.consistency)).map_err(
                |e| {
                    AuditError::Checkpoint(format!(
                        "{what_root} is not consistent with the checkpoint of size {}: {e}",
                        cp.size
                    ))
                },
            )?;
        }

        let mut notes = Vec::new();
        let trust = match self.trust {
            Some(t) => Some(self.judge(t, h, &cp, chain.anchor, &mut notes)?),
            None => None,
        };
        let mut summary_cp = CheckpointSummary {
            origin: cp.origin.clone(),
            size: cp.size,
            root: cp.root,
            time_ms: cp.time_ms,
            signed_by: Vec::new(),
            replicas: 0,
            quorum: 0,
            signatures_verified: false,
            note: h.checkpoint.clone(),
        };
        if let Some(t) = &trust {
            summary_cp.signed_by = t.signed_by.clone();
            summary_cp.replicas = t.pinned;
            summary_cp.quorum = t.quorum;
            summary_cp.signatures_verified = !t.signed_by.is_empty();
            if !self.replay {
                notes.push(format!(
                    "the export starts at entry {}, not at genesis: command signatures and the replay of the rules were skipped (the keys and state they need are in earlier entries); the range is tied to the checkpoint, which the pinned keys signed",
                    h.from_seq
                ));
            }
        } else if self.replay {
            let cluster = self.cluster_id.clone().unwrap_or_default();
            let origin = format!("arbor/{cluster}");
            if cp.origin != origin {
                return Err(AuditError::Checkpoint(format!(
                    "origin is {:?}, but the genesis entry names cluster {cluster:?} (origin {origin:?})",
                    cp.origin
                )));
            }
            let keys = self.replica_keys(cp.size);
            if keys.is_empty() {
                return Err(AuditError::Checkpoint(format!(
                    "no replica key is enrolled in entries 0..={}, so no signature on it can count",
                    h.to_seq
                )));
            }
            let quorum = keys.len() / 2 + 1;
            let v = verify_note(&h.checkpoint, &keys, quorum).map_err(AuditError::Checkpoint)?;
            summary_cp.signed_by = v.signed_by;
            summary_cp.replicas = keys.len();
            summary_cp.quorum = quorum;
            summary_cp.signatures_verified = true;
            if size < cp.size {
                notes.push(format!(
                    "the export ends at entry {} before the checkpoint's size {}: replicas enrolled in entries {}..{} are not known, the quorum counts the {} enrolled before",
                    h.to_seq, cp.size, size, cp.size, keys.len()
                ));
            }
        } else {
            notes.push(format!(
                "the export starts at entry {}, not at genesis: command signatures and the replay of the rules were skipped (the keys and state they need are in earlier entries)",
                h.from_seq
            ));
            notes.push(
                "checkpoint signatures were not verified: the replica keys are enrolled before the exported range"
                    .into(),
            );
        }
        Ok(Summary {
            from_seq: h.from_seq,
            to_seq: h.to_seq,
            entries: h.entry_count,
            accepted: chain.accepted,
            rejected: chain.rejected,
            parties: self.state.parties.len(),
            orders: self.state.orders.len(),
            signatures: self.signatures,
            replayed: self.replay,
            cluster_id: self.cluster_id,
            head_hash: chain.head_hash,
            checkpoint: summary_cp,
            complete: self.replay,
            trust,
            notes,
            elapsed: started.elapsed(),
        })
    }

    /// The checkpoint judged against pinned trust (docs/ledger-format.md §10):
    /// its origin; a quorum of pinned keys, or a proven prefix of the saved
    /// checkpoint; and consistency with the saved checkpoint.
    fn judge(
        &self,
        t: &Trust,
        h: &ExportHeader,
        cp: &Checkpoint,
        anchor: Option<(u64, Option<Hash>)>,
        notes: &mut Vec<String>,
    ) -> Result<TrustSummary, AuditError> {
        let bad = AuditError::Checkpoint;
        if cp.origin != t.origin() {
            return Err(bad(format!(
                "origin is {:?}, but the trust pins cluster {:?} (origin {:?}): another ledger",
                cp.origin,
                t.cluster_id,
                t.origin()
            )));
        }
        let mut out = TrustSummary {
            fingerprint: t.fingerprint(),
            signed_by: Vec::new(),
            quorum: t.quorum(),
            pinned: t.replicas.len(),
            anchored: None,
            replicas_at_checkpoint: None,
        };
        let saved = t.checkpoint.as_ref().map(|s| &s.checkpoint);
        // Consistency with the saved checkpoint, when there is one.
        if let Some(s) = saved {
            let proof = hashes(&h.anchor_proof);
            let ok = if s.size == cp.size {
                s.root == cp.root
            } else if let (Some((_, Some(root))), true) = (anchor, s.size < cp.size) {
                // The walk computed the root at the saved size itself.
                root == s.root
            } else if h.anchor_size == s.size {
                let (a, b) = if s.size < cp.size { (s, cp) } else { (cp, s) };
                verify_consistency(a.size, b.size, &a.root, &b.root, &proof).map_err(|e| {
                    bad(format!(
                        "the export's anchor proof does not tie the checkpoint of size {} to the trusted checkpoint of size {}: {e}",
                        cp.size, s.size
                    ))
                })?;
                true
            } else {
                return Err(bad(format!(
                    "nothing proves the checkpoint of size {} consistent with the trusted checkpoint of size {}: the range {}..={} does not reach it and the export carries no anchor proof for it (export with --trust)",
                    cp.size, s.size, h.from_seq, h.to_seq
                )));
            };
            if !ok {
                return Err(bad(format!(
                    "the ledger does not extend the trusted checkpoint of size {} (root {}): at that size this ledger's root is different (a fork or a rewritten history)",
                    s.size,
                    hex::encode(s.root)
                )));
            }
            out.anchored = Some(s.size);
        }
        if saved.is_some_and(|s| cp.size <= s.size) {
            // A prefix of (or the same tree as) one the pinned keys already
            // vouched for: its own signatures are shown when they hold.
            match t.check_checkpoint(&h.checkpoint) {
                Ok(v) => out.signed_by = v.signed_by,
                Err(_) => notes.push(format!(
                    "the checkpoint of size {} is proven a prefix of the trusted checkpoint of size {}; its own signatures are not needed (and do not count under the pinned keys)",
                    cp.size,
                    saved.map_or(0, |s| s.size)
                )),
            }
        } else {
            let v = t.check_checkpoint(&h.checkpoint)?;
            out.signed_by = v.signed_by;
        }
        if self.replay {
            let keys = self.replica_keys(cp.size);
            if !t.pins_exactly(&keys) && h.to_seq + 1 == cp.size {
                notes.push(format!(
                    "the ledger's replica keys at size {} differ from the pinned ones; this checkpoint, signed by the pinned keys, vouches for the change: --save-checkpoint pins them",
                    cp.size
                ));
            }
            if h.to_seq + 1 == cp.size && !keys.is_empty() {
                out.replicas_at_checkpoint = Some(keys);
            }
        }
        Ok(out)
    }

    /// Replica parties enrolled before entry `size`, as note keys.
    fn replica_keys(&self, size: u64) -> Vec<NoteKey> {
        self.state
            .parties
            .values()
            .filter(|p| p.role == pb::Role::Replica as i32 && p.enrolled_seq < size && !p.revoked)
            .filter_map(|p| {
                Some(NoteKey {
                    name: p.party_id.clone(),
                    public_key: p.public_key.as_slice().try_into().ok()?,
                })
            })
            .collect()
    }
}

/// `verify_link`'s messages start with "entry N: "; the caller adds that itself.
fn strip_entry(msg: &str, seq: u64) -> String {
    let prefix = format!("entry {seq}: ");
    msg.strip_prefix(&prefix).unwrap_or(msg).to_string()
}

fn refused(r: &Refusal) -> String {
    format!("the rules refuse its command ({}): {r}", r.kind())
}

fn outcome(e: &Entry) -> String {
    match (e.accepted, e.message.is_empty()) {
        (true, _) => Code::Accepted.to_string(),
        (false, true) => format!("rejected ({})", e.code),
        (false, false) => format!("rejected ({}: {})", e.code, e.message),
    }
}

/// Says how the replayed entry differs from the recorded one.
fn mismatch(recorded: &Entry, replayed: &Entry) -> String {
    let what = if recorded.accepted != replayed.accepted || recorded.code != replayed.code {
        format!(
            "the rules decide {} but the ledger records {}",
            outcome(replayed),
            outcome(recorded)
        )
    } else if recorded.message != replayed.message {
        format!(
            "the rules give the reason {:?} but the ledger records {:?}",
            replayed.message, recorded.message
        )
    } else if recorded.order_id != replayed.order_id {
        format!(
            "the rules link it to order {:?} but the ledger records order {:?}",
            replayed.order_id, recorded.order_id
        )
    } else if recorded.order_prev_seq != replayed.order_prev_seq {
        format!(
            "the order's previous entry is {} by the rules but {} in the ledger",
            replayed.order_prev_seq, recorded.order_prev_seq
        )
    } else if recorded.time_ms != replayed.time_ms {
        format!(
            "time is {} by the rules but {} in the ledger",
            replayed.time_ms, recorded.time_ms
        )
    } else {
        "the replayed entry's hash differs from the recorded one".into()
    };
    format!("replay does not reproduce the entry: {what}")
}
