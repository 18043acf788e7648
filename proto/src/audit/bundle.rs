//! The dispute bundle: one order's complete history up to a map epoch,
//! proven against one checkpoint, checked with no server and no database
//! (docs/ledger-format.md §12).
//!
//! A bundle is the magic line [`BUNDLE_MAGIC`] followed by the canonical
//! protobuf encoding of `pb::DisputeBundle`: the checkpoint (a signed note
//! of size `N` with a `map` line naming the order map root at `M <= N`),
//! the order's map proof at `M`, the order's entries oldest first, and the
//! supporting entries (genesis, the enrolments and rotations of the keys
//! that signed, the replicas' keys, the nodes' profiles), each with its
//! inclusion path in the tree of size `N`.
//!
//! [`verify_bundle`] checks, in order: the checkpoint text; every inclusion
//! path; the genesis and the checkpoint's origin; the checkpoint's
//! signatures (against pinned keys when given, otherwise against the
//! replica keys the bundle itself carries — internal consistency only);
//! the map proof; the order's history from the map's head back to its
//! registration through `order_prev_seq`; every signature of the order's
//! entries; and then the responsibility rules on the facts those entries
//! record, which must reproduce every recorded ruling.

use std::collections::BTreeMap;

use prost::Message;

use super::trust::Trust;
use crate::ledger::checkpoint::{verify_note, Checkpoint, MapCommitment, NoteKey};
use crate::ledger::map::{self, MapProof, OrderHead};
use crate::ledger::merkle::{self, Hash};
use crate::ledger::{verify_command, Entry};
use crate::pb;
use crate::pb::command::Body;
use crate::rules::custody::{self, OrderEntry};
use crate::rules::{
    rule_on, Code, Dispute, Event, EventKind, Incident, Order, OrderStatus, Requirements, Ruling,
};

/// The first 16 bytes of a bundle file.
pub const BUNDLE_MAGIC: &[u8; 16] = b"arbor-bundle v1\n";

/// The largest bundle file read (a bundle is a few KB).
pub const MAX_BUNDLE_BYTES: usize = 16 << 20;

/// Why a bundle does not verify; the message names the check and the entry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BundleError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, BundleError> {
    Err(BundleError(m.into()))
}

/// The file bytes of `b`.
pub fn encode_bundle(b: &pb::DisputeBundle) -> Vec<u8> {
    let mut out = BUNDLE_MAGIC.to_vec();
    b.encode(&mut out).expect("a Vec grows");
    out
}

/// Reads a bundle file: the magic, then exactly one canonical encoding.
pub fn decode_bundle(bytes: &[u8]) -> Result<pb::DisputeBundle, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return err(format!(
            "the file is {} bytes, more than a bundle's {MAX_BUNDLE_BYTES}",
            bytes.len()
        ));
    }
    let Some(body) = bytes.strip_prefix(BUNDLE_MAGIC.as_slice()) else {
        return err("not a dispute bundle (the file does not start with \"arbor-bundle v1\")");
    };
    let b = pb::DisputeBundle::decode(body)
        .map_err(|e| BundleError(format!("the bundle does not decode: {e}")))?;
    if b.encode_to_vec() != body {
        return err("the bundle is not in its canonical protobuf encoding");
    }
    if b.format_version != 1 {
        return err(format!(
            "bundle format version {} is not 1",
            b.format_version
        ));
    }
    Ok(b)
}

/// An entry and its inclusion path (leaf to root), spelt out.
pub type PathedEntry = (pb::LedgerEntry, Vec<Vec<u8>>);

/// A bundle with its inclusion paths spelt out: what [`pack`] stores with
/// the distinct path hashes given once, and [`unpack`] reads back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub order_id: String,
    pub checkpoint: String,
    pub map_proof: Option<pb::OrderMapProof>,
    /// (entry, inclusion path leaf to root).
    pub entries: Vec<PathedEntry>,
    pub supporting: Vec<PathedEntry>,
}

/// The bundle message of `u`: every path hash stored once, in order of
/// first use.
pub fn pack(u: &Unpacked) -> pb::DisputeBundle {
    let mut table: Vec<Vec<u8>> = Vec::new();
    let mut index: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    let mut proven = |list: &[PathedEntry]| -> Vec<pb::ProvenEntry> {
        list.iter()
            .map(|(e, path)| pb::ProvenEntry {
                entry: Some(e.clone()),
                path: path
                    .iter()
                    .map(|h| {
                        *index.entry(h.clone()).or_insert_with(|| {
                            table.push(h.clone());
                            (table.len() - 1) as u32
                        })
                    })
                    .collect(),
            })
            .collect()
    };
    let entries = proven(&u.entries);
    let supporting = proven(&u.supporting);
    pb::DisputeBundle {
        format_version: 1,
        order_id: u.order_id.clone(),
        checkpoint: u.checkpoint.clone(),
        map_proof: u.map_proof.clone(),
        entries,
        supporting,
        path_hashes: table,
    }
}

/// Reads the paths back; refuses a table that is not exactly the distinct
/// hashes in order of first use (so a bundle has one encoding).
pub fn unpack(b: &pb::DisputeBundle) -> Result<Unpacked, BundleError> {
    let mut next = 0usize;
    let mut seen = std::collections::BTreeSet::new();
    let mut read = |list: &[pb::ProvenEntry]| -> Result<Vec<PathedEntry>, BundleError> {
        let mut out = Vec::with_capacity(list.len());
        for p in list {
            let e = p
                .entry
                .clone()
                .ok_or_else(|| BundleError("a proven entry holds no entry".into()))?;
            let mut path = Vec::with_capacity(p.path.len());
            for &i in &p.path {
                let i = i as usize;
                let Some(h) = b.path_hashes.get(i) else {
                    return err(format!(
                        "entry {}: path hash {i} is not in the bundle's {} path hashes",
                        e.seq,
                        b.path_hashes.len()
                    ));
                };
                if i == next {
                    if h.len() != 32 || !seen.insert(h.clone()) {
                        return err(format!("path hash {i} is not a distinct 32-byte hash"));
                    }
                    next += 1;
                } else if i > next {
                    return err(format!(
                        "entry {}: path hash {i} is used before {next} (not in order of first use)",
                        e.seq
                    ));
                }
                path.push(h.clone());
            }
            out.push((e, path));
        }
        Ok(out)
    };
    let entries = read(&b.entries)?;
    let supporting = read(&b.supporting)?;
    if next != b.path_hashes.len() {
        return err(format!(
            "the bundle has {} path hashes, its paths use {next}",
            b.path_hashes.len()
        ));
    }
    Ok(Unpacked {
        order_id: b.order_id.clone(),
        checkpoint: b.checkpoint.clone(),
        map_proof: b.map_proof.clone(),
        entries,
        supporting,
    })
}

/// The keys a bundle's checkpoint is judged by.
pub enum CheckpointKeys<'a> {
    /// The trust the auditor pinned, out of band (`super::trust`): its
    /// cluster id and genesis hash must be the bundle's, and a quorum of
    /// its replica keys must have signed the checkpoint.
    Pinned(&'a Trust),
    /// The replica keys the bundle carries (internal consistency only).
    Carried,
}

/// One dispute on the order and the ruling the rules give for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisputeRuling {
    /// The entry that opened it.
    pub dispute_seq: u64,
    pub kind: String,
    pub incident_ms: u64,
    pub opened_by: String,
    pub ruling: Ruling,
    /// The `ResolveDispute` entry that recorded the same ruling, if any.
    pub resolved_seq: Option<u64>,
}

/// One entry of the order's history, as verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLine {
    pub seq: u64,
    pub time_ms: u64,
    pub signer: String,
    /// The command's name (`ClaimOrder`, ...).
    pub command: String,
    pub accepted: bool,
    pub code: String,
}

/// What a bundle proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleReport {
    pub order_id: String,
    pub cluster_id: String,
    /// The checkpoint's tree size `N` and the map size `M`.
    pub size: u64,
    pub map_size: u64,
    /// Whose signatures on the checkpoint verified.
    pub signed_by: Vec<String>,
    /// True when they were checked against pinned keys.
    pub pinned: bool,
    /// The order's entries, oldest first: all of them below `map_size`.
    pub history: Vec<HistoryLine>,
    pub disputes: Vec<DisputeRuling>,
    /// What the bundle leaves unproven.
    pub notes: Vec<String>,
}

/// An entry and its proof of inclusion in the tree of `size` with `root`.
fn proven((pe, path): &PathedEntry, size: u64, root: &Hash) -> Result<Entry, BundleError> {
    let e = Entry::from_pb(pe).map_err(|m| BundleError(format!("entry {}: {m}", pe.seq)))?;
    if e.compute_hash() != e.hash {
        return err(format!(
            "entry {}: its hash does not match its contents",
            e.seq
        ));
    }
    let path: Vec<Hash> = path
        .iter()
        .map(|h| {
            h.as_slice().try_into().map_err(|_| {
                BundleError(format!(
                    "entry {}: an inclusion path hash is {} bytes",
                    e.seq,
                    h.len()
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    merkle::verify_inclusion(&merkle::leaf_hash(&e.hash), e.seq, size, &path, root).map_err(
        |m| {
            BundleError(format!(
                "entry {}: not in the checkpoint's tree of size {size}: {m}",
                e.seq
            ))
        },
    )?;
    Ok(e)
}

/// An entry's command, decoded.
struct Decoded {
    entry: Entry,
    signer: String,
    env: pb::SignedCommand,
    body: Option<Body>,
}

fn decode(e: Entry) -> Result<Decoded, BundleError> {
    let env = pb::SignedCommand::decode(e.command.as_slice())
        .map_err(|m| BundleError(format!("entry {}: command does not decode: {m}", e.seq)))?;
    let cmd = pb::Command::decode(env.command.as_slice())
        .map_err(|m| BundleError(format!("entry {}: command does not decode: {m}", e.seq)))?;
    Ok(Decoded {
        signer: env.signer.clone(),
        body: cmd.body,
        env,
        entry: e,
    })
}

fn command_name(b: &Option<Body>) -> String {
    match b {
        None => "none".into(),
        Some(b) => {
            let s = format!("{b:?}");
            s.split('(').next().unwrap_or("").to_string()
        }
    }
}

/// What the supporting entries say about keys and profiles, by party.
#[derive(Default)]
struct Support {
    cluster_id: String,
    /// party -> (seq, key) of each key it was given, oldest first.
    keys: BTreeMap<String, Vec<(u64, Vec<u8>)>>,
    /// party -> seqs of the revocations of its key.
    revoked: BTreeMap<String, Vec<u64>>,
    replicas: Vec<String>,
    /// node -> (seq, dispatch time) of each profile it published.
    profiles: BTreeMap<String, Vec<(u64, u64)>>,
}

impl Support {
    /// The key `party` held just before entry `seq`, and the entry that set it.
    fn key_before(&self, party: &str, seq: u64) -> Option<&(u64, Vec<u8>)> {
        self.keys.get(party)?.iter().rev().find(|(s, _)| *s < seq)
    }

    /// The dispatch time of the newest profile of `node` the bundle carries
    /// from before entry `seq`.
    fn dispatch_before(&self, node: &str, seq: u64) -> Option<u64> {
        let all = self.profiles.get(node)?;
        all.iter().rev().find(|(s, _)| *s < seq).map(|(_, d)| *d)
    }
}

fn support(entries: &[Decoded]) -> Result<Support, BundleError> {
    let mut s = Support::default();
    let Some(first) = entries.first().filter(|d| d.entry.seq == 0) else {
        return err("the bundle carries no genesis entry (entry 0)");
    };
    let Some(Body::Genesis(g)) = &first.body else {
        return err("entry 0 is not a genesis");
    };
    s.cluster_id = g.cluster_id.clone();
    for o in &g.operators {
        s.keys
            .entry(o.party_id.clone())
            .or_default()
            .push((0, o.public_key.clone()));
    }
    for d in &entries[1..] {
        if !d.entry.accepted {
            continue;
        }
        let seq = d.entry.seq;
        match &d.body {
            Some(Body::EnrollParty(p)) => {
                s.keys
                    .entry(p.party_id.clone())
                    .or_default()
                    .push((seq, p.public_key.clone()));
                if p.role == pb::Role::Replica as i32 && !s.replicas.contains(&p.party_id) {
                    s.replicas.push(p.party_id.clone());
                }
            }
            Some(Body::RotateKey(r)) => s
                .keys
                .entry(r.party_id.clone())
                .or_default()
                .push((seq, r.public_key.clone())),
            Some(Body::RevokeKey(r)) => s.revoked.entry(r.party_id.clone()).or_default().push(seq),
            Some(Body::PublishProfile(p)) => s
                .profiles
                .entry(d.signer.clone())
                .or_default()
                .push((seq, p.dispatch_time_ms)),
            _ => {}
        }
    }
    Ok(s)
}

/// Verifies a bundle; see the module documentation for the steps.
pub fn verify_bundle(
    b: &pb::DisputeBundle,
    keys: CheckpointKeys<'_>,
) -> Result<BundleReport, BundleError> {
    verify_unpacked(&unpack(b)?, keys)
}

/// [`verify_bundle`] of a bundle already unpacked.
pub fn verify_unpacked(
    b: &Unpacked,
    keys: CheckpointKeys<'_>,
) -> Result<BundleReport, BundleError> {
    // 1. The checkpoint text and its map line.
    let split = b
        .checkpoint
        .find("\n\n")
        .ok_or_else(|| BundleError("checkpoint: the note has no blank line".into()))?;
    let cp = Checkpoint::parse_body(&b.checkpoint[..split + 1])
        .map_err(|m| BundleError(format!("checkpoint: {m}")))?;
    let Some(MapCommitment {
        size: map_size,
        root: map_root,
    }) = cp.map
    else {
        return err("checkpoint: it has no map line, so it commits to no order map");
    };
    if map_size != map::epoch_at(cp.size) || map_size == 0 {
        return err(format!(
            "checkpoint: its map size {map_size} is not the newest map epoch at or below its size {}",
            cp.size
        ));
    }

    // 2. Every inclusion path; supporting entries by increasing seq.
    let mut supporting = Vec::with_capacity(b.supporting.len());
    for p in &b.supporting {
        let e = proven(p, cp.size, &cp.root)?;
        if let Some(prev) = supporting.last().map(|d: &Decoded| d.entry.seq) {
            if e.seq <= prev {
                return err(format!(
                    "supporting entry {} is out of order (after {prev})",
                    e.seq
                ));
            }
        }
        supporting.push(decode(e)?);
    }
    let mut history = Vec::with_capacity(b.entries.len());
    for p in &b.entries {
        history.push(decode(proven(p, cp.size, &cp.root)?)?);
    }

    // 3. Genesis, keys and the origin.
    let sup = support(&supporting)?;
    let origin = format!("arbor/{}", sup.cluster_id);
    if cp.origin != origin {
        return err(format!(
            "checkpoint: its origin {:?} is not the genesis's {origin:?}",
            cp.origin
        ));
    }

    // 4. The checkpoint's signatures.
    let (verified, pinned) = match keys {
        CheckpointKeys::Pinned(trust) => {
            if trust.cluster_id != sup.cluster_id || trust.genesis_hash != supporting[0].entry.hash
            {
                return err(format!(
                    "entry 0: the bundle's genesis (cluster {:?}, hash {}) is not the one the trust pins (cluster {:?}, hash {}): another ledger",
                    sup.cluster_id,
                    hex::encode(supporting[0].entry.hash),
                    trust.cluster_id,
                    hex::encode(trust.genesis_hash)
                ));
            }
            let t = trust
                .check_checkpoint(&b.checkpoint)
                .map_err(|e| BundleError(e.to_string()))?;
            (
                crate::ledger::checkpoint::VerifiedNote {
                    checkpoint: t.checkpoint,
                    signed_by: t.signed_by,
                },
                true,
            )
        }
        CheckpointKeys::Carried => {
            let mut carried = Vec::new();
            for name in &sup.replicas {
                let Some((k_seq, key)) = sup.key_before(name, cp.size) else {
                    continue;
                };
                let revoked = sup
                    .revoked
                    .get(name)
                    .is_some_and(|r| r.iter().any(|s| s > k_seq && *s < cp.size));
                if let (false, Ok(public_key)) = (revoked, <[u8; 32]>::try_from(key.as_slice())) {
                    carried.push(NoteKey {
                        name: name.clone(),
                        public_key,
                    });
                }
            }
            if carried.is_empty() {
                return err("checkpoint: the bundle carries no replica key enrolment");
            }
            let quorum = carried.len() / 2 + 1;
            (
                verify_note(&b.checkpoint, &carried, quorum).map_err(|m| {
                    BundleError(format!("checkpoint: {m} (keys the bundle carries)"))
                })?,
                false,
            )
        }
    };

    // 5. The order's head in the map.
    let proof = MapProof::from_pb(
        b.map_proof
            .as_ref()
            .ok_or_else(|| BundleError("the bundle holds no map proof".into()))?,
    )
    .map_err(|m| BundleError(format!("map proof: {m}")))?;
    let head: OrderHead = map::verify(&proof, &map::order_key(&b.order_id), &map_root)
        .map_err(|m| BundleError(format!("map proof: {m} (root at size {map_size})")))?
        .ok_or_else(|| {
            BundleError(format!(
                "map proof: order {} is not in the order map at size {map_size}",
                b.order_id
            ))
        })?;

    // 6. The history: head back to registration, nothing else.
    let Some(last) = history.last() else {
        return err("the bundle holds none of the order's entries");
    };
    for d in &history {
        if d.entry.order_id != b.order_id {
            return err(format!(
                "entry {}: it belongs to order {:?}, not {}",
                d.entry.seq, d.entry.order_id, b.order_id
            ));
        }
        if d.entry.seq >= map_size {
            return err(format!(
                "entry {}: it is at or after the map size {map_size}, which the map proof does not cover",
                d.entry.seq
            ));
        }
    }
    if (last.entry.seq, last.entry.hash) != (head.seq, head.hash) {
        return err(if head.seq > last.entry.seq {
            format!(
                "the order map names entry {} as order {}'s latest at size {map_size}, but the bundle ends at entry {}: entries are missing",
                head.seq, b.order_id, last.entry.seq
            )
        } else {
            format!(
                "the bundle's last entry {} is not order {}'s latest at size {map_size}, which the order map names as entry {}",
                last.entry.seq, b.order_id, head.seq
            )
        });
    }
    for w in history.windows(2) {
        let (older, newer) = (&w[0].entry, &w[1].entry);
        if newer.order_prev_seq != older.seq {
            return err(if newer.order_prev_seq > older.seq {
                format!(
                    "entry {}: its previous entry of the order is {}, which is missing from the bundle",
                    newer.seq, newer.order_prev_seq
                )
            } else {
                format!(
                    "entry {}: it is not in order {}'s history (entry {} links back to {})",
                    older.seq, b.order_id, newer.seq, newer.order_prev_seq
                )
            });
        }
    }
    let first = &history[0];
    if first.entry.order_prev_seq != 0 {
        return err(format!(
            "entry {}: it links back to entry {}, which is missing from the bundle: the history does not reach the registration",
            first.entry.seq, first.entry.order_prev_seq
        ));
    }
    match &first.body {
        Some(Body::RegisterOrder(r)) if first.entry.accepted && r.order_id == b.order_id => {}
        _ => {
            return err(format!(
                "entry {}: the first entry is not order {}'s accepted registration",
                first.entry.seq, b.order_id
            ))
        }
    }

    // 7. Every signature of the history, by the key in force before it.
    for d in &history {
        let Some((k_seq, key)) = sup.key_before(&d.signer, d.entry.seq) else {
            return err(format!(
                "entry {}: the bundle carries no key of its signer {} before it",
                d.entry.seq, d.signer
            ));
        };
        verify_command(&d.env, &sup.cluster_id, key).map_err(|m| {
            BundleError(format!(
                "entry {}: the signature of {} does not verify with its key of entry {k_seq}: {m}",
                d.entry.seq, d.signer
            ))
        })?;
    }

    // 8. The rules on the facts the history records.
    let mut notes = Vec::new();
    let events = order_events(&history, &sup, &mut notes);
    let disputes = rulings(&b.order_id, &history, &events)?;
    if !pinned {
        notes.push(
            "internal consistency only: the checkpoint was checked against replica keys the bundle itself carries, not against pinned trust".into(),
        );
    }
    if cp.size > map_size {
        notes.push(format!(
            "entries {map_size}..{} of the checkpoint are after the map size: an entry of the order among them is not covered",
            cp.size - 1
        ));
    }
    Ok(BundleReport {
        order_id: b.order_id.clone(),
        cluster_id: sup.cluster_id.clone(),
        size: cp.size,
        map_size,
        signed_by: verified.signed_by,
        pinned,
        history: history
            .iter()
            .map(|d| HistoryLine {
                seq: d.entry.seq,
                time_ms: d.entry.time_ms,
                signer: d.signer.clone(),
                command: command_name(&d.body),
                accepted: d.entry.accepted,
                code: d.entry.code.clone(),
            })
            .collect(),
        disputes,
        notes,
    })
}

/// The order's facts as the rules keep them (`Order::events`): the custody
/// facts of accepted entries (with the dispatch time of the profile in
/// force at each lease start, from the supporting entries) and the
/// evidence of rejected ones (docs/ledger-format.md §4, step 5).
fn order_events(history: &[Decoded], sup: &Support, notes: &mut Vec<String>) -> Vec<Event> {
    let views: Vec<OrderEntry<'_>> = history
        .iter()
        .map(|d| OrderEntry {
            seq: d.entry.seq,
            time_ms: d.entry.time_ms,
            signer: &d.signer,
            accepted: d.entry.accepted,
            message: &d.entry.message,
            body: d.body.as_ref(),
        })
        .collect();
    let mut events = custody::facts(&views);
    let mut lease_starts = 0;
    for e in &mut events {
        let (node, dt) = match &mut e.kind {
            EventKind::Claimed {
                node,
                dispatch_time_ms,
                ..
            } => (node.clone(), dispatch_time_ms),
            EventKind::HandedOff {
                to,
                dispatch_time_ms,
                ..
            } => (to.clone(), dispatch_time_ms),
            _ => continue,
        };
        lease_starts += 1;
        match sup.dispatch_before(&node, e.seq) {
            Some(d) => *dt = d,
            None => notes.push(format!(
                "entry {}: the bundle carries no profile of {node} before it (dispatch time taken as 0)",
                e.seq
            )),
        }
    }
    if lease_starts > 0 {
        notes.push(
            "a lease's dispatch time is that of the newest profile the bundle carries from before the lease started; that the node published none in between is not proven".into(),
        );
    }
    for d in history.iter().filter(|d| !d.entry.accepted) {
        let party = d.signer.clone();
        let kind = match Code::parse(&d.entry.code) {
            Some(Code::PriceMismatch | Code::StalePriceVersion) => EventKind::WrongPrice { party },
            Some(Code::NotOwner) if matches!(d.body, Some(Body::ReportMilestone(_))) => {
                EventKind::MilestoneWithoutOwnership { party }
            }
            _ => continue,
        };
        events.push(Event {
            seq: d.entry.seq,
            time_ms: d.entry.time_ms,
            kind,
        });
    }
    // Stable: a lapse and the fact of the same entry keep their order.
    events.sort_by_key(|e| e.seq);
    events
}

/// The order as far as the responsibility rules look at it.
fn order_for_rules(order_id: &str, events: Vec<Event>) -> Order {
    Order {
        sla: None,
        order_id: order_id.to_string(),
        external_refs: Vec::new(),
        lines: Vec::new(),
        currency: String::new(),
        total: 0,
        destination_region: String::new(),
        requirements: Requirements::default(),
        promised_delivery_ms: 0,
        price_version: 0,
        status: OrderStatus::Open,
        owner: None,
        custodian: None,
        registered_by: String::new(),
        registered_seq: 0,
        claimed_seq: 0,
        lease: None,
        offer: None,
        fence: None,
        carrier: String::new(),
        tracking_id: String::new(),
        proof_of_delivery: String::new(),
        last_lapsed_owner: String::new(),
        return_node: String::new(),
        refund: 0,
        exceptions: Vec::new(),
        events,
        disputes: Vec::new(),
        sourcing: None,
        last_seq: 0,
        tender: None,
        delivery_code_sha256: Vec::new(),
        delivery_code_used_seq: 0,
        delivery_grade: None,
    }
}

/// Each dispute opened on the order, ruled on by the rules with the facts
/// recorded before its resolution (or all of them while unresolved); a
/// recorded ruling must be the computed one.
fn rulings(
    order_id: &str,
    history: &[Decoded],
    events: &[Event],
) -> Result<Vec<DisputeRuling>, BundleError> {
    let mut out = Vec::new();
    for d in history.iter().filter(|d| d.entry.accepted) {
        let Some(Body::OpenDispute(o)) = &d.body else {
            continue;
        };
        let kind = Incident::from_pb(o.kind).map_or("unknown", |k| k.as_str());
        let dispute = Dispute {
            seq: d.entry.seq,
            kind: kind.into(),
            incident_ms: o.incident_ms,
            known_good_ms: o.known_good_ms,
            opened_by: d.signer.clone(),
            ruling: None,
        };
        let resolution = history.iter().find(|r| {
            r.entry.accepted
                && matches!(&r.body, Some(Body::ResolveDispute(x)) if x.dispute_seq == d.entry.seq)
        });
        let before = resolution.map_or(u64::MAX, |r| r.entry.seq);
        let facts: Vec<Event> = events.iter().filter(|e| e.seq < before).cloned().collect();
        let ruling = rule_on(&order_for_rules(order_id, facts), &dispute);
        if let Some(r) = resolution {
            let Some(Body::ResolveDispute(x)) = &r.body else {
                unreachable!("matched above")
            };
            if x.liable != ruling.liable
                || x.rule != ruling.rule.as_str()
                || x.evidence != ruling.evidence
            {
                return err(format!(
                    "entry {}: the recorded ruling ({} under {} on {:?}) is not what the rules compute from the bundle ({} under {} on {:?})",
                    r.entry.seq,
                    x.liable,
                    x.rule,
                    x.evidence,
                    ruling.liable,
                    ruling.rule.as_str(),
                    ruling.evidence
                ));
            }
        }
        out.push(DisputeRuling {
            dispute_seq: d.entry.seq,
            kind: dispute.kind,
            incident_ms: o.incident_ms,
            opened_by: d.signer.clone(),
            ruling,
            resolved_seq: resolution.map(|r| r.entry.seq),
        });
    }
    Ok(out)
}
