//! Checking what a replica answers, without trusting it.
//!
//! A replica serves a cosigned checkpoint, inclusion proofs and consistency
//! proofs. Each check here takes the answer plus something the caller already
//! trusts (keys and a quorum, or a root of a known size) and accepts the
//! answer only if the hashes work out. The unsigned fields of a reply
//! (`CheckpointReply.size`, `.root`, `.signed_by`, `InclusionProofReply.entry`)
//! are never believed on their own.

use super::AuditError;
use crate::ledger::checkpoint::{verify_note, NoteKey, VerifiedNote};
use crate::ledger::merkle::{self, leaf_hash, Hash};
use crate::ledger::Entry;
use crate::pb;

fn proof(msg: impl Into<String>) -> AuditError {
    AuditError::Proof(msg.into())
}

fn path(p: &[Vec<u8>]) -> Result<Vec<Hash>, AuditError> {
    p.iter()
        .map(|h| {
            h.as_slice()
                .try_into()
                .map_err(|_| proof(format!("a proof hash is {} bytes, expected 32", h.len())))
        })
        .collect()
}

/// Verifies a checkpoint reply's signed note with `keys`, needing `quorum`
/// valid signatures, and that the reply's plain `size` and `root` fields say
/// what the note says.
pub fn verify_checkpoint(
    reply: &pb::CheckpointReply,
    keys: &[NoteKey],
    quorum: usize,
) -> Result<VerifiedNote, AuditError> {
    let v = verify_note(&reply.note, keys, quorum).map_err(AuditError::Checkpoint)?;
    if reply.size != v.checkpoint.size || reply.root != v.checkpoint.root {
        return Err(AuditError::Checkpoint(
            "the reply's size or root differs from its signed note".into(),
        ));
    }
    Ok(v)
}

/// Verifies that the reply's entry is entry `seq` of the tree of `tree_size`
/// entries whose root is `root` (from a checkpoint the caller verified).
/// Also checks the entry's hash against its contents, so the returned entry
/// is exactly what the ledger holds.
pub fn verify_inclusion(
    reply: &pb::InclusionProofReply,
    seq: u64,
    tree_size: u64,
    root: &Hash,
) -> Result<Entry, AuditError> {
    let p = reply
        .entry
        .as_ref()
        .ok_or_else(|| proof("the reply holds no entry"))?;
    let e = Entry::from_pb(p).map_err(proof)?;
    if e.seq != seq {
        return Err(proof(format!(
            "asked for entry {seq}, the reply holds entry {}",
            e.seq
        )));
    }
    if reply.tree_size != tree_size {
        return Err(proof(format!(
            "asked for a proof in the tree of size {tree_size}, the reply is for size {}",
            reply.tree_size
        )));
    }
    if e.compute_hash() != e.hash {
        return Err(proof(format!(
            "entry {seq}: hash does not match its contents"
        )));
    }
    merkle::verify_inclusion(
        &leaf_hash(&e.hash),
        seq,
        tree_size,
        &path(&reply.path)?,
        root,
    )
    .map_err(|m| proof(format!("entry {seq} in the tree of size {tree_size}: {m}")))?;
    Ok(e)
}

/// Verifies that the tree of `old_size` with `old_root` is a prefix of the tree
/// of `new_size` with `new_root`.
pub fn verify_consistency(
    reply: &pb::ConsistencyProofReply,
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
) -> Result<(), AuditError> {
    if reply.old_size != old_size || reply.new_size != new_size {
        return Err(proof(format!(
            "asked for sizes {old_size} -> {new_size}, the reply is for {} -> {}",
            reply.old_size, reply.new_size
        )));
    }
    merkle::verify_consistency(old_size, new_size, old_root, new_root, &path(&reply.path)?)
        .map_err(|m| proof(format!("sizes {old_size} -> {new_size}: {m}")))
}

/// The key names on a note's signature lines, verified or not (for display).
pub fn note_signers(note: &str) -> Vec<String> {
    let Some(split) = note.find("\n\n") else {
        return Vec::new();
    };
    note[split + 2..]
        .lines()
        .filter_map(|l| l.strip_prefix("\u{2014} "))
        .filter_map(|r| r.rsplit_once(' ').map(|(name, _)| name.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::synth::Synth;
    use crate::ledger::merkle::{consistency_proof, inclusion_proof};

    #[test]
    fn proofs_from_an_honest_replica_verify_and_lies_do_not() {
        let s = Synth::build(40, 3);
        let leaves = s.leaves();
        let cp = s.checkpoint(40);
        let note = s.note(&cp, &[0, 1, 2]);
        let reply = pb::CheckpointReply {
            note: note.clone(),
            size: 40,
            root: cp.root.to_vec(),
            signed_by: vec![],
        };
        let keys = s.replica_note_keys();
        let v = verify_checkpoint(&reply, &keys, 2).unwrap();
        assert_eq!(v.signed_by.len(), 3);
        assert_eq!(
            note_signers(&note),
            ["arbor-replica-1", "arbor-replica-2", "arbor-replica-3"]
        );
        let mut lying = reply.clone();
        lying.size = 41;
        assert!(verify_checkpoint(&lying, &keys, 2).is_err());

        let incl = pb::InclusionProofReply {
            entry: Some(s.entries[17].to_pb()),
            tree_size: 40,
            path: inclusion_proof(&leaves, 17, 40)
                .unwrap()
                .iter()
                .map(|h| h.to_vec())
                .collect(),
        };
        assert_eq!(
            verify_inclusion(&incl, 17, 40, &cp.root).unwrap(),
            s.entries[17]
        );
        assert!(verify_inclusion(&incl, 18, 40, &cp.root).is_err());
        assert!(verify_inclusion(&incl, 17, 39, &cp.root).is_err());
        let mut bad = incl.clone();
        bad.entry
            .as_mut()
            .unwrap()
            .outcome
            .as_mut()
            .unwrap()
            .accepted ^= true;
        assert!(verify_inclusion(&bad, 17, 40, &cp.root)
            .unwrap_err()
            .to_string()
            .contains("hash does not match"));
        let mut bad = incl.clone();
        bad.path[0][0] ^= 1;
        assert!(verify_inclusion(&bad, 17, 40, &cp.root).is_err());

        let old = s.checkpoint(25);
        let cons = pb::ConsistencyProofReply {
            old_size: 25,
            new_size: 40,
            path: consistency_proof(&leaves, 25, 40)
                .unwrap()
                .iter()
                .map(|h| h.to_vec())
                .collect(),
        };
        verify_consistency(&cons, 25, &old.root, 40, &cp.root).unwrap();
        assert!(verify_consistency(&cons, 25, &cp.root, 40, &cp.root).is_err());
        assert!(verify_consistency(&cons, 24, &old.root, 40, &cp.root).is_err());
    }
}
