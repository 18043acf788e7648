//! What a verification established: the [`Summary`] the walk builds and
//! [`verify_export`](super::verify_export) returns.

use std::time::Duration;

use crate::ledger::checkpoint::NoteKey;
use crate::ledger::merkle::Hash;

/// The pinned trust a verdict rests on (docs/ledger-format.md §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustSummary {
    /// The trust file's fingerprint (`SHA256:...`).
    pub fingerprint: String,
    /// Pinned keys whose checkpoint signatures verified (empty when the
    /// checkpoint was proven a prefix of the saved one instead).
    pub signed_by: Vec<String>,
    /// Signatures needed: `pinned / 2 + 1`.
    pub quorum: usize,
    /// Replica keys the trust pins.
    pub pinned: usize,
    /// The size of the trust's saved checkpoint the export was proven consistent with.
    pub anchored: Option<u64>,
    /// The replica keys in force at the checkpoint's size, learnt by the
    /// replay and vouched for by the trusted checkpoint: what
    /// `--save-checkpoint` pins next. Only for an export from genesis that
    /// ends at the checkpoint.
    pub replicas_at_checkpoint: Option<Vec<NoteKey>>,
}

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
    /// The pinned trust the checkpoint was judged by; `None` when the
    /// verification shows internal consistency only (no trust given).
    pub trust: Option<TrustSummary>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
    pub elapsed: Duration,
}
