//! Audit calls: cosigned checkpoints, Merkle proofs, replica identities, and
//! exporting the ledger to a file.
//!
//! [`Client::checkpoint_against`] fetches the current checkpoint and judges
//! it by a pinned [`Trust`] (a quorum of the pinned replica keys, and a
//! consistency proof from the trust's saved checkpoint);
//! [`Client::trusted_checkpoint`] checks it against the replica keys the
//! cluster itself reports, which shows internal consistency only;
//! [`Client::trust_init`] builds a trust file from a running cluster, to be
//! compared by fingerprint out of band. Custody over an order's verified
//! entries is `arbor_proto::rules::custody`.
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
pub use arbor_proto::audit::{Trust, TrustError};
use arbor_proto::ledger::checkpoint::{verify_note, Checkpoint, NoteKey};
use arbor_proto::ledger::merkle::{self, leaf_hash, Hash};
use arbor_proto::ledger::Entry;
use arbor_proto::pb;

pub use arbor_proto::audit::proofs::{
    note_signers, verify_checkpoint, verify_consistency, verify_inclusion,
};
pub use arbor_proto::audit::{
    verify_export, verify_export_trusted, AuditError, Summary, VerifyOptions,
};

use prost::Message;

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
    /// The fingerprint of the pinned trust the checkpoint was judged by;
    /// `None` when the keys came from the cluster itself.
    pub fingerprint: Option<String>,
    /// The size of the trust's saved checkpoint this one was proven consistent with.
    pub anchored: Option<u64>,
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
            fingerprint: None,
            anchored: None,
        })
    }

    /// Fetches the cluster's current checkpoint and judges it by `trust`
    /// alone: its origin must be the pinned cluster's, a quorum of the
    /// pinned replica keys must have signed it, and when the trust holds a
    /// saved checkpoint, a consistency proof (fetched and verified) must tie
    /// the two. Nothing the cluster says about its keys is used.
    pub async fn checkpoint_against(
        &self,
        trust: &Trust,
    ) -> Result<TrustedCheckpoint, CheckpointError> {
        let reply = self.get_checkpoint().await?;
        let v = trust.check_checkpoint(&reply.note)?;
        if reply.size != v.checkpoint.size || reply.root != v.checkpoint.root {
            return Err(AuditError::Checkpoint(
                "the reply's size or root differs from its signed note".into(),
            )
            .into());
        }
        let anchored = match &trust.checkpoint {
            None => None,
            Some(saved) => {
                let (s, c) = (&saved.checkpoint, &v.checkpoint);
                if s.size == c.size {
                    if s.root != c.root {
                        return Err(AuditError::Checkpoint(format!(
                            "the checkpoint of size {} has another root than the trusted checkpoint of that size (a fork)",
                            c.size
                        ))
                        .into());
                    }
                } else {
                    let (a, b) = if s.size < c.size { (s, c) } else { (c, s) };
                    let p = self.get_consistency_proof(a.size, b.size).await?;
                    verify_consistency(&p, a.size, &a.root, b.size, &b.root).map_err(|e| {
                        AuditError::Checkpoint(format!(
                            "the checkpoint of size {} is not proven consistent with the trusted checkpoint of size {}: {e}",
                            c.size, s.size
                        ))
                    })?;
                }
                Some(s.size)
            }
        };
        Ok(TrustedCheckpoint {
            reply,
            checkpoint: v.checkpoint,
            signed_by: v.signed_by,
            keys: trust.replicas.clone(),
            quorum: v.quorum,
            fingerprint: Some(trust.fingerprint()),
            anchored,
        })
    }

    /// A trust file's contents from this cluster: the genesis entry (its
    /// hash checked against its contents and proven in the checkpoint), the
    /// replica keys the cluster reports (as [`Client::trusted_checkpoint`]
    /// finds them) and the current checkpoint, signed by a quorum of them.
    /// Everything here is the cluster's word: the result is worth trusting
    /// only once its fingerprint matches one obtained out of band.
    pub async fn trust_init(&self) -> Result<Trust, CheckpointError> {
        let malformed = CheckpointError::Malformed;
        let tc = self.trusted_checkpoint().await?;
        let page = self.get_entries(0, 1).await?;
        let g = page
            .entries
            .first()
            .ok_or_else(|| malformed("the cluster served no genesis entry".into()))?;
        let genesis = Entry::from_pb(g).map_err(malformed)?;
        if genesis.seq != 0 || genesis.compute_hash() != genesis.hash {
            return Err(malformed(
                "the genesis entry served does not hash to its contents".into(),
            ));
        }
        let cluster_id = pb::SignedCommand::decode(genesis.command.as_slice())
            .ok()
            .and_then(|env| pb::Command::decode(env.command.as_slice()).ok())
            .and_then(|c| match c.body {
                Some(pb::command::Body::Genesis(g)) => Some(g.cluster_id),
                _ => None,
            })
            .ok_or_else(|| malformed("entry 0 holds no Genesis command".into()))?;
        let proof = self.get_inclusion_proof(0, tc.checkpoint.size).await?;
        let proven = verify_inclusion(&proof, 0, tc.checkpoint.size, &tc.checkpoint.root)?;
        if proven.hash != genesis.hash {
            return Err(malformed(
                "the genesis entry served is not the one in the checkpoint".into(),
            ));
        }
        let mut trust = Trust::new(&cluster_id, genesis.hash, tc.keys);
        trust.set_checkpoint(tc.reply.note).map_err(malformed)?;
        // What a later load would refuse (e.g. one key under two names) is refused now.
        Trust::parse(&trust.to_text()).map_err(|e| malformed(e.to_string()))?;
        Ok(trust)
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
        progress: impl FnMut(u64, u64),
    ) -> Result<(W, Exported), ExportError> {
        self.export_for(w, from, to, None, progress).await
    }

    /// As [`Client::export`]; with a `trust` that holds a saved checkpoint
    /// of another size, the header also carries the consistency proof
    /// between the two (its anchor, docs/ledger-format.md §8), so that a
    /// partial export can be proven against that trust.
    pub async fn export_for<W: Write>(
        &self,
        w: W,
        from: u64,
        to: Option<u64>,
        trust: Option<&Trust>,
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
        let mut header = ExportHeader::new(from, to, reply.note.clone(), &prefix, &consistency);
        if let Some(saved) = trust.and_then(|t| t.checkpoint.as_ref()) {
            let s = &saved.checkpoint;
            if s.size != cp.size {
                let (lo, hi) = (s.size.min(cp.size), s.size.max(cp.size));
                let p = self.get_consistency_proof(lo, hi).await?;
                let path: Vec<Hash> = p
                    .path
                    .iter()
                    .map(|h| hash32(h, "an anchor hash"))
                    .collect::<Result<_, _>>()?;
                header = header.with_anchor(s.size, &path);
            }
        }
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
