//! The ledger's Merkle tree in RocksDB: every complete subtree's root, so
//! that a root, an inclusion proof and a consistency proof cost O(log n)
//! point reads and hashes (`merkle::root_from` and friends), and the replica
//! keeps nothing of the tree in memory.
//!
//! Column family `merkle`: key `0x80 || last leaf u64be || level u8`
//! ([`merkle_node_key`]), value the root of the complete subtree over leaves
//! `[index << level, (index + 1) << level)` (level 0: `leaf_hash(entry
//! hash)`), 32 bytes; key `\xffsize`: how many leaves the nodes cover. Keys
//! are written in increasing order (a node by its last leaf's entry), so
//! compaction moves flushed files down instead of rewriting the tree. A
//! database with the earlier layout (level first; key `size`) has its tree
//! built again in this one when it is opened. A subtree is written once, when its last leaf is
//! appended, and never changes; about two nodes per entry (~80 bytes on
//! disk before RocksDB's own overhead).
//!
//! The tree is derived state, like the lease index. The state machine adds
//! an entry's nodes and the new `size` to the batch that writes the entry
//! ([`after_entry`]: the leaf, then one node per level where the entry
//! completes a subtree, each from its left sibling, read through the
//! batch's overlay, and the node just made), so the tree and the ledger are
//! always written together. It is not in snapshots: installing one clears
//! the tree in the install batch, and [`ensure_built`] builds it again from
//! the installed ledger. A database written before the tree existed (no
//! `size` key) has it built once when it is opened. Building goes in
//! batches of [`BUILD_BATCH`] entries, each written with the `size` it
//! reaches, so an interrupted build goes on where it stopped.

use std::io;

use arbor_proto::ledger::merkle::{self, Hash, SubtreeSource};
use rocksdb::DB;

use super::keys::{merkle_node_key, CF_MERKLE, KEY_MERKLE_SIZE, MERKLE_NODE_PREFIX};
use super::overlay::PendingWrites;
use super::{cf, io_err, LedgerReader, ReadError};

/// Entries hashed into the tree per write batch when it is built.
const BUILD_BATCH: usize = 4096;

fn decode_hash(key: &[u8], v: &[u8]) -> Result<Hash, ReadError> {
    v.try_into()
        .map_err(|_| LedgerReader::corrupt_err(CF_MERKLE, key, "not 32 bytes"))
}

/// The node at `level`/`index`, which must exist.
fn node(reader: &LedgerReader, level: u32, index: u64) -> Result<Hash, ReadError> {
    let key = merkle_node_key(level, index);
    match reader.raw(CF_MERKLE, &key)? {
        Some(v) => decode_hash(&key, &v),
        None => Err(LedgerReader::corrupt_err(
            CF_MERKLE,
            &key,
            "missing: the Merkle tree is not built that far",
        )),
    }
}

/// How many leaves the tree holds (0 when it has never been built).
pub(super) fn size(reader: &LedgerReader) -> Result<u64, ReadError> {
    match reader.raw(CF_MERKLE, KEY_MERKLE_SIZE)? {
        None => Ok(0),
        Some(v) => v
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| LedgerReader::corrupt_err(CF_MERKLE, KEY_MERKLE_SIZE, "not 8 bytes")),
    }
}

fn built(reader: &LedgerReader) -> Result<bool, ReadError> {
    Ok(reader.raw(CF_MERKLE, KEY_MERKLE_SIZE)?.is_some())
}

/// Adds to `w` the nodes that entry `seq` (hash `entry_hash`) completes and
/// the new size, `seq + 1`. The tree must hold exactly `seq` leaves.
pub(super) fn after_entry(
    reader: &LedgerReader,
    w: &mut PendingWrites,
    seq: u64,
    entry_hash: &Hash,
) -> Result<(), ReadError> {
    let mut hash = merkle::leaf_hash(entry_hash);
    let (mut level, mut index) = (0u32, seq);
    w.put(CF_MERKLE, &merkle_node_key(level, index), &hash);
    // A right child completes its parent.
    while index & 1 == 1 {
        let left = node(reader, level, index - 1)?;
        hash = merkle::node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        w.put(CF_MERKLE, &merkle_node_key(level, index), &hash);
    }
    w.put(CF_MERKLE, KEY_MERKLE_SIZE, &(seq + 1).to_be_bytes());
    Ok(())
}

/// Adds to `batch` the clearing of the tree (a snapshot is being installed).
pub(super) fn clear_into(db: &DB, batch: &mut rocksdb::WriteBatch) {
    let handle = cf(db, CF_MERKLE);
    // Node keys start with 0x80, the size key with 0xff 's' (and the
    // earlier layout's with a level < 64, or `s`).
    batch.delete_range_cf(handle, [0u8].as_slice(), [0xffu8; 2].as_slice());
}

/// Whether the tree is stored in the earlier layout (level first): any key
/// before [`MERKLE_NODE_PREFIX`].
fn earlier_layout(db: &DB) -> Result<bool, rocksdb::Error> {
    let mut it = db.raw_iterator_cf(cf(db, CF_MERKLE));
    it.seek_to_first();
    it.status()?;
    Ok(it
        .key()
        .is_some_and(|k| k.first() < Some(&MERKLE_NODE_PREFIX)))
}

/// Brings the tree up to the ledger: builds it when the database has none
/// (older format, or a snapshot was just installed), or finishes a build
/// that was interrupted. Bounded memory: [`BUILD_BATCH`] entries at a time.
pub(crate) fn ensure_built(reader: &LedgerReader) -> io::Result<()> {
    let err = |e: ReadError| io_err("build the Merkle tree", e);
    let db: &DB = &reader.db;
    if earlier_layout(db).map_err(|e| io_err("read the Merkle tree", e))? {
        tracing::info!(
            "the ledger's Merkle tree is stored in the earlier layout (level first): \
             building it again in the append-ordered one"
        );
        db.delete_range_cf(
            cf(db, CF_MERKLE),
            [0u8].as_slice(),
            [MERKLE_NODE_PREFIX].as_slice(),
        )
        .map_err(|e| io_err("clear the Merkle tree's earlier layout", e))?;
    }
    let ledger_len = reader.head().map_err(err)?.map_or(0, |h| h.seq + 1);
    let mut have = size(reader).map_err(err)?;
    if have == ledger_len && (have > 0 || built(reader).map_err(err)?) {
        return Ok(());
    }
    if have > ledger_len {
        return Err(io_err(
            "build the Merkle tree",
            format_args!("it holds {have} leaves but the ledger has {ledger_len} entries"),
        ));
    }
    if have < ledger_len {
        tracing::info!(
            from = have,
            entries = ledger_len,
            "building the ledger's Merkle tree (database older than the persisted tree, \
             a snapshot just installed or an interrupted build)"
        );
    }
    loop {
        let mut w = PendingWrites::new(reader.db.clone());
        let overlay = reader.with_overlay(w.overlay());
        let entries = reader.entries(have, BUILD_BATCH).map_err(err)?;
        for e in &entries {
            if e.seq != have {
                return Err(io_err(
                    "build the Merkle tree",
                    format_args!("ledger entry {} found where {have} was expected", e.seq),
                ));
            }
            after_entry(&overlay, &mut w, e.seq, &e.hash).map_err(err)?;
            have += 1;
        }
        if entries.is_empty() {
            // Marks an empty ledger's tree as built too.
            w.put(CF_MERKLE, KEY_MERKLE_SIZE, &have.to_be_bytes());
        }
        w.write().map_err(|e| io_err("write the Merkle tree", e))?;
        if entries.len() < BUILD_BATCH {
            break;
        }
    }
    if have != ledger_len {
        return Err(io_err(
            "build the Merkle tree",
            format_args!("built {have} leaves but the ledger has {ledger_len} entries"),
        ));
    }
    Ok(())
}

/// The persisted tree as the API reads it: straight from RocksDB.
struct Stored<'a>(&'a LedgerReader);

impl SubtreeSource for Stored<'_> {
    type Error = ReadError;
    fn complete(&self, level: u32, index: u64) -> Result<Hash, ReadError> {
        node(self.0, level, index)
    }
}

impl LedgerReader {
    /// The Merkle root over the first `size` entries: O(log size) reads.
    pub fn merkle_root(&self, size: u64) -> Result<Hash, String> {
        root(self, size)
    }

    /// The inclusion proof of entry `seq` in the tree of `size` entries.
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>, String> {
        inclusion(self, seq, size)
    }

    /// The consistency proof between the trees of `old` and `new` entries.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, String> {
        consistency(self, old, new)
    }
}

/// Checks that the tree holds the first `size` leaves.
fn holds(reader: &LedgerReader, size: u64) -> Result<(), String> {
    let have = self::size(reader).map_err(|e| e.to_string())?;
    if have < size {
        return Err(format!(
            "ledger has {have} entries, fewer than the {size} asked for"
        ));
    }
    Ok(())
}

/// The root of the tree over the first `size` entries.
fn root(reader: &LedgerReader, size: u64) -> Result<Hash, String> {
    holds(reader, size)?;
    merkle::root_from(&Stored(reader), size).map_err(|e| e.to_string())
}

/// The inclusion proof of entry `seq` in the tree of `size` entries.
fn inclusion(reader: &LedgerReader, seq: u64, size: u64) -> Result<Vec<Hash>, String> {
    holds(reader, size)?;
    merkle::inclusion_proof_from(&Stored(reader), seq, size)?.map_err(|e| e.to_string())
}

/// The consistency proof between the trees of `old` and `new` entries.
fn consistency(reader: &LedgerReader, old: u64, new: u64) -> Result<Vec<Hash>, String> {
    holds(reader, new)?;
    merkle::consistency_proof_from(&Stored(reader), old, new)?.map_err(|e| e.to_string())
}
