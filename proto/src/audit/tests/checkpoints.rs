//! Checkpoints: forged or too few replica signatures, replicas enrolled too
//! late, other trees or clusters, exports that end before the checkpoint or
//! start after genesis, and signature lines no check depends on.

use super::*;

#[test]
fn a_forged_checkpoint_signature_is_found() {
    let s = chain();
    let cp = s.checkpoint(N);
    // A genuine line with its signature altered: the known key does not verify it.
    let mut line = cp.sign_line(&s.replicas[1].0, &s.replicas[1].1);
    let (head, b64) = line.trim_end().rsplit_once(' ').unwrap();
    let mut b64 = b64.to_string();
    let c = if b64.as_bytes()[20] == b'A' { "B" } else { "A" };
    b64.replace_range(20..21, c);
    line = format!("{head} {b64}\n");
    let note = cp.note(&[cp.sign_line(&s.replicas[0].0, &s.replicas[0].1), line]);
    let err = verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint: checkpoint signature of arbor-replica-2 does not verify"
    );

    // Signed under a replica's name with another key: it does not count.
    let note = cp.note(&[
        cp.sign_line(&s.replicas[0].0, &s.replicas[0].1),
        cp.sign_line("arbor-replica-2", &key(97)),
    ]);
    let err = verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 valid signature(s) from known replicas, 2 needed"),
        "{err}"
    );

    // A note whose text was changed after signing.
    let note = s.note(&cp, &all_signers()).replacen(
        &format!("time {}", cp.time_ms),
        &format!("time {}", cp.time_ms + 1),
        1,
    );
    let err = verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[test]
fn a_checkpoint_signed_by_too_few_replicas_is_refused() {
    let s = chain();
    let note = s.note(&s.checkpoint(N), &[2]);
    let err = verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint: checkpoint has 1 valid signature(s) from known replicas, 2 needed"
    );
    let note = s.note(&s.checkpoint(N), &[0, 2]);
    verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap();
}

#[test]
fn only_replicas_enrolled_before_the_checkpoint_count() {
    // Replicas are enrolled at entries 11, 12, 13 (after 4 nodes and their
    // profiles). A checkpoint of size 13 knows two.
    let s = chain();
    let cp = s.checkpoint(13);
    let note = s.note(&cp, &[0, 2]);
    let err = verify(&s.export_with(&s.entries[..13], 0, 12, 13, &note)).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 valid signature(s) from known replicas, 2 needed"),
        "{err}"
    );
    let note = s.note(&cp, &[0, 1]);
    let sum = verify(&s.export_with(&s.entries[..13], 0, 12, 13, &note)).unwrap();
    assert_eq!((sum.checkpoint.replicas, sum.checkpoint.quorum), (2, 2));
}

#[test]
fn a_ledger_without_replicas_has_no_verifiable_checkpoint() {
    let s = Synth::build(30, 0);
    let cp = s.checkpoint(30);
    let note = cp.note(&[cp.sign_line("arbor-replica-1", &key(40))]);
    let err = verify(&s.export_with(&s.entries, 0, 29, 30, &note)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("checkpoint: no replica key is enrolled"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_of_another_tree_or_cluster_is_refused() {
    let s = chain();
    let mut cp = s.checkpoint(N);
    cp.root[0] ^= 1;
    let err =
        verify(&s.export_with(&s.entries, 0, N - 1, N, &s.note(&cp, &all_signers()))).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("checkpoint: the Merkle root over entries 0..=119 is"),
        "{err}"
    );
    let mut cp = s.checkpoint(N);
    cp.origin = "arbor/elsewhere".into();
    let err =
        verify(&s.export_with(&s.entries, 0, N - 1, N, &s.note(&cp, &all_signers()))).unwrap_err();
    assert!(
        err.to_string()
            .contains("genesis entry names cluster \"synth\""),
        "{err}"
    );
}

#[test]
fn an_export_that_ends_before_the_checkpoint_is_tied_to_it_by_a_consistency_proof() {
    let s = chain();
    let note = s.note(&s.checkpoint(N), &all_signers());
    let bytes = s.export_with(&s.entries, 0, 99, N, &note);
    let sum = verify(&bytes).unwrap();
    assert_eq!(sum.entries, 100);
    assert!(sum.complete);
    assert_eq!(sum.notes.len(), 1, "{:?}", sum.notes);
    // Entries 0..=99 of another ledger are not consistent with the checkpoint.
    let mut es = entries();
    es[99].message.push('!');
    rehash_from(&mut es, 99);
    let err = verify(&s.export_with(&es, 0, 99, N, &note)).unwrap_err();
    assert!(
        err.to_string()
            .contains("entry 99: replay does not reproduce"),
        "{err}"
    );
}

#[test]
fn an_export_that_does_not_start_at_genesis_checks_links_and_the_root_only() {
    let s = chain();
    let note = s.note(&s.checkpoint(N), &all_signers());
    let sum = verify(&s.export_with(&s.entries, 50, N - 1, N, &note)).unwrap();
    assert_eq!((sum.from_seq, sum.entries), (50, 70));
    assert!(!sum.replayed && !sum.complete && !sum.checkpoint.signatures_verified);
    assert_eq!(sum.signatures, 0);
    assert!(sum.notes[0].contains("not at genesis"), "{:?}", sum.notes);
    // The middle of the ledger, tied to the checkpoint from both sides.
    verify(&s.export_with(&s.entries, 50, 80, N, &note)).unwrap();

    // A forged range is not consistent with the checkpoint's root.
    let mut es = entries();
    let i = first_after(Code::AlreadyOwned, 50);
    es[i].accepted = true;
    rehash_from(&mut es, i);
    let err = verify(&s.export_with(&es, 50, N - 1, N, &note)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("checkpoint: the Merkle root over entries 0..=119"),
        "{err}"
    );
    let err = verify(&s.export_with(&es, 50, 100, N, &note)).unwrap_err();
    assert!(
        err.to_string()
            .contains("is not consistent with the checkpoint of size 120"),
        "{err}"
    );
    // So is one whose first entry lies about its hash.
    let mut es = entries();
    es[50].hash[3] ^= 1;
    expect_entry_error(
        verify(&s.export_with(&es, 50, N - 1, N, &note)),
        50,
        "hash does not match",
    );
}

#[test]
fn damage_to_a_signature_line_no_check_depends_on_is_still_found() {
    // C2SP says to ignore signatures from unknown keys; the trailer's header
    // digest still notices that the line was changed.
    let s = chain();
    let cp = s.checkpoint(N);
    let mut lines: Vec<String> = (0..3)
        .map(|i| cp.sign_line(&s.replicas[i].0, &s.replicas[i].1))
        .collect();
    lines.push(cp.sign_line("arbor-replica-9", &key(49)));
    let bytes = s.export_with(&s.entries, 0, N - 1, N, &cp.note(&lines));
    verify(&bytes).unwrap();
    let at = bytes
        .windows(15)
        .position(|w| w == b"arbor-replica-9")
        .unwrap();
    let mut b = bytes.clone();
    b[at + 14] = b'8';
    let e = verify(&b).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("offset 16: header: its SHA-256 is not the one recorded in the trailer"),
        "{e}"
    );
}
