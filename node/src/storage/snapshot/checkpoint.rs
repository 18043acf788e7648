//! Snapshots as RocksDB checkpoints: building one, and producing the
//! snapshot file format from one as it is sent (see the parent module's
//! doc for why and where each runs).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, LogLevel, Options,
    ReadOptions, DB,
};
use sha2::{Digest, Sha256};

use super::{
    snapshot_meta, sync_dir, temp_path, unique_suffix, FramedWriter, Meta, Sink, SnapshotData,
    SnapshotFiles, CHUNK_BYTES, END_TAG, MAGIC,
};
use crate::storage::io_err;
use crate::storage::keys::{self, CF_SM_META, STATE_MACHINE_CFS};

/// The name of the file inside a checkpoint directory holding the
/// snapshot's metadata (openraft `SnapshotMeta` as JSON): written, fsynced,
/// before the directory gets its final name.
pub const CHECKPOINT_META: &str = "arbor-snapshot-meta.json";
/// The block cache of a checkpoint opened to be sent (one per checkpoint,
/// shared by the sends from it).
pub const CHECKPOINT_CACHE_BYTES: usize = 8 * 1024 * 1024;
/// The most SST files a checkpoint opened to be sent keeps open.
pub const CHECKPOINT_OPEN_FILES: i32 = 64;
/// The directory name of a complete checkpoint starts with this.
const PREFIX: &str = "checkpoint-";
/// Read-ahead of the iterators producing a snapshot from a checkpoint.
const READAHEAD: usize = 1024 * 1024;

/// Whether `name` is that of a complete checkpoint directory.
pub(super) fn is_checkpoint_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with(PREFIX) && !name.ends_with(".tmp")
}

/// A checkpoint directory and the snapshot it holds. Removed from disk when
/// the last reference goes, if it was [`Checkpoint::retire`]d (no longer
/// current): a send in progress keeps it.
pub(crate) struct Checkpoint {
    path: PathBuf,
    meta: Meta,
    /// Opened read-only at the first send, shared by later ones.
    db: Mutex<Option<Arc<DB>>>,
    retired: AtomicBool,
    /// Records encoded from it (tests: a build encodes none).
    encoded: AtomicU64,
}

impl Checkpoint {
    pub(super) fn new(path: PathBuf, meta: Meta) -> Checkpoint {
        Checkpoint {
            path,
            meta,
            db: Mutex::new(None),
            retired: AtomicBool::new(false),
            encoded: AtomicU64::new(0),
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Records encoded from this checkpoint so far, by every send.
    #[cfg(test)]
    pub(super) fn records_encoded(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }

    /// No longer current: removed once nothing refers to it.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// An error naming the directory unless its metadata file is there.
    pub(super) fn check_present(&self) -> io::Result<()> {
        fs::metadata(self.path.join(CHECKPOINT_META))
            .map(|_| ())
            .map_err(|e| {
                io_err(
                    format_args!("snapshot checkpoint {}", self.path.display()),
                    e,
                )
            })
    }

    /// The checkpoint, open read-only.
    fn db(&self) -> io::Result<Arc<DB>> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = &*db {
            return Ok(d.clone());
        }
        self.check_present()?;
        let d = Arc::new(open_read_only(&self.path)?);
        *db = Some(d.clone());
        Ok(d)
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        if !*self.retired.get_mut() {
            return;
        }
        // Closed before its files go.
        drop(self.db.get_mut().unwrap_or_else(|p| p.into_inner()).take());
        match fs::remove_dir_all(&self.path) {
            Ok(()) => {
                tracing::debug!(path = %self.path.display(), "old snapshot checkpoint removed")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                error = %e,
                path = %self.path.display(),
                "cannot remove an old snapshot checkpoint"
            ),
        }
    }
}

/// Opens the checkpoint at `path` read-only, with a small cache of its own.
fn open_read_only(path: &Path) -> io::Result<DB> {
    let cache = Cache::new_lru_cache(CHECKPOINT_CACHE_BYTES);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_cache_index_and_filter_blocks(true);
    let mut cf_options = Options::default();
    cf_options.set_block_based_table_factory(&table);
    let mut o = Options::default();
    o.set_block_based_table_factory(&table);
    o.set_max_open_files(CHECKPOINT_OPEN_FILES);
    o.set_paranoid_checks(true);
    // As the database was opened: its MANIFEST tracks the WALs (and a
    // read-only open with tracking off would try to edit the MANIFEST, which
    // RocksDB 11.8 does not survive).
    o.set_track_and_verify_wals_in_manifest(true);
    o.set_log_level(LogLevel::Warn);
    o.set_keep_log_file_num(1);
    let cfs = keys::ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, cf_options.clone()));
    DB::open_cf_descriptors_read_only(&o, path, cfs, false).map_err(|e| {
        io_err(
            format_args!("open snapshot checkpoint {}", path.display()),
            e,
        )
    })
}

/// The metadata file of the checkpoint directory `dir`.
pub(super) fn read_checkpoint_meta(dir: &Path) -> io::Result<Meta> {
    let path = dir.join(CHECKPOINT_META);
    let bytes = fs::read(&path).map_err(|e| io_err(format_args!("read {}", path.display()), e))?;
    serde_json::from_slice(&bytes).map_err(|e| io_err(format_args!("{}", path.display()), e))
}

/// Builds a snapshot: a checkpoint of `db` in the snapshot directory, its
/// metadata read from the checkpoint itself, made current unless the
/// current snapshot covers as much (the third value says which). Reads no
/// record of the state machine. Blocking.
pub(crate) fn build_checkpoint(
    files: &SnapshotFiles,
    db: &DB,
) -> io::Result<(Meta, SnapshotData, bool)> {
    let tmp = temp_path(&files.dir, "build");
    let built = (|| -> io::Result<(Meta, PathBuf)> {
        rocksdb::checkpoint::Checkpoint::new(db)
            .and_then(|c| c.create_checkpoint(&tmp))
            .map_err(|e| io_err(format_args!("checkpoint into {}", tmp.display()), e))?;
        // Under the checkpoint's own consistent point: exactly its data.
        let meta = {
            let ro = open_read_only(&tmp)?;
            let handle = ro
                .cf_handle(CF_SM_META)
                .ok_or_else(|| io_err(tmp.display(), "no sm_meta column family"))?;
            snapshot_meta(|key| ro.get_cf(handle, key))?
        };
        let meta_path = tmp.join(CHECKPOINT_META);
        File::create(&meta_path)
            .and_then(|mut f| {
                f.write_all(&serde_json::to_vec(&meta)?)?;
                f.sync_all()
            })
            .map_err(|e| io_err(format_args!("write {}", meta_path.display()), e))?;
        sync_dir(&tmp)?;
        let index = meta.last_log_id.as_ref().map_or(0, |l| l.index);
        let path = files
            .dir
            .join(format!("{PREFIX}{index:020}-{}", unique_suffix()));
        fs::rename(&tmp, &path).map_err(|e| io_err(format_args!("rename {}", tmp.display()), e))?;
        sync_dir(&files.dir)?;
        Ok((meta, path))
    })();
    let (meta, path) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let checkpoint = Arc::new(Checkpoint::new(path, meta.clone()));
    let adopted = files.adopt_checkpoint(&checkpoint);
    Ok((meta, SnapshotData::of_checkpoint(checkpoint), adopted))
}

/// The snapshot file's bytes, produced from a checkpoint chunk by chunk.
pub(super) struct Stream {
    // Dropped before the checkpoint (its database before its files).
    state: State,
    /// Bytes produced, not yet handed out.
    out: Vec<u8>,
    checkpoint: Arc<Checkpoint>,
}

enum State {
    Start,
    Records(Box<Producer>),
    Done,
    Failed(String),
}

impl Stream {
    pub(super) fn new(checkpoint: Arc<Checkpoint>) -> Stream {
        Stream {
            state: State::Start,
            out: Vec::new(),
            checkpoint,
        }
    }

    pub(super) fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Back to the first byte.
    pub(super) fn rewind(&mut self) {
        self.state = State::Start;
        self.out = Vec::new();
    }

    /// The next chunk of at most [`CHUNK_BYTES`]; empty at the end.
    pub(super) fn next_chunk(&mut self) -> io::Result<Vec<u8>> {
        if let Err(e) = self.produce() {
            let e = io_err(
                format_args!("snapshot checkpoint {}", self.checkpoint.path.display()),
                e,
            );
            self.state = State::Failed(e.to_string());
            self.out = Vec::new();
            return Err(e);
        }
        if self.out.len() <= CHUNK_BYTES {
            Ok(std::mem::take(&mut self.out))
        } else {
            let rest = self.out.split_off(CHUNK_BYTES);
            Ok(std::mem::replace(&mut self.out, rest))
        }
    }

    /// Produces until a chunk is ready or the snapshot is complete.
    fn produce(&mut self) -> io::Result<()> {
        while self.out.len() < CHUNK_BYTES {
            match &mut self.state {
                State::Start => {
                    let p = Producer::new(self.checkpoint.db()?, &self.checkpoint.meta)?;
                    self.state = State::Records(Box::new(p));
                }
                State::Records(p) => {
                    let more = p.fill(CHUNK_BYTES - self.out.len(), &self.checkpoint.encoded)?;
                    self.out.append(p.w.out.inner_mut());
                    if !more {
                        let State::Records(p) = std::mem::replace(&mut self.state, State::Done)
                        else {
                            unreachable!("producing records")
                        };
                        self.out.extend_from_slice(&p.finish()?);
                    }
                }
                State::Done => break,
                State::Failed(e) => return Err(io::Error::other(e.clone())),
            }
        }
        Ok(())
    }
}

/// Encodes the records of a checkpoint, in the order and framing of the
/// snapshot file, into memory that the caller drains.
struct Producer {
    db: Arc<DB>,
    w: FramedWriter<Vec<u8>>,
    /// The column family being encoded (index in `STATE_MACHINE_CFS`).
    cf: usize,
    /// The last key encoded from it: the next chunk resumes after it.
    after: Option<Box<[u8]>>,
    count: u64,
}

impl Producer {
    fn new(db: Arc<DB>, meta: &Meta) -> io::Result<Producer> {
        let mut w = FramedWriter {
            out: Sink::Plain(Vec::new()),
            hasher: Sha256::new(),
        };
        w.put(MAGIC)?;
        w.put_field(&serde_json::to_vec(meta).map_err(|e| io_err("encode snapshot metadata", e))?)?;
        w.out = w.out.compressed();
        Ok(Producer {
            db,
            w,
            cf: 0,
            after: None,
            count: 0,
        })
    }

    /// Encodes records until at least `want` bytes are ready; false once
    /// every record is encoded.
    fn fill(&mut self, want: usize, encoded: &AtomicU64) -> io::Result<bool> {
        let db = self.db.clone();
        while let Some(name) = STATE_MACHINE_CFS.get(self.cf) {
            let handle = db
                .cf_handle(name)
                .ok_or_else(|| io_err(name, "no such column family in the checkpoint"))?;
            let mut ro = ReadOptions::default();
            ro.set_readahead_size(READAHEAD);
            let mode = match &self.after {
                None => IteratorMode::Start,
                Some(k) => IteratorMode::From(k, Direction::Forward),
            };
            for item in db.iterator_cf_opt(handle, ro, mode) {
                let (k, v) = item.map_err(|e| io_err(format_args!("read {name}"), e))?;
                if self.after.as_deref() == Some(&k[..]) {
                    continue;
                }
                self.w.put(&[self.cf as u8 + 1])?;
                self.w.put_field(&k)?;
                self.w.put_field(&v)?;
                self.count += 1;
                encoded.fetch_add(1, Ordering::Relaxed);
                if self.w.out.inner_mut().len() >= want {
                    self.after = Some(k);
                    return Ok(true);
                }
            }
            self.cf += 1;
            self.after = None;
        }
        Ok(false)
    }

    /// The end tag, the count and the checksum, and the end of the frame:
    /// the last bytes.
    fn finish(mut self) -> io::Result<Vec<u8>> {
        self.w.put(&[END_TAG])?;
        self.w.put(&self.count.to_be_bytes())?;
        let checksum = std::mem::take(&mut self.w.hasher).finalize();
        self.w.out.write_all(&checksum)?;
        self.w.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use openraft::alias::LogIdOf;
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;

    use super::super::tests::noise;
    use super::super::{build, read_meta, Origin, SnapshotFiles};
    use super::*;
    use crate::storage::{self, cf, keys, LogStore, StateMachineStore};
    use crate::types::TypeConfig;

    fn store(dir: &Path) -> (LogStore, StateMachineStore) {
        storage::open(dir).unwrap()
    }

    /// Writes records `from..to` (ledger-like: incompressible values, and a
    /// ref each) and records the last of them as applied at log index `to`.
    fn fill(db: &DB, from: u64, to: u64) {
        for i in from..to {
            db.put_cf(cf(db, keys::CF_LEDGER), i.to_be_bytes(), noise(i, 900))
                .unwrap();
            db.put_cf(cf(db, keys::CF_REFS), format!("web\0{i}"), format!("o-{i}"))
                .unwrap();
        }
        let id = LogIdOf::<TypeConfig>::new(
            LeaderId {
                term: 1,
                node_id: 1,
            },
            to,
        );
        db.put_cf(
            cf(db, keys::CF_SM_META),
            keys::KEY_LAST_APPLIED,
            serde_json::to_vec(&id).unwrap(),
        )
        .unwrap();
    }

    /// What the pre-checkpoint build writes for the state as it is now.
    fn file_build(sm: &StateMachineStore) -> (Meta, Vec<u8>) {
        let (meta, path) = build(&sm.db, &sm.snapshots.dir).unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        (meta, bytes)
    }

    /// Every chunk of `data` (each at most `CHUNK_BYTES`), and how many.
    fn chunks(data: &mut SnapshotData) -> (Vec<u8>, usize) {
        let (mut all, mut n) = (Vec::new(), 0);
        loop {
            let c = data.next_chunk().unwrap();
            assert!(c.len() <= CHUNK_BYTES, "a chunk of {} bytes", c.len());
            if c.is_empty() {
                return (all, n);
            }
            all.extend_from_slice(&c);
            n += 1;
        }
    }

    /// The names in the snapshot directory, sorted.
    fn names(files: &SnapshotFiles) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&files.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn checkpoint_of(data: &SnapshotData) -> Arc<Checkpoint> {
        match &data.0 {
            Origin::Checkpoint(s) => s.checkpoint.clone(),
            Origin::File { path, .. } => panic!("a file, {}", path.display()),
        }
    }

    /// A build links the SST files and encodes no record (nothing but the
    /// checkpoint appears in the snapshot directory); the bytes produced
    /// from it when it is sent, after more entries were applied, are those
    /// the file build wrote for the state it was taken of, byte for byte
    /// (checksum included), in bounded chunks.
    #[tokio::test]
    async fn a_build_reads_no_record_and_a_send_produces_the_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = store(dir.path());
        fill(&sm.db, 0, 3_000);
        let (ref_meta, reference) = file_build(&sm);
        assert!(reference.len() > 2 * CHUNK_BYTES, "{}", reference.len());

        let built = sm.build_snapshot().await.unwrap();
        assert_eq!(built.meta, ref_meta);
        assert!(built.snapshot.is_checkpoint());
        let checkpoint = checkpoint_of(&built.snapshot);
        assert_eq!(checkpoint.records_encoded(), 0, "a build encodes no record");
        let listed = names(&sm.snapshots);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(listed[0].starts_with(PREFIX), "{listed:?}");
        let mut linked = 0;
        for e in fs::read_dir(checkpoint.path()).unwrap() {
            let e = e.unwrap();
            assert!(
                e.metadata().unwrap().len() < CHUNK_BYTES as u64
                    || e.file_name().to_string_lossy().ends_with(".sst"),
                "{:?} is no snapshot file",
                e.file_name()
            );
            if e.file_name().to_string_lossy().ends_with(".sst") {
                assert!(e.metadata().unwrap().nlink() >= 2, "a hard link");
                linked += 1;
            }
        }
        assert!(linked > 0);
        drop(built);

        // More entries after the checkpoint: not in it.
        fill(&sm.db, 3_000, 3_500);
        let (meta, mut data) = sm.snapshots.load().unwrap().expect("current");
        assert_eq!(meta, ref_meta);
        let (bytes, n) = chunks(&mut data);
        assert!(n >= 3, "{n} chunks");
        assert_eq!(bytes.len(), reference.len());
        assert!(bytes == reference, "the bytes differ from the file build's");
        assert!(checkpoint_of(&data).records_encoded() >= 3_500);
        assert_ne!(file_build(&sm).1, bytes, "the later state differs");
        // And once more, from the start.
        assert!(data.read_all().unwrap() == reference);
        // The bytes verify as a received file would.
        let p = dir.path().join("received");
        fs::write(&p, &bytes).unwrap();
        assert_eq!(read_meta(&p).unwrap(), ref_meta);
        let found = super::super::verify(&File::open(&p).unwrap(), |_, _, _| Ok(())).unwrap();
        assert_eq!(found, ref_meta);
    }

    /// A send in progress when a newer snapshot is built completes with the
    /// older bytes; its checkpoint is removed when the send ends, the newer
    /// one stays. A build covering no more than the current snapshot is
    /// not made current and leaves nothing behind.
    #[tokio::test]
    async fn a_send_in_progress_keeps_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = store(dir.path());
        fill(&sm.db, 0, 2_500);
        let (_, older) = file_build(&sm);
        drop(sm.build_snapshot().await.unwrap());
        let (_, mut sending) = sm.snapshots.load().unwrap().unwrap();
        let old_dir = sending.path().to_path_buf();
        let mut got = sending.next_chunk().unwrap();

        fill(&sm.db, 2_500, 2_600);
        let (newer_meta, newer) = file_build(&sm);
        let b = sm.build_snapshot().await.unwrap();
        assert_eq!(b.meta, newer_meta);
        let new_dir = b.snapshot.path().to_path_buf();
        drop(b);
        assert!(old_dir.exists(), "removed under a send");
        assert_eq!(names(&sm.snapshots).len(), 2);
        let (meta, mut current) = sm.snapshots.load().unwrap().unwrap();
        assert_eq!(
            (meta, current.path()),
            (newer_meta.clone(), new_dir.as_path())
        );
        assert!(current.read_all().unwrap() == newer);
        drop(current);

        got.extend(chunks(&mut sending).0);
        assert!(got == older, "the send in progress changed");
        drop(sending);
        assert!(!old_dir.exists(), "kept after its send");
        assert!(new_dir.exists());

        // Nothing new applied: not current, removed at once.
        let again = sm.build_snapshot().await.unwrap();
        let again_dir = again.snapshot.path().to_path_buf();
        assert_ne!(again_dir, new_dir);
        drop(again);
        assert!(!again_dir.exists());
        assert_eq!(
            sm.snapshots.load().unwrap().unwrap().1.path(),
            new_dir.as_path()
        );
        assert_eq!(names(&sm.snapshots).len(), 1);
    }

    /// A restarted replica keeps its current checkpoint and sends the same
    /// bytes; what a crash left (temporary files and directories, a
    /// checkpoint that was no longer current) is removed at open.
    #[tokio::test]
    async fn a_restart_keeps_the_current_snapshot_and_cleans_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, reference, current_dir, old_dir) = {
            let (_log, mut sm) = store(dir.path());
            fill(&sm.db, 0, 500);
            drop(sm.build_snapshot().await.unwrap());
            let (_, held) = sm.snapshots.load().unwrap().unwrap();
            let old_dir = held.path().to_path_buf();
            fill(&sm.db, 500, 800);
            let (meta, reference) = file_build(&sm);
            let b = sm.build_snapshot().await.unwrap();
            let current_dir = b.snapshot.path().to_path_buf();
            // A crash: the old checkpoint's send never ended.
            std::mem::forget(held);
            fs::create_dir(sm.snapshots.dir.join("build-1-1.tmp")).unwrap();
            fs::write(sm.snapshots.dir.join("incoming-1-2.tmp"), b"x").unwrap();
            (meta, reference, current_dir, old_dir)
        };
        assert!(old_dir.exists());
        let (_log, mut sm) = store(dir.path());
        assert_eq!(
            names(&sm.snapshots),
            vec![current_dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()]
        );
        let current = sm.get_current_snapshot().await.unwrap().expect("kept");
        assert_eq!(current.meta, meta);
        let mut data = current.snapshot;
        assert_eq!(data.path(), current_dir.as_path());
        assert!(chunks(&mut data).0 == reference);
    }

    /// A checkpoint whose files are gone or damaged is an error naming it,
    /// when it is loaded or sent, never a panic; one whose metadata is
    /// damaged is removed at open (derived data: the next build makes
    /// another).
    #[tokio::test]
    async fn a_missing_or_damaged_checkpoint_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = store(dir.path());
        fill(&sm.db, 0, 300);
        drop(sm.build_snapshot().await.unwrap());
        let (_, mut data) = sm.snapshots.load().unwrap().unwrap();
        let path = data.path().to_path_buf();
        let named = |e: &io::Error| {
            assert!(
                e.to_string().contains(&*path.to_string_lossy()),
                "the error does not name {}: {e}",
                path.display()
            )
        };
        // Its SST files gone: the send fails, and keeps failing.
        for e in fs::read_dir(&path).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sst") {
                fs::remove_file(&p).unwrap();
            }
        }
        let e = data.next_chunk().unwrap_err();
        named(&e);
        named(&data.next_chunk().unwrap_err());
        drop(data);
        // The whole directory gone: loading it fails.
        fs::remove_dir_all(&path).unwrap();
        let e = sm
            .snapshots
            .load()
            .expect_err("loaded a missing checkpoint");
        named(&e);
        let e = sm.get_current_snapshot().await.expect_err("a snapshot");
        named(&e);

        // A new build replaces it, even of the same state; its metadata
        // damaged, an open removes it.
        drop(sm.build_snapshot().await.unwrap());
        let (_, data) = sm.snapshots.load().unwrap().unwrap();
        let path = data.path().to_path_buf();
        drop(data);
        fs::write(path.join(CHECKPOINT_META), b"{not json").unwrap();
        drop((_log, sm));
        let (_log, mut sm) = store(dir.path());
        assert!(!path.exists());
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
    }

    /// A `current` file of format 1 or 2 (written by earlier builds) still
    /// loads and is sent as it is; a checkpoint replaces it only when it
    /// covers more of the log.
    #[tokio::test]
    async fn an_older_current_file_still_loads_and_is_sent_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let (file_meta, v2) = {
            let (_log, sm) = store(dir.path());
            fill(&sm.db, 0, 100);
            file_build(&sm)
        };
        let v1 = {
            let recs = vec![(3u8, b"web\0x".to_vec(), b"o-1".to_vec())];
            let p = super::super::tests::file_with(dir.path(), &recs, false);
            let b = fs::read(&p).unwrap();
            fs::remove_file(&p).unwrap();
            b
        };
        for bytes in [&v1, &v2] {
            let other = tempfile::tempdir().unwrap();
            fs::create_dir_all(other.path().join("snapshots")).unwrap();
            fs::write(other.path().join("snapshots/current"), bytes).unwrap();
            let (_log, mut sm) = store(other.path());
            let current = sm.get_current_snapshot().await.unwrap().expect("loaded");
            let mut data = current.snapshot;
            assert!(!data.is_checkpoint());
            assert!(chunks(&mut data).0 == *bytes);
            drop(data);
            // Applied up to 50: more than the version 1 file (no log id),
            // less than the version 2 one (100).
            fill(&sm.db, 0, 50);
            let b = sm.build_snapshot().await.unwrap();
            let replaced = b.meta.last_log_id > current.meta.last_log_id;
            drop(b);
            let now = sm.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(now.snapshot.is_checkpoint(), replaced);
            assert_eq!(other.path().join("snapshots/current").exists(), !replaced);
            assert_eq!(names(&sm.snapshots).len(), 1, "{:?}", names(&sm.snapshots));
        }
        assert!(file_meta.last_log_id.is_some());
    }

    /// CPU seconds of this process so far (user and system).
    fn cpu_seconds() -> f64 {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes into the struct it is given.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }

    /// Not a test: the wall and CPU time of one snapshot build for a state
    /// of `ARBOR_SNAPSHOT_ENTRIES` ledger entries (200,000 by default),
    /// the file build of earlier versions against the checkpoint, and what
    /// a send then costs (docs/performance.md has the command and the
    /// figures). `cargo test --workspace --release --lib snapshot_build_cost
    /// -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn snapshot_build_cost() {
        let entries: u64 = std::env::var("ARBOR_SNAPSHOT_ENTRIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = store(dir.path());
        let db = sm.db.clone();
        // Shaped like the ledger: an entry of ~900 bytes (hashes and a
        // signature that do not compress, a command and outcome that do),
        // its command id, and an order (with its ref) every second entry.
        let text = br#"{"order_id":"o-000000","channel":"shop","state":"claimed","node":"node-17","price":1250,"currency":"EUR","deadline_ms":1790000000000,"history":[]}"#;
        let mut batch = rocksdb::WriteBatch::default();
        for i in 0..entries {
            let mut entry = noise(i, 300);
            while entry.len() < 900 {
                entry.extend_from_slice(text);
            }
            entry.truncate(900);
            batch.put_cf(cf(&db, keys::CF_LEDGER), i.to_be_bytes(), &entry);
            batch.put_cf(
                cf(&db, keys::CF_COMMANDS),
                noise(i + (1 << 40), 32),
                i.to_be_bytes(),
            );
            if i % 2 == 0 {
                batch.put_cf(cf(&db, keys::CF_ORDERS), format!("o-{i:09}"), &text[..]);
                batch.put_cf(
                    cf(&db, keys::CF_REFS),
                    format!("shop\0{i}"),
                    format!("o-{i:09}"),
                );
            }
            if batch.len() >= 20_000 {
                db.write(std::mem::take(&mut batch)).unwrap();
            }
        }
        db.write(batch).unwrap();
        fill(&db, entries, entries);
        for name in keys::ALL_CFS {
            db.flush_cf(cf(&db, name)).unwrap();
        }
        let sst: u64 = keys::ALL_CFS
            .iter()
            .map(|n| {
                db.property_int_value_cf(cf(&db, n), "rocksdb.total-sst-files-size")
                    .unwrap()
                    .unwrap_or(0)
            })
            .sum();
        println!(
            "state: {entries} ledger entries, {:.0} MB of SST files",
            sst as f64 / 1e6
        );

        let measure = |what: &str, f: &mut dyn FnMut() -> String| {
            let (t, c) = (std::time::Instant::now(), cpu_seconds());
            let note = f();
            println!(
                "{what}: {:.3} s wall, {:.3} s CPU{note}",
                t.elapsed().as_secs_f64(),
                cpu_seconds() - c
            );
        };
        measure("file build (before)", &mut || {
            let (_, path) = build(&db, &sm.snapshots.dir).unwrap();
            let n = fs::metadata(&path).unwrap().len();
            fs::remove_file(&path).unwrap();
            format!(", {n} bytes written")
        });
        // Some writes, as between two builds.
        fill(&db, entries, entries + 1);
        let (t, c) = (std::time::Instant::now(), cpu_seconds());
        let built = sm.build_snapshot().await.unwrap();
        println!(
            "checkpoint build (after): {:.3} s wall, {:.3} s CPU, {} records encoded",
            t.elapsed().as_secs_f64(),
            cpu_seconds() - c,
            checkpoint_of(&built.snapshot).records_encoded()
        );
        let mut data = built.snapshot;
        measure("a send's bytes from the checkpoint", &mut || {
            let mut n = 0u64;
            loop {
                let c = data.next_chunk().unwrap();
                if c.is_empty() {
                    break;
                }
                n += c.len() as u64;
            }
            format!(", {n} bytes")
        });
    }
}
