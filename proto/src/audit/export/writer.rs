//! Writing an export: magic and header first, entries in order, trailer last.

use std::io::{self, Write};

use prost::Message;
use sha2::{Digest, Sha256};

use super::{ExportHeader, ExportTrailer, EXPORT_MAGIC, MAX_FRAME};
use crate::ledger::Entry;
use crate::pb;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Writes an export: magic and header on creation, then one entry at a time,
/// then the trailer on [`ExportWriter::finish`]. Refuses entries out of order.
pub struct ExportWriter<W: Write> {
    w: W,
    header: ExportHeader,
    header_sha256: Vec<u8>,
    written: u64,
    last_hash: Vec<u8>,
    buf: Vec<u8>,
}

impl<W: Write> ExportWriter<W> {
    pub fn new(mut w: W, header: ExportHeader) -> io::Result<ExportWriter<W>> {
        if header.to_seq < header.from_seq
            || header.entry_count != header.to_seq - header.from_seq + 1
        {
            return Err(invalid(format!(
                "export of entries {}..={} cannot hold {} entries",
                header.from_seq, header.to_seq, header.entry_count
            )));
        }
        w.write_all(EXPORT_MAGIC)?;
        let mut me = ExportWriter {
            w,
            header_sha256: Sha256::digest(header.encode_to_vec()).to_vec(),
            header,
            written: 0,
            last_hash: Vec::new(),
            buf: Vec::new(),
        };
        let h = me.header.clone();
        me.frame(&h)?;
        Ok(me)
    }

    fn frame(&mut self, m: &impl Message) -> io::Result<()> {
        self.buf.clear();
        m.encode(&mut self.buf).expect("a Vec grows as needed");
        let len = u32::try_from(self.buf.len())
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .ok_or_else(|| {
                invalid(format!(
                    "a frame of {} bytes is over the limit",
                    self.buf.len()
                ))
            })?;
        self.w.write_all(&len.to_be_bytes())?;
        self.w.write_all(&self.buf)
    }

    /// Appends the next entry, in its wire form.
    pub fn write_entry(&mut self, e: &pb::LedgerEntry) -> io::Result<()> {
        let want = self.header.from_seq + self.written;
        if self.written == self.header.entry_count {
            return Err(invalid(format!(
                "entry {} is past the end of the export",
                e.seq
            )));
        }
        if e.seq != want {
            return Err(invalid(format!(
                "entry {} written where entry {want} belongs",
                e.seq
            )));
        }
        self.frame(e)?;
        self.last_hash = e.hash.clone();
        self.written += 1;
        Ok(())
    }

    /// Appends the next entry.
    pub fn write(&mut self, e: &Entry) -> io::Result<()> {
        self.write_entry(&e.to_pb())
    }

    /// Writes the trailer and flushes; fails unless every promised entry was written.
    pub fn finish(mut self) -> io::Result<W> {
        if self.written != self.header.entry_count {
            return Err(invalid(format!(
                "export promises {} entries but {} were written",
                self.header.entry_count, self.written
            )));
        }
        let t = ExportTrailer {
            entry_count: self.written,
            last_hash: std::mem::take(&mut self.last_hash),
            header_sha256: std::mem::take(&mut self.header_sha256),
        };
        self.frame(&t)?;
        self.w.flush()?;
        Ok(self.w)
    }
}
