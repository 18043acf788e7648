//! Disputes: one worked example per responsibility rule (docs/disputes.md),
//! and the state machine accepts only the ruling the rules compute.

use ed25519_dalek::SigningKey;

use super::world::*;
use super::*;

impl World {
    fn auditor(&mut self) -> SigningKey {
        let k = key(80);
        if !self.s.parties.contains_key("aud") {
            let e = self.operator(
                14,
                Body::EnrollParty(pb::EnrollParty {
                    party_id: "aud".into(),
                    role: pb::Role::Auditor as i32,
                    kind: 0,
                    public_key: k.verifying_key().to_bytes().to_vec(),
                    channel_names: Vec::new(),
                }),
            );
            assert!(e.accepted);
        }
        k
    }

    fn open_dispute(&mut self, id: &str, kind: pb::IncidentKind, incident: u64, t: u64) -> Entry {
        let e = self.channel(
            t,
            Body::OpenDispute(pb::OpenDispute {
                order_id: id.into(),
                kind: kind as i32,
                incident_ms: incident,
                statement: "customer complaint".into(),
                known_good_ms: 0,
                parcels: 0,
            }),
        );
        assert!(e.accepted, "{e:?}");
        e
    }

    /// The ruling the rules compute for the dispute opened at `dispute`.
    fn ruling(&self, id: &str, dispute: u64) -> Ruling {
        let o = &self.s.orders[id];
        let d = o.disputes.iter().find(|d| d.seq == dispute).unwrap();
        rule_on(o, d)
    }

    fn resolve(
        &mut self,
        id: &str,
        dispute: u64,
        liable: &str,
        rule: Rule,
        evidence: Vec<u64>,
        t: u64,
    ) -> Entry {
        let k = self.auditor();
        let nonce = self.next_nonce();
        let bytes = signed(
            &k,
            "aud",
            nonce,
            Body::ResolveDispute(pb::ResolveDispute {
                order_id: id.into(),
                dispute_seq: dispute,
                liable: liable.into(),
                rule: rule.as_str().into(),
                evidence,
            }),
        );
        appended(self.s.apply(&bytes, t, false))
    }
}

fn assert_ruling(r: &Ruling, liable: &str, rule: Rule, evidence: &[u64]) {
    assert_eq!(
        (r.liable.as_str(), r.rule, r.evidence.as_slice()),
        (liable, rule, evidence),
        "{}",
        r.explanation
    );
}

#[test]
fn lost_in_transit_is_the_carriers() {
    let mut w = World::new(1);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let ship = w.milestone(0, "o1", 200, pb::Milestone::Shipped);
    let d = w.open_dispute("o1", pb::IncidentKind::Lost, 300, 400);
    assert_ruling(
        &w.ruling("o1", d.seq),
        "sf-express",
        Rule::CustodianAtIncident,
        &[ship.seq],
    );
    // Before shipping, the node held it by its claim.
    let d2 = w.open_dispute("o1", pb::IncidentKind::Lost, 150, 401);
    let claim_seq = w.s.orders["o1"].events[0].seq;
    assert_ruling(
        &w.ruling("o1", d2.seq),
        "n0",
        Rule::CustodianAtIncident,
        &[claim_seq],
    );
}

#[test]
fn a_clean_acceptance_presumes_good_condition_and_noted_damage_points_back() {
    let mut w = World::new(2);
    w.register("o1", 20);
    w.register("o2", 21);
    assert!(w.claim(0, "o1", 100).accepted);
    assert!(w.claim(0, "o2", 100).accepted);
    let f1 = w.offer(0, "o1", "n1", 110, 1000);
    let clean = w.accept(1, "o1", f1.seq, 120, false);
    let f2 = w.offer(0, "o2", "n1", 110, 1000);
    let noted = w.accept(1, "o2", f2.seq, 120, true);
    let d1 = w.open_dispute("o1", pb::IncidentKind::Damaged, 130, 140);
    assert_ruling(
        &w.ruling("o1", d1.seq),
        "n1",
        Rule::CleanAcceptance,
        &[clean.seq],
    );
    let d2 = w.open_dispute("o2", pb::IncidentKind::Damaged, 130, 140);
    assert_ruling(
        &w.ruling("o2", d2.seq),
        "n0",
        Rule::DamageNotedAtAcceptance,
        &[noted.seq],
    );
}

#[test]
fn delivered_without_proof_leaves_custody_with_the_carrier() {
    let mut w = World::new(1);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let ship = w.milestone(0, "o1", 200, pb::Milestone::Shipped);
    let delivered = w.node(
        0,
        300,
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o1".into(),
            milestone: pb::Milestone::Delivered as i32,
            ..Default::default()
        }),
    );
    assert!(delivered.accepted);
    let d = w.open_dispute("o1", pb::IncidentKind::Lost, 350, 400);
    assert_ruling(
        &w.ruling("o1", d.seq),
        "sf-express",
        Rule::DeliveredWithoutProof,
        &[ship.seq, delivered.seq],
    );
}

#[test]
fn late_is_a_lapse_or_a_dispatch_after_the_declared_time() {
    let mut w = World::new(2);
    w.register("o1", 20);
    w.register("o2", 21);
    w.register("o3", 22);
    // Leader time only moves forward, so the claims come first.
    let c1 = w.claim(0, "o1", 100);
    assert!(w.claim(0, "o2", 100).accepted);
    let c3 = w.claim(0, "o3", 100);
    // o2: shipped in time.
    let s2 = w.milestone(0, "o2", 200, pb::Milestone::Shipped);
    // o1: shipped after claim + dispatch time (inside the grace).
    let s1 = w.milestone(0, "o1", 100 + HOUR + 5, pb::Milestone::Shipped);
    // o3: the lease lapsed; n1 took it over.
    let lapse = w.claim(1, "o3", 100 + HOUR + GRACE + 1);
    assert!(lapse.accepted, "{lapse:?}");
    let t = 100 + 2 * HOUR;
    let d1 = w.open_dispute("o1", pb::IncidentKind::Late, t, t);
    assert_ruling(
        &w.ruling("o1", d1.seq),
        "n0",
        Rule::LateDispatch,
        &[c1.seq, s1.seq],
    );
    let d2 = w.open_dispute("o2", pb::IncidentKind::Late, t, t);
    assert_ruling(&w.ruling("o2", d2.seq), "", Rule::NoBreach, &[s2.seq]);
    let d3 = w.open_dispute("o3", pb::IncidentKind::Late, t, t);
    assert_ruling(
        &w.ruling("o3", d3.seq),
        "n0",
        Rule::LeaseLapsed,
        &[c3.seq, lapse.seq],
    );
}

#[test]
fn duplicate_processing_and_wrong_prices_are_whoever_did_them() {
    let mut w = World::new(2);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let rogue = w.milestone(1, "o1", 110, pb::Milestone::Picked);
    assert_eq!(rogue.code, Code::NotOwner.as_str());
    let wrong = w.node(
        1,
        120,
        Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o1".into(),
            price_version: 1,
            total: 1,
        }),
    );
    // Ownership is checked before price: an owned order answers already_owned.
    assert_eq!(wrong.code, Code::AlreadyOwned.as_str());
    w.register("o2", 130);
    let wrong = w.node(
        1,
        140,
        Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o2".into(),
            price_version: 1,
            total: 1,
        }),
    );
    assert_eq!(wrong.code, Code::PriceMismatch.as_str());
    let d = w.open_dispute("o1", pb::IncidentKind::DuplicateProcessing, 150, 150);
    assert_ruling(
        &w.ruling("o1", d.seq),
        "n1",
        Rule::MilestoneWithoutOwnership,
        &[rogue.seq],
    );
    let d = w.open_dispute("o2", pb::IncidentKind::PriceMismatch, 150, 150);
    assert_ruling(
        &w.ruling("o2", d.seq),
        "n1",
        Rule::WrongPriceQuoted,
        &[wrong.seq],
    );
}

#[test]
fn a_lapse_after_the_dispute_does_not_change_its_ruling() {
    let mut w = World::new(1);
    w.register("o1", 20);
    let c = w.claim(0, "o1", 100);
    let d = w.open_dispute("o1", pb::IncidentKind::Lost, 150, 200);
    let before = w.ruling("o1", d.seq);
    assert_ruling(&before, "n0", Rule::CustodianAtIncident, &[c.seq]);
    // Resolved after the lease ran out: the resolution records no lapse.
    let late = 100 + HOUR + GRACE + 10;
    let ok = w.resolve(
        "o1",
        d.seq,
        "n0",
        Rule::CustodianAtIncident,
        vec![c.seq],
        late,
    );
    assert!(ok.accepted, "{ok:?}");
    assert_eq!(w.s.stats["n0"].lapses, 0);
}

#[test]
fn the_state_machine_accepts_only_the_ruling_the_rules_compute() {
    let mut w = World::new(1);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let ship = w.milestone(0, "o1", 200, pb::Milestone::Shipped);
    let d = w.open_dispute("o1", pb::IncidentKind::Lost, 300, 400);
    // A node cannot rule.
    let bytes = signed(
        &w.nodes[0],
        "n0",
        77,
        Body::ResolveDispute(pb::ResolveDispute {
            order_id: "o1".into(),
            dispute_seq: d.seq,
            liable: "shop".into(),
            rule: Rule::CustodianAtIncident.as_str().into(),
            evidence: vec![ship.seq],
        }),
    );
    match w.s.apply(&bytes, 401, false) {
        Applied::Refused(r) => assert_eq!(r.kind(), RefusalKind::WrongRole),
        other => panic!("{other:?}"),
    }
    let bad = w.resolve(
        "o1",
        d.seq,
        "n0",
        Rule::CustodianAtIncident,
        vec![ship.seq],
        402,
    );
    rejected(
        &bad,
        Code::RulingMismatch,
        "the rules find sf-express liable",
    );
    rejected(
        &w.resolve(
            "o1",
            999,
            "sf-express",
            Rule::CustodianAtIncident,
            vec![ship.seq],
            403,
        ),
        Code::UnknownDispute,
        "999",
    );
    let ok = w.resolve(
        "o1",
        d.seq,
        "sf-express",
        Rule::CustodianAtIncident,
        vec![ship.seq],
        404,
    );
    assert!(ok.accepted, "{ok:?}");
    let rec = w.s.orders["o1"].disputes[0].ruling.clone().unwrap();
    assert_eq!((rec.liable.as_str(), rec.seq), ("sf-express", ok.seq));
    rejected(
        &w.resolve(
            "o1",
            d.seq,
            "sf-express",
            Rule::CustodianAtIncident,
            vec![ship.seq],
            405,
        ),
        Code::AlreadyResolved,
        "resolved at entry",
    );
    // An incident in the future is rejected.
    let e = w.channel(
        406,
        Body::OpenDispute(pb::OpenDispute {
            order_id: "o1".into(),
            kind: pb::IncidentKind::Lost as i32,
            incident_ms: 10_000,
            statement: String::new(),
            known_good_ms: 0,
            parcels: 0,
        }),
    );
    rejected(&e, Code::IncidentInFuture, "10000");
}

// Rules version 2: dispute windows and one ruling per incident.

/// Opens a dispute of `kind` over the window [good, bad] (good 0: the instant bad).
fn open_window(w: &mut World, kind: pb::IncidentKind, good: u64, bad: u64, t: u64) -> Entry {
    w.channel(
        t,
        Body::OpenDispute(pb::OpenDispute {
            order_id: "o1".into(),
            kind: kind as i32,
            incident_ms: bad,
            statement: "found on unboxing".into(),
            known_good_ms: good,
            parcels: 0,
        }),
    )
}

/// A version 2 world: n0 claims o1 at 100.
fn v2_claimed() -> (World, Entry) {
    let mut w = World::with_rules(2, 2, 0);
    w.register("o1", 20);
    let claim = w.claim(0, "o1", 100);
    assert!(claim.accepted);
    (w, claim)
}

#[test]
fn a_window_with_one_custodian_rules_against_it() {
    let (mut w, claim) = v2_claimed();
    let d = open_window(&mut w, pb::IncidentKind::Lost, 150, 300, 500);
    assert!(d.accepted, "{d:?}");
    assert_eq!(w.s.orders["o1"].disputes[0].window(), (150, 300));
    let r = w.ruling("o1", d.seq);
    assert_eq!(
        (r.liable.as_str(), r.rule, r.evidence),
        ("n0", Rule::CustodianAtIncident, vec![claim.seq])
    );
}

#[test]
fn a_clean_acceptance_in_the_window_narrows_it_to_the_receiver() {
    let (mut w, _) = v2_claimed();
    let offer = w.offer(0, "o1", "n1", 200, 10_000);
    let accept = w.accept(1, "o1", offer.seq, 300, false);
    assert!(accept.accepted);
    let d = open_window(&mut w, pb::IncidentKind::Damaged, 150, 400, 500);
    let r = w.ruling("o1", d.seq);
    assert_eq!(
        (r.liable.as_str(), r.rule, r.evidence),
        ("n1", Rule::CleanAcceptance, vec![accept.seq])
    );
}

#[test]
fn a_window_spanning_two_custodians_is_escalated_and_cannot_be_shopped() {
    let (mut w, claim) = v2_claimed();
    let ship = w.milestone(0, "o1", 200, pb::Milestone::Shipped);
    let delivered = w.milestone(0, "o1", 300, pb::Milestone::Delivered);
    assert!(ship.accepted && delivered.accepted);
    // Found damaged on unboxing at 400, after a delivery with proof: at the
    // instant nobody held it, but the window since 150 spans the node and
    // the carrier, with no countersigned acceptance between them.
    let d = open_window(&mut w, pb::IncidentKind::Damaged, 150, 400, 500);
    assert!(d.accepted, "{d:?}");
    let r = w.ruling("o1", d.seq);
    assert_eq!(
        (r.liable.as_str(), r.rule, r.evidence.clone()),
        ("", Rule::SharedCustody, vec![claim.seq, ship.seq])
    );
    // The worked example of docs/disputes.md §4.6.
    assert_eq!((claim.seq, ship.seq, d.seq), (7, 8, 10));
    assert_eq!(
        r.explanation,
        "order o1 was damaged between 150 and 400: n0, sf-express held it in that window \
         and no clean countersigned acceptance narrows it to one; escalated"
    );
    // As an instant at 400, nobody held it.
    let instant = Dispute {
        known_good_ms: 0,
        ..w.s.orders["o1"].disputes[0].clone()
    };
    assert_eq!(rule_on(&w.s.orders["o1"], &instant).rule, Rule::NoCustodian);
    // The escalated ruling is what a resolution must carry.
    let e = w.resolve("o1", d.seq, "", Rule::SharedCustody, r.evidence, 501);
    assert!(e.accepted, "{e:?}");
    // The same incident again, as an instant inside the window or an
    // overlapping window, is not another ruling.
    for (good, bad) in [(0, 160), (350, 450), (100, 150)] {
        rejected(
            &open_window(&mut w, pb::IncidentKind::Damaged, good, bad, 502),
            Code::DuplicateIncident,
            &format!("(entry {})", d.seq),
        );
    }
    // Another kind, or a window that does not overlap, is another incident.
    assert!(open_window(&mut w, pb::IncidentKind::Lost, 150, 400, 503).accepted);
    assert!(open_window(&mut w, pb::IncidentKind::Damaged, 120, 149, 504).accepted);
    // A window after the carrier took it: the carrier alone.
    let mut w2 = v2_claimed().0;
    let ship2 = w2.milestone(0, "o1", 200, pb::Milestone::Shipped);
    w2.milestone(0, "o1", 300, pb::Milestone::Delivered);
    let d2 = open_window(&mut w2, pb::IncidentKind::Damaged, 250, 400, 500);
    let r2 = w2.ruling("o1", d2.seq);
    assert_eq!(
        (r2.liable.as_str(), r2.rule, r2.evidence),
        ("sf-express", Rule::CustodianAtIncident, vec![ship2.seq])
    );
}

#[test]
fn version_2_has_one_dispute_per_untimed_kind() {
    let (mut w, _) = v2_claimed();
    assert!(open_window(&mut w, pb::IncidentKind::Late, 0, 200, 300).accepted);
    rejected(
        &open_window(&mut w, pb::IncidentKind::Late, 0, 250, 301),
        Code::DuplicateIncident,
        "one incident has one ruling",
    );
}

#[test]
fn version_1_has_no_windows_and_keeps_repeated_disputes() {
    let mut w = World::new(1);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    rejected(
        &open_window(&mut w, pb::IncidentKind::Lost, 150, 300, 500),
        Code::NotInRulesVersion,
        "need rules version 2",
    );
    assert!(open_window(&mut w, pb::IncidentKind::Lost, 0, 300, 501).accepted);
    assert!(open_window(&mut w, pb::IncidentKind::Lost, 0, 300, 502).accepted);
}

#[test]
fn a_malformed_window_is_refused() {
    let (mut w, _) = v2_claimed();
    for (kind, good, bad, why) in [
        (
            pb::IncidentKind::Lost,
            301,
            300,
            "is after its known-bad time",
        ),
        (pb::IncidentKind::Late, 100, 300, "only lost and damaged"),
    ] {
        let nonce = w.next_nonce();
        let bytes = signed(
            &w.ch,
            "shop",
            nonce,
            Body::OpenDispute(pb::OpenDispute {
                order_id: "o1".into(),
                kind: kind as i32,
                incident_ms: bad,
                statement: String::new(),
                known_good_ms: good,
                parcels: 0,
            }),
        );
        match w.s.apply(&bytes, 500, false) {
            Applied::Refused(r) => {
                assert_eq!(r.kind(), RefusalKind::Malformed);
                assert!(r.to_string().contains(why), "{r}");
            }
            other => panic!("{other:?}"),
        }
    }
}
