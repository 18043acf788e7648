//! What a verification established: the [`Summary`] the walk builds and
//! [`verify_export`](super::verify_export) returns.

use std::time::Duration;

use crate::ledger::merkle::Hash;

/// The checkpoint an export was verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSummary {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub time_ms: u64,
    /// Replica keys whose signatures verified.
    pub signed_by: Vec<String>,
    /// Replica keys the verifier knows to be enrolled before `size`.
    pub replicas: usize,
    /// Signatures needed: `replicas / 2 + 1`.
    pub quorum: usize,
    /// Whether the signatures were checked (only when the export starts at genesis).
    pub signatures_verified: bool,
}

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub from_seq: u64,
    pub to_seq: u64,
    pub entries: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Parties enrolled by the last entry (0 when not replayed).
    pub parties: usize,
    /// Orders registered by the last entry (0 when not replayed).
    pub orders: usize,
    /// Command signatures verified.
    pub signatures: u64,
    /// Whether the rules were replayed.
    pub replayed: bool,
    /// The cluster id from the genesis entry, when the export starts there.
    pub cluster_id: Option<String>,
    /// Hash of the last entry.
    pub head_hash: Hash,
    pub checkpoint: CheckpointSummary,
    /// Every check was made: the export starts at genesis.
    pub complete: bool,
    /// What was not checked, and why.
    pub notes: Vec<String>,
    pub elapsed: Duration,
}
