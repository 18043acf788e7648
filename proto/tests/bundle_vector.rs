//! Test vector: a dispute bundle made by a real three-replica cluster
//! (tests/tests/cluster/bundle.rs with ARBOR_WRITE_BUNDLE_VECTOR set), with
//! the trust file pinning that cluster. An independent implementation of
//! docs/ledger-format.md §11-§12 can check the same files. Regenerate with
//! `ARBOR_WRITE_BUNDLE_VECTOR=$PWD/proto/tests/vectors/cluster-v1.bundle cargo
//! test --workspace --test cluster bundle::`.

use arbor_proto::audit::bundle::{decode_bundle, verify_bundle, CheckpointKeys};
use arbor_proto::audit::trust::Trust;

const BUNDLE: &[u8] = include_bytes!("vectors/cluster-v1.bundle");
const TRUST: &str = include_str!("vectors/cluster-v1.bundle.trust");

#[test]
fn the_committed_bundle_verifies_against_its_pinned_trust() {
    let trust = Trust::parse(TRUST).expect("trust file");
    let b = decode_bundle(BUNDLE).expect("bundle decodes");
    let r = verify_bundle(&b, CheckpointKeys::Pinned(&trust)).expect("bundle verifies");
    assert!(r.pinned);
    assert_eq!(r.cluster_id, "arbor-test");
    assert_eq!(r.order_id, "ord-disputed");
    assert_eq!(r.history.len(), 12);
    assert_eq!(r.history[0].command, "RegisterOrder");
    assert!(r.map_size > 0 && r.map_size.is_multiple_of(32) && r.map_size <= r.size);
    assert_eq!(r.disputes.len(), 1);
    assert!(r.disputes[0].resolved_seq.is_some());
    assert_eq!(r.disputes[0].ruling.rule.as_str(), "custodian_at_incident");
    assert_eq!(r.disputes[0].ruling.liable, "sf-express");
    // Without the trust: the same history, but internal consistency only.
    let c = verify_bundle(&b, CheckpointKeys::Carried).expect("consistent");
    assert!(!c.pinned);
    assert_eq!(c.history, r.history);
}

#[test]
fn no_byte_flip_changes_what_the_bundle_proves() {
    let trust = Trust::parse(TRUST).expect("trust file");
    let good = verify_bundle(
        &decode_bundle(BUNDLE).expect("decodes"),
        CheckpointKeys::Pinned(&trust),
    )
    .expect("verifies");
    let mut refused = 0;
    for at in (0..BUNDLE.len()).step_by(5) {
        let mut bad = BUNDLE.to_vec();
        bad[at] ^= 0x20;
        match decode_bundle(&bad).and_then(|b| verify_bundle(&b, CheckpointKeys::Pinned(&trust))) {
            Err(_) => refused += 1,
            // Only bytes nothing depends on (the name on one of three
            // signature lines) may change without a refusal, and then the
            // verdict is the same.
            Ok(r) => assert_eq!(
                (&r.history, &r.disputes, r.size, r.map_size),
                (&good.history, &good.disputes, good.size, good.map_size),
                "flip at byte {at} changed the verdict"
            ),
        }
    }
    assert!(refused > BUNDLE.len() / 5 * 9 / 10, "{refused} refused");
}

#[test]
fn the_committed_bundle_carries_complete_party_histories_and_none_can_shrink() {
    use arbor_proto::audit::bundle::{unpack, verify_unpacked};
    let trust = Trust::parse(TRUST).expect("trust file");
    let u = unpack(&decode_bundle(BUNDLE).expect("decodes")).expect("unpacks");
    let names: Vec<&str> = u.parties.iter().map(|p| p.party_id.as_str()).collect();
    assert_eq!(
        names,
        [
            "arbor-replica-1",
            "arbor-replica-2",
            "arbor-replica-3",
            "aud-1",
            "shop",
            "store-a",
            "wh-b"
        ]
    );
    // store-a signed the order's entries with three keys in turn.
    let store = u.parties.iter().find(|p| p.party_id == "store-a").unwrap();
    assert_eq!(store.entries.len(), 4, "enrolment, profile, two rotations");
    // Leaving out any one party entry of any party, or a whole party, is
    // refused, naming the party or the entry.
    for (i, p) in u.parties.iter().enumerate() {
        for j in 0..p.entries.len() {
            let mut t = u.clone();
            t.parties[i].entries.remove(j);
            let e = verify_unpacked(&t, CheckpointKeys::Pinned(&trust))
                .expect_err("a history left short")
                .to_string();
            assert!(e.contains(&format!("party {}", p.party_id)), "{e}");
        }
        if !p.party_id.starts_with("arbor-replica") {
            let mut t = u.clone();
            t.parties.remove(i);
            let e = verify_unpacked(&t, CheckpointKeys::Pinned(&trust))
                .expect_err("a party left out")
                .to_string();
            assert!(e.contains(&format!("of {}", p.party_id)), "{e}");
        }
    }
    // A version 1 file (no party histories) is refused as such.
    let mut v1 = arbor_proto::audit::bundle::BUNDLE_MAGIC_V1.to_vec();
    v1.extend_from_slice(&BUNDLE[16..]);
    assert!(decode_bundle(&v1)
        .unwrap_err()
        .to_string()
        .contains("version 1 dispute bundle"));
    // Out of order, or one party twice: refused.
    let mut t = u.clone();
    t.parties.swap(0, 1);
    assert!(verify_unpacked(&t, CheckpointKeys::Pinned(&trust))
        .unwrap_err()
        .to_string()
        .contains("increasing order of party id"));
    let mut t = u.clone();
    let dup = t.parties[0].clone();
    t.parties.insert(0, dup);
    assert!(verify_unpacked(&t, CheckpointKeys::Pinned(&trust))
        .unwrap_err()
        .to_string()
        .contains("increasing order of party id"));
}
