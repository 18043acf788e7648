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
//!
//! Nodes are stored in *tiles* ([`Tile`]): the subtree of [`TILE_LEVELS`]
//! levels under each position whose depth is a multiple of `TILE_LEVELS`,
//! one RocksDB record each. An epoch's update reads each tile it touches
//! once, changes it in memory and writes it once at the end of the epoch,
//! so a changed order costs about `log2 N / TILE_LEVELS` records instead
//! of one per level; the map itself (its nodes, roots and proofs) is the
//! same.

use std::collections::HashMap;

use arbor_proto::ledger::map::{self, Node, NodeStore, MAP_EPOCH};
use arbor_proto::ledger::merkle::Hash;
use arbor_proto::ledger::Head;
use rocksdb::DB;

use super::cf;
use super::keys::{
    map_node_key, map_party_entry_key, map_root_key, map_tile_key, CF_ORDER_MAP, CF_SM_META,
    KEY_HEAD,
};
use super::overlay::PendingWrites;
use super::{LedgerReader, ReadError};

/// Levels of the map per tile.
pub const TILE_LEVELS: usize = 4;

/// Nodes a tile can hold: a complete binary tree of [`TILE_LEVELS`] levels.
const TILE_SLOTS: usize = (1 << TILE_LEVELS) - 1;

/// The nodes of the map in the subtree of [`TILE_LEVELS`] levels under one
/// position whose depth is a multiple of `TILE_LEVELS` (its *top*), by
/// slot: the top is slot 0 and the children of slot `s` are slots `2s + 1`
/// (left) and `2s + 2` (right). A tile with no node is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile([Option<Node>; TILE_SLOTS]);

impl Default for Tile {
    fn default() -> Self {
        Tile([None; TILE_SLOTS])
    }
}

/// Tag of an inner node whose hashes are its children's in the same tile.
const DERIVED: u8 = 2;

impl Tile {
    /// The hash of the child of slot `s` (`right` or left) if that child is
    /// in the tile: its node's hash, or [`map::EMPTY`] if it holds none.
    fn child_hash(&self, s: usize, right: bool) -> Option<Hash> {
        let c = 2 * s + 1 + right as usize;
        (c < TILE_SLOTS).then(|| self.0[c].map_or(map::EMPTY, |n| n.hash()))
    }

    /// A 16-bit big-endian bitmap of the present slots (bit `s` for slot
    /// `s`), then each present node in slot order: `map::Node::encode`, or
    /// the single byte 2 for an inner node whose two hashes are those of
    /// its children in the tile (the map always holds such nodes above a
    /// tile's bottom level, so a tile stores the hashes of its bottom level
    /// and its leaves only).
    pub fn encode(&self) -> Vec<u8> {
        let mut present = 0u16;
        let mut v = vec![0; 2];
        for (s, n) in self.0.iter().enumerate() {
            let Some(n) = n else { continue };
            present |= 1 << s;
            match n {
                Node::Inner { left, right }
                    if self.child_hash(s, false) == Some(*left)
                        && self.child_hash(s, true) == Some(*right) =>
                {
                    v.push(DERIVED)
                }
                _ => v.extend_from_slice(&n.encode()),
            }
        }
        v[..2].copy_from_slice(&present.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<Tile, String> {
        let present = u16::from_be_bytes(
            b.get(..2)
                .ok_or("not an order map tile (no bitmap)")?
                .try_into()
                .expect("2 bytes"),
        );
        if present >> TILE_SLOTS != 0 {
            return Err(format!(
                "not an order map tile (bitmap {present:#06x} names slots past {TILE_SLOTS})"
            ));
        }
        let mut t = Tile::default();
        let mut derived = 0u16;
        let mut at = 2;
        for s in (0..TILE_SLOTS).filter(|s| present & (1 << s) != 0) {
            let len = match b.get(at) {
                None => return Err(format!("order map tile ends before slot {s}")),
                Some(0) => 73,
                Some(1) => 65,
                Some(&DERIVED) if 2 * s + 2 < TILE_SLOTS => {
                    derived |= 1 << s;
                    at += 1;
                    continue;
                }
                Some(tag) => return Err(format!("order map tile: slot {s} has tag {tag}")),
            };
            let node = b
                .get(at..at + len)
                .ok_or_else(|| format!("order map tile ends inside slot {s}"))?;
            t.0[s] = Some(Node::decode(node).map_err(|e| format!("order map tile slot {s}: {e}"))?);
            at += len;
        }
        if at != b.len() {
            return Err(format!(
                "order map tile has {} bytes after its last node",
                b.len() - at
            ));
        }
        // Children before parents: every derived node's children are known.
        for s in (0..TILE_SLOTS).rev().filter(|s| derived & (1 << s) != 0) {
            t.0[s] = Some(Node::Inner {
                left: t.child_hash(s, false).expect("in the tile"),
                right: t.child_hash(s, true).expect("in the tile"),
            });
        }
        Ok(t)
    }
}

/// The tile holding the node at `position` (`map::position`): the key of
/// the tile and the node's slot in it.
fn locate(position: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let bad = || format!("not an order map position: {position:02x?}");
    let depth = u16::from_be_bytes([
        *position.first().ok_or_else(bad)?,
        *position.get(1).ok_or_else(bad)?,
    ]) as usize;
    let bits = &position[2..];
    if depth > map::KEY_BITS || bits.len() != depth.div_ceil(8) {
        return Err(bad());
    }
    let bit = |i: usize| (bits[i / 8] >> (7 - i % 8)) & 1;
    let top = depth - depth % TILE_LEVELS;
    let mut tile = (top as u16).to_be_bytes().to_vec();
    tile.extend_from_slice(&bits[..top.div_ceil(8)]);
    if !top.is_multiple_of(8) {
        let last = tile.len() - 1;
        tile[last] &= 0xffu8 << (8 - top % 8);
    }
    let index = (top..depth).fold(0usize, |i, b| (i << 1) | bit(b) as usize);
    Ok((map_tile_key(&tile), (1 << (depth - top)) - 1 + index))
}

/// The depth of the top of the tile at `key` (a [`map_tile_key`]).
fn tile_depth(key: &[u8]) -> usize {
    u16::from_be_bytes([key[1], key[2]]) as usize
}

fn decode_tile(key: &[u8], v: &[u8]) -> Result<Tile, ReadError> {
    Tile::decode(v).map_err(|e| LedgerReader::corrupt_err(CF_ORDER_MAP, key, e))
}

/// The map's nodes as the state machine sees them while applying: tiles
/// read through its overlay (and the upper ones through `cache`), staged
/// in `tiles` for one epoch's update and then written into its batch
/// ([`Applying::finish`]), each dirty tile once.
struct Applying<'a> {
    reader: &'a LedgerReader,
    w: &'a mut PendingWrites,
    cache: Option<&'a NodeCache>,
    error: Option<MapError>,
    /// This epoch's tiles so far, and whether each was changed.
    tiles: HashMap<Vec<u8>, (Tile, bool)>,
}

/// Tiles whose top is above this depth (the map's nodes of depth 0 to 15)
/// are kept by [`NodeCache`]: at most 4,369 tiles (~5 MB), whatever the
/// ledger's size.
pub const CACHE_DEPTH: usize = 16;

/// The upper levels of the map (the tiles whose top is above
/// [`CACHE_DEPTH`]) in memory, so an epoch's update reads them without a
/// RocksDB lookup each.
///
/// Every epoch rewrites the path of each changed order from the root down,
/// so without it most of an update's tile reads were point reads of
/// RocksDB's memtable. Two layers keep it exactly equal to what a RocksDB
/// read would give: `staged`, the tiles written into the pending batch (the
/// overlay's copy of them), and `written`, tiles as RocksDB holds them
/// (read from it, or staged and then written; an empty tile for one it does
/// not hold). A tile comes from `staged`, then `written`, then RocksDB; the
/// state machine calls [`NodeCache::written`] after its batch is written
/// and [`NodeCache::clear`] when anything else rewrites the map (a snapshot
/// install, a failed write).
#[derive(Default)]
pub struct NodeCache {
    inner: std::sync::Mutex<CacheLayers>,
}

#[derive(Default)]
struct CacheLayers {
    staged: HashMap<Vec<u8>, Tile>,
    written: HashMap<Vec<u8>, Tile>,
}

/// Whether [`NodeCache`] keeps the tile at `key`.
fn cached(key: &[u8]) -> bool {
    tile_depth(key) < CACHE_DEPTH
}

impl NodeCache {
    fn layers(&self) -> std::sync::MutexGuard<'_, CacheLayers> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &[u8]) -> Option<Tile> {
        let l = self.layers();
        l.staged.get(key).or_else(|| l.written.get(key)).copied()
    }

    /// A new batch starts: tiles staged into an earlier one that was never
    /// written (its apply stopped on an error) are forgotten.
    pub fn begin(&self) {
        self.layers().staged.clear();
    }

    /// The batch holding every staged tile was written.
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

impl Applying<'_> {
    fn new<'a>(
        reader: &'a LedgerReader,
        w: &'a mut PendingWrites,
        cache: Option<&'a NodeCache>,
    ) -> Applying<'a> {
        Applying {
            reader,
            w,
            cache,
            error: None,
            tiles: HashMap::new(),
        }
    }

    /// The staged tile at `key`, read first if this epoch has not yet.
    fn tile(&mut self, key: Vec<u8>) -> Result<&mut (Tile, bool), ReadError> {
        use std::collections::hash_map::Entry;
        match self.tiles.entry(key) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let cache = self.cache.filter(|_| cached(e.key()));
                let t = match cache.and_then(|c| c.get(e.key())) {
                    Some(t) => t,
                    None => {
                        let t = match self.reader.raw(CF_ORDER_MAP, e.key())? {
                            None => Tile::default(),
                            Some(v) => decode_tile(e.key(), &v)?,
                        };
                        if let Some(c) = cache {
                            // Not staged, so the overlay has no write of
                            // it: this is RocksDB's value.
                            c.layers().written.insert(e.key().clone(), t);
                        }
                        t
                    }
                };
                Ok(e.insert((t, false)))
            }
        }
    }

    /// Writes every tile this epoch changed into the batch (and stages the
    /// cached ones), once each.
    fn finish(&mut self) {
        let mut dirty: Vec<_> = self.tiles.drain().filter(|(_, (_, d))| *d).collect();
        dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, (t, _)) in dirty {
            self.w.put(CF_ORDER_MAP, &key, &t.encode());
            if let Some(c) = self.cache.filter(|_| cached(&key)) {
                c.layers().staged.insert(key, t);
            }
        }
    }

    fn fail(&mut self, e: MapError) -> String {
        let m = e.to_string();
        self.error = Some(e);
        m
    }
}

impl NodeStore for Applying<'_> {
    fn get_node(&mut self, position: &[u8]) -> Result<Option<Node>, String> {
        let (key, slot) = locate(position)?;
        match self.tile(key) {
            Ok((t, _)) => Ok(t.0[slot]),
            Err(e) => Err(self.fail(e.into())),
        }
    }

    fn put_node(&mut self, position: &[u8], node: &Node) {
        let located = locate(position).map_err(MapError::Map);
        let r = located.and_then(|(key, slot)| Ok((self.tile(key)?, slot)));
        match r {
            Ok(((t, dirty), slot)) => {
                t.0[slot] = Some(*node);
                *dirty = true;
            }
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
        }
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
    let mut store = Applying::new(reader, w, cache);
    let r = map::apply_epoch(&mut store, epoch);
    if let Some(e) = store.error.take() {
        return Err(e);
    }
    let (root, party_entries) = r.map_err(MapError::Map)?;
    store.finish();
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

/// Builds the map from the ledger when the newest epoch's root is missing
/// (a database written before the order map existed or before its version
/// 2, whose roots are under another key) or when the nodes are stored one
/// per key (a database written before tiles), or after installing a
/// snapshot from such a replica. Replays every epoch in order (each epoch's
/// root is written), from an emptied `order_map`, so an interrupted rebuild
/// starts over. O(the ledger), once; afterwards the state machine keeps the
/// map up to date.
pub(super) fn catch_up(reader: &LedgerReader) -> Result<(), MapError> {
    let Some(head) = reader.head()? else {
        return Ok(());
    };
    let newest = map::epoch_at(head.seq + 1);
    if newest == 0 {
        return Ok(());
    }
    let untiled = holds_untiled_nodes(reader)?;
    if !untiled && root_at(reader, newest)?.is_some() {
        return Ok(());
    }
    tracing::info!(
        epochs = newest / MAP_EPOCH,
        "building the order map from the ledger ({})",
        if untiled {
            "its nodes were stored one per key, before tiles"
        } else {
            "database older than the map"
        }
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

/// Whether `order_map` holds a node under its key of before tiles.
fn holds_untiled_nodes(reader: &LedgerReader) -> Result<bool, MapError> {
    let prefix = map_node_key(&[]);
    let db: &DB = &reader.db;
    let mut it = db.raw_iterator_cf(cf(db, CF_ORDER_MAP));
    it.seek(&prefix);
    if let Err(source) = it.status() {
        return Err(ReadError::Db {
            cf: CF_ORDER_MAP,
            key: super::keys::display_key(&prefix),
            source,
        }
        .into());
    }
    Ok(it.key().is_some_and(|k| k.starts_with(&prefix)))
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
    error: Option<MapError>,
    /// The tiles read so far (the proofs of one snapshot share the top).
    tiles: HashMap<Vec<u8>, Tile>,
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

impl AtSnapshot<'_> {
    fn tile(&mut self, key: Vec<u8>) -> Result<&Tile, ReadError> {
        use std::collections::hash_map::Entry;
        Ok(match self.tiles.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let v = self
                    .snap
                    .get_cf(cf(self.db, CF_ORDER_MAP), e.key())
                    .map_err(|source| ReadError::Db {
                        cf: CF_ORDER_MAP,
                        key: super::keys::display_key(e.key()),
                        source,
                    })?;
                let t = match v {
                    None => Tile::default(),
                    Some(v) => decode_tile(e.key(), &v)?,
                };
                e.insert(t)
            }
        })
    }
}

impl NodeStore for AtSnapshot<'_> {
    fn get_node(&mut self, position: &[u8]) -> Result<Option<Node>, String> {
        let (key, slot) = locate(position)?;
        match self.tile(key) {
            Ok(t) => Ok(t.0[slot]),
            Err(e) => {
                let m = e.to_string();
                self.error = Some(e.into());
                Err(m)
            }
        }
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
        tiles: HashMap::new(),
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
        return Err(e);
    }
    let proof = proof.map_err(MapError::Map)?;
    let mut out = Vec::with_capacity(parties.len());
    for party in parties {
        let key = map::party_key(party);
        let p = map::prove(&mut s, &key);
        if let Some(e) = s.error.take() {
            return Err(e);
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
    use crate::storage::{open, StateMachineStore};
    use arbor_proto::ledger::map::OrderHead;
    use std::collections::BTreeMap;

    /// One epoch's update through the state machine's store: the changed
    /// tiles are written into `w` at the end.
    fn update(
        reader: &LedgerReader,
        w: &mut PendingWrites,
        cache: Option<&NodeCache>,
        c: &BTreeMap<Hash, OrderHead>,
    ) -> Hash {
        let mut store = Applying::new(reader, w, cache);
        let root = map::update(&mut store, c).unwrap();
        assert!(store.error.is_none());
        store.finish();
        root
    }

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

    /// Records `seq` as the chain head's, as the state machine would (the
    /// map's root is read at the head's epoch).
    fn set_head(sm: &StateMachineStore, seq: u64) {
        let head = Head {
            seq,
            hash: [0; 32],
            time_ms: 1,
        };
        let value = serde_json::to_vec(&head).unwrap();
        sm.db
            .put_cf(cf(&sm.db, CF_SM_META), KEY_HEAD, value)
            .unwrap();
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
            root = update(&reader, &mut w, None, &c);
            assert_eq!(root, map::update(&mut reference, &c).unwrap());
            w.put(CF_ORDER_MAP, &map_root_key(32 * (epoch as u64 + 1)), &root);
            if epoch == 1 {
                // Two epochs in one batch, the next one after it is written.
                w.write().unwrap();
            }
        }
        w.write().unwrap();
        set_head(&sm, 96);
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
            let root = update(&reader, &mut w, Some(&cache), &c);
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
            update(&reader, &mut lost, Some(&cache), &many(5000, 300));
        }
        cache.begin();
        let mut w = PendingWrites::new(sm.db.clone());
        let reader = sm.reader().with_overlay(w.overlay());
        let c = many(6000, 100);
        let root = update(&reader, &mut w, Some(&cache), &c);
        assert_eq!(
            root,
            map::update(&mut reference, &c).unwrap(),
            "after a lost batch"
        );
        w.write().unwrap();
        cache.written();
        // At most every tile of depth 0, 4, 8 and 12.
        assert!(cache.len() > 0 && cache.len() <= 1 + 16 + 256 + 4096);
        let l = cache.layers();
        assert!(l.staged.is_empty());
        let mut nodes = 0;
        for (key, tile) in &l.written {
            let depth = tile_depth(key);
            assert!(depth < CACHE_DEPTH && depth.is_multiple_of(TILE_LEVELS));
            let stored = sm
                .db
                .get_cf(cf(&sm.db, CF_ORDER_MAP), key)
                .unwrap()
                .map_or_else(Tile::default, |v| Tile::decode(&v).unwrap());
            assert_eq!(stored, *tile, "depth {depth}");
            nodes += tile.0.iter().flatten().count();
        }
        assert!(nodes > 1000, "the upper levels are cached: {nodes} nodes");
    }

    /// A store that records the positions written.
    struct Recording(BTreeMap<Vec<u8>, Node>, Vec<Vec<u8>>);

    impl NodeStore for Recording {
        fn get_node(&mut self, position: &[u8]) -> Result<Option<Node>, String> {
            self.0.get_node(position)
        }
        fn put_node(&mut self, position: &[u8], node: &Node) {
            self.1.push(position.to_vec());
            self.0.put_node(position, node);
        }
    }

    /// An epoch's update writes one record per tile it changes, not one per
    /// node: ~log2(N) / 4 records per changed order.
    #[test]
    fn an_epoch_writes_each_changed_tile_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let cache = NodeCache::default();
        let mut reference = Recording(BTreeMap::new(), Vec::new());
        let ids = |from: u64, n: u64, step: u64| -> BTreeMap<Hash, OrderHead> {
            (from..from + n)
                .map(|i| {
                    (
                        map::order_key(&format!("o-{}", (i * step) % 20_000)),
                        OrderHead {
                            seq: i,
                            hash: [(i % 251) as u8; 32],
                        },
                    )
                })
                .collect()
        };
        let mut w = PendingWrites::new(sm.db.clone());
        let reader = sm.reader().with_overlay(w.overlay());
        let all = ids(0, 20_000, 1);
        assert_eq!(
            update(&reader, &mut w, Some(&cache), &all),
            map::update(&mut reference, &all).unwrap()
        );
        w.write().unwrap();
        cache.written();
        for epoch in 0..4u64 {
            // 32 orders changed, spread over the map.
            let c = ids(30_000 + epoch * 32, 32, 7919);
            reference.1.clear();
            let mut w = PendingWrites::new(sm.db.clone());
            let reader = sm.reader().with_overlay(w.overlay());
            let root = update(&reader, &mut w, Some(&cache), &c);
            assert_eq!(root, map::update(&mut reference, &c).unwrap());
            let nodes = reference.1.len();
            let tiles: std::collections::BTreeSet<_> =
                reference.1.iter().map(|p| locate(p).unwrap().0).collect();
            let written = w.overlay().keys(CF_ORDER_MAP);
            assert_eq!(written.len(), tiles.len(), "epoch {epoch}");
            assert!(written.iter().all(|(k, v)| *v && tiles.contains(k)));
            assert_eq!(w.len(), tiles.len(), "one write per tile");
            // 20,000 orders: ~15 levels, the top ~5 shared by the 32 paths.
            assert!(nodes > 300, "{nodes} nodes");
            assert!(
                tiles.len() * 5 < nodes * 2,
                "{} tiles for {nodes} nodes",
                tiles.len()
            );
            w.write().unwrap();
            cache.written();
        }
    }

    /// Hostile tile bytes: refused with an error naming the key, no panic.
    #[test]
    fn corrupt_tiles_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let mut w = PendingWrites::new(sm.db.clone());
        let reader = sm.reader().with_overlay(w.overlay());
        let root = update(&reader, &mut w, None, &changes(0, 50));
        w.put(CF_ORDER_MAP, &map_root_key(32), &root);
        w.write().unwrap();
        set_head(&sm, 40);
        let (top, _) = locate(&map::position(&map::EMPTY, 0)).unwrap();
        let good = sm
            .db
            .get_cf(cf(&sm.db, CF_ORDER_MAP), &top)
            .unwrap()
            .unwrap();
        assert_eq!(Tile::decode(&good).unwrap().encode(), good);
        let mut bad_tag = good.clone();
        bad_tag[2] = 7;
        let mut derived_at_bottom = vec![0x00, 0x80];
        derived_at_bottom.push(DERIVED);
        for bad in [
            vec![],
            vec![0xff],
            vec![0xff, 0xff],
            good[..good.len() - 1].to_vec(),
            [good.as_slice(), &[0]].concat(),
            bad_tag,
            derived_at_bottom,
        ] {
            sm.db.put_cf(cf(&sm.db, CF_ORDER_MAP), &top, &bad).unwrap();
            let e = sm
                .reader()
                .order_map_proof("o-1", &[])
                .err()
                .expect("refused");
            assert!(
                e.to_string()
                    .contains(&crate::storage::keys::display_key(&top)),
                "{e}"
            );
            let mut w = PendingWrites::new(sm.db.clone());
            let reader = sm.reader().with_overlay(w.overlay());
            let e = write_epoch(&reader, &mut w, None, 64, &[]).expect_err("refused");
            assert!(
                e.to_string()
                    .contains(&crate::storage::keys::display_key(&top)),
                "{e}"
            );
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

        // A database of before tiles: the same map, one node per key.
        let records = |prefix: u8| -> Vec<(Vec<u8>, Vec<u8>)> {
            sm.db
                .iterator_cf(cf(&sm.db, CF_ORDER_MAP), rocksdb::IteratorMode::Start)
                .map(|r| r.unwrap())
                .filter(|(k, _)| k[0] == prefix)
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect()
        };
        let tiles = records(b't');
        assert!(!tiles.is_empty());
        assert!(records(b'n').is_empty());
        let roots_before = records(b'R');
        for (k, _) in &tiles {
            sm.db.delete_cf(cf(&sm.db, CF_ORDER_MAP), k).unwrap();
        }
        for (pos, node) in &reference {
            sm.db
                .put_cf(cf(&sm.db, CF_ORDER_MAP), map_node_key(pos), node.encode())
                .unwrap();
        }
        assert!(holds_untiled_nodes(&sm.reader()).unwrap());
        catch_up(&sm.reader()).unwrap();
        assert!(records(b'n').is_empty(), "the old nodes are gone");
        assert_eq!(records(b't'), tiles, "the same tiles");
        assert_eq!(records(b'R'), roots_before, "the same roots");
        for i in 0..7 {
            let key = map::order_key(&format!("o-{i}"));
            let snap = sm.reader().order_map_proof(&format!("o-{i}"), &[]).unwrap();
            assert_eq!(snap.proof, map::prove(&mut reference, &key).unwrap());
        }
        assert!(!holds_untiled_nodes(&sm.reader()).unwrap());
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
