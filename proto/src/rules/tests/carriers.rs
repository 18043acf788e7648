//! Rules version 3, carriers sign: custody passes to an enrolled carrier
//! only by its signed tender acceptance; proof of delivery is graded (the
//! recipient's one-time code, the carrier's signed scan, the node's word)
//! and the rulings say which grade they rest on. Hostile inputs: wrong
//! signers, forged carriers, replays, wrong and reused codes, oversized
//! fields. A property test over random carrier flows.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::world::*;
use super::*;
use crate::rules::carriers::delivery_code_hash;
use crate::rules::custody::{self, How, OrderEntry};

const CODE: &str = "K7Q2-M9XD-44AB";

/// Carrier "sf" (key 60) and "jd" (key 61).
fn carrier_key(name: &str) -> SigningKey {
    key(if name == "sf" { 60 } else { 61 })
}

impl World {
    /// A version 3 world with `nodes` nodes and the carriers sf and jd.
    fn with_carriers(nodes: u8) -> World {
        let mut w = World::with_rules(nodes, 3, 0);
        for name in ["sf", "jd"] {
            let e = w.enroll_carrier(name, 13);
            assert!(e.accepted, "{e:?}");
        }
        w
    }

    fn enroll_carrier(&mut self, name: &str, t: u64) -> Entry {
        self.operator(
            t,
            Body::EnrollParty(pb::EnrollParty {
                party_id: name.into(),
                role: pb::Role::Carrier as i32,
                kind: 0,
                public_key: carrier_key(name).verifying_key().to_bytes().to_vec(),
                channel_names: Vec::new(),
            }),
        )
    }

    fn carrier_apply(&mut self, name: &str, t: u64, body: Body) -> Applied {
        let nonce = self.next_nonce();
        let bytes = signed(&carrier_key(name), name, nonce, body);
        self.s.apply(&bytes, t, false)
    }

    fn carrier(&mut self, name: &str, t: u64, body: Body) -> Entry {
        appended(self.carrier_apply(name, t, body))
    }

    /// Registers `id` with the delivery code [`CODE`] registered.
    fn register_coded(&mut self, id: &str, t: u64) -> Entry {
        let mut o = order(id, &format!("m-{id}"), 500);
        o.delivery_code_sha256 = delivery_code_hash(id, CODE).to_vec();
        self.register_with(o, t)
    }

    fn tender(&mut self, n: usize, id: &str, carrier: &str, t: u64) -> Entry {
        self.node(
            n,
            t,
            Body::ReportMilestone(pb::ReportMilestone {
                order_id: id.into(),
                milestone: pb::Milestone::Shipped as i32,
                carrier: carrier.into(),
                tracking_id: "N-1".into(),
                tender: true,
                parcels: 2,
                ..Default::default()
            }),
        )
    }

    fn accept_body(id: &str, tender_seq: u64, damaged: bool) -> Body {
        Body::AcceptTender(pb::AcceptTender {
            order_id: id.into(),
            tender_seq,
            tracking_id: "SF-1".into(),
            parcels: 2,
            weight_grams: 1800,
            description: "2 boxes, sealed".into(),
            damaged,
            note: String::new(),
        })
    }

    fn sign_for(&mut self, carrier: &str, id: &str, tender_seq: u64, t: u64) -> Entry {
        self.carrier(carrier, t, World::accept_body(id, tender_seq, false))
    }

    fn scan(&mut self, carrier: &str, id: &str, tracking: &str, code: &str, t: u64) -> Entry {
        self.carrier(
            carrier,
            t,
            Body::ScanDelivery(pb::ScanDelivery {
                order_id: id.into(),
                tracking_id: tracking.into(),
                delivery_code: code.into(),
                note: "front desk".into(),
            }),
        )
    }

    fn delivered(&mut self, n: usize, id: &str, code: &str, t: u64) -> Entry {
        self.node(
            n,
            t,
            Body::ReportMilestone(pb::ReportMilestone {
                order_id: id.into(),
                milestone: pb::Milestone::Delivered as i32,
                proof_of_delivery: "pod/photo-1".into(),
                delivery_code: code.into(),
                ..Default::default()
            }),
        )
    }

    fn lost(&mut self, id: &str, incident: u64, t: u64) -> (Entry, Ruling) {
        let e = self.channel(
            t,
            Body::OpenDispute(pb::OpenDispute {
                order_id: id.into(),
                kind: pb::IncidentKind::Lost as i32,
                incident_ms: incident,
                statement: "never arrived".into(),
                known_good_ms: 0,
                parcels: 0,
            }),
        );
        assert!(e.accepted, "{e:?}");
        let o = &self.s.orders[id];
        let d = o.disputes.iter().find(|d| d.seq == e.seq).unwrap();
        let r = rule_on(o, d);
        (e, r)
    }

    /// n0 claimed `id` at 100 and tendered it to sf at 200.
    fn tendered(&mut self, id: &str, coded: bool) -> (Entry, Entry) {
        if coded {
            self.register_coded(id, 20);
        } else {
            self.register(id, 20);
        }
        let c = self.claim(0, id, 100);
        assert!(c.accepted, "{c:?}");
        let t = self.tender(0, id, "sf", 200);
        assert!(t.accepted, "{t:?}");
        (c, t)
    }
}

fn ruled(r: &Ruling, liable: &str, rule: Rule, evidence: &[u64]) {
    assert_eq!(
        (r.liable.as_str(), r.rule, r.evidence.as_slice()),
        (liable, rule, evidence),
        "{}",
        r.explanation
    );
}

/// The order as stored, without its history link (what a rejection must
/// leave unchanged).
fn unlinked(w: &World, id: &str) -> Order {
    Order {
        last_seq: 0,
        ..w.s.orders[id].clone()
    }
}

#[test]
fn a_carrier_is_enrolled_from_rules_version_3() {
    let mut w = World::with_rules(1, 2, 0);
    let e = w.enroll_carrier("sf", 13);
    rejected(
        &e,
        Code::NotInRulesVersion,
        "carrier parties need rules version 3",
    );
    assert!(!w.s.parties.contains_key("sf"));
    let mut w = World::with_carriers(1);
    assert_eq!(w.s.parties["sf"].role, pb::Role::Carrier as i32);
    // A carrier has no node kind.
    let nonce = w.next_nonce();
    let bytes = signed(
        &w.op,
        "ops",
        nonce,
        Body::EnrollParty(pb::EnrollParty {
            party_id: "ems".into(),
            role: pb::Role::Carrier as i32,
            kind: pb::NodeKind::Carrier as i32,
            public_key: key(62).verifying_key().to_bytes().to_vec(),
            channel_names: Vec::new(),
        }),
    );
    assert!(matches!(
        w.s.apply(&bytes, 14, false),
        Applied::Refused(Refusal::Malformed(m)) if m.contains("only node parties have a kind")
    ));
}

#[test]
fn custody_passes_to_the_carrier_only_when_it_signs_the_tender() {
    let mut w = World::with_carriers(1);
    let (claim, tender) = w.tendered("o1", false);
    let o = &w.s.orders["o1"];
    assert_eq!(o.status, OrderStatus::Shipped);
    // Pending: the node still holds the goods.
    assert_eq!(o.custodian.as_deref(), Some("n0"));
    let t = o.tender.as_ref().unwrap();
    assert_eq!(
        (t.carrier.as_str(), t.node.as_str(), t.seq, t.parcels),
        ("sf", "n0", tender.seq, 2)
    );
    assert!(t.accepted.is_none());
    assert_eq!((w.stats(0).shipped, w.stats(0).open_orders), (1, 0));
    let (_, r) = w.lost("o1", 250, 260);
    ruled(&r, "n0", Rule::CustodianAtIncident, &[claim.seq]);

    let a = w.sign_for("sf", "o1", tender.seq, 300);
    assert!(a.accepted, "{a:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(o.custodian.as_deref(), Some("sf"));
    assert_eq!((o.carrier.as_str(), o.tracking_id.as_str()), ("sf", "SF-1"));
    let acc = o.acceptance().unwrap();
    assert_eq!((acc.seq, acc.parcels, acc.weight_grams), (a.seq, 2, 1800));
    let view = o.to_pb(Vec::new(), 301);
    assert_eq!(
        (
            view.tender_carrier.as_str(),
            view.tender_seq,
            view.tender_accepted_seq,
            view.tender_parcels,
            view.received_parcels,
            view.received_weight_grams,
        ),
        ("sf", tender.seq, a.seq, 2, 2, 1800)
    );
    let (_, r) = w.lost("o1", 350, 360);
    ruled(&r, "sf", Rule::CarrierSignedTender, &[a.seq]);
    assert!(
        r.explanation.contains("signed the tender acceptance"),
        "{}",
        r.explanation
    );
}

#[test]
fn a_tender_names_an_enrolled_carrier() {
    let mut w = World::with_carriers(2);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let before = unlinked(&w, "o1");
    rejected(
        &w.tender(0, "o1", "ghost", 200),
        Code::UnknownParty,
        "party ghost is not enrolled",
    );
    rejected(
        &w.tender(0, "o1", "n1", 201),
        Code::NotACarrier,
        "enrolled as node, not as a carrier",
    );
    rejected(
        &w.tender(0, "o1", "shop", 202),
        Code::NotACarrier,
        "enrolled as channel",
    );
    // An enrolled carrier is never made custodian by the node's word.
    let e = w.node(
        0,
        203,
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o1".into(),
            milestone: pb::Milestone::Shipped as i32,
            carrier: "sf".into(),
            tracking_id: "N-1".into(),
            ..Default::default()
        }),
    );
    rejected(
        &e,
        Code::TenderRequired,
        "custody passes to it only by its signature",
    );
    assert_eq!(unlinked(&w, "o1"), before);
    assert_eq!(w.stats(0).shipped, 0);
    // A name that is no enrolled carrier is the unsigned hand-off of old.
    let e = w.milestone(0, "o1", 204, pb::Milestone::Shipped);
    assert!(e.accepted, "{e:?}");
    assert_eq!(w.s.orders["o1"].custodian.as_deref(), Some("sf-express"));
    assert!(w.s.orders["o1"].tender.is_none());
}

#[test]
fn hostile_acceptances_are_refused_and_change_nothing() {
    let mut w = World::with_carriers(1);
    w.register("o2", 21);
    assert!(w.claim(0, "o2", 100).accepted);
    // Not tendered.
    rejected(
        &w.sign_for("sf", "o2", 5, 150),
        Code::NoTender,
        "order o2 has no tender",
    );
    let (_, tender) = w.tendered("o1", false);
    let before = unlinked(&w, "o1");
    // Another carrier than the one named.
    let e = w.sign_for("jd", "o1", tender.seq, 300);
    rejected(
        &e,
        Code::NotTenderedToSigner,
        "order o1 is tendered to sf, not jd",
    );
    // The wrong tender.
    let e = w.sign_for("sf", "o1", tender.seq + 7, 301);
    rejected(
        &e,
        Code::TenderMismatch,
        &format!("is entry {}", tender.seq),
    );
    assert_eq!(unlinked(&w, "o1"), before);
    // A node (or anyone but a carrier) cannot sign one: refused outright.
    let nonce = w.next_nonce();
    let forged = signed(
        &w.nodes[0],
        "n0",
        nonce,
        World::accept_body("o1", tender.seq, false),
    );
    assert!(matches!(
        w.s.apply(&forged, 302, false),
        Applied::Refused(Refusal::WrongRole { .. })
    ));
    // A command claiming to be sf's but signed with another key: refused
    // at admission, where signatures are checked.
    let forged = signed(
        &carrier_key("jd"),
        "sf",
        nonce + 1,
        World::accept_body("o1", tender.seq, false),
    );
    assert!(matches!(
        admit(&w.s, &forged),
        Err(Refusal::BadSignature(_))
    ));
    assert_eq!(unlinked(&w, "o1"), before);
    // The real one, then its replay and a second acceptance.
    let nonce = w.next_nonce();
    let bytes = signed(
        &carrier_key("sf"),
        "sf",
        nonce,
        World::accept_body("o1", tender.seq, false),
    );
    let a = appended(w.s.apply(&bytes, 304, false));
    assert!(a.accepted, "{a:?}");
    assert!(matches!(w.s.apply(&bytes, 305, false), Applied::Duplicate(s) if s == a.seq));
    let after = unlinked(&w, "o1");
    let e = w.sign_for("sf", "o1", tender.seq, 306);
    rejected(
        &e,
        Code::TenderAlreadyAccepted,
        &format!("was accepted at entry {}", a.seq),
    );
    assert_eq!(unlinked(&w, "o1"), after);
}

#[test]
fn a_pending_tender_blocks_delivery_and_may_be_tendered_again() {
    let mut w = World::with_carriers(1);
    let (claim, tender) = w.tendered("o1", false);
    rejected(
        &w.delivered(0, "o1", "", 250),
        Code::TenderPending,
        "which has not signed for it",
    );
    rejected(
        &w.scan("sf", "o1", "SF-1", "", 251),
        Code::TenderPending,
        "not yet accepted",
    );
    // sf does not come: n0 tenders to jd instead.
    let again = w.tender(0, "o1", "jd", 260);
    assert!(again.accepted, "{again:?}");
    assert_eq!(
        w.stats(0).shipped,
        1,
        "a new tender is not a second shipment"
    );
    let e = w.sign_for("sf", "o1", tender.seq, 270);
    rejected(&e, Code::NotTenderedToSigner, "tendered to jd, not sf");
    let a = w.sign_for("jd", "o1", again.seq, 280);
    assert!(a.accepted, "{a:?}");
    // Once signed for, no more tenders: the carrier holds it.
    rejected(
        &w.tender(0, "o1", "sf", 290),
        Code::MilestoneOutOfOrder,
        "shipped",
    );
    let (_, r) = w.lost("o1", 285, 295);
    ruled(&r, "jd", Rule::CarrierSignedTender, &[a.seq]);
    let (_, r) = w.lost("o1", 265, 296);
    ruled(&r, "n0", Rule::CustodianAtIncident, &[claim.seq]);
}

#[test]
fn the_delivery_code_is_checked_once_against_the_registered_hash() {
    let mut w = World::with_carriers(1);
    let (_, tender) = w.tendered("o1", true);
    let a = w.sign_for("sf", "o1", tender.seq, 300);
    assert!(a.accepted);
    let before = unlinked(&w, "o1");
    rejected(
        &w.scan("sf", "o1", "SF-1", "WRONG-CODE-1", 400),
        Code::WrongDeliveryCode,
        "does not match the hash its channel registered",
    );
    rejected(
        &w.scan("sf", "o1", "SF-2", CODE, 401),
        Code::TrackingIdMismatch,
        "with tracking id SF-1, not SF-2",
    );
    rejected(
        &w.scan("jd", "o1", "SF-1", CODE, 402),
        Code::NotTenderedToSigner,
        "not jd",
    );
    // The node cannot present it while it holds nothing: the carrier does.
    assert_eq!(unlinked(&w, "o1"), before);
    let s = w.scan("sf", "o1", "SF-1", CODE, 403);
    assert!(s.accepted, "{s:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(
        (
            o.status,
            o.custodian.clone(),
            o.delivery_grade,
            o.delivery_code_used_seq
        ),
        (OrderStatus::Delivered, None, Some(Grade::Code), s.seq)
    );
    assert_eq!(w.stats(0).delivered, 1);
    // Reuse is refused, whoever presents it.
    rejected(
        &w.scan("sf", "o1", "SF-1", CODE, 404),
        Code::DeliveryCodeUsed,
        &format!("used at entry {}", s.seq),
    );
    rejected(
        &w.delivered(0, "o1", CODE, 405),
        Code::DeliveryCodeUsed,
        "good for one delivery",
    );
    let (_, r) = w.lost("o1", 500, 510);
    ruled(&r, "", Rule::DeliveredWithCode, &[s.seq]);
    assert!(
        r.explanation.contains("one-time delivery code"),
        "{}",
        r.explanation
    );
    // Before the delivery, the carrier that signed held it.
    let (_, r) = w.lost("o1", 350, 511);
    ruled(&r, "sf", Rule::CarrierSignedTender, &[a.seq]);
}

#[test]
fn the_node_may_present_the_code_and_needs_one_registered() {
    let mut w = World::with_carriers(1);
    let (_, tender) = w.tendered("o1", true);
    assert!(w.sign_for("sf", "o1", tender.seq, 300).accepted);
    rejected(
        &w.delivered(0, "o1", "WRONG-CODE-1", 400),
        Code::WrongDeliveryCode,
        "o1",
    );
    let d = w.delivered(0, "o1", CODE, 401);
    assert!(d.accepted, "{d:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(
        (o.custodian.clone(), o.delivery_grade),
        (None, Some(Grade::Code))
    );
    let (_, r) = w.lost("o1", 402, 403);
    ruled(&r, "", Rule::DeliveredWithCode, &[d.seq]);
    // No hash registered: no code to check.
    let (_, tender) = w.tendered("o2", false);
    assert!(w.sign_for("sf", "o2", tender.seq, 300).accepted);
    rejected(
        &w.scan("sf", "o2", "SF-1", CODE, 404),
        Code::NoDeliveryCode,
        "no delivery code registered",
    );
}

#[test]
fn the_nodes_word_does_not_end_a_signed_carriers_custody_but_its_scan_does() {
    let mut w = World::with_carriers(1);
    let (_, tender) = w.tendered("o1", false);
    let a = w.sign_for("sf", "o1", tender.seq, 300);
    let d = w.delivered(0, "o1", "", 400);
    assert!(d.accepted, "{d:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(o.status, OrderStatus::Delivered);
    assert_eq!(
        (o.custodian.as_deref(), o.delivery_grade),
        (Some("sf"), Some(Grade::Word))
    );
    let (_, r) = w.lost("o1", 450, 460);
    ruled(&r, "sf", Rule::DeliveredOnNodeWord, &[a.seq, d.seq]);
    // The worked example of docs/disputes.md §4.7 is this ledger.
    assert_eq!((tender.seq, a.seq, d.seq), (8, 9, 10));
    // The carrier ends its liability with its own signed scan.
    let s = w.scan("sf", "o1", "SF-1", "", 470);
    assert!(s.accepted, "{s:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(
        (o.custodian.clone(), o.delivery_grade),
        (None, Some(Grade::Scan))
    );
    assert_eq!(
        w.stats(0).delivered,
        1,
        "an upgraded proof is not a second delivery"
    );
    let (_, r) = w.lost("o1", 480, 490);
    ruled(&r, "", Rule::DeliveredByCarrierScan, &[a.seq, s.seq]);
    assert_eq!(s.seq, 12);
    assert_eq!(
        r.explanation,
        "order o1 lost at 480: it was delivered before, by sf's signed delivery scan (entry 12), so nobody in the chain held it"
    );
    let (_, r) = w.lost("o1", 350, 491);
    ruled(&r, "sf", Rule::CarrierSignedTender, &[a.seq]);
    assert_eq!(
        r.explanation,
        "order o1 lost at 350: sf held it as the carrier since it signed the tender acceptance"
    );
    // A scan cannot be repeated.
    rejected(
        &w.scan("sf", "o1", "SF-1", "", 495),
        Code::MilestoneOutOfOrder,
        "delivery scan can only follow",
    );
    // Without a signed tender, the node's proof ends custody as before.
    let mut w = World::with_carriers(1);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    assert!(w.milestone(0, "o1", 200, pb::Milestone::Shipped).accepted);
    assert!(w.milestone(0, "o1", 300, pb::Milestone::Delivered).accepted);
    let o = &w.s.orders["o1"];
    assert_eq!(
        (o.custodian.clone(), o.delivery_grade),
        (None, Some(Grade::Word))
    );
    let (_, r) = w.lost("o1", 400, 410);
    ruled(&r, "", Rule::NoCustodian, &[]);
}

#[test]
fn damage_noted_at_the_tender_points_to_the_node_and_late_counts_from_the_tender() {
    let mut w = World::with_carriers(1);
    let (claim, tender) = w.tendered("o1", false);
    let a = w.carrier("sf", 300, World::accept_body("o1", tender.seq, true));
    assert!(a.accepted, "{a:?}");
    assert!(w.s.orders["o1"].exceptions.contains(&(
        "damage_noted_at_tender".into(),
        "sf".into(),
        a.seq
    )));
    let e = w.channel(
        400,
        Body::OpenDispute(pb::OpenDispute {
            order_id: "o1".into(),
            kind: pb::IncidentKind::Damaged as i32,
            incident_ms: 350,
            statement: "crushed".into(),
            known_good_ms: 0,
            parcels: 0,
        }),
    );
    let o = &w.s.orders["o1"];
    let r = rule_on(o, o.disputes.iter().find(|d| d.seq == e.seq).unwrap());
    ruled(&r, "n0", Rule::DamageNotedAtTender, &[a.seq]);
    // Late: the tender is the node's hand-off, within its hour.
    let e = w.channel(
        401,
        Body::OpenDispute(pb::OpenDispute {
            order_id: "o1".into(),
            kind: pb::IncidentKind::Late as i32,
            incident_ms: 400,
            statement: "late".into(),
            known_good_ms: 0,
            parcels: 0,
        }),
    );
    let o = &w.s.orders["o1"];
    let r = rule_on(o, o.disputes.iter().find(|d| d.seq == e.seq).unwrap());
    ruled(&r, "", Rule::NoBreach, &[tender.seq]);
    let _ = claim;
}

#[test]
fn a_fenced_old_owner_may_tender() {
    let mut w = World::with_rules(1, 3, 2 * HOUR);
    assert!(w.enroll_carrier("sf", 13).accepted);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    assert!(w.milestone(0, "o1", 200, pb::Milestone::Packed).accepted);
    let rk = w.replica(300);
    let late = 100 + HOUR + GRACE + 1;
    assert!(w.sweep(&rk, "o1", late).accepted);
    assert_eq!(w.s.orders["o1"].status, OrderStatus::Fenced);
    let t = w.tender(0, "o1", "sf", late + 1);
    assert!(t.accepted, "{t:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(
        (o.status, o.custodian.as_deref()),
        (OrderStatus::Shipped, Some("n0"))
    );
    assert_eq!(w.stats(0).late_shipments, 1);
    assert!(w.sign_for("sf", "o1", t.seq, late + 2).accepted);
    assert_eq!(w.s.orders["o1"].custodian.as_deref(), Some("sf"));
}

#[test]
fn before_version_3_the_new_fields_are_rejected() {
    let mut w = World::with_rules(1, 2, 0);
    w.register("o2", 19);
    let mut o = order("o1", "m-o1", 500);
    o.delivery_code_sha256 = delivery_code_hash("o1", CODE).to_vec();
    let e = w.channel(20, Body::RegisterOrder(o));
    rejected(
        &e,
        Code::NotInRulesVersion,
        "delivery codes need rules version 3",
    );
    assert!(!w.s.orders.contains_key("o1"));
    w.register("o1", 21);
    assert!(w.claim(0, "o1", 100).accepted);
    let e = w.tender(0, "o1", "sf", 200);
    rejected(
        &e,
        Code::NotInRulesVersion,
        "need rules version 3; the rules are at version 2",
    );
    assert!(w.milestone(0, "o1", 201, pb::Milestone::Shipped).accepted);
    let e = w.delivered(0, "o1", CODE, 300);
    rejected(&e, Code::NotInRulesVersion, "need rules version 3");
    // A non-owner setting the new fields is still `not_owner`, on record.
    let e = w.node(
        0,
        250,
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o2".into(),
            milestone: pb::Milestone::Shipped as i32,
            carrier: "sf".into(),
            tracking_id: "N-1".into(),
            tender: true,
            ..Default::default()
        }),
    );
    rejected(&e, Code::NotOwner, "no owner");
    assert!(matches!(
        &w.s.orders["o2"].events[..],
        [Event { kind: EventKind::MilestoneWithoutOwnership { party }, .. }] if party == "n0"
    ));
    // Without the new fields, the old rules: proof ends custody, no grade.
    let e = w.milestone(0, "o1", 301, pb::Milestone::Delivered);
    assert!(e.accepted);
    let o = &w.s.orders["o1"];
    assert_eq!((o.custodian.clone(), o.delivery_grade), (None, None));
}

#[test]
fn oversized_and_malformed_carrier_fields_are_refused() {
    let mut w = World::with_carriers(1);
    let (_, tender) = w.tendered("o1", true);
    let cases: Vec<(Body, &str)> = vec![
        (
            Body::AcceptTender(pb::AcceptTender {
                description: "x".repeat(1025),
                ..match World::accept_body("o1", tender.seq, false) {
                    Body::AcceptTender(a) => a,
                    _ => unreachable!(),
                }
            }),
            "description is longer than",
        ),
        (
            Body::AcceptTender(pb::AcceptTender {
                parcels: 0,
                ..match World::accept_body("o1", tender.seq, false) {
                    Body::AcceptTender(a) => a,
                    _ => unreachable!(),
                }
            }),
            "at least one parcel",
        ),
        (
            Body::AcceptTender(pb::AcceptTender {
                parcels: 10_001,
                ..match World::accept_body("o1", tender.seq, false) {
                    Body::AcceptTender(a) => a,
                    _ => unreachable!(),
                }
            }),
            "over the limit",
        ),
        (
            Body::AcceptTender(pb::AcceptTender {
                tender_seq: 0,
                ..match World::accept_body("o1", tender.seq, false) {
                    Body::AcceptTender(a) => a,
                    _ => unreachable!(),
                }
            }),
            "tender seq is 0",
        ),
        (
            Body::AcceptTender(pb::AcceptTender {
                tracking_id: String::new(),
                ..match World::accept_body("o1", tender.seq, false) {
                    Body::AcceptTender(a) => a,
                    _ => unreachable!(),
                }
            }),
            "tracking id is empty",
        ),
        (
            Body::ScanDelivery(pb::ScanDelivery {
                order_id: "o1".into(),
                tracking_id: "SF-1".into(),
                delivery_code: "short".into(),
                note: String::new(),
            }),
            "codes have 8-64",
        ),
        (
            Body::ScanDelivery(pb::ScanDelivery {
                order_id: "o1".into(),
                tracking_id: "SF-1".into(),
                delivery_code: "x".repeat(65),
                note: String::new(),
            }),
            "codes have 8-64",
        ),
        (
            Body::ScanDelivery(pb::ScanDelivery {
                order_id: "o1".into(),
                tracking_id: "SF-1".into(),
                delivery_code: "with space 1".into(),
                note: String::new(),
            }),
            "printable ASCII",
        ),
    ];
    for (body, needle) in cases {
        match w.carrier_apply("sf", 300, body) {
            Applied::Refused(Refusal::Malformed(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{needle}: {other:?}"),
        }
    }
    let node_cases: Vec<(pb::ReportMilestone, &str)> = vec![
        (
            pb::ReportMilestone {
                order_id: "o1".into(),
                milestone: pb::Milestone::Packed as i32,
                tender: true,
                ..Default::default()
            },
            "tender belongs to the shipped milestone",
        ),
        (
            pb::ReportMilestone {
                order_id: "o1".into(),
                milestone: pb::Milestone::Shipped as i32,
                carrier: "sf".into(),
                tracking_id: "N-1".into(),
                parcels: 3,
                ..Default::default()
            },
            "parcels are stated with a tender only",
        ),
        (
            pb::ReportMilestone {
                order_id: "o1".into(),
                milestone: pb::Milestone::Picked as i32,
                delivery_code: CODE.into(),
                ..Default::default()
            },
            "delivery code belongs to the delivered milestone",
        ),
    ];
    for (m, needle) in node_cases {
        let nonce = w.next_nonce();
        let bytes = signed(&w.nodes[0], "n0", nonce, Body::ReportMilestone(m));
        match w.s.apply(&bytes, 300, false) {
            Applied::Refused(Refusal::Malformed(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{needle}: {other:?}"),
        }
    }
    let mut o = order("o9", "m-o9", 500);
    o.delivery_code_sha256 = vec![1; 31];
    let nonce = w.next_nonce();
    let bytes = signed(&w.ch, "shop", nonce, Body::RegisterOrder(o));
    assert!(matches!(
        w.s.apply(&bytes, 300, false),
        Applied::Refused(Refusal::Malformed(m)) if m.contains("expected 32")
    ));
}

/// The custody facts an auditor derives from the entries alone.
fn facts_from_entries(s: &MemState, id: &str) -> Vec<Event> {
    struct D {
        seq: u64,
        time_ms: u64,
        signer: String,
        accepted: bool,
        message: String,
        body: Option<Body>,
    }
    let decoded: Vec<D> = s
        .entries
        .iter()
        .filter(|e| e.order_id == id)
        .map(|e| {
            let env = pb::SignedCommand::decode(e.command.as_slice()).unwrap();
            let cmd = pb::Command::decode(env.command.as_slice()).unwrap();
            D {
                seq: e.seq,
                time_ms: e.time_ms,
                signer: env.signer,
                accepted: e.accepted,
                message: e.message.clone(),
                body: cmd.body,
            }
        })
        .collect();
    let views: Vec<OrderEntry<'_>> = decoded
        .iter()
        .map(|d| OrderEntry {
            seq: d.seq,
            time_ms: d.time_ms,
            signer: &d.signer,
            accepted: d.accepted,
            message: &d.message,
            body: d.body.as_ref(),
        })
        .collect();
    custody::facts(&views)
}

/// The stored facts as [`custody::facts`] can know them (no profile
/// versions, no rejection evidence).
fn comparable(s: &MemState, id: &str) -> Vec<Event> {
    s.orders[id]
        .events
        .iter()
        .filter_map(|e| {
            let kind = match &e.kind {
                EventKind::Claimed { node, .. } => EventKind::Claimed {
                    node: node.clone(),
                    profile_version: 0,
                    dispatch_time_ms: 0,
                },
                EventKind::HandedOff {
                    from, to, damaged, ..
                } => EventKind::HandedOff {
                    from: from.clone(),
                    to: to.clone(),
                    damaged: *damaged,
                    profile_version: 0,
                    dispatch_time_ms: 0,
                },
                EventKind::WrongPrice { .. } | EventKind::MilestoneWithoutOwnership { .. } => {
                    return None
                }
                other => other.clone(),
            };
            Some(Event { kind, ..e.clone() })
        })
        .collect()
}

#[test]
fn an_auditor_derives_the_same_custody_from_the_entries() {
    let mut w = World::with_carriers(1);
    let (claim, tender) = w.tendered("o1", true);
    let a = w.sign_for("sf", "o1", tender.seq, 300);
    let d = w.delivered(0, "o1", "", 400);
    let s = w.scan("sf", "o1", "SF-1", CODE, 500);
    assert!(a.accepted && d.accepted && s.accepted);
    assert_eq!(facts_from_entries(&w.s, "o1"), comparable(&w.s, "o1"));
    let decoded: Vec<(Entry, String, Option<Body>)> =
        w.s.entries
            .iter()
            .filter(|e| e.order_id == "o1")
            .map(|e| {
                let env = pb::SignedCommand::decode(e.command.as_slice()).unwrap();
                let cmd = pb::Command::decode(env.command.as_slice()).unwrap();
                (e.clone(), env.signer, cmd.body)
            })
            .collect();
    let views: Vec<OrderEntry<'_>> = decoded
        .iter()
        .map(|(e, signer, body)| OrderEntry {
            seq: e.seq,
            time_ms: e.time_ms,
            signer,
            accepted: e.accepted,
            message: &e.message,
            body: body.as_ref(),
        })
        .collect();
    let c = custody::intervals(&views);
    let spans: Vec<(&str, How, u64, Option<u64>)> = c
        .iter()
        .map(|i| {
            (
                i.holder.as_str(),
                i.how,
                i.from_seq,
                i.end.as_ref().map(|e| e.seq),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            ("n0", How::Claim, claim.seq, Some(a.seq)),
            ("sf", How::SignedTender, a.seq, Some(s.seq)),
        ]
    );
    assert_eq!(c[1].deliveries_without_proof, [d.seq]);
}

#[test]
fn a_carrier_ruling_is_accepted_only_as_computed() {
    let mut w = World::with_carriers(1);
    let (_, tender) = w.tendered("o1", false);
    let a = w.sign_for("sf", "o1", tender.seq, 300);
    let (dispute, r) = w.lost("o1", 350, 400);
    ruled(&r, "sf", Rule::CarrierSignedTender, &[a.seq]);
    let aud = key(80);
    assert!(
        w.operator(
            401,
            Body::EnrollParty(pb::EnrollParty {
                party_id: "aud".into(),
                role: pb::Role::Auditor as i32,
                kind: 0,
                public_key: aud.verifying_key().to_bytes().to_vec(),
                channel_names: Vec::new(),
            }),
        )
        .accepted
    );
    let resolve = |w: &mut World, liable: &str, rule: Rule| {
        let nonce = w.next_nonce();
        let bytes = signed(
            &aud,
            "aud",
            nonce,
            Body::ResolveDispute(pb::ResolveDispute {
                order_id: "o1".into(),
                dispute_seq: dispute.seq,
                liable: liable.into(),
                rule: rule.as_str().into(),
                evidence: vec![a.seq],
            }),
        );
        appended(w.s.apply(&bytes, 402, false))
    };
    // The node's word would have put it on the carrier too, but not by this rule.
    let e = resolve(&mut w, "sf", Rule::CustodianAtIncident);
    rejected(&e, Code::RulingMismatch, "under carrier_signed_tender");
    let e = resolve(&mut w, "sf", Rule::CarrierSignedTender);
    assert!(e.accepted, "{e:?}");
    // The carrier may open disputes itself.
    let e = w.carrier(
        "sf",
        403,
        Body::OpenDispute(pb::OpenDispute {
            order_id: "o1".into(),
            kind: pb::IncidentKind::Late as i32,
            incident_ms: 403,
            statement: "handed over late".into(),
            known_good_ms: 0,
            parcels: 0,
        }),
    );
    assert!(e.accepted, "{e:?}");
}

#[derive(Clone, Debug)]
enum CarrierOp {
    Tender { carrier: u8 },
    Accept { carrier: u8, right_seq: bool },
    Scan { carrier: u8, code: u8 },
    Deliver { code: u8 },
    Wait,
    Resend(usize),
}

fn carrier_op() -> impl Strategy<Value = CarrierOp> {
    let c = 0u8..3;
    prop_oneof![
        2 => c.clone().prop_map(|carrier| CarrierOp::Tender { carrier }),
        3 => (c.clone(), any::<bool>()).prop_map(|(carrier, right_seq)| CarrierOp::Accept { carrier, right_seq }),
        2 => (c.clone(), 0u8..3).prop_map(|(carrier, code)| CarrierOp::Scan { carrier, code }),
        2 => (0u8..3).prop_map(|code| CarrierOp::Deliver { code }),
        1 => Just(CarrierOp::Wait),
        1 => (0usize..32).prop_map(CarrierOp::Resend),
    ]
}

/// Carrier index 0 is sf, 1 jd, 2 the node n1 posing as one.
fn party(c: u8) -> (&'static str, SigningKey) {
    match c {
        0 => ("sf", carrier_key("sf")),
        1 => ("jd", carrier_key("jd")),
        _ => ("n1", key(11)),
    }
}

fn code_of(c: u8) -> String {
    match c {
        0 => String::new(),
        1 => CODE.to_string(),
        _ => "WRONG-CODE-1".to_string(),
    }
}

fn run_carriers(ops: &[CarrierOp]) -> Result<MemState, TestCaseError> {
    let mut w = World::with_carriers(2);
    w.register_coded("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let mut now = 200u64;
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let nonce = 50_000 + i as u64;
        let o = &w.s.orders["o1"];
        let tender_seq = o.tender.as_ref().map(|t| t.seq).unwrap_or(1);
        let bytes = match op {
            CarrierOp::Wait => {
                now += 1_000;
                continue;
            }
            CarrierOp::Resend(_) if sent.is_empty() => continue,
            CarrierOp::Resend(k) => sent[k % sent.len()].clone(),
            CarrierOp::Tender { carrier } => signed(
                &w.nodes[0],
                "n0",
                nonce,
                Body::ReportMilestone(pb::ReportMilestone {
                    order_id: "o1".into(),
                    milestone: pb::Milestone::Shipped as i32,
                    carrier: party(*carrier).0.into(),
                    tracking_id: "N-1".into(),
                    tender: true,
                    parcels: 1,
                    ..Default::default()
                }),
            ),
            CarrierOp::Accept { carrier, right_seq } => {
                let (name, k) = party(*carrier);
                let seq = if *right_seq {
                    tender_seq
                } else {
                    tender_seq + 1
                };
                signed(&k, name, nonce, World::accept_body("o1", seq, false))
            }
            CarrierOp::Scan { carrier, code } => {
                let (name, k) = party(*carrier);
                signed(
                    &k,
                    name,
                    nonce,
                    Body::ScanDelivery(pb::ScanDelivery {
                        order_id: "o1".into(),
                        tracking_id: "SF-1".into(),
                        delivery_code: code_of(*code),
                        note: String::new(),
                    }),
                )
            }
            CarrierOp::Deliver { code } => signed(
                &w.nodes[0],
                "n0",
                nonce,
                Body::ReportMilestone(pb::ReportMilestone {
                    order_id: "o1".into(),
                    milestone: pb::Milestone::Delivered as i32,
                    proof_of_delivery: "pod".into(),
                    delivery_code: code_of(*code),
                    ..Default::default()
                }),
            ),
        };
        sent.push(bytes.clone());
        now += 1;
        let before = w.s.orders["o1"].clone();
        let Applied::Appended(e) = w.s.apply(&bytes, now, false) else {
            continue;
        };
        let after = &w.s.orders["o1"];
        let signer = pb::SignedCommand::decode(e.command.as_slice())
            .unwrap()
            .signer;
        // Custody moves to a carrier only by that carrier's accepted acceptance.
        if after.custodian != before.custodian {
            if let Some(c) = after.custodian.as_deref().filter(|c| *c != "n0") {
                prop_assert!(e.accepted);
                prop_assert_eq!(c, signer.as_str());
                let acc = after.acceptance().expect("an acceptance");
                prop_assert_eq!(acc.seq, e.seq);
            }
        }
        // A signed carrier stops holding only by a scan or a code.
        if before.acceptance().is_some() && before.custodian.is_some() && after.custodian.is_none()
        {
            prop_assert!(matches!(
                after.delivery_grade,
                Some(Grade::Code | Grade::Scan)
            ));
        }
        // A rejection changes nothing but the history link.
        if !e.accepted {
            prop_assert_eq!(
                Order {
                    last_seq: 0,
                    ..after.clone()
                },
                Order {
                    last_seq: 0,
                    ..before
                }
            );
        }
        prop_assert_eq!(facts_from_entries(&w.s, "o1"), comparable(&w.s, "o1"));
    }
    Ok(w.s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn custody_passes_to_a_carrier_only_by_its_signature(ops in proptest::collection::vec(carrier_op(), 0..40)) {
        let s = run_carriers(&ops)?;
        // A replay of its entries gives them back byte for byte.
        let mut again = MemState::default();
        for (i, e) in s.entries.iter().enumerate() {
            let Applied::Appended(r) = again.apply(&e.command, e.time_ms, i == 0) else {
                return Err(TestCaseError::fail(format!("entry {i} not appended on replay")));
            };
            prop_assert_eq!(&r, e);
        }
    }
}

// ---------------------------------------------------------------------------
// Rules version 4: unsigned hand-offs stay with the node, tenders expire,
// parcels are compared, delivery code hashes are unique.
// ---------------------------------------------------------------------------

use crate::rules::carriers::{DEFAULT_TENDER_TIMEOUT_MS, MAX_TENDER_TIMEOUT_MS};

const DAY: u64 = 24 * 3_600_000;

impl World {
    /// A world at rules `version` with `nodes` nodes and the carriers sf and jd.
    fn carriers_at(nodes: u8, version: u32) -> World {
        let mut w = World::with_rules(nodes, version, 0);
        for name in ["sf", "jd"] {
            let e = w.enroll_carrier(name, 13);
            assert!(e.accepted, "{e:?}");
        }
        w
    }

    /// n0 reports `id` shipped (no tender) with `carrier`.
    fn ship_with(&mut self, id: &str, carrier: &str, t: u64) -> Entry {
        self.node(
            0,
            t,
            Body::ReportMilestone(pb::ReportMilestone {
                order_id: id.into(),
                milestone: pb::Milestone::Shipped as i32,
                carrier: carrier.into(),
                tracking_id: "VAN-7".into(),
                ..Default::default()
            }),
        )
    }

    fn tender_with(
        &mut self,
        id: &str,
        carrier: &str,
        parcels: u32,
        timeout: u64,
        t: u64,
    ) -> Entry {
        self.node(
            0,
            t,
            Body::ReportMilestone(pb::ReportMilestone {
                order_id: id.into(),
                milestone: pb::Milestone::Shipped as i32,
                carrier: carrier.into(),
                tracking_id: "N-1".into(),
                tender: true,
                parcels,
                tender_timeout_ms: timeout,
                ..Default::default()
            }),
        )
    }

    fn sign_parcels(
        &mut self,
        carrier: &str,
        id: &str,
        tender_seq: u64,
        parcels: u32,
        t: u64,
    ) -> Entry {
        let Body::AcceptTender(a) = World::accept_body(id, tender_seq, false) else {
            unreachable!()
        };
        self.carrier(
            carrier,
            t,
            Body::AcceptTender(pb::AcceptTender { parcels, ..a }),
        )
    }

    fn lost_parcels(&mut self, id: &str, incident: u64, parcels: u32, t: u64) -> Entry {
        self.channel(
            t,
            Body::OpenDispute(pb::OpenDispute {
                order_id: id.into(),
                kind: pb::IncidentKind::Lost as i32,
                incident_ms: incident,
                statement: "a parcel never arrived".into(),
                known_good_ms: 0,
                parcels,
            }),
        )
    }

    /// Enrols auditor "aud" (key 80).
    fn enroll_auditor(&mut self, t: u64) -> SigningKey {
        let aud = key(80);
        let e = self.operator(
            t,
            Body::EnrollParty(pb::EnrollParty {
                party_id: "aud".into(),
                role: pb::Role::Auditor as i32,
                kind: 0,
                public_key: aud.verifying_key().to_bytes().to_vec(),
                channel_names: Vec::new(),
            }),
        );
        assert!(e.accepted, "{e:?}");
        aud
    }

    #[allow(clippy::too_many_arguments)]
    fn resolve_as(
        &mut self,
        aud: &SigningKey,
        id: &str,
        dispute_seq: u64,
        liable: &str,
        rule: &str,
        evidence: &[u64],
        t: u64,
    ) -> Entry {
        let nonce = self.next_nonce();
        let bytes = signed(
            aud,
            "aud",
            nonce,
            Body::ResolveDispute(pb::ResolveDispute {
                order_id: id.into(),
                dispute_seq,
                liable: liable.into(),
                rule: rule.into(),
                evidence: evidence.to_vec(),
            }),
        );
        appended(self.s.apply(&bytes, t, false))
    }

    fn ruling_of(&self, id: &str, dispute: &Entry) -> Ruling {
        let o = &self.s.orders[id];
        rule_on(o, o.disputes.iter().find(|d| d.seq == dispute.seq).unwrap())
    }

    fn intervals_of(&self, id: &str) -> Vec<(String, How, u64, Option<u64>)> {
        let decoded: Vec<(Entry, String, Option<Body>)> = self
            .s
            .entries
            .iter()
            .filter(|e| e.order_id == id)
            .map(|e| {
                let env = pb::SignedCommand::decode(e.command.as_slice()).unwrap();
                let cmd = pb::Command::decode(env.command.as_slice()).unwrap();
                (e.clone(), env.signer, cmd.body)
            })
            .collect();
        let views: Vec<OrderEntry<'_>> = decoded
            .iter()
            .map(|(e, signer, body)| OrderEntry {
                seq: e.seq,
                time_ms: e.time_ms,
                signer,
                accepted: e.accepted,
                message: &e.message,
                body: body.as_ref(),
            })
            .collect();
        custody::intervals(&views)
            .into_iter()
            .map(|i| (i.holder, i.how, i.from_seq, i.end.map(|e| e.seq)))
            .collect()
    }
}

#[test]
fn v4_an_unsigned_hand_off_leaves_the_node_liable_until_delivery() {
    let mut w = World::carriers_at(1, 4);
    w.register("o1", 20);
    let claim = w.claim(0, "o1", 100);
    let ship = w.ship_with("o1", "city-van", 200);
    assert!(ship.accepted, "{ship:?}");
    assert_eq!((claim.seq, ship.seq), (7, 8), "as in docs/disputes.md §4.8");
    assert_eq!(
        ship.message,
        "unsigned hand-off: city-van is not an enrolled carrier, so n0 stays the custodian until delivery"
    );
    let o = &w.s.orders["o1"];
    assert_eq!(o.status, OrderStatus::Shipped);
    assert_eq!(o.custodian.as_deref(), Some("n0"));
    assert_eq!(o.carrier, "city-van", "the carrier's name is recorded");
    assert_eq!(w.stats(0).shipped, 1);
    let (_, r) = w.lost("o1", 250, 260);
    ruled(&r, "n0", Rule::UnsignedCarrierIsShippersAgent, &[ship.seq]);
    assert!(
        r.explanation
            .contains("city-van, which is not an enrolled carrier"),
        "{}",
        r.explanation
    );
    // Before shipping, the claim's custody as ever.
    let (_, r) = w.lost("o1", 150, 261);
    ruled(&r, "n0", Rule::CustodianAtIncident, &[claim.seq]);
    // A delivery without proof does not end it; with proof it does.
    let bare = w.node(
        0,
        300,
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o1".into(),
            milestone: pb::Milestone::Delivered as i32,
            ..Default::default()
        }),
    );
    assert!(bare.accepted, "{bare:?}");
    assert_eq!(bare.seq, 11, "as in docs/disputes.md §4.8");
    assert_eq!(w.s.orders["o1"].custodian.as_deref(), Some("n0"));
    let (_, r) = w.lost("o1", 310, 320);
    ruled(&r, "n0", Rule::UnsignedCarrierIsShippersAgent, &[ship.seq]);
    // The auditor derives the same custody from the entries alone.
    assert_eq!(facts_from_entries(&w.s, "o1"), comparable(&w.s, "o1"));
    assert_eq!(
        w.intervals_of("o1"),
        [
            ("n0".to_string(), How::Claim, claim.seq, Some(ship.seq)),
            ("n0".to_string(), How::ShippersAgent, ship.seq, None),
        ]
    );
    // An enrolled carrier still needs its signature.
    w.register("o2", 400);
    assert!(w.claim(0, "o2", 410).accepted);
    rejected(
        &w.ship_with("o2", "sf", 420),
        Code::TenderRequired,
        "only by its signature",
    );
}

#[test]
fn v4_a_delivery_with_proof_ends_the_nodes_custody_and_a_note_cannot_be_forged() {
    let mut w = World::carriers_at(1, 4);
    w.register("o1", 20);
    w.claim(0, "o1", 100);
    let ship = w.ship_with("o1", "city-van", 200);
    let d = w.delivered(0, "o1", "", 300);
    assert!(d.accepted, "{d:?}");
    assert_eq!(w.s.orders["o1"].custodian, None);
    let (_, r) = w.lost("o1", 350, 360);
    assert_eq!(
        (r.liable.as_str(), r.rule),
        ("", Rule::NoCustodian),
        "{}",
        r.explanation
    );
    assert_eq!(
        w.intervals_of("o1").last().map(|i| (i.1, i.2, i.3)),
        Some((How::ShippersAgent, ship.seq, Some(d.seq)))
    );
    // The note is read from accepted entries only and only whole.
    for bad in [
        "unsigned hand-off: city-van is not an enrolled carrier, so n0 stays the custodian",
        "unsigned hand-off:  is not an enrolled carrier, so n0 stays the custodian until delivery",
        "unsigned hand-off: a is not an enrolled carrier, so n 0 stays the custodian until delivery",
    ] {
        assert_eq!(custody::UnsignedNote::parse(bad), None, "{bad}");
    }
    let note = custody::UnsignedNote::parse(&ship.message).unwrap();
    assert_eq!(
        (note.carrier.as_str(), note.node.as_str()),
        ("city-van", "n0")
    );
    let rejected_entry = OrderEntry {
        seq: 9,
        time_ms: 9,
        signer: "n0",
        accepted: false,
        message: &ship.message,
        body: None,
    };
    assert_eq!(rejected_entry.unsigned(), None);
}

#[test]
fn v3_an_unsigned_hand_off_still_makes_the_name_the_custodian() {
    let mut w = World::carriers_at(1, 3);
    w.register("o1", 20);
    w.claim(0, "o1", 100);
    let ship = w.ship_with("o1", "city-van", 200);
    assert!(ship.accepted, "{ship:?}");
    assert_eq!(ship.message, "", "no note under version 3");
    assert_eq!(w.s.orders["o1"].custodian.as_deref(), Some("city-van"));
    let (_, r) = w.lost("o1", 250, 260);
    ruled(&r, "city-van", Rule::CustodianAtIncident, &[ship.seq]);
    assert_eq!(facts_from_entries(&w.s, "o1"), comparable(&w.s, "o1"));
    // The version 4 fields are not in version 3.
    rejected(
        &w.tender_with("o1", "sf", 1, 60_000, 300),
        Code::NotInRulesVersion,
        "tender timeouts need rules version 4",
    );
    rejected(
        &w.lost_parcels("o1", 250, 1, 310),
        Code::NotInRulesVersion,
        "parcels in a dispute need rules version 4",
    );
}

#[test]
fn v4_a_tender_expires_and_the_node_may_tender_again() {
    let mut w = World::carriers_at(1, 4);
    let (_, tender) = w.tendered("o1", false);
    let expires = 200 + DEFAULT_TENDER_TIMEOUT_MS;
    assert_eq!(
        w.s.orders["o1"].tender.as_ref().unwrap().expires_ms,
        expires
    );
    assert_eq!(
        w.s.orders["o1"].to_pb(Vec::new(), 201).tender_expires_ms,
        expires
    );
    let before = unlinked(&w, "o1");
    let e = w.sign_for("sf", "o1", tender.seq, expires + 1);
    rejected(
        &e,
        Code::TenderExpired,
        &format!(
            "the tender of order o1 (entry {}) expired at {expires} unsigned",
            tender.seq
        ),
    );
    assert_eq!(unlinked(&w, "o1"), before, "a rejection changes nothing");
    assert_eq!(w.s.orders["o1"].custodian.as_deref(), Some("n0"));
    // A replay of the same acceptance is the same command: its first outcome.
    let nonce = w.next_nonce();
    let bytes = signed(
        &carrier_key("sf"),
        "sf",
        nonce,
        World::accept_body("o1", tender.seq, false),
    );
    let first = appended(w.s.apply(&bytes, expires + 2, false));
    assert_eq!(first.code, "tender_expired");
    assert!(
        matches!(w.s.apply(&bytes, expires + 3, false), Applied::Duplicate(s) if s == first.seq)
    );
    // n0 tenders again, to jd, with its own timeout.
    let again = w.tender_with("o1", "jd", 2, 60_000, expires + 10);
    assert!(again.accepted, "{again:?}");
    assert_eq!(w.stats(0).shipped, 1, "not a second shipment");
    rejected(
        &w.sign_for("sf", "o1", tender.seq, expires + 20),
        Code::NotTenderedToSigner,
        "tendered to jd",
    );
    let a = w.sign_for("jd", "o1", again.seq, expires + 10 + 60_000);
    assert!(a.accepted, "at its deadline the tender still stands: {a:?}");
    assert_eq!(w.s.orders["o1"].custodian.as_deref(), Some("jd"));
    assert_eq!(w.s.orders["o1"].to_pb(Vec::new(), 0).tender_expires_ms, 0);
}

#[test]
fn v4_an_expired_tender_no_longer_blocks_the_nodes_own_delivery() {
    let mut w = World::carriers_at(1, 4);
    w.register("o1", 20);
    w.claim(0, "o1", 100);
    let t = w.tender_with("o1", "sf", 1, 1_000, 200);
    assert!(t.accepted, "{t:?}");
    rejected(
        &w.delivered(0, "o1", "", 1_200),
        Code::TenderPending,
        "has not signed for it",
    );
    let d = w.delivered(0, "o1", "", 1_201);
    assert!(d.accepted, "{d:?}");
    assert_eq!(w.s.orders["o1"].custodian, None);
    rejected(
        &w.sign_for("sf", "o1", t.seq, 1_300),
        Code::TenderExpired,
        "expired at 1200",
    );
}

#[test]
fn v3_a_tender_never_expires() {
    let mut w = World::carriers_at(1, 3);
    let (_, tender) = w.tendered("o1", false);
    assert_eq!(w.s.orders["o1"].tender.as_ref().unwrap().expires_ms, 0);
    let a = w.sign_for("sf", "o1", tender.seq, 200 + 30 * DAY);
    assert!(a.accepted, "{a:?}");
}

#[test]
fn v4_tender_timeouts_out_of_bounds_are_refused() {
    let mut w = World::carriers_at(1, 4);
    w.register("o1", 20);
    w.claim(0, "o1", 100);
    let cases = [
        (
            pb::ReportMilestone {
                order_id: "o1".into(),
                milestone: pb::Milestone::Shipped as i32,
                carrier: "sf".into(),
                tracking_id: "N-1".into(),
                tender: true,
                tender_timeout_ms: MAX_TENDER_TIMEOUT_MS + 1,
                ..Default::default()
            },
            "over the limit",
        ),
        (
            pb::ReportMilestone {
                order_id: "o1".into(),
                milestone: pb::Milestone::Shipped as i32,
                carrier: "city-van".into(),
                tracking_id: "N-1".into(),
                tender_timeout_ms: 60_000,
                ..Default::default()
            },
            "with a tender only",
        ),
    ];
    for (m, needle) in cases {
        let nonce = w.next_nonce();
        let bytes = signed(&w.nodes[0], "n0", nonce, Body::ReportMilestone(m));
        match w.s.apply(&bytes, 300, false) {
            Applied::Refused(Refusal::Malformed(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{needle}: {other:?}"),
        }
    }
    let ok = w.tender_with("o1", "sf", 1, MAX_TENDER_TIMEOUT_MS, 300);
    assert!(ok.accepted, "{ok:?}");
}

#[test]
fn v4_a_short_acceptance_puts_the_missing_parcels_on_the_shipper() {
    let mut w = World::carriers_at(1, 4);
    w.register("o1", 20);
    w.claim(0, "o1", 100);
    let t = w.tender_with("o1", "sf", 3, 0, 200);
    // The wrong carrier cannot sign, short or not.
    rejected(
        &w.sign_parcels("jd", "o1", t.seq, 1, 250),
        Code::NotTenderedToSigner,
        "not jd",
    );
    let a = w.sign_parcels("sf", "o1", t.seq, 2, 300);
    assert!(a.accepted, "{a:?}");
    assert_eq!((t.seq, a.seq), (8, 10), "as in docs/disputes.md §4.8");
    assert_eq!(
        a.message,
        format!(
            "sf signed for 2 of the 3 parcels tendered at entry {}",
            t.seq
        )
    );
    let o = &w.s.orders["o1"];
    assert_eq!(
        o.custodian.as_deref(),
        Some("sf"),
        "it signed, so it holds what it took"
    );
    assert!(o.exceptions.contains(&(
        "parcels_short_at_tender".to_string(),
        "sf".to_string(),
        a.seq
    )));
    // One parcel lost: the one sf never signed for.
    let d1 = w.lost_parcels("o1", 350, 1, 360);
    assert!(d1.accepted, "{d1:?}");
    let r = w.ruling_of("o1", &d1);
    ruled(&r, "n0", Rule::ParcelsShortAtTender, &[t.seq, a.seq]);
    assert!(
        r.explanation.contains("signed for 2 of the 3 parcels"),
        "{}",
        r.explanation
    );
    // Two lost: more than the shortfall, so the carrier's.
    let d2 = w.lost_parcels("o1", 370, 2, 380);
    let r = w.ruling_of("o1", &d2);
    ruled(&r, "sf", Rule::CarrierSignedTender, &[a.seq]);
    assert!(
        r.explanation
            .contains("no more than the 1 missing names n0"),
        "{}",
        r.explanation
    );
    // The whole order (no parcels named): the carrier's.
    let (_, r) = w.lost("o1", 390, 395);
    ruled(&r, "sf", Rule::CarrierSignedTender, &[a.seq]);
    // The auditor resolves with the computed ruling, and no other.
    let auditor = w.enroll_auditor(400);
    let wrong = w.resolve_as(
        &auditor,
        "o1",
        d1.seq,
        "sf",
        "carrier_signed_tender",
        &[a.seq],
        410,
    );
    rejected(&wrong, Code::RulingMismatch, "parcels_short_at_tender");
    let right = w.resolve_as(
        &auditor,
        "o1",
        d1.seq,
        "n0",
        "parcels_short_at_tender",
        &[t.seq, a.seq],
        420,
    );
    assert!(right.accepted, "{right:?}");
}

#[test]
fn v4_a_full_or_larger_acceptance_records_no_shortfall() {
    let mut w = World::carriers_at(1, 4);
    w.register("o1", 20);
    w.claim(0, "o1", 100);
    let t = w.tender_with("o1", "sf", 2, 0, 200);
    let a = w.sign_parcels("sf", "o1", t.seq, 3, 300);
    assert!(a.accepted, "{a:?}");
    assert!(
        a.message.contains("signed for 3 of the 2 parcels"),
        "{}",
        a.message
    );
    assert!(w.s.orders["o1"].exceptions.is_empty());
    let d = w.lost_parcels("o1", 350, 1, 360);
    ruled(
        &w.ruling_of("o1", &d),
        "sf",
        Rule::CarrierSignedTender,
        &[a.seq],
    );
    // Parcels belong to a lost dispute only.
    let nonce = w.next_nonce();
    let bytes = signed(
        &w.ch,
        "shop",
        nonce,
        Body::OpenDispute(pb::OpenDispute {
            order_id: "o1".into(),
            kind: pb::IncidentKind::Damaged as i32,
            incident_ms: 350,
            statement: String::new(),
            known_good_ms: 0,
            parcels: 1,
        }),
    );
    assert!(matches!(
        w.s.apply(&bytes, 400, false),
        Applied::Refused(Refusal::Malformed(m)) if m.contains("only a lost dispute names parcels")
    ));
}

#[test]
fn v3_a_short_acceptance_is_recorded_only() {
    let mut w = World::carriers_at(1, 3);
    w.register("o1", 20);
    w.claim(0, "o1", 100);
    let t = w.tender_with("o1", "sf", 3, 0, 200);
    let a = w.sign_parcels("sf", "o1", t.seq, 1, 300);
    assert!(a.accepted, "{a:?}");
    assert_eq!(a.message, "");
    assert!(w.s.orders["o1"].exceptions.is_empty());
    let (_, r) = w.lost("o1", 350, 360);
    ruled(&r, "sf", Rule::CarrierSignedTender, &[a.seq]);
}

#[test]
fn v4_a_delivery_code_hash_belongs_to_one_order() {
    let mut w = World::carriers_at(1, 4);
    let hash = delivery_code_hash("o1", CODE).to_vec();
    let first = w.register_coded("o1", 20);
    assert_eq!(
        w.s.delivery_codes.get(&hash).map(String::as_str),
        Some("o1")
    );
    let mut o2 = order("o2", "m-o2", 500);
    o2.delivery_code_sha256 = hash.clone();
    let e = w.channel(30, Body::RegisterOrder(o2.clone()));
    rejected(
        &e,
        Code::DeliveryCodeReused,
        "already registered for order o1",
    );
    assert!(!w.s.orders.contains_key("o2"));
    assert!(first.accepted);
    // Another hash is fine; an order without one is not indexed.
    o2.delivery_code_sha256 = delivery_code_hash("o2", CODE).to_vec();
    assert!(w.channel(40, Body::RegisterOrder(o2)).accepted);
    w.register("o3", 50);
    assert_eq!(w.s.delivery_codes.len(), 2);
}

#[test]
fn v3_delivery_code_hashes_are_not_indexed_nor_compared() {
    let mut w = World::carriers_at(1, 3);
    let hash = delivery_code_hash("o1", CODE).to_vec();
    w.register_coded("o1", 20);
    let mut o2 = order("o2", "m-o2", 500);
    o2.delivery_code_sha256 = hash.clone();
    assert!(w.channel(30, Body::RegisterOrder(o2)).accepted);
    assert!(w.s.delivery_codes.is_empty());
    // Raised to version 4: the index holds what is registered from then on.
    let up = w.operator(
        40,
        Body::SetRulesVersion(pb::SetRulesVersion {
            version: 4,
            fence_ms: 0,
            claim_deadlines: None,
        }),
    );
    assert!(up.accepted, "{up:?}");
    let mut o3 = order("o3", "m-o3", 500);
    o3.delivery_code_sha256 = hash.clone();
    assert!(w.channel(50, Body::RegisterOrder(o3.clone())).accepted);
    o3.order_id = "o4".into();
    o3.external_refs[0].external_id = "m-o4".into();
    rejected(
        &w.channel(60, Body::RegisterOrder(o3)),
        Code::DeliveryCodeReused,
        "already registered for order o3",
    );
}
