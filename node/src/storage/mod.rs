//! The replica's RocksDB storage: the raft log, the state machine (ledger,
//! orders, parties, dedupe index) and its snapshots.
//!
//! Why it is shaped so:
//!
//! - **One database, one WAL.** The raft log, the vote and the state machine
//!   live in column families of a single RocksDB. A write batch is atomic
//!   across column families, and every write goes through the same
//!   write-ahead log in order, so a vote write and a log write can never be
//!   reordered on disk, and a synced write also makes every earlier
//!   (unsynced) write durable.
//! - **The log is synced, the state machine is not.** [`LogStore`] syncs
//!   every append, truncation, purge and vote before reporting it done
//!   (openraft's durability contract). [`StateMachineStore`] writes each
//!   `apply` call (a stream of committed entries) as one unsynced atomic
//!   batch, and answers the clients only after it: if the machine crashes,
//!   the lost tail of applied state is re-applied from the synced raft log
//!   (openraft re-applies from `last_applied` up to the saved `committed`).
//! - **Decided one entry at a time, written in batches.** The rules of the
//!   next command must see the previous command's effects: the state machine
//!   decides through a [`LedgerReader`] that reads its pending batch (an
//!   in-memory overlay keyed by column family and key) before RocksDB. The
//!   gRPC API shares a plain reader of what is written.
//! - **Snapshots are checkpoints, streamed.** Building a snapshot takes a
//!   RocksDB checkpoint (hard links to the SST files) into
//!   `<dir>/snapshots/`, reading no record, so its cost does not grow with
//!   the ledger; the snapshot file's bytes (the framed dump of the state
//!   machine column families, see [`snapshot`] for the format) are produced
//!   from it only when it is sent, chunk by chunk. A received snapshot is a
//!   file (`<dir>/snapshots/current`); it is sent, received and installed
//!   in bounded memory, chunk by chunk and record by record. Installing
//!   replaces the state machine in batches behind a marker file: a crash in
//!   between makes the next open install it again, so nothing ever reads a
//!   half-replaced state.
//!
//! - **Damage is detected, never served.** RocksDB recovers its WAL in
//!   `AbsoluteConsistency` mode: a WAL that is truncated or fails its
//!   checksums makes the open fail instead of silently dropping its tail
//!   (which could be log entries or a vote this replica acknowledged: raft's
//!   safety rests on them). [`open_checked`] then salvages up to the last
//!   consistent record and says so, and the replica recovers from its peers
//!   before it votes or serves. Synced WALs are also tracked in the MANIFEST.
//!   Paranoid checks are on and every read verifies block checksums; a
//!   corruption found at read time raises the replica's [`Fault`], which
//!   takes it out of service and makes the binary exit (`health.rs`). At
//!   start [`scrub`] reads every record once, so damage in data nobody reads
//!   often is found at once. docs/operations.md "Disk faults" has the
//!   reasoning and the recovery procedure.
//!
//! On disk: `<dir>/db` is the RocksDB, `<dir>/snapshots/` the snapshot
//! checkpoints and files.
//! [`keys`] owns every column family name and key encoding.

mod feed;
pub mod keys;
mod leases;
mod log_store;
mod merkle_tree;
mod order_map;
mod overlay;
mod reader;
mod record;
pub mod snapshot;
mod state_machine;
mod view;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor,
    DBCompressionType, DBRecoveryMode, IteratorMode, Options, ReadOptions, DB,
};
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

pub use feed::AppliedHead;
pub use log_store::LogStore;
pub use order_map::{MapError, MapSnapshot, PartySnapshot};
pub use reader::{LedgerReader, ReadError};
pub use snapshot::{SnapshotData, SnapshotInbox};
pub use state_machine::StateMachineStore;
pub use view::CheckedView;

/// Why the storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create storage directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot build the lease index of {path}: {source}")]
    LeaseIndex {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot finish installing the snapshot in {path}: {source}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot build the Merkle tree of {path}: {source}")]
    MerkleTree {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open rocksdb at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
}

/// Corruption found in this replica's storage: once raised, it stays raised
/// (the replica must not go on serving; `health.rs` watches it).
#[derive(Clone)]
pub struct Fault(Arc<tokio::sync::watch::Sender<Option<String>>>);

impl Default for Fault {
    fn default() -> Self {
        Fault(Arc::new(tokio::sync::watch::channel(None).0))
    }
}

impl Fault {
    /// Records the first corruption (later ones are only logged).
    pub fn raise(&self, what: impl std::fmt::Display) {
        let what = what.to_string();
        tracing::error!(error = %what, "storage corruption: this replica stops serving");
        self.0.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(what);
                true
            } else {
                false
            }
        });
    }

    /// Raises the fault if `e` is a corruption RocksDB detected.
    pub fn check(&self, what: impl std::fmt::Display, e: &rocksdb::Error) {
        if e.kind() == rocksdb::ErrorKind::Corruption {
            self.raise(format_args!("{what}: {e}"));
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.0.subscribe()
    }
}

const MIB: usize = 1024 * 1024;

/// The replica's RocksDB memory (`[storage]` of the TOML config): what bounds
/// the storage's memory, whatever the ledger's size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageConfig {
    /// The block cache shared by every column family (bytes), holding data
    /// blocks and the SST files' index and filter blocks.
    pub block_cache_bytes: usize,
    /// All memtables together (bytes): past it the largest is flushed. Each
    /// column family's memtable is at most a quarter of it.
    pub write_buffer_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            block_cache_bytes: 64 * MIB,
            write_buffer_bytes: 64 * MIB,
        }
    }
}

impl StorageConfig {
    /// Checks the sizes; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("block-cache-bytes", self.block_cache_bytes),
            ("write-buffer-bytes", self.write_buffer_bytes),
        ] {
            if v < MIB {
                return Err(format!("storage.{key} = {v} must be at least 1 MiB"));
            }
        }
        Ok(())
    }

    /// The write-ahead log's bound: twice the memtables.
    fn max_wal_bytes(&self) -> u64 {
        2 * self.write_buffer_bytes as u64
    }

    /// Sizes the LSM levels from the memtables, not from RocksDB's
    /// defaults (a 256 MB base level of 64 MB files): with those, a column
    /// family under 256 MB is one level, and each compaction of the four
    /// newest flushed files rewrites all of it, so the cost of a write grew
    /// with the ledger (at 1,000,000 orders, a flush of 1.3 MB of command
    /// ids was merged into 96 MB of them). With a base level of four
    /// memtables and files of one memtable, a compaction from level 0
    /// rewrites at most the base level, and deeper levels are compacted a
    /// file at a time: the cost per write grows with the number of levels
    /// (log of the size), not with the size.
    fn level_sizes(&self, o: &mut Options) {
        o.set_max_bytes_for_level_base(4 * self.memtable_bytes() as u64);
        o.set_target_file_size_base(self.memtable_bytes() as u64);
    }

    /// Each column family's memtable.
    fn memtable_bytes(&self) -> usize {
        (self.write_buffer_bytes / 4).max(MIB / 2)
    }

    /// The table options every column family shares: the one block cache,
    /// with index and filter blocks in it (not held beside it, where they
    /// would grow with the data); a Bloom filter per SST file for the
    /// column families of [`FILTERED_CFS`].
    ///
    /// Index and filters are partitioned ([`METADATA_BLOCK_BYTES`] per
    /// partition, the small top level pinned in the cache): a large SST
    /// file's index or filter is then many small blocks, so a point read
    /// that misses the cache reads one partition, not the file's whole
    /// index (~2 MB for a 64 MB file of orders) and filter. Unpartitioned,
    /// a ledger of a few hundred thousand orders made every such miss read
    /// and checksum megabytes (docs/performance.md, "Cost against the
    /// ledger's size").
    fn table_options(&self, cache: &Cache, filtered: bool) -> BlockBasedOptions {
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(cache);
        t.set_cache_index_and_filter_blocks(true);
        t.set_cache_index_and_filter_blocks_with_high_priority(true);
        t.set_pin_l0_filter_and_index_blocks_in_cache(true);
        t.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        t.set_metadata_block_size(METADATA_BLOCK_BYTES);
        t.set_pin_top_level_index_and_filter(true);
        if filtered {
            t.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
            t.set_partition_filters(true);
        }
        t
    }
}

/// The column families read by key where the key is often absent: a
/// command id checked for a resend, an order or external id registered for
/// the first time, an order map position not yet used. Each gets a Bloom
/// filter per SST file (~1 % false positives) and one over its memtable,
/// so a miss costs neither a skip-list search nor an index and data block
/// per level. The ledger, the raft log and the Merkle tree are read by
/// position that exists, or iterated: no filter.
const FILTERED_CFS: [&str; 8] = [
    keys::CF_COMMANDS,
    keys::CF_ORDERS,
    keys::CF_REFS,
    keys::CF_ORDER_MAP,
    keys::CF_PARTIES,
    keys::CF_PARTY_KEYS,
    keys::CF_PROFILES,
    keys::CF_STATS,
];

/// Bits per key of the SST files' Bloom filters (~1 % false positives).
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// The size of one partition of an SST file's index or filter.
const METADATA_BLOCK_BYTES: usize = 4096;

/// The memtable's Bloom filter, as a fraction of the memtable's size.
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;

/// The RocksDB options every open uses (see the module docs).
fn db_options(wal: DBRecoveryMode) -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_wal_recovery_mode(wal);
    o.set_paranoid_checks(true);
    o.set_track_and_verify_wals_in_manifest(true);
    o
}

/// Opens (creating if needed) the storage under `dir`: the RocksDB in
/// `dir/db` with every column family, and the snapshot directory.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    open_with(dir, Metrics::new())
}

/// [`open`], recording storage metrics in `metrics`.
pub fn open_with(
    dir: &Path,
    metrics: Metrics,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    open_checked(dir, metrics, false, &StorageConfig::default()).map(|(log, sm, _)| (log, sm))
}

/// [`open_with`]. When `salvage_wal` and the WAL is damaged (the
/// `AbsoluteConsistency` open fails with `Corruption`), the database is
/// opened again in `PointInTime` mode, up to the last consistent record,
/// and the third value describes the damage: the caller must then treat
/// the replica as having lost acknowledged log entries (it recovers: no
/// vote, no election, no service until caught up; see `health::Recovery`).
/// `memory` sizes RocksDB's block cache and memtables.
pub fn open_checked(
    dir: &Path,
    metrics: Metrics,
    salvage_wal: bool,
    memory: &StorageConfig,
) -> Result<(LogStore, StateMachineStore, Option<String>), StorageError> {
    let db_path = dir.join("db");
    let snapshot_dir = dir.join("snapshots");
    for path in [&db_path, &snapshot_dir] {
        std::fs::create_dir_all(path).map_err(|source| StorageError::CreateDir {
            path: path.clone(),
            source,
        })?;
    }

    let cache = Cache::new_lru_cache(memory.block_cache_bytes);
    let open = |mode| {
        let cfs = keys::ALL_CFS.iter().map(|name| {
            let filtered = FILTERED_CFS.contains(name);
            let mut o = Options::default();
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_block_based_table_factory(&memory.table_options(&cache, filtered));
            o.set_write_buffer_size(memory.memtable_bytes());
            memory.level_sizes(&mut o);
            if filtered {
                o.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
                o.set_memtable_whole_key_filtering(true);
            }
            ColumnFamilyDescriptor::new(*name, o)
        });
        let mut o = db_options(mode);
        o.set_block_based_table_factory(&memory.table_options(&cache, false));
        o.set_write_buffer_size(memory.memtable_bytes());
        o.set_db_write_buffer_size(memory.write_buffer_bytes);
        // The WAL is kept until every column family with records in it has
        // flushed; past this the column families holding the oldest are
        // flushed. RocksDB's default (four times all memtables together,
        // ~1.8 GB with 14 column families) let disk use grow by gigabytes
        // between snapshots once a snapshot no longer flushed everything
        // every few seconds.
        o.set_max_total_wal_size(memory.max_wal_bytes());
        DB::open_cf_descriptors(&o, &db_path, cfs)
    };
    let mut damage = None;
    let db = match open(DBRecoveryMode::AbsoluteConsistency) {
        Ok(db) => db,
        Err(e) if salvage_wal && e.kind() == rocksdb::ErrorKind::Corruption => {
            let db = open(DBRecoveryMode::PointInTime).map_err(|_| StorageError::Open {
                path: db_path.clone(),
                source: e.clone(),
            })?;
            tracing::error!(
                error = %e,
                "the write-ahead log is damaged: opened up to its last consistent record; \
                 acknowledged raft entries may be lost, so this replica recovers from its peers \
                 before it votes or serves"
            );
            damage = Some(e.to_string());
            db
        }
        Err(source) => {
            return Err(StorageError::Open {
                path: db_path.clone(),
                source,
            })
        }
    };
    snapshot::finish_interrupted_install(&db, &snapshot_dir).map_err(|source| {
        StorageError::Snapshot {
            path: snapshot_dir.clone(),
            source,
        }
    })?;
    leases::ensure_built(&db).map_err(|source| StorageError::LeaseIndex {
        path: db_path.clone(),
        source,
    })?;
    let db = Arc::new(db);
    let fault = Fault::default();
    merkle_tree::ensure_built(&LedgerReader::new(db.clone(), fault.clone())).map_err(|source| {
        StorageError::MerkleTree {
            path: db_path.clone(),
            source,
        }
    })?;
    Ok((
        LogStore::new(db.clone(), fault.clone(), metrics.clone()),
        StateMachineStore::new(db, snapshot_dir, fault, metrics),
        damage,
    ))
}

/// Reads every record of every column family once, verifying checksums
/// (blocking; run it off the async threads). The first corruption is
/// returned (and raised on `fault`).
pub fn scrub(db: &DB, fault: &Fault) -> Result<u64, String> {
    let mut records = 0u64;
    for name in keys::ALL_CFS {
        let mut ro = ReadOptions::default();
        ro.set_verify_checksums(true);
        ro.fill_cache(false);
        for item in db.iterator_cf_opt(cf(db, name), ro, IteratorMode::Start) {
            match item {
                Ok(_) => records += 1,
                Err(e) => {
                    let what = format!("scrub of column family {name}: {e}");
                    fault.raise(&what);
                    return Err(what);
                }
            }
        }
    }
    Ok(records)
}

/// Flushes every column family's memtable to SST files (at shutdown: the
/// next start then replays little WAL).
pub fn flush(db: &DB) -> Result<(), rocksdb::Error> {
    for name in keys::ALL_CFS {
        db.flush_cf(cf(db, name))?;
    }
    Ok(())
}

/// The handle of a column family. Every name in [`keys::ALL_CFS`] is opened
/// by [`open`], so a missing one is a programming error.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is not open"))
}

/// An I/O error for openraft, with what was being done.
pub(crate) fn io_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configured sizes are what RocksDB runs with: the one block cache
    /// of that capacity (index and filter blocks in it), memtables bounded.
    #[test]
    fn the_storage_memory_is_what_the_config_says() {
        let dir = tempfile::tempdir().unwrap();
        let memory = StorageConfig {
            block_cache_bytes: 8 * MIB,
            write_buffer_bytes: 4 * MIB,
        };
        let (_log, sm, _) = open_checked(dir.path(), Metrics::new(), false, &memory).unwrap();
        let db = &sm.db;
        for name in keys::ALL_CFS {
            let capacity = db
                .property_int_value_cf(cf(db, name), "rocksdb.block-cache-capacity")
                .unwrap();
            assert_eq!(capacity, Some(8 * MIB as u64), "{name}");
        }
        let options = std::fs::read_dir(dir.path().join("db"))
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("OPTIONS-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .expect("an OPTIONS file");
        assert!(
            options.contains(&format!("db_write_buffer_size={}", 4 * MIB)),
            "{options}"
        );
        assert!(options.contains(&format!("write_buffer_size={}", MIB)));
        assert!(options.contains(&format!("max_total_wal_size={}", 8 * MIB)));
        assert!(options.contains("cache_index_and_filter_blocks=true"));
        // Each column family's sections of the OPTIONS file: the filtered
        // ones have a Bloom filter on their SST files and their memtable.
        let section = |kind: &str, name: &str| -> String {
            let head = format!("[{kind} \"{name}\"]");
            let at = options.find(&head).unwrap_or_else(|| panic!("no {head}"));
            let rest = &options[at + head.len()..];
            rest[..rest.find("\n[").unwrap_or(rest.len())].to_string()
        };
        for name in keys::ALL_CFS {
            let table = section("TableOptions/BlockBasedTable", name);
            let cfo = section("CFOptions", name);
            let filtered = FILTERED_CFS.contains(&name);
            assert_eq!(table.contains("bloomfilter"), filtered, "{name}: {table}");
            assert!(
                table.contains("index_type=kTwoLevelIndexSearch"),
                "{name}: {table}"
            );
            assert!(
                table.contains("pin_top_level_index_and_filter=true"),
                "{name}"
            );
            assert!(table.contains(&format!("metadata_block_size={METADATA_BLOCK_BYTES}")));
            assert_eq!(
                table.contains("partition_filters=true"),
                filtered,
                "{name}: {table}"
            );
            // Levels sized from the memtable (1 MiB here), not 256 MB.
            assert!(
                cfo.contains(&format!("max_bytes_for_level_base={}", 4 * MIB)),
                "{name}"
            );
            assert!(
                cfo.contains(&format!("target_file_size_base={}", MIB)),
                "{name}"
            );
            assert_eq!(
                cfo.contains("memtable_whole_key_filtering=true"),
                filtered,
                "{name}: {cfo}"
            );
        }
        assert!(FILTERED_CFS.contains(&keys::CF_COMMANDS));

        assert!(StorageConfig {
            block_cache_bytes: 1000,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("storage.block-cache-bytes"));
    }
}
