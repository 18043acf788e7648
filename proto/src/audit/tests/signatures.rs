//! Command signatures: each is checked against the key its signer had in
//! force at that entry (enrolled, rotated, revoked), whatever else matches.

use super::*;

#[test]
fn a_command_signed_by_the_wrong_key_is_found_even_with_hashes_recomputed() {
    let s = chain();
    for i in [20usize, 31, 119] {
        let mut es = entries();
        let env = pb::SignedCommand::decode(es[i].command.as_slice()).unwrap();
        let cmd = pb::Command::decode(env.command.as_slice()).unwrap();
        // Same signer name and command, another key: the rules still accept it.
        es[i].command = sign_command(&key(99), CLUSTER_ID, &env.signer, &cmd).encode_to_vec();
        rehash_from(&mut es, i);
        let e = expect_entry_error(
            verify(&export_of(&es, &all_signers())),
            i as u64,
            "command signature does not verify",
        );
        assert!(
            e.to_string()
                .contains(&format!("key enrolled for {}", env.signer)),
            "{e}"
        );
        assert_eq!(s.entries.len(), es.len());
    }
}

/// A command signed with a key after the ledger revoked it: the replay
/// refuses it (revoked_key), even with every hash and the checkpoint made
/// to match; the same party's entries from before the revocation stay valid.
#[test]
fn a_command_signed_with_a_revoked_key_is_found() {
    use crate::rules::{Applied, MemState};
    let s = chain();
    let mut es: Vec<Entry> = entries()[..40].to_vec();
    let mut state = MemState::default();
    for e in &es {
        state.apply(&e.command, e.time_ms, e.seq == 0);
    }
    let revoke = pb::Command {
        nonce: 9_001,
        body: Some(pb::command::Body::RevokeKey(pb::RevokeKey {
            party_id: "n0".into(),
            reason: "key leaked".into(),
        })),
    };
    let revoke = sign_command(&s.operator, CLUSTER_ID, "ops", &revoke).encode_to_vec();
    let t = es.last().unwrap().time_ms + 1;
    let Applied::Appended(revoked) = state.apply(&revoke, t, false) else {
        panic!("revocation not appended");
    };
    assert!(revoked.accepted, "{revoked:?}");
    es.push(revoked.clone());
    // A clean export up to here verifies: n0's earlier signatures are fine.
    verify(&export_of(&es, &all_signers())).expect("valid up to the revocation");

    // The forger appends a claim signed by n0's (revoked) key as accepted.
    let claim = pb::Command {
        nonce: 9_002,
        body: Some(pb::command::Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o-1".into(),
            price_version: 1,
            total: 202,
        })),
    };
    let claim = sign_command(&s.nodes[0], CLUSTER_ID, "n0", &claim).encode_to_vec();
    let forged = Entry::next(
        Some(&revoked.head()),
        t + 1,
        claim,
        true,
        Code::Accepted.as_str().into(),
        String::new(),
        "o-1".into(),
        0,
    );
    es.push(forged);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        41,
        "the rules refuse its command (revoked_key)",
    );
}

/// After a rotation, each entry is judged by the key in force at its
/// position: the old key's later signature is found, the new key's passes.
#[test]
fn signatures_are_checked_against_the_key_in_force_after_a_rotation() {
    use crate::rules::{Applied, MemState};
    let s = chain();
    let base: Vec<Entry> = entries()[..40].to_vec();
    let mut state = MemState::default();
    for e in &base {
        state.apply(&e.command, e.time_ms, e.seq == 0);
    }
    let fresh = key(90);
    let rotate = pb::Command {
        nonce: 9_101,
        body: Some(pb::command::Body::RotateKey(pb::RotateKey {
            party_id: "n0".into(),
            public_key: fresh.verifying_key().to_bytes().to_vec(),
        })),
    };
    let rotate = sign_command(&s.operator, CLUSTER_ID, "ops", &rotate).encode_to_vec();
    let t = base.last().unwrap().time_ms + 1;
    let Applied::Appended(rotated) = state.apply(&rotate, t, false) else {
        panic!("rotation not appended");
    };
    let claim = |k: &ed25519_dalek::SigningKey| {
        let cmd = pb::Command {
            nonce: 9_102,
            body: Some(pb::command::Body::ClaimOrder(pb::ClaimOrder {
                order_id: "o-1".into(),
                price_version: 1,
                total: 202,
            })),
        };
        sign_command(k, CLUSTER_ID, "n0", &cmd).encode_to_vec()
    };
    for (signer, good) in [(&fresh, true), (&s.nodes[0], false)] {
        let mut st = state.clone();
        let Applied::Appended(e) = st.apply(&claim(signer), t + 1, false) else {
            panic!("claim not appended");
        };
        let mut es = base.clone();
        es.push(rotated.clone());
        es.push(e);
        let r = verify(&export_of(&es, &all_signers()));
        if good {
            r.expect("signed with the key in force");
        } else {
            expect_entry_error(r, 41, "signature");
        }
    }
}

/// An entry whose command carries unknown fields (validly signed, every
/// later hash recomputed) is found by the replay: replicas never append one.
#[test]
fn a_non_canonical_command_in_the_ledger_is_found() {
    let s = chain();
    let mut es = entries();
    let i = 45;
    let env = pb::SignedCommand::decode(es[i].command.as_slice()).unwrap();
    let mut command = env.command.clone();
    command.extend_from_slice(&[0x9a, 0x06, 2, b'h', b'i']);
    let key = s
        .nodes
        .iter()
        .find(|k| {
            crate::ledger::verify_command(&env, CLUSTER_ID, &k.verifying_key().to_bytes()).is_ok()
        })
        .expect("entry 45 is signed by a node");
    let signature =
        ed25519_dalek::Signer::sign(key, &crate::ledger::command_message(CLUSTER_ID, &command))
            .to_bytes()
            .to_vec();
    es[i].command = pb::SignedCommand {
        command,
        signer: env.signer,
        signature,
    }
    .encode_to_vec();
    rehash_from(&mut es, i);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        i as u64,
        "not in canonical encoding",
    );
}

/// The same ledger with its genesis rewritten to another cluster id (every
/// hash recomputed): the first signed entry no longer verifies, so an export
/// cannot be passed off as another cluster's.
#[test]
fn signatures_do_not_verify_under_another_cluster_id() {
    let mut es = entries();
    let env = pb::SignedCommand::decode(es[0].command.as_slice()).unwrap();
    let mut cmd = pb::Command::decode(env.command.as_slice()).unwrap();
    let Some(pb::command::Body::Genesis(g)) = cmd.body.as_mut() else {
        panic!("entry 0 is genesis");
    };
    g.cluster_id = "synth2".into();
    es[0].command = pb::SignedCommand {
        command: cmd.encode_to_vec(),
        ..env
    }
    .encode_to_vec();
    rehash_from(&mut es, 0);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        1,
        "command signature does not verify",
    );
}

/// A forged signature in the middle of a full-size batch, on a ledger of
/// several batches checked by two workers with the default batch size: the
/// batch fails, the one-by-one check names exactly that entry with the
/// message a lone bad signature gets; with a second forgery in a later
/// batch, the earlier one is named.
#[test]
fn a_bad_signature_in_the_middle_of_a_big_batch_is_named_exactly() {
    let s = Synth::build(3 * 2048 + 300, 3);
    let n = s.entries.len() as u64;
    let forge = |es: &mut Vec<Entry>, i: usize| {
        let mut env = pb::SignedCommand::decode(es[i].command.as_slice()).unwrap();
        env.signature[40] ^= 0x10;
        es[i].command = env.encode_to_vec();
        rehash_from(es, i);
        env.signer
    };
    let export = |es: &[Entry]| {
        let leaves: Vec<_> = es.iter().map(|e| leaf_hash(&e.hash)).collect();
        let mut cp = s.checkpoint(n);
        cp.root = root(&leaves, n);
        s.export_with(es, 0, n - 1, n, &s.note(&cp, &all_signers()))
    };
    let opts = || VerifyOptions {
        threads: 2,
        ..VerifyOptions::default()
    };
    assert_eq!(opts().batch, 2048);
    verify_export(export(&s.entries).as_slice(), opts()).expect("untouched ledger verifies");

    let mut es = s.entries.clone();
    let signer = forge(&mut es, 2048 + 517);
    let e = verify_export(export(&es).as_slice(), opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "entry {}: command signature does not verify against the key enrolled for {signer}",
            2048 + 517
        )
    );
    forge(&mut es, 2 * 2048 + 900);
    let e = verify_export(export(&es).as_slice(), opts()).unwrap_err();
    assert_eq!(e.seq(), Some(2048 + 517), "{e}");
}
