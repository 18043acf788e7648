//! State machine snapshots: build, persist, send, receive, verify, install,
//! all streamed through files in bounded memory.
//!
//! A snapshot is every record of the state machine column families
//! ([`keys::STATE_MACHINE_CFS`]) read under one RocksDB snapshot, so it is a
//! consistent view even while entries keep being applied. It is written
//! record by record through a [`IO_BUFFER`]-byte buffer to a temporary file
//! in `<dir>/snapshots/`, fsynced, then renamed over `current` and the
//! directory fsynced, so the current snapshot survives restarts and a crash
//! never leaves half a file there. What openraft hands around
//! ([`SnapshotData`]) is an open file, never the bytes: the network sends it
//! in [`CHUNK_BYTES`] chunks (a client stream of `RaftPayload`s), the
//! receiver writes them to a file ([`Incoming`]), verifies it in one
//! streaming pass ([`check_snapshot_file`]) and hands that file to raft.
//! No step holds more than one chunk or one record (at most
//! [`MAX_FIELD_BYTES`]) in memory.
//!
//! Installing verifies the whole file first (framing, checksum, metadata),
//! makes it `current`, then writes the marker file `INSTALLING` (fsynced),
//! clears the state machine column families, writes the records in batches
//! of at most [`INSTALL_BATCH_BYTES`], and finishes with one synced batch
//! setting the applied log id, the membership and the lease index marker;
//! only then is the marker removed. A crash in between leaves the marker:
//! the next open installs `current` again from the start before raft runs
//! ([`finish_interrupted_install`]), so the state machine is never seen
//! half-replaced. The derived column families (the lease index, the Merkle
//! tree) are cleared with the rest and built from the installed records.
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
//! keeps its `current` snapshot), never written. The records are written
//! and read through the LZ4 frame as a stream: the encoder holds one block,
//! the decoder at most [`LZ4_DECODER_BYTES`] whatever a file claims.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{RaftSnapshotBuilder, Snapshot, SnapshotMeta};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use sha2::{Digest, Sha256};

use super::keys::{self, CF_SM_META, KEY_LAST_APPLIED, KEY_MEMBERSHIP, STATE_MACHINE_CFS};
use super::{cf, io_err, StateMachineStore};
use crate::types::TypeConfig;

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
/// one install batch and the LZ4 decoder.
pub const MEMORY_BOUND: usize = IO_BUFFER
    + CHUNK_BYTES
    + 2 * MAX_FIELD_BYTES
    + INSTALL_BATCH_BYTES
    + MAX_FIELD_BYTES
    + LZ4_DECODER_BYTES;

/// A snapshot file, open, as openraft passes it between the state machine
/// and the network. The file stays readable even if `current` is replaced
/// meanwhile (it is the inode that is open).
#[derive(Debug)]
pub struct SnapshotData {
    file: File,
    path: PathBuf,
}

impl SnapshotData {
    /// Opens the snapshot file at `path`, from its start.
    pub fn open(path: &Path) -> io::Result<SnapshotData> {
        let file =
            File::open(path).map_err(|e| io_err(format_args!("open {}", path.display()), e))?;
        Ok(SnapshotData {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Where the file was when it was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length in bytes.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The next chunk of at most [`CHUNK_BYTES`]; empty at the end.
    pub fn next_chunk(&mut self) -> io::Result<Vec<u8>> {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        (&mut self.file)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut chunk)?;
        Ok(chunk)
    }

    /// The whole file in memory (tests and tools only); leaves the file at
    /// its start.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut out = Vec::new();
        self.file.read_to_end(&mut out)?;
        self.file.seek(SeekFrom::Start(0))?;
        Ok(out)
    }
}

/// A fresh temporary file name in `dir`.
fn temp_path(dir: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{what}-{}-{n}.tmp", std::process::id()))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format_args!("sync {}", dir.display()), e))
}

/// The snapshot directory; one writer of `current` at a time.
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl SnapshotFiles {
    pub(crate) fn new(dir: PathBuf) -> Self {
        // Temporary files of a previous run (a build or a receipt cut short).
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "tmp") {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        SnapshotFiles {
            dir,
            lock: Mutex::new(()),
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

    /// Makes the (complete, fsynced) file at `path` the current snapshot by
    /// renaming it. With `keep_newer`, a current snapshot covering more of
    /// the log is kept instead and `path` removed (a slow build must not
    /// replace what a later install put there).
    fn adopt(&self, meta: &Meta, path: &Path, keep_newer: bool) -> io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current_path();
        if path == current {
            return Ok(());
        }
        if keep_newer && current.exists() {
            match read_meta(&current) {
                Ok(existing) if existing.last_log_id > meta.last_log_id => {
                    let _ = fs::remove_file(path);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "replacing unreadable current snapshot"),
            }
        }
        fs::rename(path, &current)
            .map_err(|e| io_err(format_args!("rename {}", path.display()), e))?;
        sync_dir(&self.dir)
    }

    /// The current snapshot file, its framing and checksum verified.
    fn load(&self) -> io::Result<Option<(Meta, SnapshotData)>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.current_path();
        let data = match File::open(&path) {
            Ok(file) => SnapshotData {
                file,
                path: path.clone(),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format_args!("read {}", path.display()), e)),
        };
        let meta = verify(&data.file, |_, _, _| Ok(()))
            .map_err(|e| io_err(format_args!("snapshot {}", path.display()), e))?;
        Ok(Some((meta, data)))
    }
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
        let data = SnapshotData::open(&self.path)?;
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

/// Where a snapshot's bytes go: the file (magic and metadata), then the
/// LZ4 frame encoder in front of it (the body).
enum Sink {
    Plain(BufWriter<File>),
    Lz4(Box<lz4_flex::frame::FrameEncoder<BufWriter<File>>>),
}

impl Write for Sink {
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

impl Sink {
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

    /// Ends the frame and returns the file, flushed (not yet synced).
    fn finish(self) -> io::Result<File> {
        let w = match self {
            Sink::Plain(w) => w,
            Sink::Lz4(e) => e.finish().map_err(io::Error::other)?,
        };
        w.into_inner().map_err(|e| e.into_error())
    }
}

/// Writes a snapshot, hashing what it writes (before compression).
struct FramedWriter {
    out: Sink,
    hasher: Sha256,
}

impl FramedWriter {
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

/// Dumps the state machine under one RocksDB snapshot into a new temporary
/// file in `dir`, streamed; returns its metadata and path.
fn build(db: &DB, dir: &Path) -> io::Result<(Meta, PathBuf)> {
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

    let path = temp_path(dir, "build");
    let file =
        File::create(&path).map_err(|e| io_err(format_args!("create {}", path.display()), e))?;
    let w = FramedWriter {
        out: Sink::Plain(BufWriter::with_capacity(IO_BUFFER, file)),
        hasher: Sha256::new(),
    };
    let written = (|mut w: FramedWriter| -> io::Result<()> {
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
        w.out.finish()?.sync_all()
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

/// Verifies the snapshot `data` and replaces the state machine with it;
/// returns the largest write batch it built, in bytes.
pub(super) fn install(
    sm: &StateMachineStore,
    meta: &Meta,
    data: SnapshotData,
) -> io::Result<usize> {
    let found = verify(&data.file, |_, _, _| Ok(())).map_err(|e| io_err("install snapshot", e))?;
    if found != *meta {
        return Err(io_err(
            "install snapshot",
            format_args!("data is of snapshot {found} but metadata says {meta}"),
        ));
    }
    // A file received into the snapshot directory is moved; one from
    // elsewhere (a tool, a test) is copied first, streamed.
    let path = if data.path.parent() == Some(sm.snapshots.dir.as_path()) {
        data.path.clone()
    } else {
        let copy = temp_path(&sm.snapshots.dir, "copy");
        let copied = File::create(&copy).and_then(|mut out| {
            let mut from = BufReader::with_capacity(IO_BUFFER, File::open(&data.path)?);
            io::copy(&mut from, &mut out)?;
            out.sync_all()
        });
        if let Err(e) = copied {
            let _ = fs::remove_file(&copy);
            return Err(io_err(format_args!("copy {}", data.path.display()), e));
        }
        copy
    };
    sm.snapshots.adopt(meta, &path, false)?;
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

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    /// Builds from the state as applied when called (not when the builder
    /// was created); the metadata is read under the same RocksDB snapshot,
    /// so it always describes exactly the data.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let (meta, path) = build(&self.db, &self.snapshots.dir)?;
        // Opened before it is renamed (or removed, if a newer one is current).
        let snapshot = SnapshotData::open(&path)?;
        self.snapshots.adopt(&meta, &path, true)?;
        tracing::info!(snapshot = %meta, bytes = snapshot.len()?, "snapshot built");
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
            db.put_cf(cf(db, keys::CF_REFS), key, noise(i, VALUE))
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
    }

    /// `len` bytes that do not compress (a xorshift stream seeded by `seed`).
    fn noise(seed: u32, len: usize) -> Vec<u8> {
        let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
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
    fn file_with(dir: &Path, records: &[(u8, Vec<u8>, Vec<u8>)], bad_sum: bool) -> PathBuf {
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
        let mut d = i.into_data().unwrap();
        assert_eq!(d.read_all().unwrap(), b"abc");
    }
}
