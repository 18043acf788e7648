//! The verifier against tampered exports: every kind of change must be found
//! and reported at the right entry (or offset) with the right reason. This
//! file holds the synthetic chain and the helpers that tamper with it; the
//! cases are grouped by what is changed:
//!
//! - `entries`: commands, outcomes, hashes, times, order and replay;
//! - `signatures`: command signatures and the keys in force;
//! - `checkpoints`: checkpoint signatures, quorum, consistency and ranges;
//! - `framing`: truncation and damaged framing of the file itself;
//! - `pipeline`: failures across the chunks the verifier's stages hand on.

use std::sync::OnceLock;

use prost::Message;
use sha2::{Digest, Sha256};

use super::export::{ExportHeader, ExportTrailer, EXPORT_MAGIC};
use super::synth::{key, rehash_from, Synth, CLUSTER_ID};
use super::*;
use crate::ledger::merkle::{leaf_hash, root};
use crate::ledger::{sign_command, Entry};
use crate::pb;
use crate::rules::Code;

mod checkpoints;
mod entries;
mod framing;
mod pipeline;
mod signatures;
mod trust;

/// 120 entries: genesis, a second operator, a channel, 4 nodes, 3 replicas
/// (entries 7, 8, 9), then orders with accepted and rejected claims.
fn chain() -> &'static Synth {
    static S: OnceLock<Synth> = OnceLock::new();
    S.get_or_init(|| Synth::build(120, 3))
}

const N: u64 = 120;

fn verify(bytes: &[u8]) -> Result<Summary, AuditError> {
    // Small batches so that failures land in the middle of the stream.
    verify_export(
        bytes,
        VerifyOptions {
            threads: 2,
            batch: 16,
            progress: None,
        },
    )
}

fn all_signers() -> Vec<usize> {
    vec![0, 1, 2]
}

/// The export of `entries` (whole), checkpointed at their own root, signed by `signers`.
fn export_of(entries: &[Entry], signers: &[usize]) -> Vec<u8> {
    let s = chain();
    let n = entries.len() as u64;
    let mut cp = s.checkpoint(n);
    let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(&e.hash)).collect();
    cp.root = root(&leaves, n);
    let note = s.note(&cp, signers);
    s.export_with(entries, 0, n - 1, n, &note)
}

/// An export of tampered `entries` against the *original* checkpoint, framed
/// by hand so that the writer's own order checks do not get in the way.
fn raw_export(entries: &[Entry]) -> Vec<u8> {
    let s = chain();
    let note = s.note(&s.checkpoint(N), &all_signers());
    let header = ExportHeader::new(0, N - 1, note, &[], &[]);
    let header_sha256 = Sha256::digest(header.encode_to_vec()).to_vec();
    let mut out = EXPORT_MAGIC.to_vec();
    let mut frame = |m: Vec<u8>| {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
    };
    frame(header.encode_to_vec());
    for e in entries {
        frame(e.to_pb().encode_to_vec());
    }
    frame(
        ExportTrailer {
            entry_count: entries.len() as u64,
            last_hash: entries.last().map(|e| e.hash.to_vec()).unwrap_or_default(),
            header_sha256,
        }
        .encode_to_vec(),
    );
    out
}

/// (offset, length) of every frame after the magic.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = EXPORT_MAGIC.len();
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, len));
        at += 4 + len;
    }
    out
}

fn expect_entry_error(r: Result<Summary, AuditError>, seq: u64, needle: &str) -> AuditError {
    let e = r.expect_err("tampered export verified");
    assert_eq!(e.seq(), Some(seq), "{e}");
    assert!(e.to_string().contains(needle), "{e}");
    assert!(e.to_string().starts_with(&format!("entry {seq}: ")), "{e}");
    e
}

fn entries() -> Vec<Entry> {
    chain().entries.clone()
}

/// The first entry with this outcome code after the setup entries.
fn first_with(code: Code) -> usize {
    first_after(code, 10)
}

/// The first entry after `after` with this outcome code.
fn first_after(code: Code, after: u64) -> usize {
    chain()
        .entries
        .iter()
        .position(|e| e.seq > after && e.code == code.as_str())
        .unwrap()
}
