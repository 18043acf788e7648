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

use std::collections::BTreeMap;

use arbor_proto::ledger::map::{self, Node, NodeStore, OrderHead, MAP_EPOCH};
use arbor_proto::ledger::merkle::Hash;
use arbor_proto::ledger::Head;
use rocksdb::DB;

use super::cf;
use super::keys::{map_node_key, map_root_key, CF_ORDER_MAP, CF_SM_META, KEY_HEAD};
use super::overlay::PendingWrites;
use super::{LedgerReader, ReadError};

/// The map's nodes as the state machine sees them while applying: reads
/// through its overlay, writes into its batch.
struct Applying<'a> {
    reader: &'a LedgerReader,
    w: &'a mut PendingWrites,
    error: Option<ReadError>,
}

fn decode_node(key: &[u8], v: &[u8]) -> Result<Node, ReadError> {
    Node::decode(v).map_err(|e| LedgerReader::corrupt_err(CF_ORDER_MAP, key, e))
}

impl NodeStore for Applying<'_> {
    fn get_node(&mut self, position: &[u8]) -> Result<Option<Node>, String> {
        let key = map_node_key(position);
        let r = self
            .reader
            .raw(CF_ORDER_MAP, &key)
            .and_then(|v| v.map(|v| decode_node(&key, &v)).transpose());
        r.map_err(|e| {
            let m = e.to_string();
            self.error = Some(e);
            m
        })
    }

    fn put_node(&mut self, position: &[u8], node: &Node) {
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
    seq: u64,
) -> Result<(), MapError> {
    let size = seq + 1;
    if !size.is_multiple_of(MAP_EPOCH) {
        return Ok(());
    }
    let mut changes: BTreeMap<Hash, OrderHead> = BTreeMap::new();
    for s in size - MAP_EPOCH..size {
        let e = reader.entry(s)?.ok_or_else(|| {
            MapError::Map(format!(
                "entry {s} of the epoch ending at {size} is missing"
            ))
        })?;
        if !e.order_id.is_empty() {
            changes.insert(
                map::order_key(&e.order_id),
                OrderHead {
                    seq: e.seq,
                    hash: e.hash,
                },
            );
        }
    }
    let mut store = Applying {
        reader,
        w,
        error: None,
    };
    let root = map::update(&mut store, &changes);
    if let Some(e) = store.error.take() {
        return Err(e.into());
    }
    let root = root.map_err(MapError::Map)?;
    w.put(CF_ORDER_MAP, &map_root_key(size), &root);
    Ok(())
}

/// Builds the map from the ledger when the newest epoch's root is missing:
/// a database written before the order map existed, or a snapshot from such
/// a replica. Replays every epoch in order (each epoch's root is written),
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
        let mut changes: BTreeMap<Hash, OrderHead> = BTreeMap::new();
        for e in reader.entries(from, MAP_EPOCH as usize)? {
            if e.seq >= size {
                break;
            }
            if !e.order_id.is_empty() {
                changes.insert(
                    map::order_key(&e.order_id),
                    OrderHead {
                        seq: e.seq,
                        hash: e.hash,
                    },
                );
            }
        }
        let mut store = Applying {
            reader: &overlay,
            w: &mut w,
            error: None,
        };
        let root = map::update(&mut store, &changes);
        if let Some(e) = store.error.take() {
            return Err(e.into());
        }
        let root = root.map_err(MapError::Map)?;
        w.put(CF_ORDER_MAP, &map_root_key(size), &root);
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
    /// read under one RocksDB snapshot with the ledger size it belongs to.
    pub fn order_map_proof(&self, order_id: &str) -> Result<MapSnapshot, MapError> {
        proof(self, order_id)
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
fn proof(reader: &LedgerReader, order_id: &str) -> Result<MapSnapshot, MapError> {
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
    Ok(MapSnapshot {
        size,
        map_size,
        map_root,
        proof: proof.map_err(MapError::Map)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::open;

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
            let snap = sm.reader().order_map_proof(&id).unwrap();
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
        let snap = sm.reader().order_map_proof("never").unwrap();
        assert_eq!(
            map::verify(&snap.proof, &map::order_key("never"), &root).unwrap(),
            None
        );
    }
}

#[cfg(test)]
mod catch_up_tests {
    use super::*;
    use crate::storage::keys::{u64_key, CF_LEDGER};
    use crate::storage::open;
    use arbor_proto::ledger::Entry;
    use prost::Message;

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
        let snap = sm.reader().order_map_proof("o-1").unwrap();
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
