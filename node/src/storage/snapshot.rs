//! State machine snapshots: build, persist, send, receive, verify, install,
//! all in bounded memory, and a build whose cost does not grow with the
//! ledger.
//!
//! # Building: a RocksDB checkpoint, no record read
//!
//! openraft builds a snapshot every `snapshot_every` applied entries so it
//! can purge its log. A build ([`build_checkpoint`]) takes a RocksDB
//! checkpoint of the database into a temporary directory of
//! `<dir>/snapshots/`: RocksDB flushes the memtables, then hard-links every
//! live SST file and copies the small MANIFEST, CURRENT and OPTIONS files,
//! all at one point of its write sequence, so the checkpoint is consistent
//! across column families. The snapshot metadata (the last applied log id
//! and the membership, from `sm_meta`) is then read from the checkpoint
//! itself, opened read-only, so it describes exactly the checkpoint's data
//! whatever was applied meanwhile. It is written (fsynced) as
//! [`CHECKPOINT_META`] inside the directory, the directory is fsynced and
//! renamed to `checkpoint-<last index>-…`, and the snapshot directory is
//! fsynced: a crash never leaves a half checkpoint under that name
//! (temporary names end in `.tmp` and are removed at the next open). The
//! cost is a memtable flush and one link per SST file, whatever the ledger's
//! size: no record is read or encoded.
//!
//! The price is disk: a checkpoint pins the SST files it links, so files
//! that compaction replaces after the build stay on disk until the
//! checkpoint is removed (at most the database's size again, in practice
//! the files rewritten within one snapshot interval). A checkpoint links
//! every column family, the raft log's too (the records a snapshot carries
//! are only the state machine's; the rest is never read).
//!
//! # The current snapshot, and old ones
//!
//! The current snapshot is either the newest checkpoint or the file
//! `current` (a snapshot received from the leader and installed, or one of
//! format 1 or 2 written by an earlier build); the process keeps which one
//! in memory ([`SnapshotFiles`]), and an open decides again from the disk:
//! the one covering more of the log (by last log id; the file when equal),
//! older checkpoints and a stale file are removed. A newer build replaces a
//! checkpoint; installing a received snapshot replaces whichever was
//! current. A replaced checkpoint is removed as soon as no send is using it
//! (each send holds a reference; the last one dropped removes the
//! directory), so at most one checkpoint per peer being sent to, plus the
//! current one and one being built, exist at a time. A damaged checkpoint
//! (its metadata unreadable) found at open is removed with an error in the
//! log: it is derived data, the next build makes another.
//!
//! # Sending: the ARBSNAP2 stream, produced when a replica needs it
//!
//! What openraft passes around ([`SnapshotData`]) is never the bytes:
//! either an open snapshot file (sent as it is) or a reference to a
//! checkpoint, from which the bytes of the snapshot file format below are
//! produced as they are sent: the records of [`keys::STATE_MACHINE_CFS`] in
//! that order, each column family in key order, LZ4-compressed, with the
//! record count and the SHA-256 checksum at the end, byte for byte what a
//! build that wrote the file from the same state would have written. The
//! O(ledger) cost is paid only when a snapshot is actually sent (a new
//! replica, or one that fell behind the purged log), once per send.
//!
//! Where that runs was chosen from openraft's source (0.10.0-alpha.37, the
//! version the workspace pins): the state machine worker task, the one that
//! applies entries, calls `get_current_snapshot` and hands the result to the
//! snapshot transmitter, a task spawned per target replica that calls
//! `full_snapshot` (`raft/network.rs`) and pulls the chunks; `build_snapshot`
//! runs on a task the worker spawns. So `get_current_snapshot` only looks
//! up the current snapshot (for a checkpoint: one `stat` of its metadata
//! file), and the bytes are produced on the transmitter's side, one
//! [`CHUNK_BYTES`] chunk per call of [`SnapshotData::next_chunk`], which the
//! network runs on tokio's blocking pool: applying never waits for a send,
//! whatever the ledger's size, and nothing but one chunk, one record and the
//! encoder's block is held. Producing straight from the checkpoint (rather
//! than writing a file on a separate thread and sending it as it grows)
//! writes no second copy to disk and needs no hand-off between a writer and
//! a reader; a second send encodes again, which is rare. Each chunk
//! resumes the iteration after the last key it encoded, so no iterator is
//! held between chunks. The checkpoint is opened read-only once per
//! checkpoint (shared by concurrent sends) with its own
//! [`CHECKPOINT_CACHE_BYTES`] block cache and at most
//! [`CHECKPOINT_OPEN_FILES`] open files.
//!
//! # Receiving and installing
//!
//! The network sends in [`CHUNK_BYTES`] chunks (a client stream of
//! `RaftPayload`s); the receiver writes them to a file ([`Incoming`]),
//! verifies it in one streaming pass ([`check_snapshot_file`]) and hands that
//! file to raft. No step holds more than one chunk or one record (at most
//! [`MAX_FIELD_BYTES`]) in memory.
//!
//! Installing verifies the whole file first (framing, checksum, metadata),
//! makes it `current` (renamed over it, the directory fsynced; the
//! checkpoints are then no longer current), then writes the marker file
//! `INSTALLING` (fsynced), clears the state machine column families, writes
//! the records in batches of at most [`INSTALL_BATCH_BYTES`], and finishes
//! with one synced batch setting the applied log id, the membership and the
//! lease index marker; only then is the marker removed. A crash in between
//! leaves the marker: the next open installs `current` again from the start
//! before raft runs ([`finish_interrupted_install`]), so the state machine
//! is never seen half-replaced. The derived column families (the lease
//! index, the Merkle tree) are cleared with the rest and built from the
//! installed records. A replica that installed a received snapshot keeps
//! that file as its current snapshot and sends it as it is. (openraft also
//! installs the current snapshot at start when it is ahead of the applied
//! state; from a checkpoint, the stream is first written to a file of the
//! snapshot directory, then installed like a received one.)
//!
//! # Format (version 2)
//!
//! ```text
//! magic        8 bytes   "ARBSNAP2"
//! meta_len     u32 BE
//! meta         meta_len bytes: openraft SnapshotMeta as JSON
//! body         one LZ4 frame (lz4_flex, 64 KiB linked blocks, no LZ4
//!              checksums) holding, decompressed:
//!   record*    tag u8 (1 + index in keys::STATE_MACHINE_CFS)
//!              key_len u32 BE, key, value_len u32 BE, value
//!   end        tag u8 = 0
//!   count      u64 BE: number of records
//!   checksum   32 bytes: SHA-256 of every byte before it (the magic, the
//!              metadata and the decompressed body)
//! end of file after the frame
//! ```
//!
//! Version 1 (magic "ARBSNAP1", written by earlier builds) is the same with
//! the body stored as is; it is still read (a replica upgraded in place
//! keeps its `current` snapshot, and sends it as it is), never written. The
//! records are written and read through the LZ4 frame as a stream: the
//! encoder holds one block, the decoder at most [`LZ4_DECODER_BYTES`]
//! whatever a file claims.

mod checkpoint;

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{RaftSnapshotBuilder, Snapshot, SnapshotMeta};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use sha2::{Digest, Sha256};

use super::keys::{self, CF_SM_META, KEY_LAST_APPLIED, KEY_MEMBERSHIP, STATE_MACHINE_CFS};
use super::{cf, io_err, StateMachineStore};
use crate::types::TypeConfig;

use checkpoint::{build_checkpoint, Checkpoint, Stream};
pub use checkpoint::{CHECKPOINT_CACHE_BYTES, CHECKPOINT_META, CHECKPOINT_OPEN_FILES};

type Meta = SnapshotMetaOf<TypeConfig>;

const MAGIC: &[u8; 8] = b"ARBSNAP2";
/// The magic of version 1 (uncompressed body), still read.
const MAGIC_V1: &[u8; 8] = b"ARBSNAP1";
const END_TAG: u8 = 0;
const CHECKSUM_LEN: usize = 32;

/// The buffer between a snapshot file and the code reading or writing it.
pub const IO_BUFFER: usize = 64 * 1024;
/// The size of one chunk of a snapshot on the wire.
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// The largest key or value a snapshot may hold (the largest record the
/// state machine writes is far smaller: a command is at most 256 KiB); a
/// longer field is refused before anything is allocated for it.
pub const MAX_FIELD_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of records per RocksDB batch when installing.
pub const INSTALL_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// The most the LZ4 decoder of a snapshot body holds, whatever block size a
/// file declares (at most 4 MiB): a compressed block, and two blocks plus
/// the 64 KiB window of decompressed bytes.
pub const LZ4_DECODER_BYTES: usize = 3 * 4 * 1024 * 1024 + 64 * 1024;
/// The most memory one snapshot operation holds for data, whatever the
/// snapshot's size: its I/O buffer, one chunk, one record (key and value),
/// one install batch and the LZ4 decoder. (A send from a checkpoint holds
/// one chunk, one record and the encoder's block, within this; the
/// checkpoint's reader adds its own cache, [`CHECKPOINT_CACHE_BYTES`].)
pub const MEMORY_BOUND: usize = IO_BUFFER
    + CHUNK_BYTES
    + 2 * MAX_FIELD_BYTES
    + INSTALL_BATCH_BYTES
    + MAX_FIELD_BYTES
    + LZ4_DECODER_BYTES;

/// A snapshot as openraft passes it between the state machine and the
/// network: an open snapshot file, or a checkpoint whose bytes are produced
/// as they are read (see the module doc). Neither holds the snapshot in
/// memory. A file stays readable even if `current` is replaced meanwhile
/// (it is the inode that is open); a checkpoint stays on disk while this
/// refers to it.
pub struct SnapshotData(Origin);

enum Origin {
    /// `received`: a file received from the leader into the snapshot
    /// directory, removed when dropped unless an install adopted it (openraft
    /// drops a snapshot it does not install: a stale vote, a snapshot older
    /// than what is committed, a transfer superseded by a newer one).
    File {
        file: File,
        path: PathBuf,
        received: bool,
    },
    Checkpoint(Box<Stream>),
}

impl Drop for SnapshotData {
    fn drop(&mut self) {
        if let Origin::File {
            path,
            received: true,
            ..
        } = &self.0
        {
            match fs::remove_file(path) {
                Ok(()) => tracing::info!(
                    path = %path.display(),
                    "a received snapshot that was not installed is removed"
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    path = %path.display(),
                    "cannot remove a received snapshot that was not installed"
                ),
            }
        }
    }
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Origin::File { path, .. } => f.debug_tuple("SnapshotFile").field(path).finish(),
            Origin::Checkpoint(s) => f
                .debug_tuple("SnapshotCheckpoint")
                .field(&s.checkpoint().path())
                .finish(),
        }
    }
}

impl SnapshotData {
    /// Opens the snapshot file at `path`, from its start.
    pub fn open(path: &Path) -> io::Result<SnapshotData> {
        let file =
            File::open(path).map_err(|e| io_err(format_args!("open {}", path.display()), e))?;
        Ok(SnapshotData(Origin::File {
            file,
            path: path.to_path_buf(),
            received: false,
        }))
    }

    /// Opens a file received into the snapshot directory: removed when the
    /// value is dropped, unless an install adopted it.
    fn open_received(path: &Path) -> io::Result<SnapshotData> {
        let mut data = SnapshotData::open(path)?;
        if let Origin::File { received, .. } = &mut data.0 {
            *received = true;
        }
        Ok(data)
    }

    fn of_checkpoint(checkpoint: Arc<Checkpoint>) -> SnapshotData {
        SnapshotData(Origin::Checkpoint(Box::new(Stream::new(checkpoint))))
    }

    /// A received file that is no longer removed when this is dropped (an
    /// install made it `current`).
    fn keep_file(&mut self) {
        if let Origin::File { received, .. } = &mut self.0 {
            *received = false;
        }
    }

    /// Where the file was when it was opened, or the checkpoint directory.
    pub fn path(&self) -> &Path {
        match &self.0 {
            Origin::File { path, .. } => path,
            Origin::Checkpoint(s) => s.checkpoint().path(),
        }
    }

    /// Whether the bytes are produced from a checkpoint as they are read
    /// (rather than read from a snapshot file).
    pub fn is_checkpoint(&self) -> bool {
        matches!(self.0, Origin::Checkpoint(_))
    }

    /// The next chunk of at most [`CHUNK_BYTES`]; empty at the end. From a
    /// checkpoint this encodes the records of the chunk (blocking: call it
    /// off the async threads).
    pub fn next_chunk(&mut self) -> io::Result<Vec<u8>> {
        match &mut self.0 {
            Origin::File { file, .. } => {
                let mut chunk = Vec::with_capacity(CHUNK_BYTES);
                file.take(CHUNK_BYTES as u64).read_to_end(&mut chunk)?;
                Ok(chunk)
            }
            Origin::Checkpoint(s) => s.next_chunk(),
        }
    }

    /// Writes every remaining byte to `out`, chunk by chunk.
    fn write_rest(&mut self, out: &mut impl Write) -> io::Result<u64> {
        let mut n = 0u64;
        loop {
            let chunk = self.next_chunk()?;
            if chunk.is_empty() {
                return Ok(n);
            }
            out.write_all(&chunk)?;
            n += chunk.len() as u64;
        }
    }

    /// Back to the first byte.
    fn rewind(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Origin::File { file, .. } => file.seek(SeekFrom::Start(0)).map(|_| ()),
            Origin::Checkpoint(s) => {
                s.rewind();
                Ok(())
            }
        }
    }

    /// The whole snapshot in memory (tests and tools only); leaves it at its
    /// start.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.rewind()?;
        let mut out = Vec::new();
        self.write_rest(&mut out)?;
        self.rewind()?;
        Ok(out)
    }
}

/// A fresh temporary file name in `dir`.
fn temp_path(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!("{what}-{}.tmp", unique_suffix()))
}

/// This process and a counter: a name unique in the snapshot directory.
fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format_args!("sync {}", dir.display()), e))
}

/// What the current snapshot is.
enum Current {
    None,
    /// The file `current`; `verified` once its framing and checksum were
    /// checked in this process (when it was installed, or the first time it
    /// is handed out).
    File {
        meta: Meta,
        verified: bool,
    },
    Checkpoint(Arc<Checkpoint>),
    /// What was found at open cannot be read: every use says why.
    Damaged(String),
}

/// The snapshot directory: which snapshot is current (one writer at a
/// time), and the files and checkpoints in it.
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
    current: Mutex<Current>,
}

impl SnapshotFiles {
    /// Decides what the current snapshot is from what is on disk (see
    /// [`scan`]) and removes the leftovers: temporary files and directories
    /// of a build or a receipt cut short, checkpoints older than the
    /// current snapshot, damaged checkpoints, and a `current` file older
    /// than the newest checkpoint.
    pub(crate) fn new(dir: PathBuf) -> Self {
        let (current, leftovers) = scan(&dir);
        for p in leftovers {
            let removed = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            match removed {
                Ok(()) => tracing::debug!(path = %p.display(), "snapshot leftover removed"),
                Err(e) => {
                    tracing::warn!(error = %e, path = %p.display(), "cannot remove a snapshot leftover")
                }
            }
        }
        SnapshotFiles {
            dir,
            current: Mutex::new(current),
        }
    }

    pub(crate) fn inbox(&self) -> SnapshotInbox {
        SnapshotInbox(self.dir.clone())
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("current")
    }

    fn marker_path(&self) -> PathBuf {
        self.dir.join("INSTALLING")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the file `current` (stale: a newer checkpoint is current).
    /// A send that opened it goes on reading it.
    fn remove_current_file(&self) {
        let path = self.current_path();
        if self.marker_path().exists() {
            return;
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot remove a stale snapshot")
            }
        }
    }

    /// Makes the (complete, fsynced) snapshot file at `path` the current
    /// snapshot by renaming it over `current`; the checkpoint that was
    /// current is removed once no send uses it.
    fn adopt_file(&self, meta: &Meta, path: &Path) -> io::Result<()> {
        let mut current = self.lock();
        let target = self.current_path();
        if path != target {
            fs::rename(path, &target)
                .map_err(|e| io_err(format_args!("rename {}", path.display()), e))?;
            sync_dir(&self.dir)?;
        }
        let old = std::mem::replace(
            &mut *current,
            Current::File {
                meta: meta.clone(),
                verified: true,
            },
        );
        drop(current);
        if let Current::Checkpoint(c) = old {
            c.retire();
        }
        Ok(())
    }

    /// Makes a freshly built checkpoint current, unless the current
    /// snapshot covers as much of the log (a slow build must not replace
    /// what a later install put there) and is still on disk, or an install
    /// is in progress; a
    /// checkpoint not made current is removed once nothing refers to it.
    fn adopt_checkpoint(&self, c: &Arc<Checkpoint>) -> bool {
        let mut current = self.lock();
        // (A current snapshot gone from the disk is replaced whatever it
        // covered.)
        let newer = match &*current {
            Current::None | Current::Damaged(_) => true,
            Current::File { meta, .. } => {
                c.meta().last_log_id > meta.last_log_id || !self.current_path().exists()
            }
            Current::Checkpoint(old) => {
                c.meta().last_log_id > old.meta().last_log_id || old.check_present().is_err()
            }
        };
        if !newer || self.marker_path().exists() {
            drop(current);
            c.retire();
            return false;
        }
        let old = std::mem::replace(&mut *current, Current::Checkpoint(c.clone()));
        drop(current);
        match old {
            Current::Checkpoint(o) => o.retire(),
            Current::File { .. } | Current::Damaged(_) => self.remove_current_file(),
            Current::None => {}
        }
        true
    }

    /// The current snapshot, ready to be read from its start. A file is
    /// verified (framing, checksum) the first time it is handed out in this
    /// process; a checkpoint must still have its metadata file.
    fn load(&self) -> io::Result<Option<(Meta, SnapshotData)>> {
        let mut current = self.lock();
        match &mut *current {
            Current::None => Ok(None),
            Current::Damaged(e) => Err(io::Error::other(e.clone())),
            Current::File { meta, verified } => {
                let path = self.current_path();
                let data = SnapshotData::open(&path)?;
                if !*verified {
                    let Origin::File { file, .. } = &data.0 else {
                        unreachable!("a file")
                    };
                    let found = verify(file, |_, _, _| Ok(()))
                        .map_err(|e| io_err(format_args!("snapshot {}", path.display()), e))?;
                    *meta = found;
                    *verified = true;
                }
                Ok(Some((meta.clone(), data)))
            }
            Current::Checkpoint(c) => {
                c.check_present()?;
                Ok(Some((
                    c.meta().clone(),
                    SnapshotData::of_checkpoint(c.clone()),
                )))
            }
        }
    }
}

impl Current {
    fn file(found: Result<Meta, String>) -> Current {
        match found {
            Ok(meta) => Current::File {
                meta,
                verified: false,
            },
            Err(e) => Current::Damaged(e),
        }
    }
}

/// What the current snapshot in `dir` is, and what else is there to be
/// removed; changes nothing. Of the `current` file and the newest
/// checkpoint, the one covering more of the log is current (the file when
/// equal, and always while an install is in progress: it is what is being
/// installed).
fn scan(dir: &Path) -> (Current, Vec<PathBuf>) {
    let mut leftovers = Vec::new();
    let mut newest: Option<(PathBuf, Meta)> = None;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                leftovers.push(p);
            } else if checkpoint::is_checkpoint_name(&e.file_name()) && p.is_dir() {
                match checkpoint::read_checkpoint_meta(&p) {
                    Ok(meta) => match &newest {
                        Some((_, n)) if n.last_log_id >= meta.last_log_id => leftovers.push(p),
                        _ => {
                            if let Some((old, _)) = newest.replace((p, meta)) {
                                leftovers.push(old);
                            }
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, path = %p.display(), "a damaged snapshot checkpoint (derived data: removed, the next build makes another)");
                        leftovers.push(p);
                    }
                }
            }
        }
    }
    let installing = dir.join("INSTALLING").exists();
    let path = dir.join("current");
    let file = match read_meta(&path) {
        Ok(meta) => Some(Ok(meta)),
        Err(_) if !path.exists() => None,
        Err(e) => Some(Err(format!("snapshot {}: {e}", path.display()))),
    };
    let checkpoint =
        |(p, meta): (PathBuf, Meta)| Current::Checkpoint(Arc::new(Checkpoint::new(p, meta)));
    let current = match (file, newest) {
        (file, Some((p, _))) if installing => {
            leftovers.push(p);
            file.map_or(Current::None, Current::file)
        }
        (None, None) => Current::None,
        (Some(f), None) => Current::file(f),
        (None, Some(c)) => checkpoint(c),
        (Some(Ok(meta)), Some((p, c))) if meta.last_log_id >= c.last_log_id => {
            leftovers.push(p);
            Current::File {
                meta,
                verified: false,
            }
        }
        // The checkpoint covers more (or the file is damaged).
        (Some(_), Some(c)) => {
            leftovers.push(path);
            checkpoint(c)
        }
    };
    (current, leftovers)
}
/// A snapshot arriving from a peer, written to a temporary file in the
/// snapshot directory chunk by chunk. Removed when dropped unless
/// [`Incoming::finish`]ed and handed on.
pub struct Incoming {
    out: Option<BufWriter<File>>,
    path: PathBuf,
    keep: bool,
}

/// Where the replica receives snapshots: its snapshot directory.
#[derive(Clone, Debug)]
pub struct SnapshotInbox(PathBuf);

impl SnapshotInbox {
    pub fn new(dir: PathBuf) -> Self {
        SnapshotInbox(dir)
    }

    /// A new, empty incoming file.
    pub fn create(&self) -> io::Result<Incoming> {
        let path = temp_path(&self.0, "incoming");
        let file = File::create(&path)
            .map_err(|e| io_err(format_args!("create {}", path.display()), e))?;
        Ok(Incoming {
            out: Some(BufWriter::with_capacity(IO_BUFFER, file)),
            path,
            keep: false,
        })
    }
}

impl Incoming {
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Some(out) => out.write_all(chunk),
            None => Err(io_err("incoming snapshot", "already finished")),
        }
    }

    /// Flushes and fsyncs the file; it can then be checked and opened.
    pub fn finish(&mut self) -> io::Result<&Path> {
        if let Some(out) = self.out.take() {
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        Ok(&self.path)
    }

    /// Opens the finished file for raft; from now on the state machine owns
    /// it (installing renames it to `current`).
    pub fn into_data(mut self) -> io::Result<SnapshotData> {
        self.finish()?;
        let data = SnapshotData::open_received(&self.path)?;
        self.keep = true;
        Ok(data)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Reads only the metadata at the head of a snapshot file.
fn read_meta(path: &Path) -> io::Result<Meta> {
    let mut f = File::open(path).map_err(|e| io_err(format_args!("open {}", path.display()), e))?;
    let mut head = [0u8; 12];
    f.read_exact(&mut head)?;
    if &head[..8] != MAGIC && &head[..8] != MAGIC_V1 {
        return Err(io_err(path.display(), "not an arbor snapshot"));
    }
    let len = u32::from_be_bytes(head[8..].try_into().expect("4 bytes")) as usize;
    if len > MAX_FIELD_BYTES {
        return Err(io_err(path.display(), "metadata too long"));
    }
    let mut meta = vec![0u8; len];
    f.read_exact(&mut meta)?;
    serde_json::from_slice(&meta)
        .map_err(|e| io_err(format_args!("{} metadata", path.display()), e))
}

/// A snapshot file's bytes after its metadata: as stored (version 1) or
/// through the LZ4 frame decoder (version 2).
enum Body<R: Read> {
    Plain(R),
    Lz4(Box<lz4_flex::frame::FrameDecoder<R>>),
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Plain(r) => r.read(buf),
            Body::Lz4(d) => d.read(buf),
        }
    }
}

impl<R: Read> Body<R> {
    fn decompressed(self) -> Self {
        match self {
            Body::Plain(r) => Body::Lz4(Box::new(lz4_flex::frame::FrameDecoder::new(r))),
            lz4 => lz4,
        }
    }

    /// Whether nothing follows: no decompressed byte (the frame ends) and,
    /// for a frame, no byte of the file after it.
    fn at_end(&mut self) -> io::Result<bool> {
        let mut rest = [0u8; 1];
        if self.read(&mut rest)? != 0 {
            return Ok(false);
        }
        match self {
            Body::Plain(_) => Ok(true),
            Body::Lz4(d) => Ok(d.get_mut().read(&mut rest)? == 0),
        }
    }
}

/// Reads a snapshot from the start of a file, hashing what it reads;
/// `pos` counts bytes of the file's content (the body decompressed).
struct FramedReader<R: Read> {
    r: Body<R>,
    hasher: Sha256,
    pos: u64,
}

impl<R: Read> FramedReader<R> {
    fn take_into(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.r
            .read_exact(buf)
            .map_err(|e| format!("truncated at byte {}: {e}", self.pos))?;
        self.hasher.update(&*buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.take_into(&mut b)?;
        Ok(b[0])
    }

    /// A u32 BE length and that many bytes, into `out` (reused).
    fn field(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let mut len = [0u8; 4];
        self.take_into(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FIELD_BYTES {
            return Err(format!(
                "a field of {len} bytes at byte {} (at most {MAX_FIELD_BYTES})",
                self.pos
            ));
        }
        out.clear();
        out.resize(len, 0);
        self.take_into(out)
    }
}

/// Reads a whole snapshot file once, from its start (and leaves it there for
/// the next reader): checks the magic, the
/// framing, the record count and the checksum, hands every record to
/// `record` (column family, key, value) as it is read, and returns the
/// metadata. Memory: the buffer and one record. `record`'s work counts only
/// if this returns `Ok` (the checksum is known at the end).
fn verify(
    file: &File,
    record: impl FnMut(&'static str, &[u8], &[u8]) -> Result<(), String>,
) -> Result<Meta, String> {
    let rewind = |mut f: &File| {
        f.seek(SeekFrom::Start(0))
            .map(|_| ())
            .map_err(|e| format!("seek to the start: {e}"))
    };
    rewind(file)?;
    let verified = verify_from_start(file, record, &mut 0);
    rewind(file)?;
    verified
}

/// [`verify`] from where the file is; `peak` is raised to the most bytes
/// its record buffers held (one key and one value: the largest record).
fn verify_from_start(
    file: &File,
    mut record: impl FnMut(&'static str, &[u8], &[u8]) -> Result<(), String>,
    peak: &mut usize,
) -> Result<Meta, String> {
    let mut r = FramedReader {
        r: Body::Plain(BufReader::with_capacity(IO_BUFFER, file)),
        hasher: Sha256::new(),
        pos: 0,
    };
    let mut magic = [0u8; 8];
    r.take_into(&mut magic)
        .map_err(|_| "not an arbor snapshot (bad magic)".to_string())?;
    if &magic != MAGIC && &magic != MAGIC_V1 {
        return Err("not an arbor snapshot (bad magic)".into());
    }
    let (mut key, mut value) = (Vec::new(), Vec::new());
    r.field(&mut value)?;
    let meta: Meta =
        serde_json::from_slice(&value).map_err(|e| format!("metadata does not decode: {e}"))?;
    if &magic == MAGIC {
        r.r = r.r.decompressed();
    }
    let mut records = 0u64;
    loop {
        let at = r.pos;
        let tag = r.u8()?;
        if tag == END_TAG {
            break;
        }
        let cf_name = *STATE_MACHINE_CFS
            .get(tag as usize - 1)
            .ok_or_else(|| format!("unknown record tag {tag} at byte {at}"))?;
        r.field(&mut key)?;
        r.field(&mut value)?;
        *peak = (*peak).max(key.capacity() + value.capacity());
        record(cf_name, &key, &value)?;
        records += 1;
    }
    let mut count = [0u8; 8];
    r.take_into(&mut count)?;
    let count = u64::from_be_bytes(count);
    if count != records {
        return Err(format!("record count says {count}, found {records}"));
    }
    let computed = std::mem::take(&mut r.hasher).finalize();
    let mut checksum = [0u8; CHECKSUM_LEN];
    r.r.read_exact(&mut checksum)
        .map_err(|_| format!("truncated at byte {}", r.pos))?;
    if computed.as_slice() != checksum {
        return Err("checksum does not match".into());
    }
    match r.r.at_end() {
        Ok(true) => Ok(meta),
        Ok(false) => Err("trailing bytes after the checksum".into()),
        Err(e) => Err(format!("read after the checksum: {e}")),
    }
}

/// Where a snapshot's bytes go: the file or memory (magic and metadata),
/// then the LZ4 frame encoder in front of it (the body).
enum Sink<W: Write> {
    Plain(W),
    Lz4(Box<lz4_flex::frame::FrameEncoder<W>>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Lz4(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Lz4(e) => e.flush(),
        }
    }
}

impl<W: Write> Sink<W> {
    fn compressed(self) -> Self {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        match self {
            Sink::Plain(w) => {
                let info = FrameInfo::new()
                    .block_size(BlockSize::Max64KB)
                    .block_mode(BlockMode::Linked);
                Sink::Lz4(Box::new(FrameEncoder::with_frame_info(info, w)))
            }
            lz4 => lz4,
        }
    }

    /// What the bytes went to so far (the encoder writes a block once it is
    /// full: the output depends only on the bytes written, not on how they
    /// were split).
    fn inner_mut(&mut self) -> &mut W {
        match self {
            Sink::Plain(w) => w,
            Sink::Lz4(e) => e.get_mut(),
        }
    }

    /// Ends the frame and returns what it was written to.
    fn finish(self) -> io::Result<W> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Lz4(e) => e.finish().map_err(io::Error::other),
        }
    }
}

/// Writes a snapshot, hashing what it writes (before compression).
struct FramedWriter<W: Write> {
    out: Sink<W>,
    hasher: Sha256,
}

impl<W: Write> FramedWriter<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.hasher.update(b);
        self.out.write_all(b)
    }

    fn put_field(&mut self, b: &[u8]) -> io::Result<()> {
        if b.len() > MAX_FIELD_BYTES {
            return Err(io_err(
                "snapshot record",
                "longer than a snapshot field may be",
            ));
        }
        self.put(&(b.len() as u32).to_be_bytes())?;
        self.put(b)
    }
}

/// The snapshot metadata of a state machine whose `sm_meta` records `get`
/// reads: the last applied log id and the membership.
fn snapshot_meta(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>,
) -> io::Result<Meta> {
    let read_json = |key: &[u8]| -> io::Result<Option<Vec<u8>>> {
        get(key).map_err(|e| {
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
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
    })
}

/// Dumps the state machine under one RocksDB snapshot into a new temporary
/// file in `dir`, streamed; returns its metadata and path. How every
/// snapshot was built before checkpoints: the reference the bytes produced
/// from a checkpoint are compared with (and the cost they are measured
/// against).
#[cfg(test)]
fn build(db: &DB, dir: &Path) -> io::Result<(Meta, PathBuf)> {
    let snap = db.snapshot();
    let meta = snapshot_meta(|key| snap.get_cf(cf(db, CF_SM_META), key))?;

    let path = temp_path(dir, "build");
    let file =
        File::create(&path).map_err(|e| io_err(format_args!("create {}", path.display()), e))?;
    let w = FramedWriter {
        out: Sink::Plain(BufWriter::with_capacity(IO_BUFFER, file)),
        hasher: Sha256::new(),
    };
    let written = (|mut w: FramedWriter<BufWriter<File>>| -> io::Result<()> {
        w.put(MAGIC)?;
        w.put_field(
            &serde_json::to_vec(&meta).map_err(|e| io_err("encode snapshot metadata", e))?,
        )?;
        w.out = w.out.compressed();
        let mut count = 0u64;
        for (i, name) in STATE_MACHINE_CFS.iter().enumerate() {
            for item in snap.iterator_cf(cf(db, name), IteratorMode::Start) {
                let (k, v) =
                    item.map_err(|e| io_err(format_args!("read {name} for snapshot"), e))?;
                w.put(&[i as u8 + 1])?;
                w.put_field(&k)?;
                w.put_field(&v)?;
                count += 1;
            }
        }
        w.put(&[END_TAG])?;
        w.put(&count.to_be_bytes())?;
        let checksum = std::mem::take(&mut w.hasher).finalize();
        w.out.write_all(&checksum)?;
        w.out
            .finish()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
    })(w);
    if let Err(e) = written {
        let _ = fs::remove_file(&path);
        return Err(io_err(format_args!("write {}", path.display()), e));
    }
    Ok((meta, path))
}

/// Checks a snapshot file received from a peer before raft sees it, in one
/// streaming pass: framing, checksum, that its data is of the snapshot
/// `meta` names, and that its ledger extends this replica's: it must hold
/// this replica's head entry (`local_head`: seq and hash) unchanged, its
/// entries must come in order, each hashing to its hash and linking to the
/// one before. A snapshot that fails is refused on the wire; handed to raft,
/// a storage error would stop this replica's raft core, and a snapshot with
/// another history would rewrite it.
pub fn check_snapshot_file(
    path: &Path,
    meta: &Meta,
    local_head: Option<(u64, [u8; 32])>,
) -> Result<(), String> {
    use arbor_proto::ledger::Entry;
    use prost::Message;
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut prev: Option<(u64, [u8; 32])> = None;
    let mut head_seen = false;
    let found = verify(&file, |cf_name, k, v| {
        if cf_name != keys::CF_LEDGER {
            return Ok(());
        }
        let seq = keys::decode_u64_key(k).ok_or("a ledger key is not a u64")?;
        let p = arbor_proto::pb::LedgerEntry::decode(v)
            .map_err(|e| format!("ledger entry {seq} does not decode: {e}"))?;
        let e = Entry::from_pb(&p).map_err(|e| format!("ledger entry {seq}: {e}"))?;
        if e.seq != seq || e.compute_hash() != e.hash {
            return Err(format!("ledger entry {seq} does not hash to its hash"));
        }
        if let Some((pseq, phash)) = prev {
            if e.seq != pseq + 1 || e.prev_hash != phash {
                return Err(format!(
                    "ledger entry {} does not link to entry {pseq}",
                    e.seq
                ));
            }
        }
        if let Some((hseq, hhash)) = local_head {
            if seq == hseq {
                if e.hash != hhash {
                    return Err(format!(
                        "its ledger entry {seq} differs from this replica's: it would rewrite history"
                    ));
                }
                head_seen = true;
            }
        }
        prev = Some((e.seq, e.hash));
        Ok(())
    })?;
    if found != *meta {
        return Err(format!(
            "data is of snapshot {found} but metadata says {meta}"
        ));
    }
    if let Some((seq, _)) = local_head {
        if !head_seen {
            return Err(format!(
                "its ledger does not hold this replica's entry {seq}"
            ));
        }
    }
    Ok(())
}

/// Checks the whole snapshot `file` (framing, checksum) and that it is of
/// the snapshot `meta`.
fn check_data(file: &File, meta: &Meta) -> io::Result<()> {
    let found = verify(file, |_, _, _| Ok(())).map_err(|e| io_err("install snapshot", e))?;
    if found != *meta {
        return Err(io_err(
            "install snapshot",
            format_args!("data is of snapshot {found} but metadata says {meta}"),
        ));
    }
    Ok(())
}

/// Writes the rest of `data` to a new temporary file in `dir`, fsynced;
/// returns it, open for reading.
fn write_to_temp(dir: &Path, what: &str, data: &mut SnapshotData) -> io::Result<(PathBuf, File)> {
    let path = temp_path(dir, what);
    let written = File::create(&path).and_then(|file| {
        let mut out = BufWriter::with_capacity(IO_BUFFER, file);
        data.write_rest(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        File::open(&path)
    });
    match written {
        Ok(file) => Ok((path, file)),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(io_err(format_args!("write {}", path.display()), e))
        }
    }
}

/// Verifies the snapshot `data` and replaces the state machine with it;
/// returns the largest write batch it built, in bytes.
pub(super) fn install(
    sm: &StateMachineStore,
    meta: &Meta,
    mut data: SnapshotData,
) -> io::Result<usize> {
    let dir = sm.snapshots.dir.as_path();
    let received = match &data.0 {
        // A file received into the snapshot directory is moved; one from
        // elsewhere (a tool, a test) is copied first, streamed.
        Origin::File { file, path, .. } => {
            check_data(file, meta)?;
            (path.parent() == Some(dir)).then(|| path.clone())
        }
        // From a checkpoint (openraft installs the current snapshot at start
        // when the applied state is behind it): the stream is written to a
        // file, checked and installed like a received one.
        Origin::Checkpoint(_) => None,
    };
    let copied = received.is_none();
    let path = match received {
        Some(path) => path,
        None => {
            data.rewind()?;
            let (copy, file) = write_to_temp(dir, "copy", &mut data)?;
            if data.is_checkpoint() {
                if let Err(e) = check_data(&file, meta) {
                    let _ = fs::remove_file(&copy);
                    return Err(e);
                }
            }
            copy
        }
    };
    // A received file is renamed while still open (the inode stays): if the
    // adoption fails it is removed with `data` (a copy is removed here);
    // once adopted it is `current`, and kept.
    if let Err(e) = sm.snapshots.adopt_file(meta, &path) {
        if copied {
            let _ = fs::remove_file(&path);
        }
        return Err(e);
    }
    data.keep_file();
    drop(data);
    install_current(&sm.db, &sm.snapshots, meta)
}

/// Replaces the state machine with the current snapshot (verified, of
/// `meta`), crash-safely (see the module doc); returns the largest write
/// batch it built, in bytes.
fn install_current(db: &DB, files: &SnapshotFiles, meta: &Meta) -> io::Result<usize> {
    let marker = files.marker_path();
    File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(format_args!("write {}", marker.display()), e))?;
    sync_dir(&files.dir)?;

    let write = |batch: WriteBatch, sync: bool| {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        db.write_opt(batch, &opts)
            .map_err(|e| io_err("install snapshot", e))
    };
    let mut batch = WriteBatch::default();
    for name in STATE_MACHINE_CFS {
        clear(db, &mut batch, name)?;
    }
    // The derived column families are built from the installed records.
    super::leases::clear_into(db, &mut batch)?;
    super::merkle_tree::clear_into(db, &mut batch);
    write(batch, false)?;

    let file = File::open(files.current_path())?;
    let mut batch = WriteBatch::default();
    let mut records = 0u64;
    let mut largest = 0usize;
    let mut failed: Option<io::Error> = None;
    let found = verify(&file, |name, k, v| {
        batch.put_cf(cf(db, name), k, v);
        if name == keys::CF_ORDERS {
            super::leases::put_order_record(db, &mut batch, k, v).map_err(|e| e.to_string())?;
        }
        records += 1;
        largest = largest.max(batch.size_in_bytes());
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            if let Err(e) = write(std::mem::take(&mut batch), false) {
                let m = e.to_string();
                failed = Some(e);
                return Err(m);
            }
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let found = found.map_err(|e| io_err("install snapshot", e))?;
    if found != *meta {
        return Err(io_err("install snapshot", "the current snapshot changed"));
    }
    batch.put_cf(cf(db, keys::CF_LEASES), super::leases::KEY_BUILT, []);
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
    write(batch, true)?;
    fs::remove_file(&marker).map_err(|e| io_err(format_args!("remove {}", marker.display()), e))?;
    sync_dir(&files.dir)?;
    tracing::info!(snapshot = %meta, records, largest_batch = largest, "snapshot installed");
    Ok(largest)
}

/// Finishes an install that a crash interrupted (the `INSTALLING` marker
/// is there): installs the current snapshot again, from the start. Called
/// when the storage is opened, before anything reads the state machine.
pub(super) fn finish_interrupted_install(db: &DB, dir: &Path) -> io::Result<()> {
    let files = SnapshotFiles::new(dir.to_path_buf());
    if !files.marker_path().exists() {
        return Ok(());
    }
    let meta = files.load()?.map(|(meta, _)| meta).ok_or_else(|| {
        io_err(
            "finish the interrupted snapshot install",
            "no current snapshot",
        )
    })?;
    tracing::warn!(snapshot = %meta, "a snapshot install was interrupted: installing it again");
    install_current(db, &files, &meta).map(|_| ())
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
    Ok(sm
        .snapshots
        .load()?
        .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
}

/// The current snapshot of the replica whose snapshot directory is `dir`,
/// as the bytes a send of it carries, written to `out` (tools and tests;
/// the replica may be running: its current checkpoint is only read, and
/// nothing in `dir` is changed). Returns its metadata and its length, or
/// `None` without a snapshot. Fails if the replica replaces the snapshot
/// meanwhile.
pub fn export_current(dir: &Path, out: &mut impl Write) -> io::Result<Option<(Meta, u64)>> {
    let (current, _) = scan(dir);
    let (meta, mut data) = match current {
        Current::None => return Ok(None),
        Current::Damaged(e) => return Err(io::Error::other(e)),
        Current::File { meta, .. } => (meta, SnapshotData::open(&dir.join("current"))?),
        Current::Checkpoint(c) => (c.meta().clone(), SnapshotData::of_checkpoint(c)),
    };
    let n = data.write_rest(out)?;
    Ok(Some((meta, n)))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    /// Takes a checkpoint of the state as applied when called (not when the
    /// builder was created), on tokio's blocking pool; the metadata is read
    /// from the checkpoint, so it always describes exactly the data. No
    /// record is read: the bytes are produced when the snapshot is sent.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let (files, db) = (self.snapshots.clone(), self.db.clone());
        let (meta, snapshot, current) =
            tokio::task::spawn_blocking(move || build_checkpoint(&files, &db))
                .await
                .map_err(|e| io_err("build snapshot", e))??;
        tracing::info!(
            snapshot = %meta,
            checkpoint = %snapshot.path().display(),
            current,
            "snapshot built"
        );
        self.metrics.snapshot("built");
        Ok(Snapshot { meta, snapshot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Building, verifying and installing a snapshot many times larger than
    /// any buffer: the record buffers hold one record, the install batches
    /// stay at their bound; nothing grows with the snapshot.
    #[test]
    fn snapshots_are_built_and_installed_in_bounded_memory() {
        const RECORDS: u32 = 12_000;
        const VALUE: usize = 1024;
        let a = tempfile::tempdir().unwrap();
        let (_log, sm) = super::super::open(a.path()).unwrap();
        let db = &sm.db;
        for i in 0..RECORDS {
            let key = format!("web\0{i}");
            // Incompressible values: the file stays as large as its records.
            db.put_cf(cf(db, keys::CF_REFS), key, noise(u64::from(i), VALUE))
                .unwrap();
        }
        let (meta, path) = build(db, &sm.snapshots.dir).unwrap();
        let size = fs::metadata(&path).unwrap().len() as usize;
        assert!(size > 2 * INSTALL_BATCH_BYTES + CHUNK_BYTES, "{size}");
        let mut peak = 0;
        let mut n = 0;
        verify_from_start(
            &File::open(&path).unwrap(),
            |_, _, _| {
                n += 1;
                Ok(())
            },
            &mut peak,
        )
        .unwrap();
        assert_eq!(n, RECORDS);
        assert!(peak <= 2 * VALUE, "record buffers held {peak} bytes");

        let b = tempfile::tempdir().unwrap();
        let (_log_b, sm_b) = super::super::open(b.path()).unwrap();
        let largest = install(&sm_b, &meta, SnapshotData::open(&path).unwrap()).unwrap();
        assert!(largest >= INSTALL_BATCH_BYTES / 2, "batched: {largest}");
        assert!(
            largest <= INSTALL_BATCH_BYTES + 2 * VALUE + 64,
            "an install batch held {largest} bytes"
        );
        let installed = sm_b
            .db
            .iterator_cf(cf(&sm_b.db, keys::CF_REFS), IteratorMode::Start)
            .count();
        assert_eq!(installed, RECORDS as usize);

        // Received into the inbox as from a leader and installed: the file
        // becomes `current` (not removed with its handle), no `.tmp` is left.
        let c = tempfile::tempdir().unwrap();
        let (_log_c, sm_c) = super::super::open(c.path()).unwrap();
        let mut incoming = sm_c.snapshot_inbox().create().unwrap();
        incoming.write(&fs::read(&path).unwrap()).unwrap();
        install(&sm_c, &meta, incoming.into_data().unwrap()).unwrap();
        let left: Vec<_> = fs::read_dir(&sm_c.snapshots.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["current"], "{left:?}");
    }

    /// `len` bytes that do not compress (a xorshift stream seeded by `seed`);
    /// the checkpoint tests use it too.
    pub(super) fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Version 2 files are compressed (a compressible state machine gives a
    /// file far smaller than its records), read back record for record, and
    /// any damage to the compressed body, a cut or bytes after the frame is
    /// refused; a version 1 file (uncompressed, earlier builds) still reads.
    #[test]
    fn snapshots_are_compressed_and_damage_to_the_frame_is_refused() {
        const RECORDS: u32 = 3_000;
        let a = tempfile::tempdir().unwrap();
        let (_log, sm) = super::super::open(a.path()).unwrap();
        let db = &sm.db;
        let mut raw = 0usize;
        for i in 0..RECORDS {
            let key = format!("web\0ref-{i:06}");
            let value = format!("{{\"order\":\"o-{i}\",\"channel\":\"shop\",\"seq\":{i}}}");
            raw += 1 + 4 + key.len() + 4 + value.len();
            db.put_cf(cf(db, keys::CF_REFS), key, value).unwrap();
        }
        let (meta, path) = build(db, &sm.snapshots.dir).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
        assert!(
            bytes.len() * 3 < raw,
            "{} bytes for {raw} bytes of records",
            bytes.len()
        );
        let mut seen = Vec::new();
        let found = verify(&File::open(&path).unwrap(), |cf, k, v| {
            seen.push((cf, k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(found, meta);
        seen.retain(|r| r.0 == keys::CF_REFS);
        let stored: Vec<_> = db
            .iterator_cf(cf(db, keys::CF_REFS), IteratorMode::Start)
            .map(|r| {
                let (k, v) = r.unwrap();
                (keys::CF_REFS, k.to_vec(), v.to_vec())
            })
            .collect();
        assert_eq!(seen, stored);

        let dir = a.path();
        let check = |b: &[u8]| {
            let p = temp_path(dir, "damaged");
            fs::write(&p, b).unwrap();
            let r = verify(&File::open(&p).unwrap(), |_, _, _| Ok(()));
            fs::remove_file(&p).unwrap();
            r
        };
        let body = 8 + 4 + u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        // A flipped bit anywhere in the compressed body (the frame header,
        // a block's length, a literal, a match offset, the end mark).
        for at in [
            body,
            body + 5,
            body + 9,
            body + 200,
            bytes.len() / 2,
            bytes.len() - 3,
        ] {
            for bit in [0x01u8, 0x40] {
                let mut b = bytes.clone();
                b[at] ^= bit;
                assert!(
                    check(&b).is_err(),
                    "a flipped bit at byte {at} went unnoticed"
                );
            }
        }
        // (A cut inside the frame's 4-byte end mark, after the checksummed
        // content, is read as the end of the frame: every record and the
        // checksum were read by then.)
        for cut in [body + 3, body + 100, bytes.len() / 2, bytes.len() - 5] {
            assert!(check(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for extra in [&[0u8][..], &[0x04, 0x22, 0x4d, 0x18], &bytes[body..]] {
            let mut b = bytes.clone();
            b.extend_from_slice(extra);
            let err = check(&b).unwrap_err();
            assert!(
                err.contains("trailing") || err.contains("after the checksum"),
                "{err}"
            );
        }

        // Version 1: the same records, uncompressed, as earlier builds wrote.
        let recs: Vec<_> = seen
            .iter()
            .map(|(_, k, v)| (3u8, k.clone(), v.clone()))
            .collect();
        let v1 = file_with(dir, &recs, false);
        assert_eq!(&fs::read(&v1).unwrap()[..8], MAGIC_V1);
        let mut again = Vec::new();
        verify(&File::open(&v1).unwrap(), |cf, k, v| {
            again.push((cf, k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(again, seen);
        assert!(fs::metadata(&v1).unwrap().len() as usize >= raw);
    }

    /// A version 1 framed file (uncompressed, as earlier builds wrote) with
    /// `records`, and a correct or wrong checksum.
    pub(super) fn file_with(
        dir: &Path,
        records: &[(u8, Vec<u8>, Vec<u8>)],
        bad_sum: bool,
    ) -> PathBuf {
        let meta: Meta = Default::default();
        let mut out = MAGIC_V1.to_vec();
        let m = serde_json::to_vec(&meta).unwrap();
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
        for (tag, k, v) in records {
            out.push(*tag);
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
        out.push(END_TAG);
        out.extend_from_slice(&(records.len() as u64).to_be_bytes());
        let mut sum: [u8; 32] = Sha256::digest(&out).into();
        if bad_sum {
            sum[0] ^= 1;
        }
        out.extend_from_slice(&sum);
        let p = temp_path(dir, "t");
        fs::write(&p, out).unwrap();
        p
    }

    #[test]
    fn verify_streams_records_and_checks_the_framing() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![
            (2u8, b"o-1".to_vec(), b"{}".to_vec()),
            (3, b"r".to_vec(), vec![7; 3000]),
        ];
        let ok = file_with(dir.path(), &recs, false);
        let mut seen = Vec::new();
        verify(&File::open(&ok).unwrap(), |cf, k, v| {
            seen.push((cf, k.to_vec(), v.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (keys::CF_ORDERS, b"o-1".to_vec(), 2),
                (keys::CF_REFS, b"r".to_vec(), 3000)
            ]
        );
        let bad = file_with(dir.path(), &recs, true);
        let err = verify(&File::open(&bad).unwrap(), |_, _, _| Ok(())).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        let tag = file_with(dir.path(), &[(99, vec![], vec![])], false);
        let err = verify(&File::open(&tag).unwrap(), |_, _, _| Ok(())).unwrap_err();
        assert!(err.contains("unknown record tag"), "{err}");

        // A field claiming more than the bound is refused before it is read.
        let mut huge = fs::read(&ok).unwrap();
        let at = 8 + 4 + u32::from_be_bytes(huge[8..12].try_into().unwrap()) as usize + 1;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        fs::write(&ok, &huge).unwrap();
        let err = verify(&File::open(&ok).unwrap(), |_, _, _| Ok(())).unwrap_err();
        assert!(err.contains("at most"), "{err}");

        // Truncated, and with bytes after the checksum.
        let good = fs::read(&bad).unwrap();
        let cut = temp_path(dir.path(), "cut");
        fs::write(&cut, &good[..good.len() - 40]).unwrap();
        assert!(verify(&File::open(&cut).unwrap(), |_, _, _| Ok(())).is_err());
        let ok2 = file_with(dir.path(), &recs, false);
        let mut longer = fs::read(&ok2).unwrap();
        longer.push(0);
        fs::write(&ok2, &longer).unwrap();
        let err = verify(&File::open(&ok2).unwrap(), |_, _, _| Ok(())).unwrap_err();
        assert!(err.contains("trailing"), "{err}");
    }

    #[test]
    fn chunks_are_bounded_and_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let bytes: Vec<u8> = (0..(2 * CHUNK_BYTES + 123)).map(|i| i as u8).collect();
        fs::write(&p, &bytes).unwrap();
        let mut d = SnapshotData::open(&p).unwrap();
        let mut back = Vec::new();
        loop {
            let c = d.next_chunk().unwrap();
            assert!(c.len() <= CHUNK_BYTES);
            if c.is_empty() {
                break;
            }
            back.extend_from_slice(&c);
        }
        assert_eq!(back, bytes);

        // An incoming file is removed unless handed on.
        let inbox = SnapshotInbox::new(dir.path().to_path_buf());
        let mut i = inbox.create().unwrap();
        i.write(b"abc").unwrap();
        let path = i.finish().unwrap().to_path_buf();
        assert!(path.exists());
        drop(i);
        assert!(!path.exists());
        let mut i = inbox.create().unwrap();
        i.write(b"abc").unwrap();
        let path = i.finish().unwrap().to_path_buf();
        let mut d = i.into_data().unwrap();
        assert_eq!(d.read_all().unwrap(), b"abc");
        // Handed on to raft but never installed (openraft drops a snapshot
        // it does not install): removed too, not left to fill the disk.
        assert!(path.exists());
        drop(d);
        assert!(!path.exists(), "{}", path.display());
        // A file opened from elsewhere (a tool's) is never removed.
        drop(SnapshotData::open(&p).unwrap());
        assert!(p.exists());
    }
}
