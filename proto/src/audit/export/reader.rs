//! Reading an export as a stream, checking its structure as it goes.

use std::io::{self, BufReader, Read};

use prost::Message;
use sha2::{Digest, Sha256};

use super::{ExportHeader, ExportTrailer, EXPORT_MAGIC, FORMAT_VERSION, MAX_FRAME};
use crate::audit::AuditError;
use crate::ledger::checkpoint::{verify_note, Checkpoint};
use crate::ledger::{Entry, HASH_LEN};
use crate::pb;

/// Reads an export one entry at a time; memory does not grow with the file.
///
/// [`ExportReader::open`] reads and checks the magic and the header; then
/// [`ExportReader::next_entry`] (or the iterator) yields the entries and, after
/// the last, checks the trailer and the end of the file. Structural damage is
/// an error naming the byte offset (and the entry, for entry frames). Whether
/// the entries are *right* is [`crate::audit::verify`]'s business.
pub struct ExportReader<R: Read> {
    r: BufReader<R>,
    offset: u64,
    header: ExportHeader,
    header_sha256: Vec<u8>,
    checkpoint: Checkpoint,
    read: u64,
    last_hash: Vec<u8>,
    finished: bool,
    buf: Vec<u8>,
    enc: Vec<u8>,
}

/// Where a frame is and what it was meant to be, for error messages.
#[derive(Clone, Copy)]
enum Slot {
    Header,
    Entry(u64),
    Trailer,
}

impl<R: Read> ExportReader<R> {
    /// Reads the magic and the header.
    pub fn open(r: R) -> Result<ExportReader<R>, AuditError> {
        let mut me = ExportReader {
            r: BufReader::with_capacity(1 << 20, r),
            offset: 0,
            header: ExportHeader::default(),
            header_sha256: Vec::new(),
            checkpoint: Checkpoint {
                origin: String::new(),
                size: 0,
                root: [0; 32],
                time_ms: 0,
                map: None,
            },
            read: 0,
            last_hash: Vec::new(),
            finished: false,
            buf: Vec::new(),
            enc: Vec::new(),
        };
        let mut magic = [0u8; 16];
        let n = me.fill(&mut magic)?;
        if n < magic.len() || &magic != EXPORT_MAGIC {
            let what = if magic.starts_with(b"arbor-export v") && n > 14 {
                let v = String::from_utf8_lossy(&magic[13..n]);
                format!(
                    "export format {:?} is not supported (this verifier reads v1)",
                    v.trim_end()
                )
            } else {
                "not an arbor export: the file does not start with \"arbor-export v1\\n\""
                    .to_string()
            };
            return Err(AuditError::Format { offset: 0, what });
        }
        me.offset = 16;
        let at = me.offset;
        me.frame(Slot::Header)?;
        let header: ExportHeader = me.decode(Slot::Header, at)?;
        me.header_sha256 = Sha256::digest(&me.buf).to_vec();
        me.checkpoint =
            check_header(&header).map_err(|what| AuditError::Format { offset: at, what })?;
        me.header = header;
        Ok(me)
    }

    pub fn header(&self) -> &ExportHeader {
        &self.header
    }

    /// The checkpoint named in the header (parsed, not yet verified).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The number of bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next entry and the offset of its frame; `None` after the last one,
    /// once the trailer and the end of the file have been checked.
    pub fn next_entry(&mut self) -> Result<Option<(u64, Entry)>, AuditError> {
        if self.finished {
            return Ok(None);
        }
        if self.read == self.header.entry_count {
            self.finish()?;
            return Ok(None);
        }
        let seq = self.header.from_seq + self.read;
        let at = self.offset;
        self.frame(Slot::Entry(seq))?;
        let p: pb::LedgerEntry = self.decode(Slot::Entry(seq), at)?;
        let e = entry_from_pb(p).map_err(|what| AuditError::Entry {
            seq,
            offset: Some(at),
            what,
        })?;
        self.last_hash = e.hash.to_vec();
        self.read += 1;
        Ok(Some((at, e)))
    }

    fn finish(&mut self) -> Result<(), AuditError> {
        let at = self.offset;
        self.frame(Slot::Trailer)?;
        let t: ExportTrailer = self.decode(Slot::Trailer, at)?;
        let bad = |what: String| AuditError::Format { offset: at, what };
        if t.entry_count != self.header.entry_count {
            return Err(bad(format!(
                "trailer counts {} entries, the header {}",
                t.entry_count, self.header.entry_count
            )));
        }
        if t.last_hash != self.last_hash {
            return Err(bad(
                "trailer's last hash is not the last entry's hash".into()
            ));
        }
        if t.header_sha256 != self.header_sha256 {
            return Err(AuditError::Format {
                offset: EXPORT_MAGIC.len() as u64,
                what: format!(
                    "header: its SHA-256 is not the one recorded in the trailer at offset {at}"
                ),
            });
        }
        let mut one = [0u8; 1];
        if self.fill(&mut one)? != 0 {
            return Err(AuditError::Format {
                offset: self.offset,
                what: "unexpected data after the trailer".into(),
            });
        }
        self.finished = true;
        Ok(())
    }

    /// Reads as much of `buf` as the file has; returns how much that was.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, AuditError> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(AuditError::Io {
                        offset: self.offset + n as u64,
                        source,
                    })
                }
            }
        }
        Ok(n)
    }

    fn error(&self, slot: Slot, offset: u64, what: String) -> AuditError {
        match slot {
            Slot::Entry(seq) => AuditError::Entry {
                seq,
                offset: Some(offset),
                what,
            },
            Slot::Header => AuditError::Format {
                offset,
                what: format!("header: {what}"),
            },
            Slot::Trailer => AuditError::Format {
                offset,
                what: format!("trailer: {what}"),
            },
        }
    }

    /// Reads one frame into `self.buf`.
    fn frame(&mut self, slot: Slot) -> Result<(), AuditError> {
        let at = self.offset;
        let mut len = [0u8; 4];
        let n = self.fill(&mut len)?;
        if n == 0 {
            let what = match slot {
                Slot::Entry(_) => format!(
                    "missing: the file ends after {} of {} entries",
                    self.read, self.header.entry_count
                ),
                _ => "missing: the file ends here".into(),
            };
            return Err(self.error(slot, at, what));
        }
        if n < 4 {
            return Err(self.error(
                slot,
                at,
                format!("truncated: the file ends after {n} of the 4 length bytes"),
            ));
        }
        let len = u32::from_be_bytes(len);
        if len > MAX_FRAME {
            return Err(self.error(
                slot,
                at,
                format!("frame length {len} is over the {MAX_FRAME}-byte limit"),
            ));
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(len as usize, 0);
        let got = self.fill(&mut buf)?;
        self.buf = buf;
        if got < len as usize {
            return Err(self.error(
                slot,
                at,
                format!("truncated: the file ends after {got} of the frame's {len} bytes"),
            ));
        }
        self.offset += 4 + len as u64;
        Ok(())
    }

    /// Decodes `self.buf` and requires it to be the canonical encoding.
    fn decode<M: Message + Default>(&mut self, slot: Slot, at: u64) -> Result<M, AuditError> {
        let kind = match slot {
            Slot::Header => "an ExportHeader",
            Slot::Entry(_) => "a LedgerEntry",
            Slot::Trailer => "an ExportTrailer",
        };
        let m = M::decode(self.buf.as_slice())
            .map_err(|e| self.error(slot, at, format!("frame is not {kind}: {e}")))?;
        self.enc.clear();
        m.encode(&mut self.enc).expect("a Vec grows as needed");
        if self.enc != self.buf {
            return Err(self.error(
                slot,
                at,
                format!("frame is not the canonical protobuf encoding of {kind}"),
            ));
        }
        Ok(m)
    }
}

impl<R: Read> Iterator for ExportReader<R> {
    type Item = Result<Entry, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_entry() {
            Ok(Some((_, e))) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

/// Structural checks of a header; returns the parsed checkpoint.
fn check_header(h: &ExportHeader) -> Result<Checkpoint, String> {
    if h.format_version != FORMAT_VERSION {
        return Err(format!(
            "format version {} is not {FORMAT_VERSION}",
            h.format_version
        ));
    }
    if h.to_seq < h.from_seq {
        return Err(format!("range {}..={} is empty", h.from_seq, h.to_seq));
    }
    if h.entry_count != h.to_seq - h.from_seq + 1 {
        return Err(format!(
            "entry count {} does not match the range {}..={}",
            h.entry_count, h.from_seq, h.to_seq
        ));
    }
    // Parse only: signatures are checked once the replica keys are known.
    let cp = verify_note(&h.checkpoint, &[], 0)
        .map_err(|e| format!("checkpoint note: {e}"))?
        .checkpoint;
    if h.to_seq >= cp.size {
        return Err(format!(
            "the export ends at entry {} but the checkpoint covers only {} entries",
            h.to_seq, cp.size
        ));
    }
    if h.prefix.len() != h.from_seq.count_ones() as usize {
        return Err(format!(
            "prefix has {} hashes; the compact range of {} leaves has {}",
            h.prefix.len(),
            h.from_seq,
            h.from_seq.count_ones()
        ));
    }
    if h.to_seq + 1 == cp.size && !h.consistency.is_empty() {
        return Err(
            "consistency proof must be empty when the export ends at the checkpoint".into(),
        );
    }
    if h.prefix
        .iter()
        .chain(&h.consistency)
        .chain(&h.anchor_proof)
        .any(|x| x.len() != HASH_LEN)
    {
        return Err("a prefix, consistency or anchor hash is not 32 bytes".into());
    }
    if (h.anchor_size == 0 || h.anchor_size == cp.size) && !h.anchor_proof.is_empty() {
        return Err("anchor proof must be empty without an anchor of another size".into());
    }
    Ok(cp)
}

/// The wire entry as an [`Entry`], without copying the command.
fn entry_from_pb(p: pb::LedgerEntry) -> Result<Entry, String> {
    let fixed = |name: &str, b: &[u8]| -> Result<[u8; HASH_LEN], String> {
        b.try_into()
            .map_err(|_| format!("{name} is {} bytes, expected 32", b.len()))
    };
    let prev_hash = fixed("prev_hash", &p.prev_hash)?;
    let hash = fixed("hash", &p.hash)?;
    let o = p.outcome.unwrap_or_default();
    Ok(Entry {
        seq: p.seq,
        time_ms: p.time_ms,
        command: p.command,
        accepted: o.accepted,
        code: o.code,
        message: o.message,
        order_id: p.order_id,
        order_prev_seq: p.order_prev_seq,
        prev_hash,
        hash,
    })
}
