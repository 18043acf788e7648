//! Rules versions: genesis fixes the version (absent: 1), an operator's
//! `SetRulesVersion` raises it from its own entry on and never lowers it,
//! and an old ledger replays under its own rules.

use super::world::*;
use super::*;

fn set_version(w: &mut World, t: u64, version: u32, fence_ms: u64) -> Entry {
    w.operator(
        t,
        Body::SetRulesVersion(pb::SetRulesVersion {
            claim_deadlines: None,
            version,
            fence_ms,
        }),
    )
}

/// n0 claims and packs "o1"; its lease lapses; n1 claims it at once.
fn packed_lapse_then_claim(w: &mut World, id: &str, t: u64) -> Entry {
    w.register(id, t);
    assert!(w.claim(0, id, t + 1).accepted);
    assert!(w.milestone(0, id, t + 2, pb::Milestone::Packed).accepted);
    w.claim(1, id, t + 1 + HOUR + GRACE + 1)
}

#[test]
fn a_genesis_without_a_version_is_version_1_and_reclaims_a_packed_order_at_once() {
    let mut w = World::new(2);
    let c = w.s.config.clone().unwrap();
    assert_eq!((c.rules_version, c.rules(), c.rules_seq), (0, 1, 0));
    let e = packed_lapse_then_claim(&mut w, "o1", 20);
    assert!(e.accepted, "{e:?}");
    assert!(e.message.ends_with("+ grace)"), "{}", e.message);
    assert_eq!(w.s.orders["o1"].owner.as_deref(), Some("n1"));
}

#[test]
fn a_raised_version_applies_from_its_own_entry_on() {
    let mut w = World::new(2);
    // Before the change: version 1.
    assert!(packed_lapse_then_claim(&mut w, "o1", 20).accepted);
    let t = 20 + 2 * HOUR;
    let set = set_version(&mut w, t, 2, 5_000);
    assert!(set.accepted, "{set:?}");
    assert_eq!(
        set.message,
        format!("rules version 2 from entry {} (was 1)", set.seq)
    );
    let c = w.s.config.clone().unwrap();
    assert_eq!((c.rules(), c.rules_seq, c.fence()), (2, set.seq, 5_000));
    // After it: a packed order that lapses is fenced.
    let e = packed_lapse_then_claim(&mut w, "o2", t + 1);
    rejected(&e, Code::Fenced, "fenced for n0");
    // The same version again may change the fence.
    assert!(set_version(&mut w, t + 2, 2, 0).accepted);
    assert_eq!(w.s.config.as_ref().unwrap().fence(), DEFAULT_FENCE_MS);
}

#[test]
fn a_version_is_never_lowered_and_unknown_versions_are_refused() {
    let mut w = World::with_rules(1, 2, 0);
    assert_eq!(w.s.config.as_ref().unwrap().rules(), 2);
    rejected(
        &set_version(&mut w, 30, 1, 0),
        Code::RulesVersionLowered,
        "never lowered",
    );
    assert_eq!(w.s.config.as_ref().unwrap().rules(), 2);
    let op = w.op.clone();
    for (version, fence, why) in [
        (0, 0, "names no version"),
        (CURRENT_RULES_VERSION + 1, 0, "knows versions 1 to"),
        (2, MAX_FENCE_MS + 1, "over the limit"),
        (1, 10, "fences exist from version 2"),
    ] {
        let nonce = w.next_nonce();
        let bytes = signed(
            &op,
            "ops",
            nonce,
            Body::SetRulesVersion(pb::SetRulesVersion {
                claim_deadlines: None,
                version,
                fence_ms: fence,
            }),
        );
        match w.s.apply(&bytes, 31, false) {
            Applied::Refused(r) => {
                assert_eq!(r.kind(), RefusalKind::Malformed, "{r}");
                assert!(r.to_string().contains(why), "{r}");
            }
            other => panic!("{version}/{fence}: {other:?}"),
        }
    }
    // Only an operator sets the version.
    let nonce = w.next_nonce();
    let bytes = signed(
        &w.nodes[0],
        "n0",
        nonce,
        Body::SetRulesVersion(pb::SetRulesVersion {
            claim_deadlines: None,
            version: 2,
            fence_ms: 0,
        }),
    );
    match w.s.apply(&bytes, 32, false) {
        Applied::Refused(r) => assert_eq!(r.kind(), RefusalKind::WrongRole),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_genesis_naming_an_unknown_version_is_refused() {
    let op = key(1);
    for (version, fence) in [
        (CURRENT_RULES_VERSION + 1, 0),
        (0, 1_000),
        (2, MAX_FENCE_MS + 1),
    ] {
        let mut s = MemState::default();
        match s.apply(&genesis_with(&op, 0, version, fence), 10, true) {
            Applied::Refused(r) => assert_eq!(r.kind(), RefusalKind::Malformed, "{r}"),
            other => panic!("{version}/{fence}: {other:?}"),
        }
    }
}

/// A ledger written under version 1 and raised to 2 half way replays, with
/// this code, to the same entries byte for byte: each entry is decided under
/// the version in force at it.
#[test]
fn a_ledger_replays_under_the_versions_in_force_at_each_entry() {
    let mut w = World::new(2);
    assert!(packed_lapse_then_claim(&mut w, "o1", 20).accepted);
    let t = 20 + 2 * HOUR;
    assert!(set_version(&mut w, t, 2, 5_000).accepted);
    rejected(
        &packed_lapse_then_claim(&mut w, "o2", t + 1),
        Code::Fenced,
        "",
    );
    assert!(w.release(0, "o2", t + 2 + HOUR + GRACE + 10).accepted);
    assert!(w.claim(1, "o2", t + 2 + HOUR + GRACE + 11).accepted);
    let mut again = MemState::default();
    for (i, e) in w.s.entries.iter().enumerate() {
        let replayed = appended(again.apply(&e.command, e.time_ms, i == 0));
        assert_eq!(&replayed, e, "entry {i}");
    }
    assert_eq!(again.orders, w.s.orders);
    assert_eq!(again.stats, w.s.stats);
}
