//! The order map in RocksDB (`arbor_proto::ledger::map`): its nodes and its
//! root at every map epoch, in column family `order_map`.
//!
//! The state machine updates it when it appends the last entry of an epoch
//! (entry `M - 1`, `M` a multiple of `MAP_EPOCH`), in the same write batch:
//! it reads that epoch's entries back (through the batch's overlay), takes
//! each order's latest entry among them and writes the changed nodes and
//! the root at `M`. Nodes are overwritten in place, so the nodes always
//! describe the newest epoch; roots of every epoch are kept (32 bytes
//! each), so a cosigner can check the `map` line of a checkpoint at any size.

use arbor_proto::ledger::map::{self, Node, NodeStore, MAP_EPOCH};
use arbor_proto::ledger::merkle::Hash;
use arbor_proto::ledger::Head;
use rocksdb::DB;

use super::cf;
use super::keys::{
    map_node_key, map_party_entry_key, map_root_key, CF_ORDER_MAP, CF_SM_META, KEY_HEAD,
};
use super::overlay::PendingWrites;
use super::{LedgerReader, ReadError};

/// The map's nodes as the state machine sees them while applying: reads
/// through its overlay (and the upper levels through `cache`), writes into
/// its batch.
struct Applying<'a> {
    reader: &'a LedgerReader,
    w: &'a mut PendingWrites,
    cache: Option<&'a NodeCache>,
    error: Option<ReadError>,
}

/// Deepest node level kept by [`NodeCache`]: at most `2^(CACHE_DEPTH + 1)`
/// positions (131 072 nodes, ~10 MB), whatever the ledger's size.
pub const CACHE_DEPTH: usize = 16;

/// The upper levels of the map (depth ≤ [`CACHE_DEPTH`]) in memory, so an
/// epoch's update reads them without a RocksDB lookup each.
///
/// Every epoch rewrites the path of each changed order from the root down,
/// so without it most of an update's ~`log2 N` reads per changed order were
/// point reads of RocksDB's memtable. Two layers keep it exactly equal to
/// what a RocksDB read would give: `staged`, the nodes written into the
/// pending batch (the overlay's copy of them), and `written`, nodes as
/// RocksDB holds them (read from it, or staged and then written). A node
/// comes from `staged`, then `written`, then RocksDB; the state machine
/// calls [`NodeCache::written`] after its batch is written and
/// [`NodeCache::clear`] when anything else rewrites the map (a snapshot
/// install, a failed write).
#[derive(Default)]
pub struct NodeCache {
    inner: std::sync::Mutex<CacheLayers>,
}

#[derive(Default)]
struct CacheLayers {
    staged: std::collections::HashMap<u32, Option<Node>>,
    written: std::collections::HashMap<u32, Option<Node>>,
}

/// The cache's key for a position of depth ≤ [`CACHE_DEPTH`]: its depth and
/// its (zero-padded) first two bytes.
fn cache_slot(position: &[u8]) -> Option<u32> {
    let depth = u16::from_be_bytes([*position.first()?, *position.get(1)?]) as usize;
    if depth > CACHE_DEPTH {
        return None;
    }
    let b = |i: usize| position.get(i).copied().unwrap_or(0) as u32;
    Some(((depth as u32) << 16) | (b(2) << 8) | b(3))
}

impl NodeCache {
    fn layers(&self) -> std::sync::MutexGuard<'_, CacheLayers> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, slot: u32) -> Option<Option<Node>> {
        let l = self.layers();
        l.staged
            .get(&slot)
            .or_else(|| l.written.get(&slot))
            .copied()
    }

    /// A new batch starts: nodes staged into an earlier one that was never
    /// written (its apply stopped on an error) are forgotten.
    pub fn begin(&self) {
        self.layers().staged.clear();
    }

    /// The batch holding every staged node was written.
    pub fn written(&self) {
        let mut l = self.layers();
        let staged = std::mem::take(&mut l.staged);
        l.written.extend(staged);
    }

    /// Forgets everything (the next reads go to RocksDB).
    pub fn clear(&self) {
        let mut l = self.layers();
        l.staged.clear();
        l.written.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let l = self.layers();
        l.staged.len() + l.written.len()
    }
}

fn decode_node(key: &[u8], v: &[u8]) -> Result<Node, ReadError> {
    Node::decode(v).map_err(|e| LedgerReader::corrupt_err(CF_ORDER_MAP, key, e))
}

impl NodeStore for Applying<'_> {
    fn get_node(&mut self, position: &[u8]) -> Result<Option<Node>, String> {
        let slot = self.cache.and_then(|_| cache_slot(position));
        if let (Some(cache), Some(slot)) = (self.cache, slot) {
            if let Some(n) = cache.get(slot) {
                return Ok(n);
            }
        }
        let key = map_node_key(position);
        let r = self
            .reader
            .raw(CF_ORDER_MAP, &key)
            .and_then(|v| v.map(|v| decode_node(&key, &v)).transpose());
        if let (Some(cache), Some(slot), Ok(n)) = (self.cache, slot, &r) {
            // Not staged, so the overlay has no write of it: this is
            // RocksDB's value.
            cache.layers().written.insert(slot, *n);
        }
        r.map_err(|e| {
            let m = e.to_string();
            self.error = Some(e);
            m
        })
    }

    fn put_node(&mut self, position: &[u8], node: &Node) {
        if let (Some(cache), Some(slot)) = (self.cache, cache_slot(position)) {
            cache.layers().staged.insert(slot, Some(*node));
        }
        self.w
            .put(CF_ORDER_MAP, &map_node_key(position), &node.encode());
    }
}

/// Why the map could not be updated or read.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("order map: {0}")]
    Map(String),
}

/// Called after entry `seq` is put into `w`: at the end of an epoch, writes
/// the map update for it and the root at `seq + 1`.
pub(super) fn after_entry(
    reader: &LedgerReader,
    w: &mut PendingWrites,
    cache: &NodeCache,
    seq: u64,
) -> Result<(), MapError> {
    let size = seq + 1;
    if !size.is_multiple_of(MAP_EPOCH) {
        return Ok(());
    }
    let mut epoch = Vec::with_capacity(MAP_EPOCH as usize);
    for s in size - MAP_EPOCH..size {
        epoch.push(reader.entry(s)?.ok_or_else(|| {
            MapError::Map(format!(
                "entry {s} of the epoch ending at {size} is missing"
            ))
        })?);
    }
    write_epoch(reader, w, Some(cache), size, &epoch)
}

/// Writes the map update of the epoch ending at `size` (its entries
/// `epoch`), the party index rows and the root at `size` into `w`.
fn write_epoch(
    reader: &LedgerReader,
    w: &mut PendingWrites,
    cache: Option<&NodeCache>,
    size: u64,
    epoch: &[arbor_proto::ledger::Entry],
) -> Result<(), MapError> {
    let mut store = Applying {
        reader,
        w,
        cache,
        error: None,
    };
    let r = map::apply_epoch(&mut store, epoch);
    if let Some(e) = store.error.take() {
        return Err(e.into());
    }
    let (root, party_entries) = r.map_err(MapError::Map)?;
    for (party, seq) in party_entries {
        w.put(
            CF_ORDER_MAP,
            &map_party_entry_key(&map::party_key(&party), seq),
            &[],
        );
    }
    w.put(CF_ORDER_MAP, &map_root_key(size), &root);
    Ok(())
}

/// Builds the map from the ledger when the newest epoch's root is missing:
/// a database written before the order map existed or before its version 2
/// (whose roots are under another key), or a snapshot from such a replica. Replays every epoch in order (each epoch's root is written),
/// from an emptied `order_map`, so an interrupted rebuild starts over. O(the
/// ledger), once; afterwards the state machine keeps the map up to date.
pub(super) fn catch_up(reader: &LedgerReader) -> Result<(), MapError> {
    let Some(head) = reader.head()? else {
        return Ok(());
    };
    let newest = map::epoch_at(head.seq + 1);
    if newest == 0 || root_at(reader, newest)?.is_some() {
        return Ok(());
    }
    tracing::info!(
        epochs = newest / MAP_EPOCH,
        "building the order map from the ledger (database older than the map)"
    );
    let db: &DB = &reader.db;
    db.delete_range_cf(
        cf(db, CF_ORDER_MAP),
        [0u8].as_slice(),
        [0xffu8; 2].as_slice(),
    )
    .map_err(|e| MapError::Map(format!("clearing the order map: {e}")))?;
    let mut from = 0;
    while from < newest {
        let size = from + MAP_EPOCH;
        let mut w = PendingWrites::new(reader.db.clone());
        let overlay = reader.with_overlay(w.overlay());
        let epoch: Vec<_> = reader
            .entries(from, MAP_EPOCH as usize)?
            .into_iter()
            .filter(|e| e.seq < size)
            .collect();
        write_epoch(&overlay, &mut w, None, size, &epoch)?;
        w.write()
            .map_err(|e| MapError::Map(format!("writing the order map at {size}: {e}")))?;
        from = size;
    }
    Ok(())
}

impl LedgerReader {
    /// The order map root at map size `size` (a multiple of `MAP_EPOCH`, > 0).
    pub fn map_root(&self, size: u64) -> Result<Option<Hash>, ReadError> {
        root_at(self, size)
    }

    /// `order_id`'s proof at the newest map epoch of the written ledger,
    /// and each of `parties`' proof and party entries below that epoch,
    /// read under one RocksDB snapshot with the ledger size it belongs to.
    pub fn order_map_proof(
        &self,
        order_id: &str,
        parties: &[String],
    ) -> Result<MapSnapshot, MapError> {
        proof(self, order_id, parties)
    }
}

fn root_at(reader: &LedgerReader, size: u64) -> Result<Option<Hash>, ReadError> {
    let key = map_root_key(size);
    match reader.raw(CF_ORDER_MAP, &key)? {
        None => Ok(None),
        Some(v) => v
            .as_slice()
            .try_into()
            .map(Some)
            .map_err(|_| LedgerReader::corrupt_err(CF_ORDER_MAP, &key, "not a 32-byte root")),
    }
}

/// An order's map proof at the newest map epoch, read under one RocksDB
/// snapshot together with the head of the ledger it belongs to.
pub struct MapSnapshot {
    /// Entries in the ledger when the snapshot was taken.
    pub size: u64,
    /// The newest map epoch at or below `size` (0: none yet).
    pub map_size: u64,
    pub map_root: Hash,
    pub proof: map::MapProof,
    /// The parties asked for, in the order asked.
    pub parties: Vec<PartySnapshot>,
}

/// A party's proof in the map at `MapSnapshot::map_size` and the seqs of
/// its party entries below it, oldest first.
pub struct PartySnapshot {
    pub party_id: String,
    pub proof: map::MapProof,
    pub seqs: Vec<u64>,
}

struct AtSnapshot<'a> {
    db: &'a DB,
    snap: &'a rocksdb::Snapshot<'a>,
    error: Option<ReadError>,
}

impl AtSnapshot<'_> {
    fn read(&self, cf_name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        self.snap
            .get_cf(cf(self.db, cf_name), key)
            .map_err(|source| ReadError::Db {
                cf: cf_name,
                key: super::keys::display_key(key),
                source,
            })
    }
}

impl NodeStore for AtSnapshot<'_> {
    fn get_node(&mut self, position: &[u8]) -> Result<Option<Node>, String> {
        let key = map_node_key(position);
        let r = self
            .read(CF_ORDER_MAP, &key)
            .and_then(|v| v.map(|v| decode_node(&key, &v)).transpose());
        r.map_err(|e| {
            let m = e.to_string();
            self.error = Some(e);
            m
        })
    }

    fn put_node(&mut self, _: &[u8], _: &Node) {
        unreachable!("proofs only read the map")
    }
}

/// `order_id`'s proof at the newest map epoch of the written ledger.
fn proof(
    reader: &LedgerReader,
    order_id: &str,
    parties: &[String],
) -> Result<MapSnapshot, MapError> {
    let db: &DB = &reader.db;
    let snap = db.snapshot();
    let mut s = AtSnapshot {
        db,
        snap: &snap,
        error: None,
    };
    let size = match s.read(CF_SM_META, KEY_HEAD)? {
        None => 0,
        Some(v) => {
            let h: Head = serde_json::from_slice(&v)
                .map_err(|e| LedgerReader::corrupt_err(CF_SM_META, KEY_HEAD, e))?;
            h.seq + 1
        }
    };
    let map_size = map::epoch_at(size);
    if map_size == 0 {
        return Ok(MapSnapshot {
            size,
            map_size,
            map_root: map::EMPTY,
            proof: map::MapProof {
                siblings: Vec::new(),
                leaf: None,
            },
            parties: Vec::new(),
        });
    }
    let key = map_root_key(map_size);
    let map_root: Hash = s
        .read(CF_ORDER_MAP, &key)?
        .ok_or_else(|| {
            MapError::Map(format!(
                "this replica has no order map root at size {map_size} (its database predates the map)"
            ))
        })?
        .as_slice()
        .try_into()
        .map_err(|_| LedgerReader::corrupt_err(CF_ORDER_MAP, &key, "not a 32-byte root"))?;
    let proof = map::prove(&mut s, &map::order_key(order_id));
    if let Some(e) = s.error.take() {
        return Err(e.into());
    }
    let proof = proof.map_err(MapError::Map)?;
    let mut out = Vec::with_capacity(parties.len());
    for party in parties {
        let key = map::party_key(party);
        let p = map::prove(&mut s, &key);
        if let Some(e) = s.error.take() {
            return Err(e.into());
        }
        let from = map_party_entry_key(&key, 0);
        let mut seqs = Vec::new();
        let it = snap.iterator_cf(
            cf(db, CF_ORDER_MAP),
            rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward),
        );
        for item in it {
            let (k, _) = item.map_err(|source| ReadError::Db {
                cf: CF_ORDER_MAP,
                key: super::keys::display_key(&from),
                source,
            })?;
            if k.len() != from.len() || k[..33] != from[..33] {
                break;
            }
            let seq = u64::from_be_bytes(k[33..].try_into().expect("8 bytes"));
            if seq < map_size {
                seqs.push(seq);
            }
        }
        out.push(PartySnapshot {
            party_id: party.clone(),
            proof: p.map_err(MapError::Map)?,
            seqs,
        });
    }
    Ok(MapSnapshot {
        size,
        map_size,
        map_root,
        proof,
        parties: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::open;
    use arbor_proto::ledger::map::OrderHead;
    use std::collections::BTreeMap;

    fn changes(from: u64, n: u64) -> BTreeMap<Hash, OrderHead> {
        (from..from + n)
            .map(|i| {
                (
                    map::order_key(&format!("o-{}", i % 50)),
                    OrderHead {
                        seq: i,
                        hash: [i as u8; 32],
                    },
                )
            })
            .collect()
    }

    /// The map written through the state machine's overlay and batch has the
    /// root and proofs of the pure reference, across batches, and is read
    /// back consistently under a snapshot.
    #[test]
    fn the_stored_map_is_the_reference_map() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let mut reference = BTreeMap::new();
        let mut w = PendingWrites::new(sm.db.clone());
        let reader = sm.reader().with_overlay(w.overlay());
        let mut root = map::EMPTY;
        for (epoch, (from, n)) in [(0, 40), (40, 30), (70, 64)].into_iter().enumerate() {
            let c = changes(from, n);
            let mut store = Applying {
                reader: &reader,
                w: &mut w,
                cache: None,
                error: None,
            };
            root = map::update(&mut store, &c).unwrap();
            assert_eq!(root, map::update(&mut reference, &c).unwrap());
            w.put(CF_ORDER_MAP, &map_root_key(32 * (epoch as u64 + 1)), &root);
            if epoch == 1 {
                // Two epochs in one batch, the next one after it is written.
                w.write().unwrap();
            }
        }
        w.write().unwrap();
        let head = Head {
            seq: 96,
            hash: [0; 32],
            time_ms: 1,
        };
        sm.db
            .put_cf(
                cf(&sm.db, CF_SM_META),
                KEY_HEAD,
                serde_json::to_vec(&head).unwrap(),
            )
            .unwrap();
        assert_eq!(sm.reader().map_root(96).unwrap(), Some(root));
        for i in 0..50 {
            let id = format!("o-{i}");
            let snap = sm.reader().order_map_proof(&id, &[]).unwrap();
            assert_eq!((snap.size, snap.map_size, snap.map_root), (97, 96, root));
            let h = map::verify(&snap.proof, &map::order_key(&id), &root)
                .unwrap()
                .expect("present");
            assert_eq!(
                Some(&h),
                map::prove(&mut reference, &map::order_key(&id))
                    .unwrap()
                    .leaf
                    .as_ref()
                    .map(|(_, h)| h)
            );
        }
        let snap = sm.reader().order_map_proof("never", &[]).unwrap();
        assert_eq!(
            map::verify(&snap.proof, &map::order_key("never"), &root).unwrap(),
            None
        );
    }
    /// With the node cache, every epoch gives the reference root, whatever
    /// the batching; the cache holds only the upper levels, and each node
    /// it holds as written is what RocksDB holds (so a failed batch, which
    /// clears it, and a later read agree).
    #[test]
    fn the_node_cache_gives_what_rocksdb_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let cache = NodeCache::default();
        let mut reference = BTreeMap::new();
        let mut w = PendingWrites::new(sm.db.clone());
        let reader = sm.reader().with_overlay(w.overlay());
        // Thousands of orders: a dozen levels, overwritten across batches.
        let many = |from: u64, n: u64| -> BTreeMap<Hash, OrderHead> {
            (from..from + n)
                .map(|i| {
                    (
                        map::order_key(&format!("o-{}", i % 3000)),
                        OrderHead {
                            seq: i,
                            hash: [(i % 251) as u8; 32],
                        },
                    )
                })
                .collect()
        };
        let mut written = 0;
        for (epoch, (from, n)) in [(0, 2000), (2000, 900), (2900, 40), (2940, 500), (3440, 7)]
            .into_iter()
            .enumerate()
        {
            let c = many(from, n);
            let mut store = Applying {
                reader: &reader,
                w: &mut w,
                cache: Some(&cache),
                error: None,
            };
            let root = map::update(&mut store, &c).unwrap();
            assert_eq!(
                root,
                map::update(&mut reference, &c).unwrap(),
                "epoch {epoch}"
            );
            if epoch % 2 == 0 {
                w.write().unwrap();
                cache.written();
                written = epoch;
            }
        }
        assert_eq!(written, 4);
        // A batch that is never written (its apply stopped): the next one
        // starts from what RocksDB holds, not from the nodes staged for it.
        {
            let mut lost = PendingWrites::new(sm.db.clone());
            let reader = sm.reader().with_overlay(lost.overlay());
            let mut store = Applying {
                reader: &reader,
                w: &mut lost,
                cache: Some(&cache),
                error: None,
            };
            map::update(&mut store, &many(5000, 300)).unwrap();
        }
        cache.begin();
        let mut w = PendingWrites::new(sm.db.clone());
        let reader = sm.reader().with_overlay(w.overlay());
        let c = many(6000, 100);
        let mut store = Applying {
            reader: &reader,
            w: &mut w,
            cache: Some(&cache),
            error: None,
        };
        let root = map::update(&mut store, &c).unwrap();
        assert_eq!(
            root,
            map::update(&mut reference, &c).unwrap(),
            "after a lost batch"
        );
        w.write().unwrap();
        cache.written();
        assert!(cache.len() > 0 && cache.len() <= 1 << (CACHE_DEPTH + 1));
        let l = cache.layers();
        assert!(l.staged.is_empty());
        for (slot, node) in &l.written {
            let depth = (slot >> 16) as usize;
            assert!(depth <= CACHE_DEPTH);
            let mut pos = (depth as u16).to_be_bytes().to_vec();
            pos.extend_from_slice(&[(slot >> 8) as u8, *slot as u8][..depth.div_ceil(8).min(2)]);
            let key = map_node_key(&pos);
            let stored = sm
                .db
                .get_cf(cf(&sm.db, CF_ORDER_MAP), &key)
                .unwrap()
                .map(|v| Node::decode(&v).unwrap());
            assert_eq!(stored, *node, "depth {depth}");
        }
    }
}

#[cfg(test)]
mod catch_up_tests {
    use super::*;
    use crate::storage::keys::{u64_key, CF_LEDGER};
    use crate::storage::open;
    use arbor_proto::ledger::map::OrderHead;
    use arbor_proto::ledger::Entry;
    use prost::Message;
    use std::collections::BTreeMap;

    /// A ledger written without the map gets it, epoch by epoch, equal to
    /// the map the state machine would have kept.
    #[test]
    fn a_ledger_without_the_map_gets_it_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let mut head = None;
        let mut reference = BTreeMap::new();
        let mut roots = Vec::new();
        let mut changes = BTreeMap::new();
        for seq in 0..100u64 {
            let order = if seq % 3 == 0 {
                String::new()
            } else {
                format!("o-{}", seq % 7)
            };
            let e = Entry::next(
                head.as_ref(),
                seq,
                vec![1],
                true,
                "accepted".into(),
                String::new(),
                order.clone(),
                0,
            );
            sm.db
                .put_cf(
                    cf(&sm.db, CF_LEDGER),
                    u64_key(seq),
                    e.to_pb().encode_to_vec(),
                )
                .unwrap();
            if !order.is_empty() {
                changes.insert(map::order_key(&order), OrderHead { seq, hash: e.hash });
            }
            if (seq + 1) % MAP_EPOCH == 0 {
                roots.push((
                    seq + 1,
                    map::update(&mut reference, &std::mem::take(&mut changes)).unwrap(),
                ));
            }
            head = Some(e.head());
        }
        sm.db
            .put_cf(
                cf(&sm.db, CF_SM_META),
                KEY_HEAD,
                serde_json::to_vec(&head.unwrap()).unwrap(),
            )
            .unwrap();
        // A stray node from some older state is cleared first.
        sm.db
            .put_cf(cf(&sm.db, CF_ORDER_MAP), map_node_key(&[0, 0]), [9u8; 3])
            .unwrap();
        catch_up(&sm.reader()).unwrap();
        for (size, root) in &roots {
            assert_eq!(
                sm.reader().map_root(*size).unwrap(),
                Some(*root),
                "size {size}"
            );
        }
        let snap = sm.reader().order_map_proof("o-1", &[]).unwrap();
        assert_eq!(snap.map_size, 96);
        assert!(
            map::verify(&snap.proof, &map::order_key("o-1"), &roots[2].1)
                .unwrap()
                .is_some()
        );
        // Nothing to do the second time.
        catch_up(&sm.reader()).unwrap();
    }
}

#[cfg(test)]
mod party_tests {
    use super::*;
    use crate::storage::keys::{u64_key, CF_LEDGER};
    use crate::storage::open;
    use arbor_proto::ledger::Entry;
    use arbor_proto::pb;
    use arbor_proto::pb::command::Body;
    use prost::Message;

    fn command(signer: &str, body: Body) -> Vec<u8> {
        pb::SignedCommand {
            signer: signer.into(),
            command: pb::Command {
                body: Some(body),
                ..Default::default()
            }
            .encode_to_vec(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// A database whose map is version 1 (its roots under the old key) is
    /// rebuilt as version 2, and a party's proof and party entries are
    /// served at the newest epoch: its enrolment, profile and rotation, not
    /// its rejected rotation, and nothing at or after the map size.
    #[test]
    fn party_chains_are_kept_and_served_and_a_version_1_map_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let mut head = None;
        let enroll = Body::EnrollParty(pb::EnrollParty {
            party_id: "p-1".into(),
            public_key: vec![1; 32],
            ..Default::default()
        });
        let rotate = Body::RotateKey(pb::RotateKey {
            party_id: "p-1".into(),
            public_key: vec![2; 32],
        });
        let mut expected = Vec::new();
        for seq in 0..70u64 {
            let (cmd, accepted, order) = match seq {
                3 => (command("op", enroll.clone()), true, ""),
                10 => (
                    command("p-1", Body::PublishProfile(Default::default())),
                    true,
                    "",
                ),
                20 => (command("op", rotate.clone()), false, ""),
                40 => (command("op", rotate.clone()), true, ""),
                // After the newest epoch (64): not in the map yet.
                65 => (command("op", rotate.clone()), true, ""),
                _ => (vec![1], true, "o-1"),
            };
            let e = Entry::next(
                head.as_ref(),
                seq,
                cmd,
                accepted,
                "accepted".into(),
                String::new(),
                order.into(),
                0,
            );
            if [3, 10, 40].contains(&seq) {
                expected.push((seq, e.hash));
            }
            sm.db
                .put_cf(
                    cf(&sm.db, CF_LEDGER),
                    u64_key(seq),
                    e.to_pb().encode_to_vec(),
                )
                .unwrap();
            head = Some(e.head());
        }
        sm.db
            .put_cf(
                cf(&sm.db, CF_SM_META),
                KEY_HEAD,
                serde_json::to_vec(&head.unwrap()).unwrap(),
            )
            .unwrap();
        // The version 1 root at 64 (key `r`) does not count.
        let mut v1 = [b'r'; 9];
        v1[1..].copy_from_slice(&64u64.to_be_bytes());
        sm.db
            .put_cf(cf(&sm.db, CF_ORDER_MAP), v1, [7u8; 32])
            .unwrap();
        catch_up(&sm.reader()).unwrap();
        let root = sm.reader().map_root(64).unwrap().expect("rebuilt");
        let snap = sm
            .reader()
            .order_map_proof("o-1", &["p-1".into(), "nobody".into()])
            .unwrap();
        assert_eq!((snap.map_size, snap.map_root), (64, root));
        let p1 = &snap.parties[0];
        assert_eq!(p1.seqs, [3, 10, 40]);
        let mut chain = None;
        for (seq, hash) in &expected {
            chain = Some(map::OrderHead::then(chain.as_ref(), *seq, hash));
        }
        assert_eq!(
            map::verify(&p1.proof, &map::party_key("p-1"), &root).unwrap(),
            chain
        );
        // The party key is not the order key of the same name.
        assert_eq!(
            map::verify(&p1.proof, &map::order_key("p-1"), &root)
                .ok()
                .flatten(),
            None
        );
        let nobody = &snap.parties[1];
        assert!(nobody.seqs.is_empty());
        assert_eq!(
            map::verify(&nobody.proof, &map::party_key("nobody"), &root).unwrap(),
            None
        );
    }
}
