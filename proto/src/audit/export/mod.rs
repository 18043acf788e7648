//! The export file: a streaming, length-prefixed binary format.
//!
//! ```text
//! "arbor-export v1\n"                        16 bytes of magic
//! u32be(len) || ExportHeader                  frame 0
//! u32be(len) || LedgerEntry                   frames 1 ..= entry_count, seq from_seq, from_seq+1, ...
//! u32be(len) || ExportTrailer                 last frame, then end of file
//! ```
//!
//! Every message is in its canonical protobuf encoding (fields in number
//! order, defaults omitted, as prost writes them); the reader re-encodes each
//! frame and refuses one that differs, so *any* changed byte of a file is
//! either caught by a check or makes the file unreadable — nothing in it is
//! unverified padding. A frame's type is given by its position. Frames are at
//! most [`MAX_FRAME`] bytes. The exact layout is in `docs/ledger-format.md` §8.
//!
//! The header comes first so that a reader knows what to expect (and the
//! checkpoint it must match) before the first entry; the trailer repeats the
//! count and the last hash so that a file cut at a frame boundary is told
//! apart from a complete one.

mod reader;
mod writer;

pub use reader::ExportReader;
pub use writer::ExportWriter;

use crate::ledger::merkle::Hash;

/// The first 16 bytes of every export, version 1.
pub const EXPORT_MAGIC: &[u8; 16] = b"arbor-export v1\n";
/// `ExportHeader.format_version` of this format.
pub const FORMAT_VERSION: u32 = 1;
/// The largest frame a reader accepts (16 MiB): a garbled length is an error,
/// not an allocation.
pub const MAX_FRAME: u32 = 16 << 20;

/// Frame 0: what the file holds and the checkpoint it is tied to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportHeader {
    /// Always 1 ([`FORMAT_VERSION`]).
    #[prost(uint32, tag = "1")]
    pub format_version: u32,
    /// Sequence number of the first entry in the file.
    #[prost(uint64, tag = "2")]
    pub from_seq: u64,
    /// Sequence number of the last entry in the file (inclusive).
    #[prost(uint64, tag = "3")]
    pub to_seq: u64,
    /// `to_seq - from_seq + 1`.
    #[prost(uint64, tag = "4")]
    pub entry_count: u64,
    /// The signed note (C2SP checkpoint) the export is verified against; its
    /// size is at least `to_seq + 1`.
    #[prost(string, tag = "5")]
    pub checkpoint: String,
    /// The compact range of leaves `[0, from_seq)`: the RFC 6962 inclusion
    /// path of leaf `from_seq` in the tree of size `from_seq + 1` (smallest
    /// subtree first). Empty when `from_seq == 0`.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub prefix: Vec<Vec<u8>>,
    /// RFC 6962 consistency proof from the tree of size `to_seq + 1` to the
    /// checkpoint's size. Empty when the export ends at the checkpoint.
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub consistency: Vec<Vec<u8>>,
    /// The size `S` of a checkpoint the exporter's trust file saved (0: none).
    /// With [`anchor_proof`](Self::anchor_proof) it proves the checkpoint
    /// consistent with that saved checkpoint (docs/ledger-format.md §10).
    #[prost(uint64, tag = "8")]
    pub anchor_size: u64,
    /// RFC 6962 consistency proof from the smaller of `anchor_size` and the
    /// checkpoint's size to the larger; empty when they are equal or
    /// `anchor_size` is 0.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub anchor_proof: Vec<Vec<u8>>,
}

impl ExportHeader {
    /// A header for entries `from ..= to` tied to the signed note `checkpoint`.
    pub fn new(
        from: u64,
        to: u64,
        checkpoint: String,
        prefix: &[Hash],
        consistency: &[Hash],
    ) -> ExportHeader {
        ExportHeader {
            format_version: FORMAT_VERSION,
            from_seq: from,
            to_seq: to,
            entry_count: to.wrapping_sub(from).wrapping_add(1),
            checkpoint,
            prefix: prefix.iter().map(|h| h.to_vec()).collect(),
            consistency: consistency.iter().map(|h| h.to_vec()).collect(),
            anchor_size: 0,
            anchor_proof: Vec::new(),
        }
    }

    /// Adds the proof that ties the checkpoint to a saved checkpoint of size `size`.
    pub fn with_anchor(mut self, size: u64, proof: &[Hash]) -> ExportHeader {
        self.anchor_size = size;
        self.anchor_proof = proof.iter().map(|h| h.to_vec()).collect();
        self
    }
}

/// The last frame: repeats the count and the last entry's hash, and digests
/// the header.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTrailer {
    /// `ExportHeader.entry_count` again.
    #[prost(uint64, tag = "1")]
    pub entry_count: u64,
    /// `hash` of the last entry.
    #[prost(bytes = "vec", tag = "2")]
    pub last_hash: Vec<u8>,
    /// SHA-256 of the header frame's message bytes. Every other byte of the
    /// header is checked by the verifier; this also catches damage to the
    /// parts no check depends on (a checkpoint signature line from a key the
    /// verifier does not know, which C2SP says to ignore).
    #[prost(bytes = "vec", tag = "3")]
    pub header_sha256: Vec<u8>,
}

/// Converts entry hashes into Merkle hashes for a header (`[u8; 32]` each).
pub(crate) fn hashes(v: &[Vec<u8>]) -> Vec<Hash> {
    v.iter()
        .map(|h| h.as_slice().try_into().expect("checked by the reader"))
        .collect()
}
