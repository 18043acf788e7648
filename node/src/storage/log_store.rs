//! The raft log store: entries, vote, committed and last purged log ids in
//! the `raft_log` and `raft_meta` column families.
//!
//! Durability is the point of this file. Every append, truncation, purge and
//! vote is one write batch written with `sync = true` before it is reported
//! done (the append callback is called only after the synced write returns).
//! All of them go through the one RocksDB write-ahead log, so they reach the
//! disk in the order they were issued. Only `save_committed` is unsynced: a
//! lost committed log id just means less is re-applied on restart.
//!
//! The store does blocking RocksDB calls inside its async methods; each is a
//! single batch or point read, short enough not to need a blocking pool.
//!
//! The last [`CACHE_ENTRIES`] appended entries are also kept in memory
//! ([`TailCache`]): the leader reads every new entry back once per follower
//! (replication) and once to apply it, and a follower once to apply it; the
//! cache answers those reads without a RocksDB iterator and a decode. It only
//! ever holds a contiguous run of entries ending at the last one appended,
//! and truncation and purging remove from it what they remove from RocksDB,
//! so it never answers anything RocksDB would not.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::{self, CF_LOG, CF_RAFT_META, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};
use super::{cf, io_err};
use crate::raft::codec;
use crate::types::TypeConfig;

type LogEntry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// Entries kept in memory after they are appended.
const CACHE_ENTRIES: usize = 8192;

/// The raft log storage; also its own log reader. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    cache: Arc<Mutex<TailCache>>,
    fault: super::Fault,
    metrics: crate::metrics::Metrics,
}

/// A contiguous run of the newest log entries, by index.
#[derive(Default)]
struct TailCache {
    entries: BTreeMap<u64, LogEntry>,
}

impl TailCache {
    /// Records entries just written to RocksDB.
    fn appended(&mut self, entries: Vec<LogEntry>) {
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            return;
        };
        // Appending overwrites from `first` on; a gap means the run ended.
        self.entries.split_off(&first);
        if self
            .entries
            .keys()
            .next_back()
            .is_some_and(|last| last + 1 != first)
        {
            self.entries.clear();
        }
        for e in entries {
            self.entries.insert(e.log_id.index, e);
        }
        while self.entries.len() > CACHE_ENTRIES {
            self.entries.pop_first();
        }
    }

    /// The entries of `range` (which starts at `start`), if the cache holds
    /// every index of it; `None` sends the reader to RocksDB.
    fn get(&self, range: &impl RangeBounds<u64>, start: u64) -> Option<Vec<LogEntry>> {
        let first = *self.entries.keys().next()?;
        let last = *self.entries.keys().next_back()?;
        let end = match range.end_bound() {
            Bound::Included(n) => n.checked_add(1)?,
            Bound::Excluded(n) => *n,
            Bound::Unbounded => return None,
        };
        if start < first || end > last + 1 || start >= end {
            return None;
        }
        Some(
            self.entries
                .range(start..end)
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, fault: super::Fault, metrics: crate::metrics::Metrics) -> Self {
        LogStore {
            db,
            cache: Arc::default(),
            fault,
            metrics,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TailCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, batch: WriteBatch, sync: bool, what: &str) -> io::Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts).map_err(|e| {
            self.fault.check(what, &e);
            io_err(what, e)
        })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let name = keys::display_key(key);
        let Some(bytes) = self
            .db
            .get_pinned_cf(cf(&self.db, CF_RAFT_META), key)
            .map_err(|e| io_err(format_args!("read {CF_RAFT_META}/{name}"), e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_err(format_args!("{CF_RAFT_META}/{name} is corrupted"), e))
    }

    fn put_meta(&self, key: &[u8], value: &impl Serialize, sync: bool) -> io::Result<()> {
        let name = keys::display_key(key);
        let bytes =
            serde_json::to_vec(value).map_err(|e| io_err(format_args!("encode {name}"), e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT_META), key, bytes);
        self.write(batch, sync, &format!("write {CF_RAFT_META}/{name}"))
    }

    fn decode_entry(key: &[u8], value: &[u8]) -> io::Result<(u64, LogEntry)> {
        let index = keys::decode_u64_key(key).ok_or_else(|| {
            io_err(
                format_args!("{CF_LOG}/{} is corrupted", keys::display_key(key)),
                "key is not a u64",
            )
        })?;
        let entry: LogEntry = codec::decode(value)
            .map_err(|e| io_err(format_args!("{CF_LOG}/{index} is corrupted"), e))?;
        if entry.log_id.index != index {
            return Err(io_err(
                format_args!("{CF_LOG}/{index} is corrupted"),
                format_args!("it holds the entry of index {}", entry.log_id.index),
            ));
        }
        Ok((index, entry))
    }

    /// The id of the last entry present in the log.
    fn last_present_log_id(&self) -> io::Result<Option<LogId>> {
        let mut it = self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(Err(e)) => Err(io_err(format_args!("read last {CF_LOG} entry"), e)),
            Some(Ok((k, v))) => Ok(Some(Self::decode_entry(&k, &v)?.1.log_id)),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(n) => *n,
            Bound::Excluded(n) => match n.checked_add(1) {
                Some(n) => n,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        if let Some(cached) = self.cache().get(&range, start) {
            return Ok(cached);
        }
        let from = keys::u64_key(start);
        let mode = IteratorMode::From(&from, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf(&self.db, CF_LOG), mode) {
            let (k, v) = item.map_err(|e| {
                self.fault
                    .check(format_args!("read {CF_LOG} from {start}"), &e);
                io_err(format_args!("read {CF_LOG} from {start}"), e)
            })?;
            let (index, entry) = Self::decode_entry(&k, &v)?;
            if !range.contains(&index) {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_present_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Unsynced: the next synced write carries it, and losing it only
        // means re-applying less on restart.
        match committed {
            Some(c) => self.put_meta(KEY_COMMITTED, &c, false),
            None => {
                let mut batch = WriteBatch::default();
                batch.delete_cf(cf(&self.db, CF_RAFT_META), KEY_COMMITTED);
                self.write(batch, false, "clear committed log id")
            }
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.get_meta(KEY_COMMITTED)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        let mut bytes = Vec::new();
        let entries: Vec<LogEntry> = entries.into_iter().collect();
        for entry in &entries {
            let index = entry.log_id.index;
            bytes.clear();
            codec::encode_into(&mut bytes, entry)
                .map_err(|e| io_err(format_args!("encode raft log entry {index}"), e))?;
            batch.put_cf(log, keys::u64_key(index), &bytes);
        }
        // Synced before the callback: openraft counts the entries as
        // persisted (and may vote or commit on them) once it is called.
        // Cached after the write: until then a read of them goes to RocksDB.
        let started = std::time::Instant::now();
        let written = self.write(batch, true, "append raft log entries");
        self.metrics
            .log_append_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .log_append_entries
            .observe(entries.len() as f64);
        match written {
            Ok(()) => {
                self.cache().appended(entries);
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                self.cache().entries.clear();
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = match last_log_id {
            None => 0,
            Some(id) => match id.index.checked_add(1) {
                Some(n) => n,
                None => return Ok(()),
            },
        };
        let log = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        // The range end is exclusive; index u64::MAX is deleted on its own.
        batch.delete_range_cf(log, keys::u64_key(from), keys::u64_key(u64::MAX));
        batch.delete_cf(log, keys::u64_key(u64::MAX));
        // Dropped from the cache first: a reader must not get them from it
        // once they may be gone from RocksDB.
        self.cache().entries.split_off(&from);
        self.write(batch, true, "truncate raft log")
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let bytes =
            serde_json::to_vec(&log_id).map_err(|e| io_err("encode last purged log id", e))?;
        let log = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        // The last purged id goes in the same atomic batch as the deletion,
        // so the log never looks shorter than what it claims to have purged.
        batch.put_cf(cf(&self.db, CF_RAFT_META), KEY_LAST_PURGED, bytes);
        batch.delete_range_cf(log, keys::u64_key(0), keys::u64_key(log_id.index));
        batch.delete_cf(log, keys::u64_key(log_id.index));
        {
            // Keep what is after the purged id (the run stays contiguous).
            let mut cache = self.cache();
            cache.entries = match log_id.index.checked_add(1) {
                Some(next) => cache.entries.split_off(&next),
                None => BTreeMap::new(),
            };
        }
        self.metrics.log_purges.inc();
        self.write(batch, true, "purge raft log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::entry::RaftEntry;

    fn entry(index: u64) -> LogEntry {
        let leader = openraft::impls::leader_id_adv::LeaderId {
            term: 1,
            node_id: 1,
        };
        openraft::Entry::new_blank(openraft::LogId::new(leader, index))
    }

    fn indexes(v: Option<Vec<LogEntry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn the_tail_cache_answers_only_what_it_holds_entirely() {
        let mut c = TailCache::default();
        assert_eq!(indexes(c.get(&(1..3), 1)), None);
        c.appended((5..10).map(entry).collect());
        assert_eq!(indexes(c.get(&(5..8), 5)), Some(vec![5, 6, 7]));
        assert_eq!(indexes(c.get(&(7..=9), 7)), Some(vec![7, 8, 9]));
        assert_eq!(indexes(c.get(&(4..8), 4)), None, "starts before the cache");
        assert_eq!(indexes(c.get(&(8..11), 8)), None, "ends after the cache");
        assert_eq!(indexes(c.get(&(8..), 8)), None);
        // Overwriting from 7 on drops 7..10; a gap starts a new run.
        c.appended((7..8).map(entry).collect());
        assert_eq!(indexes(c.get(&(5..8), 5)), Some(vec![5, 6, 7]));
        assert_eq!(indexes(c.get(&(5..9), 5)), None);
        c.appended((20..21).map(entry).collect());
        assert_eq!(indexes(c.get(&(5..6), 5)), None);
        assert_eq!(indexes(c.get(&(20..21), 20)), Some(vec![20]));
        c.appended((21..21 + CACHE_ENTRIES as u64).map(entry).collect());
        assert_eq!(c.entries.len(), CACHE_ENTRIES);
        assert_eq!(indexes(c.get(&(20..22), 20)), None, "evicted");
    }
}
