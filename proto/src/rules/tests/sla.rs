//! Rules version 3, SLA clocks and claim deadlines: `late` is judged
//! against the channel's ship-by and promised delivery as well as the
//! node's declared dispatch, from the node's first lease start, with the
//! unowned time the sourcer's (docs/disputes.md §4.3); a dispute opened
//! after its kind's claim deadline is rejected (§1). Each test is a worked
//! example of the docs.

use super::world::*;
use super::*;

const MIN: u64 = 60_000;

impl World {
    fn v3(nodes: u8) -> World {
        World::with_rules(nodes, 3, 0)
    }

    /// Registers `id` at `t` with ship-by `ship_by` and promised delivery `promised`.
    fn register_sla(&mut self, id: &str, t: u64, ship_by: u64, promised: u64) -> Entry {
        let mut o = order(id, &format!("m-{id}"), 500);
        o.ship_by_ms = ship_by;
        o.promised_delivery_ms = promised;
        self.register_with(o, t)
    }

    fn dispute_at(&mut self, id: &str, kind: pb::IncidentKind, t: u64) -> Entry {
        self.channel(
            t,
            Body::OpenDispute(pb::OpenDispute {
                order_id: id.into(),
                kind: kind as i32,
                incident_ms: t,
                statement: String::new(),
                known_good_ms: 0,
                parcels: 0,
            }),
        )
    }

    /// The ruling of a late dispute opened on `id` at `t`.
    fn late_ruling(&mut self, id: &str, t: u64) -> Ruling {
        let e = self.dispute_at(id, pb::IncidentKind::Late, t);
        assert!(e.accepted, "{e:?}");
        let o = &self.s.orders[id];
        rule_on(o, o.disputes.iter().find(|d| d.seq == e.seq).unwrap())
    }

    fn handoff(&mut self, from: usize, to: usize, id: &str, t: u64) -> Entry {
        let offer = self.offer(from, id, &format!("n{to}"), t, 1_000);
        assert!(offer.accepted, "{offer:?}");
        let e = self.accept(to, id, offer.seq, t, false);
        assert!(e.accepted, "{e:?}");
        e
    }
}

fn is(r: &Ruling, liable: &str, rule: Rule, evidence: &[u64]) {
    assert_eq!(
        (r.liable.as_str(), r.rule, r.evidence.as_slice()),
        (liable, rule, evidence),
        "{}",
        r.explanation
    );
}

#[test]
fn a_release_and_reclaim_does_not_restart_the_nodes_clock() {
    // Version 3: n0 claims at 100, releases at 200, claims again at 30 min
    // and ships at 1 h 10 min: within an hour of its second claim, not of
    // its first.
    let mut w = World::v3(1);
    w.register("o1", 20);
    let c1 = w.claim(0, "o1", 100);
    assert!(w.release(0, "o1", 200).accepted);
    assert!(w.claim(0, "o1", 30 * MIN).accepted);
    let s = w.milestone(0, "o1", 70 * MIN, pb::Milestone::Shipped);
    let r = w.late_ruling("o1", 80 * MIN);
    is(&r, "n0", Rule::LateDispatch, &[c1.seq, s.seq]);
    assert_eq!(
        r.explanation,
        format!("n0 took order o1 on at 100 and handed it to the carrier at {}, after its declared dispatch time of 3600000 ms", 70 * MIN)
    );
    // Version 2, the same entries: the second claim restarted the clock.
    let mut w = World::with_rules(1, 2, 0);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    assert!(w.release(0, "o1", 200).accepted);
    assert!(w.claim(0, "o1", 30 * MIN).accepted);
    let s = w.milestone(0, "o1", 70 * MIN, pb::Milestone::Shipped);
    let e = w.dispute_at("o1", pb::IncidentKind::Late, 80 * MIN);
    let o = &w.s.orders["o1"];
    assert!(o.sla.is_none());
    let r = rule_on(o, o.disputes.iter().find(|d| d.seq == e.seq).unwrap());
    is(&r, "", Rule::NoBreach, &[s.seq]);
}

#[test]
fn time_nobody_owned_the_order_is_the_sourcers() {
    // Ship-by 2 h. o1 waits unclaimed until 1 h 30 min; n0 (one hour of
    // dispatch) can no longer make the ship-by, and ships at 2 h 10 min,
    // within its own promise.
    let mut w = World::v3(2);
    let reg = w.register_sla("o1", 20, 2 * HOUR, 0);
    let c = w.claim(0, "o1", 90 * MIN);
    let s = w.milestone(0, "o1", 130 * MIN, pb::Milestone::Shipped);
    let r = w.late_ruling("o1", 140 * MIN);
    is(&r, "shop", Rule::SourcedLate, &[reg.seq, c.seq, s.seq]);
    assert_eq!(
        r.explanation,
        format!("order o1 was not taken on in time for its ship-by {}: it was sourceable from 20 (entry {}) and shop was sourcing it; it reached the carrier at {}", 2 * HOUR, reg.seq, 130 * MIN)
    );
    // o2: nobody owned it at the ship-by at all.
    let reg = w.register_sla("o2", 140 * MIN, 150 * MIN, 0);
    assert!(w.claim(0, "o2", 160 * MIN).accepted);
    let s = w.milestone(0, "o2", 170 * MIN, pb::Milestone::Shipped);
    let r = w.late_ruling("o2", 180 * MIN);
    is(&r, "shop", Rule::SourcedLate, &[reg.seq, s.seq]);
    // o3: ship-by 250 min; n0 claims at 181 min (its hour fits) and
    // releases at 182 min; n1 claims at 230 min, too late for its hour to
    // fit, and ships at 255 min: the unowned stretch from the release is
    // the sourcer's.
    w.register_sla("o3", 180 * MIN, 250 * MIN, 0);
    assert!(w.claim(0, "o3", 181 * MIN).accepted);
    let rel = w.release(0, "o3", 182 * MIN);
    assert!(rel.accepted);
    let c = w.claim(1, "o3", 230 * MIN);
    let s = w.milestone(1, "o3", 255 * MIN, pb::Milestone::Shipped);
    let r = w.late_ruling("o3", 260 * MIN);
    is(&r, "shop", Rule::SourcedLate, &[rel.seq, c.seq, s.seq]);
}

#[test]
fn a_node_that_could_make_the_ship_by_answers_for_handing_it_on_too_late() {
    // Ship-by 1 h 0 min 0.5 s. n0 claims at 100 (its hour fits), hands o1
    // to n1 at 1 h; n1's hour from there cannot make the ship-by, and n1
    // ships within its own promise at 1 h 0 min 0.7 s.
    let mut w = World::v3(2);
    let ship_by = HOUR + 500;
    w.register_sla("o1", 20, ship_by, 0);
    let c = w.claim(0, "o1", 100);
    w.handoff(0, 1, "o1", HOUR + 50);
    let s = w.milestone(1, "o1", HOUR + 700, pb::Milestone::Shipped);
    let r = w.late_ruling("o1", HOUR + 800);
    is(&r, "n0", Rule::MissedShipBy, &[c.seq, s.seq]);
    assert_eq!(
        r.explanation,
        format!("n0 took order o1 on at 100 with a declared dispatch time of 3600000 ms, in time for its ship-by {ship_by}, and it reached the carrier only at {}", HOUR + 700)
    );
}

#[test]
fn the_promised_delivery_is_the_target_without_a_ship_by_and_late_delivery_is_the_carriers() {
    let mut w = World::v3(1);
    // o1: promised in 2 h, shipped at 200, delivered at 2 h + 1: the carrier's.
    w.register_sla("o1", 20, 0, 2 * HOUR);
    assert!(w.claim(0, "o1", 100).accepted);
    let s = w.milestone(0, "o1", 200, pb::Milestone::Shipped);
    let d = w.milestone(0, "o1", 2 * HOUR + 1, pb::Milestone::Delivered);
    let r = w.late_ruling("o1", 2 * HOUR + 2);
    is(&r, "sf-express", Rule::LateDelivery, &[s.seq, d.seq]);
    assert_eq!(
        r.explanation,
        format!(
            "sf-express had order o1 from 200 and delivered it at {}, after the promised delivery {}",
            2 * HOUR + 1,
            2 * HOUR
        )
    );
    // o2: delivered at the promise itself: no breach.
    w.register_sla("o2", 2 * HOUR + 3, 0, 4 * HOUR);
    assert!(w.claim(0, "o2", 2 * HOUR + 4).accepted);
    let s = w.milestone(0, "o2", 2 * HOUR + 5, pb::Milestone::Shipped);
    assert!(
        w.milestone(0, "o2", 4 * HOUR, pb::Milestone::Delivered)
            .accepted
    );
    let r = w.late_ruling("o2", 4 * HOUR + 1);
    is(&r, "", Rule::NoBreach, &[s.seq]);
    // o3: promised 30 min after registering; n0's hour never fitted it, and
    // it handed over at 40 min: the sourcer's.
    let reg = w.register_sla("o3", 5 * HOUR, 0, 5 * HOUR + 30 * MIN);
    let c = w.claim(0, "o3", 5 * HOUR + MIN);
    let s = w.milestone(0, "o3", 5 * HOUR + 40 * MIN, pb::Milestone::Shipped);
    let r = w.late_ruling("o3", 6 * HOUR);
    is(&r, "shop", Rule::SourcedLate, &[reg.seq, c.seq, s.seq]);
    assert!(
        r.explanation.contains("for its promised delivery"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_lapse_is_still_judged_first() {
    let mut w = World::v3(2);
    w.register_sla("o1", 20, 2 * HOUR, 0);
    let c = w.claim(0, "o1", 100);
    let lapse = w.claim(1, "o1", 100 + HOUR + GRACE + 1);
    assert!(lapse.accepted);
    assert!(
        w.milestone(1, "o1", 100 + HOUR + GRACE + 2, pb::Milestone::Shipped)
            .accepted
    );
    let r = w.late_ruling("o1", 3 * HOUR);
    is(&r, "n0", Rule::LeaseLapsed, &[c.seq, lapse.seq]);
}

#[test]
fn a_ship_by_needs_version_3_and_may_not_follow_the_promise() {
    let mut w = World::with_rules(1, 2, 0);
    let mut o = order("o1", "m-o1", 500);
    o.ship_by_ms = 1_000;
    let e = w.channel(20, Body::RegisterOrder(o.clone()));
    rejected(
        &e,
        Code::NotInRulesVersion,
        "a ship-by needs rules version 3",
    );
    assert!(!w.s.orders.contains_key("o1"));
    // Hostile: a ship-by after the promise is refused outright.
    o.promised_delivery_ms = 999;
    let bytes = signed(&w.ch, "shop", 77, Body::RegisterOrder(o));
    let got = w.s.apply(&bytes, 21, false);
    assert!(
        matches!(&got, Applied::Refused(Refusal::Malformed(m)) if m.contains("after the promised delivery")),
        "{got:?}"
    );
    // Under version 3 the order records its terms and its clock's start.
    let mut w = World::v3(1);
    w.register_sla("o1", 20, 1_000, 2_000);
    let o = &w.s.orders["o1"];
    assert_eq!(
        o.sla,
        Some(crate::rules::sla::SlaTerms {
            sourceable_ms: 20,
            ship_by_ms: 1_000
        })
    );
    let v = o.to_pb(Vec::new(), 30);
    assert_eq!((v.ship_by_ms, v.sourceable_ms), (1_000, 20));
}

#[test]
fn a_dispute_after_its_kinds_claim_deadline_is_rejected_naming_it() {
    const DAY: u64 = 24 * HOUR;
    let mut w = World::v3(1);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    // Not shipped: no deadline runs.
    assert!(
        w.dispute_at("o1", pb::IncidentKind::PriceMismatch, 100)
            .accepted
    );
    let s = w.milestone(0, "o1", 200, pb::Milestone::Shipped);
    // Lost: 60 days from the hand-off while not delivered.
    let e = w.dispute_at("o1", pb::IncidentKind::Lost, 200 + 60 * DAY + 1);
    rejected(
        &e,
        Code::ClaimDeadlinePassed,
        &format!(
            "the claim deadline for lost disputes on order o1 passed at {}: {} ms after its hand-off to the carrier (entry {}); this entry is at {}",
            200 + 60 * DAY,
            60 * DAY,
            s.seq,
            200 + 60 * DAY + 1
        ),
    );
    // A fresh order, delivered: damaged runs 30 days from the delivery,
    // accepted at the deadline itself.
    w.register("o2", 200 + 60 * DAY + 2);
    let t0 = 200 + 60 * DAY + 3;
    assert!(w.claim(0, "o2", t0).accepted);
    assert!(w.milestone(0, "o2", t0, pb::Milestone::Shipped).accepted);
    let d = w.milestone(0, "o2", t0 + 10, pb::Milestone::Delivered);
    assert!(
        w.dispute_at("o2", pb::IncidentKind::Damaged, t0 + 10 + 30 * DAY)
            .accepted
    );
    let e = w.dispute_at("o2", pb::IncidentKind::Late, t0 + 10 + 30 * DAY + 1);
    rejected(
        &e,
        Code::ClaimDeadlinePassed,
        &format!("after its delivery (entry {})", d.seq),
    );
    // The operator records shorter deadlines: from its entry on.
    let t1 = t0 + 31 * DAY;
    let set = w.operator(
        t1,
        Body::SetRulesVersion(pb::SetRulesVersion {
            version: 3,
            fence_ms: 0,
            claim_deadlines: Some(pb::ClaimDeadlines {
                lost_ms: 1_000,
                ..Default::default()
            }),
        }),
    );
    assert!(set.accepted, "{set:?}");
    let c = w.s.config.clone().unwrap();
    assert_eq!(c.claim_deadlines.window(Incident::Lost), 1_000);
    assert_eq!(c.claim_deadlines.window(Incident::Damaged), 30 * DAY);
    w.register("o3", t1);
    assert!(w.claim(0, "o3", t1).accepted);
    assert!(w.milestone(0, "o3", t1, pb::Milestone::Shipped).accepted);
    assert!(
        w.dispute_at("o3", pb::IncidentKind::Lost, t1 + 1_000)
            .accepted
    );
    let e = w.dispute_at("o3", pb::IncidentKind::Lost, t1 + 1_001);
    rejected(&e, Code::ClaimDeadlinePassed, "1000 ms after");
}

#[test]
fn version_2_has_no_claim_deadlines_and_refuses_to_record_them() {
    let mut w = World::with_rules(1, 2, 0);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    assert!(w.milestone(0, "o1", 200, pb::Milestone::Shipped).accepted);
    assert!(
        w.dispute_at("o1", pb::IncidentKind::Lost, 400 * 24 * HOUR)
            .accepted
    );
    // Hostile: deadlines under version 2, or over the limit, are refused.
    for (version, ms) in [(2, 1_000), (3, MAX_CLAIM_DEADLINE_MS + 1)] {
        let bytes = signed(
            &w.op,
            "ops",
            500 + version as u64,
            Body::SetRulesVersion(pb::SetRulesVersion {
                version,
                fence_ms: 0,
                claim_deadlines: Some(pb::ClaimDeadlines {
                    late_ms: ms,
                    ..Default::default()
                }),
            }),
        );
        let got = w.s.apply(&bytes, 400 * 24 * HOUR, false);
        assert!(
            matches!(&got, Applied::Refused(Refusal::Malformed(m)) if m.contains("claim deadline")),
            "{got:?}"
        );
    }
}

#[test]
fn a_view_under_version_2_or_later_says_fenced_not_lapsed() {
    let mut w = World::v3(1);
    w.register("o1", 20);
    w.register("o2", 21);
    assert!(w.claim(0, "o1", 100).accepted);
    assert!(w.claim(0, "o2", 100).accepted);
    assert!(w.milestone(0, "o1", 200, pb::Milestone::Packed).accepted);
    let later = 100 + HOUR + GRACE + 1;
    let config = w.s.config.clone().unwrap();
    let packed = w.s.orders["o1"].to_pb_under(Vec::new(), later, &config);
    assert_eq!((packed.lease_lapsed, packed.lease_fenced), (false, true));
    let claimed = w.s.orders["o2"].to_pb_under(Vec::new(), later, &config);
    assert_eq!((claimed.lease_lapsed, claimed.lease_fenced), (true, false));
    // Version 1 lapses a packed order as any other.
    let v1 = ClusterConfig {
        rules_version: 1,
        ..config
    };
    let packed = w.s.orders["o1"].to_pb_under(Vec::new(), later, &v1);
    assert_eq!((packed.lease_lapsed, packed.lease_fenced), (true, false));
}
