//! The attacker's tests: forged ledgers built from keys the forger really
//! holds verify for internal consistency, and each fails against the trust
//! of the real ledger with a message naming why.

use ed25519_dalek::SigningKey;

use super::*;
use crate::audit::synth::{replay, signed};
use crate::audit::trust::Trust;
use crate::ledger::checkpoint::{Checkpoint, NoteKey};
use crate::ledger::merkle::consistency_proof;
use crate::pb::command::Body;

/// What the auditor pinned for the real ledger of [`chain`].
fn pinned() -> Trust {
    let s = chain();
    Trust::new(CLUSTER_ID, s.entries[0].hash, s.replica_note_keys())
}

fn verify_t(bytes: &[u8], trust: &Trust) -> Result<Summary, AuditError> {
    verify_export_trusted(
        bytes,
        Some(trust),
        VerifyOptions {
            threads: 2,
            batch: 16,
            progress: None,
        },
    )
}

fn forged_replicas(seed: u8, names: std::ops::Range<usize>) -> Vec<(String, SigningKey)> {
    names
        .map(|i| (format!("arbor-replica-{i}"), key(seed + i as u8)))
        .collect()
}

/// A checkpoint note over all of `entries`, signed by `signers`.
fn note_over(entries: &[Entry], signers: &[(String, SigningKey)]) -> (Checkpoint, String) {
    let n = entries.len() as u64;
    let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(&e.hash)).collect();
    let cp = Checkpoint {
        origin: format!("arbor/{CLUSTER_ID}"),
        size: n,
        root: root(&leaves, n),
        time_ms: entries[entries.len() - 1].time_ms,
        map: None,
    };
    let lines: Vec<String> = signers.iter().map(|(n, k)| cp.sign_line(n, k)).collect();
    let note = cp.note(&lines);
    (cp, note)
}

fn full(entries: &[Entry], signers: &[(String, SigningKey)]) -> Vec<u8> {
    let n = entries.len() as u64;
    let (_, note) = note_over(entries, signers);
    chain().export_with(entries, 0, n - 1, n, &note)
}

fn failing(r: Result<Summary, AuditError>) -> String {
    r.expect_err("a forgery verified against the real trust")
        .to_string()
}

#[test]
fn the_real_ledger_verifies_against_its_trust() {
    let s = chain();
    let t = pinned();
    let sum = verify_t(&s.full_export(), &t).unwrap();
    let ts = sum.trust.expect("judged by the trust");
    assert_eq!(ts.fingerprint, t.fingerprint());
    assert_eq!(ts.signed_by.len(), 3);
    assert_eq!((ts.quorum, ts.pinned), (2, 3));
    assert!(t.pins_exactly(ts.replicas_at_checkpoint.as_ref().unwrap()));
    // Without trust: the same checks, but no trust to rest on.
    assert!(verify(&s.full_export()).unwrap().trust.is_none());
}

#[test]
fn a_fresh_genesis_with_the_same_names_and_cluster_id_fails() {
    // The forger's own operator and replica keys, the real names.
    let f = Synth::build_keyed(N, key(99), forged_replicas(90, 1..4));
    let bytes = f.full_export();
    verify(&bytes).expect("internally consistent");
    let e = failing(verify_t(&bytes, &pinned()));
    assert!(
        e.starts_with("entry 0: ") && e.contains("trust pins genesis"),
        "{e}"
    );
}

#[test]
fn replaced_replica_keys_fail() {
    // The real genesis and operator (the forger holds the operator key),
    // replicas enrolled with the forger's keys under the real names.
    let f = Synth::build_keyed(N, key(1), forged_replicas(90, 1..4));
    assert_eq!(f.entries[0].hash, chain().entries[0].hash);
    let bytes = f.full_export();
    verify(&bytes).expect("internally consistent");
    let e = failing(verify_t(&bytes, &pinned()));
    assert!(
        e.starts_with("checkpoint: not signed by a quorum of the pinned replica keys")
            && e.contains("keys the trust does not pin: arbor-replica-1"),
        "{e}"
    );
}

#[test]
fn one_operator_enrolling_its_own_replica_quorum_fails() {
    let s = chain();
    let mine = forged_replicas(90, 4..9); // five more: 8 replicas, quorum 5
    let mut cmds = s.commands();
    for (i, (name, k)) in mine.iter().enumerate() {
        cmds.push(signed(
            &s.operator,
            "ops",
            1_000_000 + i as u64,
            Body::EnrollParty(pb::EnrollParty {
                party_id: name.clone(),
                role: pb::Role::Replica as i32,
                kind: 0,
                public_key: k.verifying_key().to_bytes().to_vec(),
                channel_names: Vec::new(),
            }),
        ));
    }
    let entries = replay(&cmds);
    let bytes = full(&entries, &mine);
    let alone = verify(&bytes).expect("its own quorum, internally");
    assert_eq!(alone.checkpoint.quorum, 5);
    let e = failing(verify_t(&bytes, &pinned()));
    assert!(
        e.contains("0 valid signature") && e.contains("arbor-replica-4 (key id"),
        "{e}"
    );
}

/// The real commands with a claim and the next registration swapped: every
/// outcome follows the rules, every signature is real.
fn reordered() -> Vec<Entry> {
    let s = chain();
    let mut cmds = s.commands();
    let at = (40..N as usize)
        .find(|&i| s.entries[i].order_id != s.entries[i - 1].order_id && i % 2 == 0)
        .unwrap();
    cmds.swap(at - 1, at);
    let entries = replay(&cmds);
    assert_ne!(entries[at].hash, s.entries[at].hash);
    entries
}

#[test]
fn reordered_but_rule_consistent_entries_fail() {
    let s = chain();
    let entries = reordered();
    // The forger holds one real replica key.
    let one = vec![s.replicas[0].clone()];
    let bytes = full(&entries, &one);
    let e = failing(verify_t(&bytes, &pinned()));
    assert!(
        e.contains("1 valid signature(s) from known replicas, 2 needed"),
        "{e}"
    );
    // Even replicas that sign the reordered history (all of them) are
    // caught by a checkpoint the auditor saved before.
    let mut t = pinned();
    t.set_checkpoint(s.note(&s.checkpoint(100), &[0, 1]))
        .unwrap();
    let bytes = full(&entries, &s.replicas);
    verify_t(&bytes, &pinned()).expect("signed by every pinned key");
    let e = failing(verify_t(&bytes, &t));
    assert!(
        e.contains("does not extend the trusted checkpoint of size 100"),
        "{e}"
    );
}

#[test]
fn a_partial_export_with_a_replaced_checkpoint_root_fails() {
    let s = chain();
    let mut entries = entries();
    // An outcome changed, every later hash recomputed, the root replaced;
    // the replicas' signature lines kept.
    let i = first_with(Code::AlreadyOwned);
    entries[i].accepted = true;
    entries[i].code = Code::Accepted.as_str().into();
    rehash_from(&mut entries, i);
    let real = s.note(&s.checkpoint(N), &all_signers());
    let (forged_cp, _) = note_over(&entries, &[]);
    let note = real.replacen(
        &base64_root(&s.checkpoint(N).root),
        &base64_root(&forged_cp.root),
        1,
    );
    let bytes = s.export_with(&entries, 60, N - 1, N, &note);
    let unpinned = verify(&bytes).expect("links and root hold within the range");
    assert!(unpinned.trust.is_none() && !unpinned.complete);
    let e = failing(verify_t(&bytes, &pinned()));
    assert!(
        e.contains("checkpoint signature of arbor-replica-1 does not verify"),
        "{e}"
    );
}

fn base64_root(r: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(r)
}

/// An export of `from ..= to` at the real checkpoint of `size`, with the
/// anchor proof to a saved checkpoint of `anchor` entries.
fn anchored_export(from: u64, to: u64, size: u64, anchor: Option<u64>) -> Vec<u8> {
    anchored_export_by(from, to, size, anchor, &[1, 2])
}

fn anchored_export_by(
    from: u64,
    to: u64,
    size: u64,
    anchor: Option<u64>,
    signers: &[usize],
) -> Vec<u8> {
    let s = chain();
    let leaves = s.leaves();
    let note = s.note(&s.checkpoint(size), signers);
    let mut bytes = s.export_with(&s.entries, from, to, size, &note);
    if let Some(a) = anchor {
        // Rebuild with the anchor in the header.
        let mut reader = ExportReader::open(bytes.as_slice()).unwrap();
        let (lo, hi) = (a.min(size), a.max(size));
        let proof = if lo == hi {
            Vec::new()
        } else {
            consistency_proof(&leaves, lo, hi).unwrap()
        };
        let header = reader.header().clone().with_anchor(a, &proof);
        let mut w = super::export::ExportWriter::new(Vec::new(), header).unwrap();
        while let Some((_, e)) = reader.next_entry().unwrap() {
            w.write(&e).unwrap();
        }
        bytes = w.finish().unwrap();
    }
    bytes
}

fn saved_at(size: u64) -> Trust {
    let s = chain();
    let mut t = pinned();
    t.set_checkpoint(s.note(&s.checkpoint(size), &[0, 1]))
        .unwrap();
    t
}

#[test]
fn a_genuine_partial_export_with_a_consistency_proof_from_a_saved_checkpoint_passes() {
    let t = saved_at(60);
    // The range starts after the saved size: the header's anchor proof ties them.
    let sum = verify_t(&anchored_export(80, N - 1, N, Some(60)), &t).unwrap();
    let ts = sum.trust.unwrap();
    assert_eq!(ts.anchored, Some(60));
    assert_eq!(ts.signed_by, ["arbor-replica-2", "arbor-replica-3"]);
    assert!(ts.replicas_at_checkpoint.is_none(), "not replayed");
    // The range reaches the saved size: the walk computes its root itself.
    let sum = verify_t(&anchored_export(50, 99, N, None), &t).unwrap();
    assert_eq!(sum.trust.unwrap().anchored, Some(60));
    // An older export, a prefix of the saved checkpoint: its own signatures
    // are shown when they count, and not needed.
    let sum = verify_t(&anchored_export(10, 39, 40, Some(60)), &t).unwrap();
    assert_eq!(sum.trust.unwrap().signed_by.len(), 2);
    let sum = verify_t(&anchored_export_by(10, 39, 40, Some(60), &[0]), &t).unwrap();
    assert!(sum.trust.unwrap().signed_by.is_empty());
    assert!(
        sum.notes.iter().any(|n| n.contains("proven a prefix")),
        "{:?}",
        sum.notes
    );
    // Without the proof nothing ties them.
    let e = failing(verify_t(&anchored_export(80, N - 1, N, None), &t));
    assert!(
        e.contains("nothing proves the checkpoint of size 120 consistent"),
        "{e}"
    );
    // A proof for another saved size does not count.
    let e = failing(verify_t(&anchored_export(80, N - 1, N, Some(61)), &t));
    assert!(e.contains("no anchor proof"), "{e}");
}

#[test]
fn a_forged_anchor_proof_fails() {
    let t = saved_at(60);
    let bytes = anchored_export(80, N - 1, N, Some(60));
    let mut reader = ExportReader::open(bytes.as_slice()).unwrap();
    let mut header = reader.header().clone();
    header.anchor_proof[0][0] ^= 1;
    let mut w = super::export::ExportWriter::new(Vec::new(), header).unwrap();
    while let Some((_, e)) = reader.next_entry().unwrap() {
        w.write(&e).unwrap();
    }
    let e = failing(verify_t(&w.finish().unwrap(), &t));
    assert!(e.contains("anchor proof does not tie"), "{e}");
}

#[test]
fn another_clusters_trust_refuses_the_ledger() {
    let s = chain();
    let t = Trust::new("other", s.entries[0].hash, s.replica_note_keys());
    let e = failing(verify_t(&s.full_export(), &t));
    assert!(e.contains("the trust pins cluster \"other\""), "{e}");
}

/// Replica keys change after the auditor pinned them: the change counts
/// once a checkpoint signed by a quorum of the pinned keys covers it.
#[test]
fn replica_key_changes_count_only_when_a_trusted_checkpoint_covers_them() {
    let s = chain();
    let rotated = key(77);
    let added = key(78);
    let mut cmds = s.commands();
    cmds.push(signed(
        &s.operator,
        "ops",
        2_000_000,
        Body::RotateKey(pb::RotateKey {
            party_id: "arbor-replica-3".into(),
            public_key: rotated.verifying_key().to_bytes().to_vec(),
        }),
    ));
    cmds.push(signed(
        &s.operator,
        "ops",
        2_000_001,
        Body::EnrollParty(pb::EnrollParty {
            party_id: "arbor-replica-4".into(),
            role: pb::Role::Replica as i32,
            kind: 0,
            public_key: added.verifying_key().to_bytes().to_vec(),
            channel_names: Vec::new(),
        }),
    ));
    cmds.push(signed(
        &s.operator,
        "ops",
        2_000_002,
        Body::RevokeKey(pb::RevokeKey {
            party_id: "arbor-replica-1".into(),
            reason: "retired".into(),
        }),
    ));
    let entries = replay(&cmds);
    let old = pinned();
    // Signed by the new set only (replica-2 is in both): not enough for the old trust.
    let new_set = vec![
        s.replicas[1].clone(),
        ("arbor-replica-3".to_string(), rotated.clone()),
        ("arbor-replica-4".to_string(), added.clone()),
    ];
    let by_new = full(&entries, &new_set);
    let e = failing(verify_t(&by_new, &old));
    assert!(e.contains("1 valid signature"), "{e}");
    // Signed by the pinned keys: it vouches for the change, and says what to pin next.
    let by_old = full(&entries, &s.replicas[..2]);
    let ts = verify_t(&by_old, &old).unwrap().trust.unwrap();
    let next: Vec<NoteKey> = ts.replicas_at_checkpoint.unwrap();
    let names: Vec<&str> = next.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!names.contains(&"arbor-replica-1"), "revoked: {names:?}");
    let updated = old.with_replicas(next);
    assert_ne!(updated.fingerprint(), old.fingerprint());
    verify_t(&by_new, &updated).expect("the vouched-for keys count");
}
