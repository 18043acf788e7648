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
//! - **Snapshots are files.** A snapshot is a framed dump of the state
//!   machine column families read under one RocksDB snapshot, persisted as
//!   `<dir>/snapshots/current` (see [`snapshot`] for the format). Installing
//!   one replaces the state machine in a single batch, so a crash leaves
//!   either the old state or the new one.
//!
//! On disk: `<dir>/db` is the RocksDB, `<dir>/snapshots/` the snapshot files.
//! [`keys`] owns every column family name and key encoding.

mod feed;
pub mod keys;
mod leases;
mod log_store;
mod order_map;
mod overlay;
mod reader;
pub mod snapshot;
mod state_machine;
mod view;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, DB};

pub use feed::AppliedHead;
pub use log_store::LogStore;
pub use order_map::{MapError, MapSnapshot};
pub use reader::{LedgerReader, ReadError};
pub use snapshot::SnapshotData;
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
    #[error("cannot open rocksdb at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
}

/// Opens (creating if needed) the storage under `dir`: the RocksDB in
/// `dir/db` with every column family, and the snapshot directory.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    let db_path = dir.join("db");
    let snapshot_dir = dir.join("snapshots");
    for path in [&db_path, &snapshot_dir] {
        std::fs::create_dir_all(path).map_err(|source| StorageError::CreateDir {
            path: path.clone(),
            source,
        })?;
    }

    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_compression_type(DBCompressionType::Lz4);
    let cfs = keys::ALL_CFS.iter().map(|name| {
        let mut o = Options::default();
        o.set_compression_type(DBCompressionType::Lz4);
        ColumnFamilyDescriptor::new(*name, o)
    });
    let db =
        DB::open_cf_descriptors(&db_opts, &db_path, cfs).map_err(|source| StorageError::Open {
            path: db_path.clone(),
            source,
        })?;
    leases::ensure_built(&db).map_err(|source| StorageError::LeaseIndex {
        path: db_path.clone(),
        source,
    })?;
    let db = Arc::new(db);
    Ok((
        LogStore::new(db.clone()),
        StateMachineStore::new(db, snapshot_dir),
    ))
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
