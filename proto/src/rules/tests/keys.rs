//! Keys: rotated and revoked keys, and the last operator key.

use super::world::*;
use super::*;

#[test]
fn rotated_and_revoked_keys() {
    let mut w = World::new(1);
    let old = w.nodes[0].clone();
    let new = key(70);
    let claim_with = |k: &SigningKey, nonce: u64| {
        signed(
            k,
            "n0",
            nonce,
            Body::ClaimOrder(pb::ClaimOrder {
                order_id: "o1".into(),
                price_version: 1,
                total: 1000,
            }),
        )
    };
    w.register("o1", 20);
    let before = claim_with(&old, 1);
    assert!(admit(&w.s, &before).is_ok());
    let rot = w.operator(
        21,
        Body::RotateKey(pb::RotateKey {
            party_id: "n0".into(),
            public_key: new.verifying_key().to_bytes().to_vec(),
        }),
    );
    assert!(rot.accepted);
    assert_eq!(w.s.parties["n0"].key_seq, rot.seq);
    // The old key signs nothing any more; the new one does.
    assert_eq!(
        admit(&w.s, &before).unwrap_err().kind(),
        RefusalKind::BadSignature
    );
    let (_, verified) = admit(&w.s, &claim_with(&new, 2)).unwrap();
    assert_eq!(verified.unwrap(), new.verifying_key().to_bytes().to_vec());
    // A command admitted under the old key but committed after the rotation.
    let old_key = old.verifying_key().to_bytes();
    let r = apply(&w.s, &before, 99, 22, false, Some(&old_key)).unwrap_err();
    assert_eq!(r.kind(), RefusalKind::KeyChanged);
    // Keys are never reused.
    let reuse = w.operator(
        23,
        Body::RotateKey(pb::RotateKey {
            party_id: "n0".into(),
            public_key: old_key.to_vec(),
        }),
    );
    rejected(&reuse, Code::KeyInUse, "n0");

    // Revoked: refused outright, nothing appended.
    let rev = w.operator(
        24,
        Body::RevokeKey(pb::RevokeKey {
            party_id: "n0".into(),
            reason: "laptop stolen".into(),
        }),
    );
    assert!(rev.accepted);
    let n = w.s.entries.len();
    match w.s.apply(&claim_with(&new, 3), 25, false) {
        Applied::Refused(r) => assert_eq!(r.kind(), RefusalKind::RevokedKey),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        admit(&w.s, &claim_with(&new, 4)).unwrap_err().kind(),
        RefusalKind::RevokedKey
    );
    assert_eq!(w.s.entries.len(), n);
    // The last operator cannot be revoked.
    let last = w.operator(
        26,
        Body::RevokeKey(pb::RevokeKey {
            party_id: "ops".into(),
            reason: "oops".into(),
        }),
    );
    rejected(&last, Code::LastOperator, "ops");
    // Enrolling a second operator makes it possible.
    let k2 = key(71);
    assert!(
        w.operator(27, {
            let e = enroll(
                &w.op,
                0,
                "ops-2",
                pb::Role::Operator,
                pb::NodeKind::Unspecified,
                &k2,
            );
            let a = decode(&e).unwrap();
            a.command.body.unwrap()
        })
        .accepted
    );
    let e = w.operator(
        28,
        Body::RevokeKey(pb::RevokeKey {
            party_id: "ops".into(),
            reason: "rotation".into(),
        }),
    );
    assert!(e.accepted);
    assert_eq!(w.s.config.as_ref().unwrap().active_operators, 1);
}

/// A second, non-canonical encoding of an enrolled key is one key, not two:
/// refused at enrolment, rotation and genesis, nothing appended.
#[test]
fn non_canonical_key_encodings_are_refused() {
    let (canonical, twin) = crate::audit::synth::non_canonical_twin();
    let a = ed25519_dalek::VerifyingKey::from_bytes(&canonical).unwrap();
    let b = ed25519_dalek::VerifyingKey::from_bytes(&twin).unwrap();
    assert_eq!(a.to_edwards(), b.to_edwards(), "the twin is the same point");
    assert_ne!(canonical, twin);

    let mut w = World::new(1);
    let enrol = |id: &str, pk: &[u8; 32]| {
        Body::EnrollParty(pb::EnrollParty {
            party_id: id.into(),
            role: pb::Role::Auditor as i32,
            kind: 0,
            public_key: pk.to_vec(),
            channel_names: Vec::new(),
        })
    };
    assert!(w.operator(30, enrol("aud-1", &canonical)).accepted);
    let n = w.s.entries.len();
    for body in [
        enrol("aud-2", &twin),
        Body::RotateKey(pb::RotateKey {
            party_id: "n0".into(),
            public_key: twin.to_vec(),
        }),
    ] {
        let bytes = signed(&w.op, "ops", 31, body);
        match w.s.apply(&bytes, 31, false) {
            Applied::Refused(r) => {
                assert_eq!(r.kind(), RefusalKind::Malformed, "{r}");
                assert!(r.to_string().contains("canonically encoded"), "{r}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(w.s.entries.len(), n, "nothing appended");
    assert!(!w.s.parties.contains_key("aud-2"));

    // Genesis too: validated like any command.
    let cmd = pb::Command {
        nonce: 0,
        body: Some(Body::Genesis(pb::Genesis {
            claim_deadlines: None,
            cluster_id: "test".into(),
            lease_grace_ms: 0,
            rules_version: 0,
            fence_ms: 0,
            members: Vec::new(),
            operators: vec![pb::GenesisOperator {
                party_id: "ops".into(),
                public_key: twin.to_vec(),
            }],
        })),
    };
    let err = crate::rules::validate_command(&cmd).unwrap_err();
    assert!(err.to_string().contains("canonically encoded"), "{err}");
}
