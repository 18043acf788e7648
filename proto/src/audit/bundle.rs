//! The dispute bundle: one order's complete history up to a map epoch,
//! proven against one checkpoint, checked with no server and no database
//! (docs/ledger-format.md §12).
//!
//! A bundle is the magic line [`BUNDLE_MAGIC`] followed by the canonical
//! protobuf encoding of `pb::DisputeBundle`: the checkpoint (a signed note
//! of size `N` with a `map2` line naming the order map root at `M <= N`),
//! the order's map proof at `M`, the order's entries oldest first, the
//! complete key and profile history below `M` of every party the history
//! needs (each with its own map proof: the map holds a chain over every
//! party's party entries), and the supporting entries (genesis; replica
//! key changes at or after `M`), each with its inclusion path in the tree
//! of size `N`.
//!
//! [`verify_bundle`] checks, in order: the checkpoint text; every inclusion
//! path; the genesis and the checkpoint's origin; each party's history
//! against its chain in the map (nothing left out, nothing foreign); the
//! checkpoint's signatures (against pinned keys when given, otherwise
//! against the replica keys the bundle itself carries — internal
//! consistency only); the order's map proof; the order's history from the
//! map's head back to its registration through `order_prev_seq`; every
//! signature of the order's entries, by the key in force at that entry;
//! and then the responsibility rules on the facts those entries record
//! (each lease's dispatch time from the profile proven in force), which
//! must reproduce every recorded ruling.

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
pub const BUNDLE_MAGIC: &[u8; 16] = b"arbor-bundle v2\n";

/// The first 16 bytes of a version 1 bundle (no party histories), refused.
pub const BUNDLE_MAGIC_V1: &[u8; 16] = b"arbor-bundle v1\n";

/// The bundle format this code writes and reads.
pub const BUNDLE_FORMAT_VERSION: u32 = 2;

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
    if bytes.starts_with(BUNDLE_MAGIC_V1) {
        return err("a version 1 dispute bundle: it proves no party's key or profile history; make the bundle again with this version");
    }
    let Some(body) = bytes.strip_prefix(BUNDLE_MAGIC.as_slice()) else {
        return err("not a dispute bundle (the file does not start with \"arbor-bundle v2\")");
    };
    let b = pb::DisputeBundle::decode(body)
        .map_err(|e| BundleError(format!("the bundle does not decode: {e}")))?;
    if b.encode_to_vec() != body {
        return err("the bundle is not in its canonical protobuf encoding");
    }
    if b.format_version != BUNDLE_FORMAT_VERSION {
        return err(format!(
            "bundle format version {} is not {BUNDLE_FORMAT_VERSION}",
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
    /// Each needed party's key and profile history below the map size.
    pub parties: Vec<PartyUnpacked>,
}

/// One party's history as [`Unpacked`] holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartyUnpacked {
    pub party_id: String,
    pub map_proof: Option<pb::OrderMapProof>,
    /// Its party entries other than entry 0, oldest first, with paths.
    pub entries: Vec<PathedEntry>,
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
    let parties = u
        .parties
        .iter()
        .map(|p| pb::PartyHistory {
            party_id: p.party_id.clone(),
            map_proof: p.map_proof.clone(),
            entries: proven(&p.entries),
        })
        .collect();
    pb::DisputeBundle {
        format_version: BUNDLE_FORMAT_VERSION,
        order_id: u.order_id.clone(),
        checkpoint: u.checkpoint.clone(),
        map_proof: u.map_proof.clone(),
        entries,
        supporting,
        path_hashes: table,
        parties,
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
    let mut parties = Vec::with_capacity(b.parties.len());
    for p in &b.parties {
        parties.push(PartyUnpacked {
            party_id: p.party_id.clone(),
            map_proof: p.map_proof.clone(),
            entries: read(&p.entries)?,
        });
    }
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
        parties,
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

/// A change of a party's key: `(seq, Some(key))` when entry `seq` gave it
/// `key`, `(seq, None)` when entry `seq` revoked its key.
type KeyEvent = (u64, Option<Vec<u8>>);

/// What the proven party histories say about keys and profiles, by party.
#[derive(Default)]
struct Support {
    cluster_id: String,
    /// The genesis operators and their keys.
    operators: BTreeMap<String, Vec<u8>>,
    /// party -> its key changes, oldest first.
    keys: BTreeMap<String, Vec<KeyEvent>>,
    /// The parties enrolled with `ROLE_REPLICA`.
    replicas: Vec<String>,
    /// node -> (seq, dispatch time) of each profile it published.
    profiles: BTreeMap<String, Vec<(u64, u64)>>,
    /// The parties whose complete history below the map size is proven.
    proven: std::collections::BTreeSet<String>,
}

impl Support {
    /// The last key change of `party` before entry `seq`.
    fn key_before(&self, party: &str, seq: u64) -> Option<&KeyEvent> {
        self.keys.get(party)?.iter().rev().find(|(s, _)| *s < seq)
    }

    /// The dispatch time of the newest profile of `node` from before entry
    /// `seq` (complete below the map size: the node's history is proven).
    fn dispatch_before(&self, node: &str, seq: u64) -> Option<u64> {
        let all = self.profiles.get(node)?;
        all.iter().rev().find(|(s, _)| *s < seq).map(|(_, d)| *d)
    }

    /// Records what party entry `d` of `party` changes.
    fn record(&mut self, party: &str, d: &Decoded) {
        let seq = d.entry.seq;
        match &d.body {
            Some(Body::Genesis(_)) => {
                if let Some(k) = self.operators.get(party) {
                    let k = k.clone();
                    self.keys
                        .entry(party.into())
                        .or_default()
                        .push((0, Some(k)));
                }
            }
            Some(Body::EnrollParty(p)) => {
                self.keys
                    .entry(party.into())
                    .or_default()
                    .push((seq, Some(p.public_key.clone())));
                if p.role == pb::Role::Replica as i32 && !self.replicas.iter().any(|r| r == party) {
                    self.replicas.push(party.into());
                }
            }
            Some(Body::RotateKey(r)) => self
                .keys
                .entry(party.into())
                .or_default()
                .push((seq, Some(r.public_key.clone()))),
            Some(Body::RevokeKey(_)) => {
                self.keys.entry(party.into()).or_default().push((seq, None))
            }
            Some(Body::PublishProfile(p)) => self
                .profiles
                .entry(party.into())
                .or_default()
                .push((seq, p.dispatch_time_ms)),
            _ => {}
        }
    }
}

/// Whom entry `d` is a party entry of, for messages.
fn party_entry_of(d: &Decoded) -> String {
    let of = map::party_entry_parties(d.entry.accepted, &d.entry.command);
    if of.is_empty() {
        format!("it is no party entry ({})", command_name(&d.body))
    } else {
        format!("it is a party entry of {}", of.join(", "))
    }
}

/// Checks one party's history against the map (docs/ledger-format.md §12,
/// step 4) and records it.
fn check_party(
    sup: &mut Support,
    genesis: &Decoded,
    party: &PartyUnpacked,
    history: &[Decoded],
    map_size: u64,
    map_root: &Hash,
) -> Result<(), BundleError> {
    let name = &party.party_id;
    let proof = MapProof::from_pb(party.map_proof.as_ref().ok_or_else(|| {
        BundleError(format!(
            "party {name}: the bundle holds no map proof for it"
        ))
    })?)
    .map_err(|m| BundleError(format!("party {name}: map proof: {m}")))?;
    let head = map::verify(&proof, &map::party_key(name), map_root).map_err(|m| {
        BundleError(format!(
            "party {name}: {m} (root at size {map_size}): its history is not the map's"
        ))
    })?;
    let mut chain: Option<map::PartyChain> = None;
    let mut entries: Vec<&Decoded> = Vec::with_capacity(history.len() + 1);
    if sup.operators.contains_key(name) {
        entries.push(genesis);
    }
    let mut last = 0;
    for d in history {
        let seq = d.entry.seq;
        if seq == 0 {
            return err(format!(
                "party {name}: entry 0 is in its history (the genesis counts from the bundle's supporting entries)"
            ));
        }
        if seq >= map_size {
            return err(format!(
                "party {name}: entry {seq} is at or after the map size {map_size}"
            ));
        }
        if seq <= last {
            return err(format!(
                "party {name}: entry {seq} is out of order (after {last})"
            ));
        }
        last = seq;
        if !map::party_entry_parties(d.entry.accepted, &d.entry.command)
            .iter()
            .any(|p| p == name)
        {
            return err(format!(
                "entry {seq}: it is not a party entry of {name} ({})",
                party_entry_of(d)
            ));
        }
        entries.push(d);
    }
    for d in &entries {
        chain = Some(map::OrderHead::then(
            chain.as_ref(),
            d.entry.seq,
            &d.entry.hash,
        ));
    }
    match (head, chain) {
        (None, None) => {}
        (None, Some(_)) => {
            return err(format!(
                "party {name}: the order map holds no party entry of it at size {map_size}, but the bundle carries {}",
                entries.len()
            ))
        }
        (Some(h), None) => {
            return err(format!(
                "party {name}: the order map names entry {} as its latest party entry at size {map_size}, but the bundle carries none: entries are missing",
                h.seq
            ))
        }
        (Some(h), Some(c)) => {
            if c.seq < h.seq {
                return err(format!(
                    "party {name}: the order map names entry {} as its latest party entry at size {map_size}, but the bundle's history of it ends at entry {}: entries are missing",
                    h.seq, c.seq
                ));
            }
            if c.seq > h.seq {
                return err(format!(
                    "party {name}: the bundle's history of it goes on to entry {}, past entry {}, which the order map names as its latest party entry at size {map_size}",
                    c.seq, h.seq
                ));
            }
            if c.hash != h.hash {
                return err(format!(
                    "party {name}: its key and profile history in the bundle is not the one the order map commits to at size {map_size}: an entry of it is missing or foreign"
                ));
            }
        }
    }
    for d in entries {
        sup.record(name, d);
    }
    sup.proven.insert(name.clone());
    Ok(())
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
        version: map_version,
    }) = cp.map
    else {
        return err("checkpoint: it has no map line, so it commits to no order map");
    };
    if map_version != map::MAP_VERSION {
        return err(format!(
            "checkpoint: its map line is of map version {map_version} (orders only), which commits to no party's key or profile history; a bundle needs a `map2` line"
        ));
    }
    if map_size != map::epoch_at(cp.size) || map_size == 0 {
        return err(format!(
            "checkpoint: its map size {map_size} is not the newest map epoch at or below its size {}",
            cp.size
        ));
    }

    // 2. Every inclusion path; supporting entries: entry 0, then by
    // increasing seq, at or after the map size.
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
            if e.seq < map_size {
                return err(format!(
                    "supporting entry {} is below the map size {map_size}: party entries there belong in the party histories",
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
    let mut parties = Vec::with_capacity(b.parties.len());
    for party in &b.parties {
        let mut h = Vec::with_capacity(party.entries.len());
        for p in &party.entries {
            h.push(decode(proven(p, cp.size, &cp.root)?)?);
        }
        parties.push(h);
    }

    // 3. Genesis and the origin.
    let Some(genesis) = supporting.first().filter(|d| d.entry.seq == 0) else {
        return err("the bundle carries no genesis entry (entry 0)");
    };
    let Some(Body::Genesis(g)) = &genesis.body else {
        return err("entry 0 is not a genesis");
    };
    let mut sup = Support {
        cluster_id: g.cluster_id.clone(),
        operators: g
            .operators
            .iter()
            .map(|o| (o.party_id.clone(), o.public_key.clone()))
            .collect(),
        ..Support::default()
    };
    let origin = format!("arbor/{}", sup.cluster_id);
    if cp.origin != origin {
        return err(format!(
            "checkpoint: its origin {:?} is not the genesis's {origin:?}",
            cp.origin
        ));
    }

    // 4. Each party's complete key and profile history below the map size.
    for w in b.parties.windows(2) {
        if w[0].party_id >= w[1].party_id {
            return err(format!(
                "party {}: the party histories are not in increasing order of party id (after {})",
                w[1].party_id, w[0].party_id
            ));
        }
    }
    for (party, h) in b.parties.iter().zip(&parties) {
        check_party(&mut sup, genesis, party, h, map_size, &map_root)?;
    }
    // Party entries at or after the map size (for the checkpoint's keys).
    for d in &supporting[1..] {
        let of = map::party_entry_parties(d.entry.accepted, &d.entry.command);
        let Some(party) = of.iter().find(|p| sup.proven.contains(*p)) else {
            return err(format!(
                "supporting entry {}: it is not a party entry of a party the bundle carries ({})",
                d.entry.seq,
                party_entry_of(d)
            ));
        };
        let party = party.clone();
        sup.record(&party, d);
    }

    // 4. The checkpoint's signatures.
    let (verified, pinned) = match keys {
        CheckpointKeys::Pinned(trust) => {
            if trust.cluster_id != sup.cluster_id || trust.genesis_hash != genesis.entry.hash {
                return err(format!(
                    "entry 0: the bundle's genesis (cluster {:?}, hash {}) is not the one the trust pins (cluster {:?}, hash {}): another ledger",
                    sup.cluster_id,
                    hex::encode(genesis.entry.hash),
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
                if let Some((_, Some(key))) = sup.key_before(name, cp.size) {
                    if let Ok(public_key) = <[u8; 32]>::try_from(key.as_slice()) {
                        carried.push(NoteKey {
                            name: name.clone(),
                            public_key,
                        });
                    }
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
        if !sup.proven.contains(&d.signer) {
            return err(format!(
                "entry {}: the bundle carries no proven key history of {}, its signer",
                d.entry.seq, d.signer
            ));
        }
        let key = match sup.key_before(&d.signer, d.entry.seq) {
            None => {
                return err(format!(
                    "entry {}: its signer {} had no key before it (its proven history holds none)",
                    d.entry.seq, d.signer
                ))
            }
            Some((k_seq, None)) => {
                return err(format!(
                    "entry {}: its signer {}'s key was revoked by entry {k_seq} before it",
                    d.entry.seq, d.signer
                ))
            }
            Some((k_seq, Some(key))) => (*k_seq, key),
        };
        verify_command(&d.env, &sup.cluster_id, key.1).map_err(|m| {
            BundleError(format!(
                "entry {}: the signature of {} does not verify with its key of entry {}: {m}",
                d.entry.seq, d.signer, key.0
            ))
        })?;
    }

    // 8. The rules on the facts the history records.
    let mut notes = Vec::new();
    let events = order_events(&history, &sup, &mut notes)?;
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
fn order_events(
    history: &[Decoded],
    sup: &Support,
    notes: &mut Vec<String>,
) -> Result<Vec<Event>, BundleError> {
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
        if !sup.proven.contains(&node) {
            return err(format!(
                "entry {}: the bundle carries no proven profile history of {node}, whose lease starts there",
                e.seq
            ));
        }
        match sup.dispatch_before(&node, e.seq) {
            Some(d) => *dt = d,
            None => notes.push(format!(
                "entry {}: {node} had published no profile before it (dispatch time 0)",
                e.seq
            )),
        }
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
    Ok(events)
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
            parcels: 0,
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
