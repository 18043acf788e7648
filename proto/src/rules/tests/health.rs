//! The health fold (docs/disputes.md §9): counters folded from facts, the
//! score from counters, and the fold computed the same from an export's
//! replay as by the live state, entry by entry.

use proptest::prelude::*;

use super::property::{op, run_under, V3};
use super::world::*;
use super::*;

#[test]
fn the_counters_follow_the_facts_and_the_score_is_integer_arithmetic() {
    let mut w = World::with_rules(2, 3, 0);
    for id in ["o1", "o2", "o3", "o4"] {
        w.register(id, 20);
    }
    // o1: on time.
    let first = w.claim(0, "o1", 100);
    assert!(first.accepted);
    assert!(w.milestone(0, "o1", 200, pb::Milestone::Shipped).accepted);
    // o2: released, claimed again (not a second take-on), shipped more
    // than an hour after the first claim (stamped 200: leader time never
    // goes back): late.
    assert!(w.claim(0, "o2", 200).accepted);
    assert!(w.release(0, "o2", 300).accepted);
    assert!(w.claim(0, "o2", 400).accepted);
    assert!(
        w.milestone(0, "o2", 200 + HOUR + 1, pb::Milestone::Shipped)
            .accepted
    );
    // o3: handed to n1, which notes damage; n1 ships on time.
    assert!(w.claim(0, "o3", 200 + HOUR + 2).accepted);
    let offer = w.offer(0, "o3", "n1", 200 + HOUR + 3, 1_000);
    assert!(w.accept(1, "o3", offer.seq, 200 + HOUR + 4, true).accepted);
    assert!(
        w.milestone(1, "o3", 200 + HOUR + 5, pb::Milestone::Shipped)
            .accepted
    );
    // o4: n1's lease lapses (recorded by n0's claim).
    assert!(w.claim(1, "o4", 200 + HOUR + 6).accepted);
    assert!(w.claim(0, "o4", 200 + 2 * HOUR + GRACE + 7).accepted);
    let n0 = w.stats(0).health;
    assert_eq!(
        n0,
        HealthCounters {
            taken_on: 4,
            shipped: 2,
            on_time: 1,
            releases: 1,
            damage_noted: 1,
            ..Default::default()
        }
    );
    // good 1, bad 1 late + 1 release + 1 damage = 3: 1000 × 3 / 6.
    assert_eq!(health_score(&n0), 500);
    let n1 = w.stats(1).health;
    assert_eq!(
        (n1.taken_on, n1.shipped, n1.on_time, n1.lapses),
        (2, 1, 1, 1)
    );
    assert_eq!(health_score(&n1), 1000 * 3 / 4);
    // The auditor's fold over the orders gives the same, and as of an
    // earlier entry leaves the later facts out.
    let all = health_at(w.s.orders.values(), u64::MAX);
    assert_eq!((all["n0"], all["n1"]), (n0, n1));
    let early = health_at(w.s.orders.values(), first.seq - 1);
    assert!(early.is_empty(), "{early:?}");
    // The view carries the counters and the score.
    let v = w.stats(0).to_pb("n0", None).health.unwrap();
    assert_eq!((v.score, v.taken_on, v.releases), (500, 4, 1));
    assert_eq!(HealthCounters::from_pb(&v), n0);
}

#[test]
fn a_ruling_counts_against_the_party_it_names() {
    let mut w = World::with_rules(1, 3, 0);
    w.register("o1", 20);
    let c = w.claim(0, "o1", 100);
    let s = w.milestone(0, "o1", 100 + HOUR + 1, pb::Milestone::Shipped);
    let d = w.channel(
        200 + HOUR,
        Body::OpenDispute(pb::OpenDispute {
            order_id: "o1".into(),
            kind: pb::IncidentKind::Late as i32,
            incident_ms: 200 + HOUR,
            statement: String::new(),
            known_good_ms: 0,
            parcels: 0,
        }),
    );
    assert!(d.accepted);
    let ak = key(80);
    assert!(
        w.operator(
            200 + HOUR,
            Body::EnrollParty(pb::EnrollParty {
                party_id: "aud".into(),
                role: pb::Role::Auditor as i32,
                kind: 0,
                public_key: ak.verifying_key().to_bytes().to_vec(),
                channel_names: Vec::new(),
            }),
        )
        .accepted
    );
    let before = w.stats(0).health;
    let bytes = signed(
        &ak,
        "aud",
        9,
        Body::ResolveDispute(pb::ResolveDispute {
            order_id: "o1".into(),
            dispute_seq: d.seq,
            liable: "n0".into(),
            rule: Rule::LateDispatch.as_str().into(),
            evidence: vec![c.seq, s.seq],
        }),
    );
    let r = appended(w.s.apply(&bytes, 300 + HOUR, false));
    assert!(r.accepted, "{r:?}");
    let after = w.stats(0).health;
    assert_eq!(after.rulings_against, before.rulings_against + 1);
    // One late shipment and one ruling (weight 2): 1000 × 2 / 5.
    assert_eq!(health_score(&after), 400);
    assert_eq!(health_at(w.s.orders.values(), r.seq - 1)["n0"], before);
    assert_eq!(health_at(w.s.orders.values(), r.seq)["n0"], after);
}

#[test]
fn the_score_stays_in_range_for_hostile_counters() {
    assert_eq!(health_score(&HealthCounters::default()), MAX_HEALTH_SCORE);
    let max = HealthCounters {
        taken_on: u64::MAX,
        shipped: u64::MAX,
        on_time: u64::MAX,
        lapses: u64::MAX,
        releases: u64::MAX,
        declines: u64::MAX,
        fence_expiries: u64::MAX,
        damage_noted: u64::MAX,
        rulings_against: u64::MAX,
        reassigned: u64::MAX,
    };
    assert!(health_score(&max) <= MAX_HEALTH_SCORE);
    // More on time than shipped (not a state the fold makes): no underflow.
    let odd = HealthCounters {
        on_time: 5,
        ..Default::default()
    };
    assert_eq!(health_score(&odd), MAX_HEALTH_SCORE);
    let bad = HealthCounters {
        lapses: u64::MAX,
        ..Default::default()
    };
    assert_eq!(health_score(&bad), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The live state's counters after every entry equal the auditor's
    /// fold, as of that entry, over the orders an export's replay gives.
    #[test]
    fn the_health_fold_replays_identically_from_an_export(ops in proptest::collection::vec(op(), 0..80)) {
        let live = run_under(V3, &ops)?;
        let mut replay = MemState::default();
        for (i, e) in live.entries.iter().enumerate() {
            let Applied::Appended(r) = replay.apply(&e.command, e.time_ms, i == 0) else {
                return Err(TestCaseError::fail(format!("entry {i} not appended on replay")));
            };
            prop_assert_eq!(&r, e);
            // Live, entry by entry: the replayed state's counters.
            let folded = health_at(replay.orders.values(), e.seq);
            for (party, stats) in &replay.stats {
                let f = folded.get(party).copied().unwrap_or_default();
                prop_assert_eq!(stats.health, f, "{} at entry {}", party, e.seq);
            }
            for party in folded.keys() {
                prop_assert!(replay.stats.contains_key(party), "{} has no stats", party);
            }
        }
        // The export's final fold, and any earlier one, from the final state.
        for (party, stats) in &live.stats {
            prop_assert_eq!(stats.health, replay.stats[party].health);
        }
        let last = live.entries.len() as u64;
        for k in [0, last / 3, last / 2, last] {
            let from_final = health_at(live.orders.values(), k);
            let mut at_k = MemState::default();
            for (i, e) in live.entries.iter().take(k as usize + 1).enumerate() {
                at_k.apply(&e.command, e.time_ms, i == 0);
            }
            for (party, f) in &from_final {
                prop_assert_eq!(at_k.stats.get(party).map(|s| s.health).unwrap_or_default(), *f);
            }
        }
    }
}
