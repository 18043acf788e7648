//! State machine snapshots: build, persist, verify, install.
//!
//! A snapshot is every record of the state machine column families
//! ([`keys::STATE_MACHINE_CFS`]) read under one RocksDB snapshot, so it is a
//! consistent view even while entries keep being applied. It is persisted
//! as `<dir>/snapshots/current` (written to a temporary file, fsynced, then
//! renamed over the old one and the directory fsynced), so the current
//! snapshot survives restarts and a crash never leaves half a file there.
//!
//! Installing verifies the whole file first, then replaces the state machine
//! in ONE write batch (clear every state machine column family, insert the
//! snapshot's records, set the applied log id and membership from the
//! metadata), so a crash leaves either the old state or the new one; only
//! then is it persisted as the current snapshot.
//!
//! # Format (version 1)
//!
//! ```text
//! magic        8 bytes   "ARBSNAP1"
//! meta_len     u32 BE
//! meta         meta_len bytes: openraft SnapshotMeta as JSON
//! record*      tag u8 (1 + index in keys::STATE_MACHINE_CFS)
//!              key_len u32 BE, key, value_len u32 BE, value
//! end          tag u8 = 0
//! count        u64 BE: number of records
//! checksum     32 bytes: SHA-256 of every byte before it
//! ```
//!
//! The whole snapshot is held in memory (`Cursor<Vec<u8>>`), which bounds
//! the state size a replica can ship; streaming a RocksDB checkpoint would
//! lift that limit.

use std::fs::{self, File};
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{RaftSnapshotBuilder, Snapshot, SnapshotMeta};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use sha2::{Digest, Sha256};

use super::keys::{self, CF_SM_META, KEY_LAST_APPLIED, KEY_MEMBERSHIP, STATE_MACHINE_CFS};
use super::{cf, io_err, StateMachineStore};
use crate::types::TypeConfig;

/// What openraft ships between replicas: the snapshot file's bytes.
pub type SnapshotData = Cursor<Vec<u8>>;

type Meta = SnapshotMetaOf<TypeConfig>;

const MAGIC: &[u8; 8] = b"ARBSNAP1";
const END_TAG: u8 = 0;
const CHECKSUM_LEN: usize = 32;

/// The snapshot directory; one writer at a time.
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl SnapshotFiles {
    pub(crate) fn new(dir: PathBuf) -> Self {
        SnapshotFiles {
            dir,
            lock: Mutex::new(()),
        }
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// Makes `bytes` the current snapshot. With `keep_newer`, a current
    /// snapshot covering more of the log is kept instead (a slow build must
    /// not replace what a later install put there).
    fn save(&self, meta: &Meta, bytes: &[u8], keep_newer: bool) -> io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current_path();
        if keep_newer && current.exists() {
            match read_meta(&current) {
                Ok(existing) if existing.last_log_id > meta.last_log_id => return Ok(()),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "replacing unreadable current snapshot"),
            }
        }
        let tmp = self.dir.join("current.tmp");
        let mut f =
            File::create(&tmp).map_err(|e| io_err(format_args!("create {}", tmp.display()), e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err(format_args!("write {}", tmp.display()), e))?;
        drop(f);
        fs::rename(&tmp, &current)
            .map_err(|e| io_err(format_args!("rename {}", tmp.display()), e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(format_args!("sync {}", self.dir.display()), e))
    }

    /// The current snapshot file, verified.
    fn load(&self) -> io::Result<Option<(Meta, Vec<u8>)>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.current_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format_args!("read {}", path.display()), e)),
        };
        let parsed =
            parse(&bytes).map_err(|e| io_err(format_args!("snapshot {}", path.display()), e))?;
        Ok(Some((parsed.meta, bytes)))
    }
}

/// Reads only the metadata at the head of a snapshot file.
fn read_meta(path: &Path) -> io::Result<Meta> {
    let mut f = File::open(path).map_err(|e| io_err(format_args!("open {}", path.display()), e))?;
    let mut head = [0u8; 12];
    f.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Err(io_err(path.display(), "not an arbor snapshot"));
    }
    let len = u32::from_be_bytes(head[8..].try_into().expect("4 bytes")) as usize;
    let mut meta = vec![0u8; len];
    f.read_exact(&mut meta)?;
    serde_json::from_slice(&meta)
        .map_err(|e| io_err(format_args!("{} metadata", path.display()), e))
}

struct Parsed<'a> {
    meta: Meta,
    /// (column family, key, value)
    records: Vec<(&'static str, &'a [u8], &'a [u8])>,
}

/// Verifies a snapshot's framing and checksum and splits it into records.
fn parse(bytes: &[u8]) -> Result<Parsed<'_>, String> {
    if bytes.len() < MAGIC.len() + CHECKSUM_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an arbor snapshot (bad magic)".into());
    }
    let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err("checksum does not match".into());
    }
    let mut r = Reader {
        buf: body,
        pos: MAGIC.len(),
    };
    let meta_bytes = r.field()?;
    let meta: Meta =
        serde_json::from_slice(meta_bytes).map_err(|e| format!("metadata does not decode: {e}"))?;
    let mut records = Vec::new();
    loop {
        let tag = r.take(1)?[0];
        if tag == END_TAG {
            break;
        }
        let cf_name = *STATE_MACHINE_CFS
            .get(tag as usize - 1)
            .ok_or_else(|| format!("unknown record tag {tag} at byte {}", r.pos - 1))?;
        let key = r.field()?;
        let value = r.field()?;
        records.push((cf_name, key, value));
    }
    let count = u64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes"));
    if count != records.len() as u64 {
        return Err(format!(
            "record count says {count}, found {}",
            records.len()
        ));
    }
    if r.pos != body.len() {
        return Err(format!(
            "{} trailing bytes after the end marker",
            body.len() - r.pos
        ));
    }
    Ok(Parsed { meta, records })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A u32 BE length and that many bytes.
    fn field(&mut self) -> Result<&'a [u8], String> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(len as usize)
    }
}

fn put_field(out: &mut Vec<u8>, b: &[u8]) -> io::Result<()> {
    let len = u32::try_from(b.len()).map_err(|_| io_err("snapshot record", "longer than 4 GiB"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// Dumps the state machine under one RocksDB snapshot.
fn build(db: &DB) -> io::Result<(Meta, Vec<u8>)> {
    let snap = db.snapshot();
    let read_json = |key: &[u8]| -> io::Result<Option<Vec<u8>>> {
        snap.get_cf(cf(db, CF_SM_META), key).map_err(|e| {
            io_err(
                format_args!("read {CF_SM_META}/{}", keys::display_key(key)),
                e,
            )
        })
    };
    let last_log_id: Option<LogIdOf<TypeConfig>> = match read_json(KEY_LAST_APPLIED)? {
        None => None,
        Some(v) => serde_json::from_slice(&v)
            .map_err(|e| io_err("sm_meta/last_applied is corrupted", e))?,
    };
    let last_membership: StoredMembershipOf<TypeConfig> = match read_json(KEY_MEMBERSHIP)? {
        None => Default::default(),
        Some(v) => {
            serde_json::from_slice(&v).map_err(|e| io_err("sm_meta/membership is corrupted", e))?
        }
    };
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
    };

    let mut out = MAGIC.to_vec();
    put_field(
        &mut out,
        &serde_json::to_vec(&meta).map_err(|e| io_err("encode snapshot metadata", e))?,
    )?;
    let mut count = 0u64;
    for (i, name) in STATE_MACHINE_CFS.iter().enumerate() {
        for item in snap.iterator_cf(cf(db, name), IteratorMode::Start) {
            let (k, v) = item.map_err(|e| io_err(format_args!("read {name} for snapshot"), e))?;
            out.push(i as u8 + 1);
            put_field(&mut out, &k)?;
            put_field(&mut out, &v)?;
            count += 1;
        }
    }
    out.push(END_TAG);
    out.extend_from_slice(&count.to_be_bytes());
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    Ok((meta, out))
}

/// Checks a snapshot received from a peer before raft sees it: framing,
/// checksum, that its data is of the snapshot `meta` names, and that its
/// ledger extends this replica's: it must hold this replica's head entry
/// (`local_head`: seq and hash) unchanged, its own entries must hash and
/// link from there to the head it records. A snapshot that fails is refused
/// on the wire; handed to raft, a storage error would stop this replica's
/// raft core, and a snapshot with another history would rewrite it.
pub fn check_snapshot(
    bytes: &[u8],
    meta: &Meta,
    local_head: Option<(u64, [u8; 32])>,
) -> Result<(), String> {
    use arbor_proto::ledger::Entry;
    use prost::Message;
    let parsed = parse(bytes)?;
    if parsed.meta != *meta {
        return Err(format!(
            "data is of snapshot {} but metadata says {meta}",
            parsed.meta
        ));
    }
    let mut ledger = std::collections::BTreeMap::new();
    for (cf_name, k, v) in &parsed.records {
        if *cf_name == keys::CF_LEDGER {
            let seq = keys::decode_u64_key(k).ok_or("a ledger key is not a u64")?;
            let p = arbor_proto::pb::LedgerEntry::decode(*v)
                .map_err(|e| format!("ledger entry {seq} does not decode: {e}"))?;
            let e = Entry::from_pb(&p).map_err(|e| format!("ledger entry {seq}: {e}"))?;
            if e.seq != seq || e.compute_hash() != e.hash {
                return Err(format!("ledger entry {seq} does not hash to its hash"));
            }
            ledger.insert(seq, e);
        }
    }
    // Every entry links to the one before it.
    let mut prev: Option<&Entry> = None;
    for e in ledger.values() {
        if let Some(p) = prev {
            if e.seq != p.seq + 1 || e.prev_hash != p.hash {
                return Err(format!(
                    "ledger entry {} does not link to entry {}",
                    e.seq, p.seq
                ));
            }
        }
        prev = Some(e);
    }
    if let Some((seq, hash)) = local_head {
        match ledger.get(&seq) {
            Some(e) if e.hash == hash => {}
            Some(_) => {
                return Err(format!(
                    "its ledger entry {seq} differs from this replica's: it would rewrite history"
                ))
            }
            None => {
                return Err(format!(
                    "its ledger does not hold this replica's entry {seq}"
                ))
            }
        }
    }
    Ok(())
}

/// Verifies `bytes` and replaces the state machine with them.
pub(super) fn install(sm: &StateMachineStore, meta: &Meta, bytes: Vec<u8>) -> io::Result<()> {
    let parsed = parse(&bytes).map_err(|e| io_err("install snapshot", e))?;
    if parsed.meta != *meta {
        return Err(io_err(
            "install snapshot",
            format_args!(
                "data is of snapshot {} but metadata says {}",
                parsed.meta, meta
            ),
        ));
    }
    let db = &sm.db;
    let mut batch = WriteBatch::default();
    for name in STATE_MACHINE_CFS {
        clear(db, &mut batch, name)?;
    }
    for (name, k, v) in &parsed.records {
        batch.put_cf(cf(db, name), k, v);
    }
    // The lease index is derived from the orders, not carried.
    let orders = parsed
        .records
        .iter()
        .filter(|(name, _, _)| *name == keys::CF_ORDERS)
        .map(|(_, k, v)| (*k, *v));
    super::leases::rebuild_into(db, &mut batch, orders)?;
    // So is the Merkle tree, from the ledger: built again once written.
    super::merkle_tree::clear_into(db, &mut batch);
    let meta_cf = cf(db, CF_SM_META);
    match &meta.last_log_id {
        Some(id) => batch.put_cf(meta_cf, KEY_LAST_APPLIED, serde_json::to_vec(id)?),
        None => batch.delete_cf(meta_cf, KEY_LAST_APPLIED),
    }
    batch.put_cf(
        meta_cf,
        KEY_MEMBERSHIP,
        serde_json::to_vec(&meta.last_membership)?,
    );
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)
        .map_err(|e| io_err("install snapshot", e))?;
    tracing::info!(snapshot = %meta, records = parsed.records.len(), "snapshot installed");
    sm.snapshots.save(meta, &bytes, false)
}

/// Adds the deletion of every record of a column family to `batch`: a range
/// tombstone up to the last key, and the last key itself.
fn clear(db: &DB, batch: &mut WriteBatch, name: &str) -> io::Result<()> {
    let handle = cf(db, name);
    let last = db.iterator_cf(handle, IteratorMode::End).next();
    if let Some(item) = last {
        let (k, _) = item.map_err(|e| io_err(format_args!("read last key of {name}"), e))?;
        batch.delete_range_cf(handle, &[][..], &k[..]);
        batch.delete_cf(handle, &k);
    }
    Ok(())
}

/// The persisted current snapshot, if any.
pub(super) fn current(
    sm: &StateMachineStore,
) -> io::Result<Option<SnapshotOf<TypeConfig, SnapshotData>>> {
    Ok(sm.snapshots.load()?.map(|(meta, bytes)| Snapshot {
        meta,
        snapshot: Cursor::new(bytes),
    }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    /// Builds from the state as applied when called (not when the builder
    /// was created); the metadata is read under the same RocksDB snapshot,
    /// so it always describes exactly the data.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let (meta, bytes) = build(&self.db)?;
        self.snapshots.save(&meta, &bytes, true)?;
        tracing::info!(snapshot = %meta, bytes = bytes.len(), "snapshot built");
        self.metrics.snapshot("built");
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(bytes),
        })
    }
}
