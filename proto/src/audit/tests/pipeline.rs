//! The verifier's stages (the chain stage reading and hashing, the replay
//! stage, the signature workers) on a ledger of several chunks: whichever
//! stage finds a failure, and wherever it is (the first entries, a chunk
//! boundary, the middle, the last entry, a cut file), the one reported is
//! the earliest, with the message a single pass gives, and the run ends.

use super::*;

/// More than four chunks of entries handed from the chain to the replay stage.
const BIG: u64 = 1100;

fn big() -> &'static Synth {
    static S: OnceLock<Synth> = OnceLock::new();
    S.get_or_init(|| Synth::build(BIG, 3))
}

/// The export of `es`, checkpointed at their own root, signed by every replica.
fn export_big(es: &[Entry]) -> Vec<u8> {
    let s = big();
    let n = es.len() as u64;
    let mut cp = s.checkpoint(n);
    let leaves: Vec<_> = es.iter().map(|e| leaf_hash(&e.hash)).collect();
    cp.root = root(&leaves, n);
    let note = s.note(&cp, &all_signers());
    s.export_with(es, 0, n - 1, n, &note)
}

/// The first entry at or after `at` that links to an earlier entry of its order.
fn linked_from(at: usize) -> usize {
    big().entries[at..]
        .iter()
        .position(|e| e.order_prev_seq > 0)
        .map(|p| at + p)
        .unwrap()
}

/// Entry `i`'s history link changed and every later hash recomputed: only
/// the replay can find it.
fn unlink(es: &mut [Entry], i: usize) {
    es[i].order_prev_seq += 1;
    rehash_from(es, i);
}

/// Entry `i`'s command signature damaged, every later hash recomputed.
fn bad_signature(es: &mut [Entry], i: usize) {
    let mut env = pb::SignedCommand::decode(es[i].command.as_slice()).unwrap();
    env.signature[5] ^= 1;
    es[i].command = env.encode_to_vec();
    rehash_from(es, i);
}

#[test]
fn an_honest_export_of_many_chunks_verifies() {
    let s = verify(&big().full_export()).unwrap();
    assert!(s.complete);
    assert_eq!(s.entries, BIG);
    assert_eq!(s.accepted + s.rejected, BIG);
    assert_eq!(s.signatures, BIG - 1);
    assert_eq!(s.head_hash, big().entries.last().unwrap().hash);
}

#[test]
fn a_replay_failure_anywhere_is_reported_before_a_later_chain_failure() {
    for at in [11, 255, 256, 257, 600, BIG as usize - 60] {
        let i = linked_from(at);
        let mut es = big().entries.clone();
        unlink(&mut es, i);
        // A broken hash later, found by the chain stage (which runs ahead),
        // and one right after.
        for later in [i + 1, (i + 300).min(BIG as usize - 1)] {
            let mut es = es.clone();
            es[later].hash[0] ^= 1;
            expect_entry_error(
                verify(&export_big(&es)),
                i as u64,
                "the order's previous entry is",
            );
        }
        expect_entry_error(
            verify(&export_big(&es)),
            i as u64,
            "the order's previous entry is",
        );
    }
}

#[test]
fn a_chain_failure_anywhere_is_reported_exactly() {
    for j in [1, 255, 256, 257, 513, 800, BIG as usize - 1] {
        let mut es = big().entries.clone();
        es[j].hash[0] ^= 1;
        expect_entry_error(
            verify(&export_big(&es)),
            j as u64,
            "hash does not match its contents",
        );
        // A replay failure after it is never reached.
        if j + 10 < BIG as usize {
            let k = linked_from(j + 10);
            let mut es = es.clone();
            es[k].order_prev_seq += 1;
            es[k].hash = es[k].compute_hash();
            expect_entry_error(
                verify(&export_big(&es)),
                j as u64,
                "hash does not match its contents",
            );
        }
    }
}

#[test]
fn the_earliest_of_a_bad_signature_and_a_replay_failure_wins() {
    let (early, late) = (linked_from(300), linked_from(900));
    let mut es = big().entries.clone();
    unlink(&mut es, late);
    bad_signature(&mut es, early);
    expect_entry_error(
        verify(&export_big(&es)),
        early as u64,
        "command signature does not verify",
    );
    let mut es = big().entries.clone();
    bad_signature(&mut es, late);
    unlink(&mut es, early);
    expect_entry_error(
        verify(&export_big(&es)),
        early as u64,
        "the order's previous entry is",
    );
}

#[test]
fn a_file_cut_after_many_chunks_names_the_entry_and_offset() {
    let bytes = big().full_export();
    let f = frames(&bytes);
    assert_eq!(f.len() as u64, BIG + 2);
    for seq in [300u64, 768, BIG - 1] {
        let (at, len) = f[1 + seq as usize];
        let e = verify(&bytes[..at + 4 + len / 2]).unwrap_err();
        assert_eq!(e.seq(), Some(seq), "{e}");
        assert_eq!(e.offset(), Some(at as u64), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = verify(&bytes[..at]).unwrap_err();
        assert_eq!(e.seq(), Some(seq), "{e}");
        assert!(
            e.to_string().contains(&format!(
                "missing: the file ends after {seq} of {BIG} entries"
            )),
            "{e}"
        );
    }
    // Cut inside the trailer: every entry checks out, the file does not.
    let (at, _) = f[f.len() - 1];
    let e = verify(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("offset {at}: trailer: truncated")),
        "{e}"
    );
}

#[test]
fn progress_of_many_chunks_rises_to_the_total() {
    let mut seen = Vec::new();
    let mut cb = |done: u64, total: u64| seen.push((done, total));
    verify_export(
        big().full_export().as_slice(),
        VerifyOptions {
            threads: 2,
            batch: 64,
            progress: Some(&mut cb),
        },
    )
    .unwrap();
    assert_eq!(seen.last(), Some(&(BIG, BIG)));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert!(seen.iter().all(|(d, t)| *d <= BIG && *t == BIG));
}
