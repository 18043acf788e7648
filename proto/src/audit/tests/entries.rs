//! Tampered entries: a flipped byte in a command, an outcome, a hash or a
//! time; dropped, duplicated or swapped entries; outcomes and reasons changed
//! with every later hash recomputed, which only the replay catches.

use super::*;
use crate::rules::RefusalKind;

#[test]
fn an_honest_export_verifies() {
    let s = chain();
    let bytes = s.full_export();
    let sum = verify(&bytes).unwrap();
    assert_eq!(sum.entries, N);
    assert_eq!((sum.from_seq, sum.to_seq), (0, N - 1));
    assert_eq!(sum.accepted + sum.rejected, N);
    assert!(sum.rejected >= 20, "{sum:?}");
    for code in [
        Code::AlreadyOwned,
        Code::PriceMismatch,
        Code::ExternalRefTaken,
        Code::UnknownOrder,
    ] {
        assert!(
            s.entries.iter().any(|e| e.code == code.as_str()),
            "workload has no {code}"
        );
    }
    assert_eq!(sum.parties, 10);
    assert_eq!(sum.signatures, N - 1);
    assert!(
        sum.replayed && sum.complete && sum.notes.is_empty(),
        "{sum:?}"
    );
    assert_eq!(sum.cluster_id.as_deref(), Some("synth"));
    assert_eq!(sum.head_hash, s.entries[N as usize - 1].hash);
    assert_eq!(sum.checkpoint.size, N);
    assert_eq!(
        sum.checkpoint.signed_by,
        ["arbor-replica-1", "arbor-replica-2", "arbor-replica-3"]
    );
    assert_eq!((sum.checkpoint.replicas, sum.checkpoint.quorum), (3, 2));
    // The hand-framed writer and ExportWriter agree byte for byte.
    assert_eq!(raw_export(&s.entries), bytes);
    // One thread, one big batch: the same verdict.
    let one = verify_export(
        bytes.as_slice(),
        VerifyOptions {
            threads: 1,
            batch: 4096,
            progress: None,
        },
    )
    .unwrap();
    assert_eq!(one.checkpoint, sum.checkpoint);
}

#[test]
fn progress_is_reported_up_to_the_total() {
    let mut seen = Vec::new();
    let mut cb = |done: u64, total: u64| seen.push((done, total));
    verify_export(
        chain().full_export().as_slice(),
        VerifyOptions {
            progress: Some(&mut cb),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(seen.last(), Some(&(N, N)));
}

#[test]
fn a_flipped_byte_in_a_command_is_found() {
    let mut es = entries();
    es[50].command[20] ^= 0x01;
    expect_entry_error(
        verify(&raw_export(&es)),
        50,
        "hash does not match its contents",
    );
}

#[test]
fn a_flipped_byte_in_an_outcome_code_is_found() {
    let i = first_with(Code::AlreadyOwned);
    let mut es = entries();
    es[i].code = "already_ownee".into();
    expect_entry_error(
        verify(&raw_export(&es)),
        i as u64,
        "hash does not match its contents",
    );
}

#[test]
fn a_flipped_byte_in_a_hash_is_found() {
    let mut es = entries();
    es[61].hash[31] ^= 0x80;
    expect_entry_error(
        verify(&raw_export(&es)),
        61,
        "hash does not match its contents",
    );
    let mut es = entries();
    es[62].prev_hash[0] ^= 0x01;
    expect_entry_error(
        verify(&raw_export(&es)),
        62,
        "prev_hash does not match entry 61",
    );
}

#[test]
fn a_flipped_time_is_found() {
    let mut es = entries();
    es[70].time_ms ^= 0x04;
    expect_entry_error(
        verify(&raw_export(&es)),
        70,
        "hash does not match its contents",
    );
    // Recomputing the hashes does not help when time goes backwards.
    let mut es = entries();
    es[70].time_ms = es[69].time_ms - 1;
    rehash_from(&mut es, 70);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        70,
        "time goes backwards",
    );
}

#[test]
fn a_dropped_entry_is_found() {
    let mut es = entries();
    es.remove(40);
    expect_entry_error(
        verify(&raw_export(&es)),
        40,
        "found entry 41 where entry 40 belongs",
    );
}

#[test]
fn a_duplicated_entry_is_found() {
    let mut es = entries();
    let dup = es[40].clone();
    es.insert(41, dup);
    es.pop();
    expect_entry_error(
        verify(&raw_export(&es)),
        41,
        "found entry 40 where entry 41 belongs",
    );
}

#[test]
fn swapped_entries_are_found() {
    let mut es = entries();
    es.swap(33, 34);
    expect_entry_error(
        verify(&raw_export(&es)),
        33,
        "found entry 34 where entry 33 belongs",
    );
}

#[test]
fn a_flipped_outcome_with_every_later_hash_recomputed_is_caught_by_replay_alone() {
    // A claim that lost to the owner, rewritten as the winner; the forger
    // recomputes every later hash and (holding the replica keys) re-signs the
    // checkpoint. Hashes, links, signatures and the Merkle root all check out.
    let i = first_with(Code::AlreadyOwned);
    let mut es = entries();
    es[i].accepted = true;
    es[i].code = Code::Accepted.as_str().into();
    es[i].message = String::new();
    rehash_from(&mut es, i);
    for (k, e) in es.iter().enumerate().skip(1) {
        e.verify_link(Some(&es[k - 1].head())).unwrap();
    }
    let e = expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        i as u64,
        "replay does not reproduce the entry",
    );
    assert!(
        e.to_string()
            .contains("the rules decide rejected (already_owned: order o-"),
        "{e}"
    );
    assert!(
        e.to_string().contains("but the ledger records accepted"),
        "{e}"
    );

    // And the other way round: a winning claim recorded as rejected.
    let i = chain()
        .entries
        .iter()
        .position(|e| e.seq > 10 && e.accepted && e.order_prev_seq > 0)
        .unwrap();
    let mut es = entries();
    es[i].accepted = false;
    es[i].code = Code::AlreadyOwned.as_str().into();
    rehash_from(&mut es, i);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        i as u64,
        "the rules decide accepted but the ledger records rejected",
    );
}

#[test]
fn a_changed_reason_or_history_link_is_caught_by_replay() {
    let i = first_with(Code::PriceMismatch);
    let mut es = entries();
    es[i].message = es[i].message.replace("total", "tota1");
    rehash_from(&mut es, i);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        i as u64,
        "the rules give the reason",
    );
    let mut es = entries();
    es[i].order_prev_seq += 1;
    rehash_from(&mut es, i);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        i as u64,
        "the order's previous entry is",
    );
}

#[test]
fn the_earliest_failure_is_reported() {
    // A bad signature at 25 (found by a worker) and a broken hash at 90 (found by the main thread).
    let mut es = entries();
    let env = pb::SignedCommand::decode(es[25].command.as_slice()).unwrap();
    let mut bad = env.clone();
    bad.signature[5] ^= 1;
    es[25].command = bad.encode_to_vec();
    rehash_from(&mut es, 25);
    es[90].hash[0] ^= 1;
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        25,
        "command signature does not verify",
    );
}

#[test]
fn a_resent_command_appended_twice_is_found() {
    let mut es = entries();
    es[60].command = es[59].command.clone();
    rehash_from(&mut es, 60);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        60,
        "already applied at entry 59",
    );
}

#[test]
fn a_command_the_rules_refuse_is_found() {
    let mut es = entries();
    let cmd = pb::Command {
        nonce: 7,
        body: Some(pb::command::Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o-1".into(),
            price_version: 1,
            total: 202,
        })),
    };
    es[45].command = sign_command(&key(98), CLUSTER_ID, "ghost", &cmd).encode_to_vec();
    rehash_from(&mut es, 45);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        45,
        "the rules refuse its command (unknown_signer)",
    );
    // A channel cannot claim.
    let mut es = entries();
    es[45].command = sign_command(&chain().channel, CLUSTER_ID, "shop", &cmd).encode_to_vec();
    rehash_from(&mut es, 45);
    let needle = format!("({})", RefusalKind::WrongRole);
    expect_entry_error(verify(&export_of(&es, &all_signers())), 45, &needle);
}
