//! Writes decided but not yet in RocksDB, readable before they are.
//!
//! The state machine applies a whole stream of committed entries as ONE
//! RocksDB write batch. Each entry must still be decided against the effects
//! of the entries before it, so every write goes both into the batch and into
//! an [`Overlay`]: a map of (column family, key) to the pending value (or
//! deletion). A [`LedgerReader`](super::LedgerReader) made with
//! [`with_overlay`](super::LedgerReader::with_overlay) looks a key up there
//! first and in RocksDB second, so every point read it offers (and any added
//! later) sees the pending writes without knowing what kind of record they
//! are. Iterating reads (`LedgerReader::entries`) see RocksDB only; the
//! state machine does not use them while deciding, except the scan of the
//! profile index (`LedgerReader::profiled_nodes`, rules version 4), which
//! merges the overlay's keys ([`Overlay::keys`]) over RocksDB's.
//!
//! The overlay also remembers what such a reader read from RocksDB (the
//! signer's party record, read for every command of a batch, comes from
//! memory after the first time). That is safe because nothing else writes
//! the state machine's column families while it applies a stream, and the
//! overlay is emptied whenever its batch is written.
//!
//! The overlay is also what is written: [`PendingWrites::write`] builds the
//! RocksDB batch from the overlay's final value of each key written, so a
//! key written many times in one batch (the chain head, the Merkle tree's
//! size, a node's counters, the order map's upper nodes, epoch after epoch)
//! is inserted into the memtable once, not once per write. Keys only
//! remembered from reads are not written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rocksdb::{WriteBatch, DB};

use super::cf;

/// A key's pending value (`None`: a deletion) and whether it was written
/// (`false`: only remembered from RocksDB, see [`Overlay::remember`]).
struct Pending {
    value: Option<Vec<u8>>,
    written: bool,
}

type Values = HashMap<Vec<u8>, Pending>;

/// Pending values by column family and key; `None` is a pending deletion.
#[derive(Default)]
pub struct Overlay {
    cfs: Mutex<HashMap<&'static str, Values>>,
}

impl Overlay {
    /// `Some(pending value)` if the key was written or deleted, `None` if the
    /// overlay does not know it (read RocksDB).
    pub(crate) fn get(&self, cf_name: &str, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let cfs = self.cfs.lock().unwrap_or_else(|p| p.into_inner());
        cfs.get(cf_name)?.get(key).map(|p| p.value.clone())
    }

    fn set(&self, cf_name: &'static str, key: &[u8], value: Option<&[u8]>) {
        let mut cfs = self.cfs.lock().unwrap_or_else(|p| p.into_inner());
        let pending = Pending {
            value: value.map(<[u8]>::to_vec),
            written: true,
        };
        cfs.entry(cf_name)
            .or_default()
            .insert(key.to_vec(), pending);
    }

    /// Remembers what RocksDB holds for a key the overlay does not know, so
    /// that reading it again in the same batch does not go to RocksDB.
    pub(crate) fn remember(&self, cf_name: &'static str, key: &[u8], value: Option<&[u8]>) {
        let mut cfs = self.cfs.lock().unwrap_or_else(|p| p.into_inner());
        let values = cfs.entry(cf_name).or_default();
        if !values.contains_key(key) {
            let pending = Pending {
                value: value.map(<[u8]>::to_vec),
                written: false,
            };
            values.insert(key.to_vec(), pending);
        }
    }

    /// Empties the overlay, returning the batch of its written keys: each
    /// key's final value (or deletion) once.
    fn take_batch(&self, db: &DB) -> WriteBatch {
        let cfs = std::mem::take(&mut *self.cfs.lock().unwrap_or_else(|p| p.into_inner()));
        let mut batch = WriteBatch::default();
        for (cf_name, values) in cfs {
            let handle = cf(db, cf_name);
            for (key, p) in values {
                match (p.written, p.value) {
                    (false, _) => {}
                    (true, Some(v)) => batch.put_cf(handle, key, v),
                    (true, None) => batch.delete_cf(handle, key),
                }
            }
        }
        batch
    }

    /// Every key of `cf_name` the overlay knows, with whether it holds a
    /// value (`false`: a pending deletion): what a scan merges over RocksDB.
    pub(crate) fn keys(&self, cf_name: &str) -> Vec<(Vec<u8>, bool)> {
        let cfs = self.cfs.lock().unwrap_or_else(|p| p.into_inner());
        cfs.get(cf_name)
            .map(|v| {
                v.iter()
                    .map(|(k, p)| (k.clone(), p.value.is_some()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Writes for one RocksDB batch, held in the overlay that makes them
/// readable until [`PendingWrites::write`].
pub(crate) struct PendingWrites {
    db: Arc<DB>,
    /// Puts and deletions since the last write (repeats of a key included).
    writes: usize,
    overlay: Arc<Overlay>,
}

impl PendingWrites {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        PendingWrites {
            db,
            writes: 0,
            overlay: Arc::new(Overlay::default()),
        }
    }

    /// The overlay, to read the pending writes through a `LedgerReader`.
    pub(crate) fn overlay(&self) -> Arc<Overlay> {
        self.overlay.clone()
    }

    pub(crate) fn put(&mut self, cf_name: &'static str, key: &[u8], value: &[u8]) {
        self.writes += 1;
        self.overlay.set(cf_name, key, Some(value));
    }

    pub(crate) fn delete(&mut self, cf_name: &'static str, key: &[u8]) {
        self.writes += 1;
        self.overlay.set(cf_name, key, None);
    }

    /// Number of puts and deletions pending (a key written twice counts twice).
    pub(crate) fn len(&self) -> usize {
        self.writes
    }

    /// Writes the batch (unsynced): each written key once, with its last
    /// value; empties the overlay.
    pub(crate) fn write(&mut self) -> Result<(), rocksdb::Error> {
        let batch = self.overlay.take_batch(&self.db);
        self.writes = 0;
        self.db.write(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::keys::{CF_ORDERS, CF_REFS};
    use crate::storage::open;

    #[test]
    fn pending_writes_are_read_before_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let db = sm.db.clone();
        db.put_cf(cf(&db, CF_REFS), b"gone\x00", b"o-9").unwrap();
        let mut w = PendingWrites::new(db.clone());
        let r = sm.reader().with_overlay(w.overlay());
        w.put(CF_REFS, b"web\x001", b"o-1");
        w.delete(CF_REFS, b"gone\x00");
        assert_eq!(r.order_by_ref("web", "1").unwrap().as_deref(), Some("o-1"));
        assert_eq!(
            sm.reader().order_by_ref("web", "1").unwrap(),
            None,
            "not in RocksDB yet"
        );
        assert_eq!(r.order_by_ref("gone", "").unwrap(), None);
        assert_eq!(w.overlay.get(CF_REFS, b"gone\x00"), Some(None));
        assert_eq!(
            w.overlay.get(CF_ORDERS, b"gone\x00"),
            None,
            "per column family"
        );
        w.write().unwrap();
        assert_eq!(w.len(), 0);
        assert_eq!(
            sm.reader().order_by_ref("web", "1").unwrap().as_deref(),
            Some("o-1")
        );
        assert_eq!(db.get_cf(cf(&db, CF_REFS), b"gone\x00").unwrap(), None);
    }

    #[test]
    fn a_key_written_many_times_is_written_once_with_its_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open(dir.path()).unwrap();
        let db = sm.db.clone();
        db.put_cf(cf(&db, CF_REFS), b"read\x00", b"o-7").unwrap();
        db.put_cf(cf(&db, CF_REFS), b"gone\x00", b"o-9").unwrap();
        let mut w = PendingWrites::new(db.clone());
        for v in [&b"o-1"[..], b"o-2", b"o-3"] {
            w.put(CF_REFS, b"web\x001", v);
        }
        w.put(CF_REFS, b"gone\x00", b"o-10");
        w.delete(CF_REFS, b"gone\x00");
        w.overlay.remember(CF_REFS, b"read\x00", Some(b"o-7"));
        assert_eq!(w.len(), 5, "every put and deletion counts");
        let batch = w.overlay.take_batch(&db);
        assert_eq!(
            batch.len(),
            2,
            "one record per key written, none for a read"
        );
        db.write(batch).unwrap();
        let get = |k: &[u8]| db.get_cf(cf(&db, CF_REFS), k).unwrap();
        assert_eq!(get(b"web\x001").as_deref(), Some(&b"o-3"[..]));
        assert_eq!(get(b"gone\x00"), None);
        assert_eq!(get(b"read\x00").as_deref(), Some(&b"o-7"[..]));
        assert_eq!(w.overlay.get(CF_REFS, b"web\x001"), None, "emptied");
    }
}
