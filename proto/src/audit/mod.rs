//! Offline audit: the export file, and the verifier that checks one without
//! trusting anybody.
//!
//! - [`export`]: the streaming, length-prefixed export format (writer and
//!   reader), specified byte for byte in `docs/ledger-format.md` §8.
//! - [`verify`]: checks an export — hashes and links, every signature, a
//!   replay of the arbitration rules that must reproduce every recorded entry
//!   byte for byte, the Merkle root against a checkpoint signed by a quorum of
//!   the replica keys the ledger itself enrols.
//! - [`proofs`]: checks what a replica answers (inclusion and consistency
//!   proofs, cosigned checkpoints) against a root the caller already trusts.
//! - [`trust`]: the trust file an auditor pins (cluster id, genesis hash,
//!   replica verifier keys, a saved checkpoint) and the rule that judges a
//!   checkpoint by it.
//! - [`Frontier`]: an RFC 6962 tree built leaf by leaf in O(log n) memory.
//! - [`synth`]: deterministic synthetic ledgers for tests and benchmarks.
//!
//! Like the rest of the pure core this module does no network I/O, reads no
//! clock except to report how long a verification took, and no randomness.
//!
//! # Trust model
//!
//! With a pinned [`Trust`], a verdict rests on it: entry 0 must be the pinned
//! genesis and the checkpoint must be signed by a quorum of the pinned
//! replica keys (or be proven a prefix of the saved checkpoint), whatever
//! keys the file enrols. Without one, the verifier shows internal
//! consistency only: it trusts nothing but the export's first entry
//! (genesis, which names the operators) and the rules. Every other key is learnt by replaying
//! the ledger: a command's signature is checked against the key its signer had
//! been enrolled with *before* that entry, and a checkpoint of size `N` counts
//! signatures only from `ROLE_REPLICA` parties enrolled in entries `< N`, of
//! which it needs `floor(k/2) + 1`.

pub mod bundle;
pub mod export;
mod frontier;
pub mod proofs;
mod sigs;
mod summary;
pub mod synth;
pub mod trust;
pub mod verify;
mod walk;

pub use export::{ExportHeader, ExportReader, ExportTrailer, ExportWriter, EXPORT_MAGIC};
pub use frontier::Frontier;
pub use sigs::r_is_strict;
pub use summary::{CheckpointSummary, Summary, TrustSummary};
pub use trust::{Trust, TrustError};
pub use verify::{verify_export, verify_export_trusted, VerifyOptions};

use std::fmt;

/// Why an export, or a replica's answer, does not verify. The display names
/// the place: `entry N: ...`, `offset N: ...` or `checkpoint: ...`.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file is not an export, or its framing is broken at this byte offset.
    #[error("offset {offset}: {what}")]
    Format { offset: u64, what: String },
    /// Reading the file failed at this byte offset.
    #[error("offset {offset}: read failed: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// Entry `seq` fails a check; `offset` is where its frame starts, when known.
    #[error("entry {seq}: {what}{}", At(*offset))]
    Entry {
        seq: u64,
        offset: Option<u64>,
        what: String,
    },
    /// The checkpoint's signatures, origin, size or root do not hold.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A proof served by a replica does not verify.
    #[error("proof: {0}")]
    Proof(String),
}

impl AuditError {
    pub(crate) fn entry(seq: u64, what: impl Into<String>) -> AuditError {
        AuditError::Entry {
            seq,
            offset: None,
            what: what.into(),
        }
    }

    /// The entry this error is about, if any.
    pub fn seq(&self) -> Option<u64> {
        match self {
            AuditError::Entry { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The byte offset in the file this error is about, if any.
    pub fn offset(&self) -> Option<u64> {
        match self {
            AuditError::Format { offset, .. } | AuditError::Io { offset, .. } => Some(*offset),
            AuditError::Entry { offset, .. } => *offset,
            _ => None,
        }
    }
}

/// Renders ` (byte offset N)` after an entry error when the offset is known.
struct At(Option<u64>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(o) => write!(f, " (byte offset {o})"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
