//! Audit calls: cosigned checkpoints, Merkle proofs, replica identities, and
//! exporting the ledger to a file.
//!
//! [`Client::trusted_checkpoint`] fetches the current checkpoint and checks
//! its signatures against the replica keys the ledger enrols; custody over
//! an order's verified entries is `arbor_proto::rules::custody`.
//!
//! The calls go through the same retry loop as every other call (the server
//! routes them to the leader). Their answers are *claims*: check them with
//! [`verify_checkpoint`], [`verify_inclusion`] and [`verify_consistency`]
//! (re-exported from `arbor_proto::audit::proofs`), which take only what the
//! caller already trusts — replica keys and a quorum, or a verified root — and
//! never believe the answering replica.
//!
//! ```no_run
//! # async fn demo(client: arbor_client::Client, keys: Vec<arbor_proto::ledger::checkpoint::NoteKey>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use arbor_client::audit::{verify_checkpoint, verify_inclusion};
//! let cp = verify_checkpoint(&client.get_checkpoint().await?, &keys, keys.len() / 2 + 1)?.checkpoint;
//! let proof = client.get_inclusion_proof(42, cp.size).await?;
//! let entry = verify_inclusion(&proof, 42, cp.size, &cp.root)?;
//! println!("entry 42 is in the checkpointed ledger: {}", entry.code);
//! # Ok(()) }
//! ```

use std::io::Write;

use arbor_proto::audit::{ExportHeader, ExportWriter, Frontier};
use arbor_proto::ledger::checkpoint::{verify_note, Checkpoint, NoteKey};
use arbor_proto::ledger::merkle::{self, leaf_hash, Hash};
use arbor_proto::pb;

pub use arbor_proto::audit::proofs::{
    note_signers, verify_checkpoint, verify_consistency, verify_inclusion,
};
pub use arbor_proto::audit::{verify_export, AuditError, Summary, VerifyOptions};

use crate::client::{call_one, Client};
use crate::error::ClientError;
use crate::transport::Transport;

/// Entries asked for per `GetEntries` call while exporting.
pub const EXPORT_PAGE: u32 = 1000;

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// What the cluster served does not add up (bad proof, entries missing or
    /// not matching the checkpoint's root).
    #[error("{0}")]
    Inconsistent(String),
    #[error("{0}")]
    InvalidRange(String),
}

/// What [`Client::export`] wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    pub from_seq: u64,
    pub to_seq: u64,
    pub entries: u64,
    /// The checkpoint the export is tied to (signatures not verified here:
    /// the verifier learns the replica keys from the ledger itself).
    pub checkpoint: Checkpoint,
    /// Replicas the server says cosigned (unverified).
    pub signed_by: Vec<String>,
}

/// A checkpoint whose signatures were checked against the replica keys the
/// ledger enrols, with a quorum of them (see [`Client::trusted_checkpoint`]).
#[derive(Clone, Debug)]
pub struct TrustedCheckpoint {
    pub reply: pb::CheckpointReply,
    pub checkpoint: Checkpoint,
    /// Replicas whose signatures verified.
    pub signed_by: Vec<String>,
    /// The replica keys found enrolled before the checkpoint's size.
    pub keys: Vec<NoteKey>,
    /// More than half of `keys`.
    pub quorum: usize,
}

/// Why no checkpoint could be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the checkpoint served is malformed: {0}")]
    Malformed(String),
    #[error(
        "checkpoint: none of {} is enrolled as a replica before entry {size}, so no signature can be checked",
        names.join(", ")
    )]
    NoReplicaKeys { names: Vec<String>, size: u64 },
    /// Too few of the replica keys signed it (or the reply contradicts its note).
    #[error(transparent)]
    Unverified(#[from] AuditError),
}

fn hash32(b: &[u8], what: &str) -> Result<Hash, ExportError> {
    b.try_into()
        .map_err(|_| ExportError::Inconsistent(format!("{what} is {} bytes, expected 32", b.len())))
}

impl Client {
    /// The current checkpoint, cosigned by at least a quorum of replicas.
    pub async fn get_checkpoint(&self) -> Result<pb::CheckpointReply, ClientError> {
        self.call(|mut c| async move { c.get_checkpoint(pb::GetCheckpointRequest {}).await })
            .await
    }

    /// Fetches the cluster's current checkpoint and verifies it against the
    /// replica keys enrolled in the ledger (read with GetParty for the note's
    /// signers and the cluster's members, `arbor-replica-<id>`), needing
    /// more than half of the keys found. The keys come from the cluster
    /// itself; for a check that trusts nothing, export and verify.
    pub async fn trusted_checkpoint(&self) -> Result<TrustedCheckpoint, CheckpointError> {
        let reply = self.get_checkpoint().await?;
        let cp = verify_note(&reply.note, &[], 0)
            .map_err(CheckpointError::Malformed)?
            .checkpoint;
        // Candidate replica identities: the note's signers and every member's name.
        let mut names = note_signers(&reply.note);
        if let Ok(status) = self.cluster_status().await {
            for m in status.members {
                let n = format!("arbor-replica-{}", m.node_id);
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let mut keys = Vec::new();
        for name in &names {
            let Ok(p) = self.get_party(name).await else {
                continue;
            };
            if p.role == pb::Role::Replica as i32 && p.enrolled_seq < cp.size {
                if let Ok(public_key) = p.public_key.as_slice().try_into() {
                    keys.push(NoteKey {
                        name: name.clone(),
                        public_key,
                    });
                }
            }
        }
        if keys.is_empty() {
            return Err(CheckpointError::NoReplicaKeys {
                names,
                size: cp.size,
            });
        }
        let quorum = keys.len() / 2 + 1;
        let v = verify_checkpoint(&reply, &keys, quorum)?;
        Ok(TrustedCheckpoint {
            reply,
            checkpoint: v.checkpoint,
            signed_by: v.signed_by,
            keys,
            quorum,
        })
    }

    /// The inclusion proof of entry `seq` in the tree of `tree_size` entries
    /// (0: the current size). Check it with [`verify_inclusion`].
    pub async fn get_inclusion_proof(
        &self,
        seq: u64,
        tree_size: u64,
    ) -> Result<pb::InclusionProofReply, ClientError> {
        let req = pb::InclusionProofRequest { seq, tree_size };
        self.call(|mut c| async move { c.get_inclusion_proof(req).await })
            .await
    }

    /// The consistency proof between the trees of `old_size` and `new_size`
    /// entries (0: the current size). Check it with [`verify_consistency`].
    pub async fn get_consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<pb::ConsistencyProofReply, ClientError> {
        let req = pb::ConsistencyProofRequest { old_size, new_size };
        self.call(|mut c| async move { c.get_consistency_proof(req).await })
            .await
    }

    /// The checkpoint-signing identity of the replica at `endpoint` itself;
    /// one attempt, never elsewhere.
    pub async fn get_replica_identity(
        transport: &Transport,
        endpoint: &str,
    ) -> Result<pb::ReplicaIdentity, ClientError> {
        call_one(transport, endpoint, |mut c| async move {
            c.get_replica_identity(pb::ReplicaIdentityRequest {}).await
        })
        .await
    }

    /// Exports entries `from ..= to` (`to` defaults to the last entry of the
    /// checkpoint) to `w`: fetches a cosigned checkpoint first, then the proofs
    /// that tie a partial range to it, then pages through the entries.
    /// Checks as it goes that the entries served hash to the checkpoint's
    /// root, so a finished export is one that `verify_export` can check.
    /// `progress` is called with (entries written, entries to write).
    pub async fn export<W: Write>(
        &self,
        w: W,
        from: u64,
        to: Option<u64>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(W, Exported), ExportError> {
        let reply = self.get_checkpoint().await?;
        let cp = verify_note(&reply.note, &[], 0)
            .map_err(|e| {
                ExportError::Inconsistent(format!("the checkpoint served is malformed: {e}"))
            })?
            .checkpoint;
        if reply.size != cp.size {
            return Err(ExportError::Inconsistent(format!(
                "the checkpoint reply says size {} but its note says {}",
                reply.size, cp.size
            )));
        }
        let to = to.unwrap_or(cp.size.saturating_sub(1));
        if cp.size == 0 || to >= cp.size || from > to {
            return Err(ExportError::InvalidRange(format!(
                "cannot export entries {from}..={to}: the checkpoint covers entries 0..{}",
                cp.size
            )));
        }
        let prefix: Vec<Hash> = if from > 0 {
            let p = self.get_inclusion_proof(from, from + 1).await?;
            p.path
                .iter()
                .map(|h| hash32(h, "a prefix hash"))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let consistency: Vec<Hash> = if to + 1 < cp.size {
            let p = self.get_consistency_proof(to + 1, cp.size).await?;
            p.path
                .iter()
                .map(|h| hash32(h, "a consistency hash"))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let mut tree = Frontier::from_path(from, &prefix).map_err(ExportError::Inconsistent)?;
        let header = ExportHeader::new(from, to, reply.note.clone(), &prefix, &consistency);
        let mut out = ExportWriter::new(w, header)?;

        let total = to - from + 1;
        let mut next = from;
        while next <= to {
            let limit = EXPORT_PAGE.min(u32::try_from(to - next + 1).unwrap_or(u32::MAX));
            let page = self.get_entries(next, limit).await?;
            if page.entries.is_empty() {
                return Err(ExportError::Inconsistent(format!(
                    "the cluster served no entry from {next} on (its head is entry {})",
                    page.head_seq
                )));
            }
            for e in page.entries.iter().take_while(|e| e.seq <= to) {
                if e.seq != next {
                    return Err(ExportError::Inconsistent(format!(
                        "asked for entry {next}, the cluster served entry {}",
                        e.seq
                    )));
                }
                tree.push(leaf_hash(&hash32(
                    &e.hash,
                    &format!("entry {next}'s hash"),
                )?));
                out.write_entry(e)?;
                next += 1;
            }
            progress(next - from, total);
        }
        let w = out.finish()?;

        let root = tree.root();
        let ok = if to + 1 == cp.size {
            root == cp.root
        } else {
            merkle::verify_consistency(to + 1, cp.size, &root, &cp.root, &consistency).is_ok()
        };
        if !ok {
            return Err(ExportError::Inconsistent(format!(
                "the entries served do not hash to the root of the checkpoint of size {}",
                cp.size
            )));
        }
        Ok((
            w,
            Exported {
                from_seq: from,
                to_seq: to,
                entries: total,
                checkpoint: cp,
                signed_by: reply.signed_by,
            },
        ))
    }
}
