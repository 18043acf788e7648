//! Rules version 3, sourcing decisions: a broker (or the order's channel)
//! names the trigger, the candidates with their profile versions,
//! eligibility and scores, and the node selected; the rules recompute every
//! candidate's eligibility and reject a decision that disagrees. The
//! decision opens an assignment offer the selected node accepts or
//! declines; a decline or an expiry is the next trigger. Brokered orders
//! are taken on only through an assignment.

use proptest::prelude::*;

use super::world::*;
use super::*;
use crate::rules::custody::{self, OrderEntry};
use crate::rules::sourcing::{check_candidate, Trigger, HEADROOM, MAX_CANDIDATES};

const TTL: u64 = 60_000;

/// A version 3 world with a broker "bk" and nodes n0..n{nodes-1}.
fn world(nodes: u8) -> World {
    let mut w = World::with_rules(nodes, 3, 0);
    let e = w.operator(
        13,
        Body::EnrollParty(pb::EnrollParty {
            party_id: "bk".into(),
            role: pb::Role::Broker as i32,
            kind: 0,
            public_key: key(80).verifying_key().to_bytes().to_vec(),
            channel_names: Vec::new(),
        }),
    );
    assert!(e.accepted, "{e:?}");
    w
}

fn register_mode(w: &mut World, id: &str, mode: pb::SourcingMode, t: u64) -> Entry {
    let mut o = order(id, &format!("m-{id}"), 500);
    o.sourcing_mode = mode as i32;
    w.channel(t, Body::RegisterOrder(o))
}

fn brokered(w: &mut World, id: &str, t: u64) -> Entry {
    let e = register_mode(w, id, pb::SourcingMode::Brokered, t);
    assert!(e.accepted, "{e:?}");
    e
}

/// Every listed node as an honest broker sees it from the state.
fn candidates(w: &World, id: &str, nodes: &[&str]) -> Vec<pb::SourcingCandidate> {
    let o = &w.s.orders[id];
    nodes
        .iter()
        .map(|n| {
            let p = w.s.profile(n);
            let open = w.s.stats(n).unwrap_or_default().open_orders as i64;
            let headroom = p
                .as_ref()
                .map(|p| (p.max_open_orders as i64 - open).max(0))
                .unwrap_or(0);
            let why = match (w.s.party(n), check_eligible(&w.s, n, o)) {
                (None, _) => Code::UnknownParty.as_str(),
                (Some(p), _) if p.role != pb::Role::Node as i32 => Code::NotANode.as_str(),
                (_, Err((code, _))) => code.as_str(),
                (_, Ok(_)) if headroom <= 0 => Code::AtCapacity.as_str(),
                _ => "",
            };
            pb::SourcingCandidate {
                node: n.to_string(),
                profile_version: p.map(|p| p.version).unwrap_or(0),
                eligible: why.is_empty(),
                ineligible: why.into(),
                score: headroom * 10,
                components: vec![
                    pb::ScoreComponent {
                        name: HEADROOM.into(),
                        value: headroom,
                    },
                    pb::ScoreComponent {
                        name: "distance".into(),
                        value: 3,
                    },
                ],
                basis: String::new(),
            }
        })
        .collect()
}

/// The decision an honest broker makes now for `id`, selecting `selected`.
fn decision(w: &World, id: &str, nodes: &[&str], selected: &str, t: u64) -> pb::SourceOrder {
    let (trigger, seq) = w.s.orders[id]
        .awaiting_sourcing(t)
        .expect("awaits sourcing");
    pb::SourceOrder {
        order_id: id.into(),
        trigger: trigger.to_pb() as i32,
        trigger_seq: seq,
        policy: "reference".into(),
        policy_version: 1,
        candidates: candidates(w, id, nodes),
        selected: selected.into(),
        expires_in_ms: TTL,
    }
}

/// An honest decision for `id` made and applied at `t`.
fn decide_now(w: &mut World, id: &str, nodes: &[&str], selected: &str, t: u64) -> Entry {
    let d = decision(w, id, nodes, selected, t);
    source(w, d, t)
}

fn broker_cmd(w: &mut World, s: pb::SourceOrder) -> Vec<u8> {
    let nonce = w.next_nonce();
    signed(&key(80), "bk", nonce, Body::SourceOrder(s))
}

fn source(w: &mut World, s: pb::SourceOrder, t: u64) -> Entry {
    let bytes = broker_cmd(w, s);
    appended(w.s.apply(&bytes, t, false))
}

fn accept(w: &mut World, n: usize, id: &str, decision_seq: u64, t: u64) -> Entry {
    let o = &w.s.orders[id];
    let (price_version, total) = (o.price_version, o.total);
    w.node(
        n,
        t,
        Body::AcceptAssignment(pb::AcceptAssignment {
            order_id: id.into(),
            decision_seq,
            price_version,
            total,
        }),
    )
}

fn decline(w: &mut World, n: usize, id: &str, decision_seq: u64, t: u64, shortage: bool) -> Entry {
    w.node(
        n,
        t,
        Body::DeclineAssignment(pb::DeclineAssignment {
            order_id: id.into(),
            decision_seq,
            reason: "no picker on shift".into(),
            shortage,
        }),
    )
}

fn reassign(w: &mut World, id: &str, from: &str, t: u64) -> Entry {
    w.channel(
        t,
        Body::ReassignOrder(pb::ReassignOrder {
            order_id: id.into(),
            from: from.into(),
            reason: "stalled".into(),
        }),
    )
}

fn awaiting(w: &World, id: &str, t: u64) -> (Trigger, u64) {
    w.s.orders[id]
        .awaiting_sourcing(t)
        .expect("awaits sourcing")
}

#[test]
fn sourcing_commands_are_version_3_only() {
    let mut w = World::with_rules(2, 2, 0);
    let e = register_mode(&mut w, "o1", pb::SourcingMode::Brokered, 20);
    rejected(&e, Code::NotInRulesVersion, "rules version 3");
    let reg = w.register("o2", 21);
    let s = pb::SourceOrder {
        order_id: "o2".into(),
        trigger: pb::SourcingTrigger::Registered as i32,
        trigger_seq: reg.seq,
        policy: "reference".into(),
        policy_version: 1,
        candidates: candidates(&w, "o2", &["n0"]),
        selected: "n0".into(),
        expires_in_ms: TTL,
    };
    let e = w.channel(22, Body::SourceOrder(s));
    rejected(&e, Code::NotInRulesVersion, "SourceOrder");
    let e = w.node(
        0,
        23,
        Body::ReleaseOrder(pb::ReleaseOrder {
            order_id: "o2".into(),
            reason: "no stock".into(),
            shortage: true,
        }),
    );
    rejected(&e, Code::NotInRulesVersion, "shortage");
    // A v2 order has no sourcing record and its view shows none.
    let v = w.s.orders["o2"].to_pb(Vec::new(), 24);
    assert_eq!(
        (v.sourcing_mode.as_str(), v.awaiting_trigger.as_str()),
        ("", "")
    );
}

#[test]
fn a_brokered_order_is_taken_on_only_through_its_assignment() {
    let mut w = world(3);
    let reg = brokered(&mut w, "o1", 20);
    let v = w.s.orders["o1"].to_pb(Vec::new(), 21);
    assert_eq!(
        (
            v.sourcing_mode.as_str(),
            v.awaiting_trigger.as_str(),
            v.awaiting_trigger_seq
        ),
        ("brokered", "registered", reg.seq)
    );
    rejected(&w.claim(0, "o1", 21), Code::BrokeredOrder, "brokered");
    assert!(!claimable_by(&w.s, "n0", &w.s.orders["o1"], 21));
    let d = decision(&w, "o1", &["n0", "n1", "n2"], "n1", 22);
    let dec = source(&mut w, d, 22);
    assert!(dec.accepted, "{dec:?}");
    let v = w.s.orders["o1"].to_pb(Vec::new(), 23);
    let a = v.assignment.clone().unwrap();
    assert_eq!(
        (a.to.as_str(), a.decision_seq, a.expires_ms),
        ("n1", dec.seq, 22 + TTL)
    );
    assert_eq!(v.sourcing_decisions, vec![dec.seq]);
    assert_eq!(v.awaiting_trigger, "");
    // Others are refused while the assignment is live; a second decision too.
    rejected(
        &w.claim(0, "o1", 23),
        Code::AssignmentPending,
        "offered to n1",
    );
    assert!(claimable_by(&w.s, "n1", &w.s.orders["o1"], 23));
    assert!(!claimable_by(&w.s, "n2", &w.s.orders["o1"], 23));
    let again = decision_any(&w, "o1", 20);
    assert_eq!(again.trigger_seq, reg.seq);
    rejected(
        &source(&mut w, again, 24),
        Code::AssignmentPending,
        "decision",
    );
    rejected(
        &accept(&mut w, 0, "o1", dec.seq, 25),
        Code::NotAssignedToSigner,
        "n1",
    );
    rejected(
        &accept(&mut w, 1, "o1", dec.seq + 1, 25),
        Code::AssignmentMismatch,
        "decision",
    );
    let ok = accept(&mut w, 1, "o1", dec.seq, 26);
    assert!(ok.accepted, "{ok:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(
        (o.status, o.owner.as_deref()),
        (OrderStatus::Claimed, Some("n1"))
    );
    assert_eq!(o.sourcing.as_ref().unwrap().assignment, None);
    let st = w.stats(1);
    assert_eq!(
        (st.claims, st.assignments_accepted, st.open_orders),
        (1, 1, 1)
    );
    // Owned: a decision now is stale.
    let late = decision_any(&w, "o1", 20);
    rejected(
        &source(&mut w, late, 27),
        Code::StaleDecision,
        "claimed by n1",
    );
}

#[test]
fn the_assigned_nodes_claim_is_its_acceptance() {
    let mut w = world(2);
    brokered(&mut w, "o1", 20);
    let dec = decide_now(&mut w, "o1", &["n0", "n1"], "n0", 21);
    assert!(dec.accepted);
    let c = w.claim(0, "o1", 22);
    assert!(c.accepted, "{c:?}");
    assert_eq!(w.stats(0).assignments_accepted, 1);
    assert_eq!(w.s.orders["o1"].owner.as_deref(), Some("n0"));
}

#[test]
fn a_declined_order_is_sourced_again_and_a_replayed_decision_is_stale() {
    let mut w = world(3);
    brokered(&mut w, "o1", 20);
    let first = decision(&w, "o1", &["n0", "n1"], "n0", 21);
    let dec = source(&mut w, first.clone(), 21);
    assert!(dec.accepted);
    let no = decline(&mut w, 0, "o1", dec.seq, 22, false);
    assert!(no.accepted, "{no:?}");
    assert_eq!(w.stats(0).assignments_declined, 1);
    assert_eq!(awaiting(&w, "o1", 23), (Trigger::Declined, no.seq));
    // The first decision again (a new nonce): its trigger is spent.
    rejected(
        &source(&mut w, first, 23),
        Code::TriggerMismatch,
        "declined at entry",
    );
    // Answering the declined offer again finds none.
    rejected(
        &decline(&mut w, 0, "o1", dec.seq, 24, false),
        Code::NoAssignment,
        "no assignment",
    );
    let second = decide_now(&mut w, "o1", &["n0", "n1"], "n1", 25);
    assert!(second.accepted, "{second:?}");
    assert!(accept(&mut w, 1, "o1", second.seq, 26).accepted);
    let src = w.s.orders["o1"].sourcing.clone().unwrap();
    assert_eq!(src.decisions, vec![dec.seq, second.seq]);
    assert_eq!(src.declines, vec![(no.seq, false)]);
}

#[test]
fn an_offer_that_runs_out_is_the_next_trigger_and_counted_by_the_next_decision() {
    let mut w = world(2);
    brokered(&mut w, "o1", 20);
    let dec = decide_now(&mut w, "o1", &["n0", "n1"], "n0", 21);
    let after = 21 + TTL + 1;
    rejected(
        &accept(&mut w, 0, "o1", dec.seq, after),
        Code::AssignmentExpired,
        "ran out",
    );
    rejected(
        &decline(&mut w, 0, "o1", dec.seq, after, false),
        Code::AssignmentExpired,
        "ran out",
    );
    rejected(&w.claim(1, "o1", after), Code::BrokeredOrder, "brokered");
    assert_eq!(awaiting(&w, "o1", after), (Trigger::OfferExpired, dec.seq));
    let next = decide_now(&mut w, "o1", &["n0", "n1"], "n1", after);
    assert!(next.accepted, "{next:?}");
    assert_eq!(
        (
            w.stats(0).assignments_expired,
            w.stats(1).assignments_expired
        ),
        (1, 0)
    );
}

#[test]
fn forged_eligibility_is_rejected() {
    let mut w = world(3);
    // n2 serves another region; n1 is at capacity.
    w.publish(
        2,
        14,
        pb::PublishProfile {
            regions: vec!["cn-bj".into()],
            ..profile()
        },
    );
    w.publish(
        1,
        14,
        pb::PublishProfile {
            max_open_orders: 1,
            ..profile()
        },
    );
    w.register("busy", 15);
    assert!(w.claim(1, "busy", 16).accepted);
    brokered(&mut w, "o1", 20);
    let honest = decision(&w, "o1", &["n0", "n1", "n2"], "n0", 21);
    assert_eq!(honest.candidates[1].ineligible, "at_capacity");
    assert_eq!(honest.candidates[2].ineligible, "region_not_served");
    // n2 said eligible.
    let mut forged = honest.clone();
    forged.candidates[2].eligible = true;
    forged.candidates[2].ineligible.clear();
    rejected(
        &source(&mut w, forged, 21),
        Code::EligibilityMismatch,
        "candidate n2 is not eligible (region_not_served)",
    );
    // n0 said ineligible (hiding a better node).
    let mut hidden = honest.clone();
    hidden.candidates[0].eligible = false;
    hidden.candidates[0].ineligible = "at_capacity".into();
    hidden.selected = "n0".into();
    rejected(
        &source(&mut w, hidden, 21),
        Code::EligibilityMismatch,
        "candidate n0 is eligible",
    );
    // The wrong reason.
    let mut reason = honest.clone();
    reason.candidates[1].ineligible = "region_not_served".into();
    rejected(
        &source(&mut w, reason, 21),
        Code::EligibilityMismatch,
        "at_capacity",
    );
    // A stale profile version.
    let mut version = honest.clone();
    version.candidates[2].profile_version = 1;
    rejected(
        &source(&mut w, version, 21),
        Code::EligibilityMismatch,
        "profile in force is version 2",
    );
    // Headroom is recomputed from the ledger.
    let mut room = honest.clone();
    room.candidates[0].components[0].value = 1000;
    rejected(
        &source(&mut w, room, 21),
        Code::ScoreMismatch,
        "headroom is 100",
    );
    // Other components are the broker's assertion.
    let mut asserted = honest.clone();
    asserted.candidates[0].components[1].value = -7;
    asserted.candidates[0].score = 123_456;
    assert!(source(&mut w, asserted, 21).accepted);
}

#[test]
fn the_selected_node_must_be_an_eligible_candidate() {
    let mut w = world(3);
    w.publish(
        2,
        14,
        pb::PublishProfile {
            regions: vec!["cn-bj".into()],
            ..profile()
        },
    );
    brokered(&mut w, "o1", 20);
    let ineligible = decision(&w, "o1", &["n0", "n2"], "n2", 21);
    rejected(
        &source(&mut w, ineligible, 21),
        Code::SelectedNotEligible,
        "n2 is not an eligible",
    );
    let absent = decision(&w, "o1", &["n0"], "n1", 21);
    rejected(
        &source(&mut w, absent, 21),
        Code::SelectedNotEligible,
        "not among the candidates",
    );
    // Unknown parties and non-nodes are ineligible candidates.
    let odd = decision(&w, "o1", &["n0", "ghost", "shop"], "n0", 21);
    assert_eq!(
        odd.candidates
            .iter()
            .map(|c| c.ineligible.as_str())
            .collect::<Vec<_>>(),
        vec!["", "unknown_party", "not_a_node"]
    );
    assert!(source(&mut w, odd, 21).accepted);
}

#[test]
fn hostile_signers_and_oversized_decisions_are_refused_or_rejected() {
    let mut w = world(2);
    brokered(&mut w, "o1", 20);
    let d = decision(&w, "o1", &["n0"], "n0", 21);
    // A node signs a decision: refused, nothing appended.
    let nonce = w.next_nonce();
    let bytes = signed(&w.nodes[0], "n0", nonce, Body::SourceOrder(d.clone()));
    match w.s.apply(&bytes, 21, false) {
        Applied::Refused(Refusal::WrongRole { needed, .. }) => {
            assert_eq!(needed, "broker or channel")
        }
        other => panic!("{other:?}"),
    }
    // Another channel decides for shop's order.
    let other = key(81);
    let e = w.operator(
        21,
        Body::EnrollParty(pb::EnrollParty {
            party_id: "shop2".into(),
            role: pb::Role::Channel as i32,
            kind: 0,
            public_key: other.verifying_key().to_bytes().to_vec(),
            channel_names: Vec::new(),
        }),
    );
    assert!(e.accepted);
    let nonce = w.next_nonce();
    let bytes = signed(&other, "shop2", nonce, Body::SourceOrder(d.clone()));
    rejected(
        &appended(w.s.apply(&bytes, 22, false)),
        Code::NotOrderChannel,
        "registered by channel shop",
    );
    // Oversized and duplicated candidate lists are malformed.
    let mut big = d.clone();
    big.candidates = (0..=MAX_CANDIDATES)
        .map(|i| pb::SourcingCandidate {
            node: format!("x{i}"),
            ineligible: "unknown_party".into(),
            ..Default::default()
        })
        .collect();
    let bytes = broker_cmd(&mut w, big);
    assert!(
        matches!(w.s.apply(&bytes, 22, false), Applied::Refused(Refusal::Malformed(m)) if m.contains("more than 64"))
    );
    let mut twice = d.clone();
    twice.candidates.push(twice.candidates[0].clone());
    let bytes = broker_cmd(&mut w, twice);
    assert!(
        matches!(w.s.apply(&bytes, 22, false), Applied::Refused(Refusal::Malformed(m)) if m.contains("listed twice"))
    );
    let mut no_reason = d.clone();
    no_reason.candidates[0].eligible = false;
    let bytes = broker_cmd(&mut w, no_reason);
    assert!(matches!(
        w.s.apply(&bytes, 22, false),
        Applied::Refused(Refusal::Malformed(_))
    ));
    let mut bad_code = d.clone();
    bad_code.candidates[0].eligible = false;
    bad_code.candidates[0].ineligible = "too_far".into();
    let bytes = broker_cmd(&mut w, bad_code);
    assert!(
        matches!(w.s.apply(&bytes, 22, false), Applied::Refused(Refusal::Malformed(m)) if m.contains("not a rejection code"))
    );
    // The same bytes again are the same command, applied once.
    let bytes = broker_cmd(&mut w, d.clone());
    let first = appended(w.s.apply(&bytes, 23, false));
    assert!(first.accepted, "{first:?}");
    assert!(matches!(w.s.apply(&bytes, 24, false), Applied::Duplicate(s) if s == first.seq));
    // The order's own channel may decide (once the offer is answered).
    assert!(decline(&mut w, 0, "o1", first.seq, 25, false).accepted);
    let d2 = decision(&w, "o1", &["n0", "n1"], "n1", 26);
    let e = w.channel(26, Body::SourceOrder(d2));
    assert!(e.accepted, "{e:?}");
}

#[test]
fn triggers_name_the_entry_that_caused_them() {
    let mut w = world(2);
    let reg = w.register("o1", 20);
    assert_eq!(awaiting(&w, "o1", 21), (Trigger::Registered, reg.seq));
    // A race order: a claim supersedes a decision's offer.
    let dec = decide_now(&mut w, "o1", &["n0", "n1"], "n0", 21);
    assert!(dec.accepted);
    assert!(w.claim(1, "o1", 22).accepted);
    assert_eq!(w.s.orders["o1"].sourcing.as_ref().unwrap().assignment, None);
    // Released.
    let rel = w.release(1, "o1", 23);
    assert_eq!(awaiting(&w, "o1", 24), (Trigger::Released, rel.seq));
    // Shortage.
    assert!(w.claim(0, "o1", 25).accepted);
    let short = w.node(
        0,
        26,
        Body::ReleaseOrder(pb::ReleaseOrder {
            order_id: "o1".into(),
            reason: "out of stock".into(),
            shortage: true,
        }),
    );
    assert!(short.accepted, "{short:?}");
    assert_eq!(awaiting(&w, "o1", 27), (Trigger::Shortage, short.seq));
    // Lapsed (recorded by the sweep).
    assert!(w.claim(0, "o1", 28).accepted);
    let deadline = 28 + HOUR + GRACE;
    let rk = w.replica(deadline);
    let lapse = w.sweep(&rk, "o1", deadline + 1);
    assert!(lapse.accepted);
    assert_eq!(
        awaiting(&w, "o1", deadline + 2),
        (Trigger::Lapsed, lapse.seq)
    );
    // A decline reporting a shortage.
    let t = deadline + 3;
    let dec = decide_now(&mut w, "o1", &["n0", "n1"], "n1", t);
    let no = decline(&mut w, 1, "o1", dec.seq, t + 1, true);
    assert_eq!(awaiting(&w, "o1", t + 2), (Trigger::Shortage, no.seq));
    assert_eq!(
        w.s.orders["o1"].sourcing.as_ref().unwrap().declines,
        vec![(no.seq, true)]
    );
    // A decision naming a seq that does not exist, or the wrong trigger.
    let mut wrong = decision(&w, "o1", &["n0"], "n0", t + 3);
    wrong.trigger_seq = 9999;
    rejected(
        &source(&mut w, wrong, t + 3),
        Code::TriggerMismatch,
        "entry 9999",
    );
    let mut kind = decision(&w, "o1", &["n0"], "n0", t + 3);
    kind.trigger = pb::SourcingTrigger::Declined as i32;
    rejected(
        &source(&mut w, kind, t + 3),
        Code::TriggerMismatch,
        "awaits sourcing for trigger shortage",
    );
}

#[test]
fn the_channel_or_an_operator_reassigns_a_stalled_order() {
    let mut w = world(3);
    brokered(&mut w, "o1", 20);
    let dec = decide_now(&mut w, "o1", &["n0", "n1"], "n0", 21);
    rejected(
        &reassign(&mut w, "o1", "n1", 22),
        Code::ReassignMismatch,
        "offered to n0",
    );
    // The operator withdraws the live assignment.
    let op = w.operator(
        23,
        Body::ReassignOrder(pb::ReassignOrder {
            order_id: "o1".into(),
            from: "n0".into(),
            reason: "no answer".into(),
        }),
    );
    assert!(op.accepted, "{op:?}");
    assert_eq!(awaiting(&w, "o1", 24), (Trigger::Reassigned, op.seq));
    rejected(
        &accept(&mut w, 0, "o1", dec.seq, 24),
        Code::NoAssignment,
        "no assignment",
    );
    // The next node accepts and stalls; the channel takes it back.
    let dec = decide_now(&mut w, "o1", &["n0", "n1"], "n1", 25);
    assert!(accept(&mut w, 1, "o1", dec.seq, 26).accepted);
    assert_eq!(w.stats(1).open_orders, 1);
    let back = reassign(&mut w, "o1", "n1", 27);
    assert!(back.accepted, "{back:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(
        (o.status, o.owner.clone(), o.custodian.clone()),
        (OrderStatus::Open, None, None)
    );
    assert_eq!(w.stats(1).open_orders, 0);
    assert_eq!(awaiting(&w, "o1", 28), (Trigger::Reassigned, back.seq));
    // Work in progress is not reassigned.
    let dec = decide_now(&mut w, "o1", &["n2"], "n2", 29);
    assert!(accept(&mut w, 2, "o1", dec.seq, 30).accepted);
    assert!(w.milestone(2, "o1", 31, pb::Milestone::Picked).accepted);
    rejected(
        &reassign(&mut w, "o1", "n2", 32),
        Code::WorkInProgress,
        "picked by n2",
    );
    // Custody as an auditor computes it from the entries: n1 from its
    // acceptance to the reassignment, then n2.
    let decoded: Vec<_> =
        w.s.entries
            .iter()
            .filter(|e| e.order_id == "o1")
            .map(|e| (e, decode(&e.command).unwrap()))
            .collect();
    let entries: Vec<OrderEntry<'_>> = decoded
        .iter()
        .map(|(e, a)| OrderEntry {
            seq: e.seq,
            time_ms: e.time_ms,
            signer: &a.envelope.signer,
            accepted: e.accepted,
            message: &e.message,
            body: a.command.body.as_ref(),
        })
        .collect();
    let spans: Vec<_> = custody::intervals(&entries)
        .into_iter()
        .map(|i| (i.holder, i.end.map(|e| e.seq)))
        .collect();
    assert_eq!(
        spans,
        vec![("n1".to_string(), Some(back.seq)), ("n2".to_string(), None)]
    );
    let facts: Vec<_> = custody::facts(&entries)
        .into_iter()
        .map(|e| e.seq)
        .collect();
    let stored: Vec<_> = w.s.orders["o1"].events.iter().map(|e| e.seq).collect();
    assert_eq!(facts, stored);
}

#[test]
fn another_channel_may_not_reassign() {
    let mut w = world(1);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 21).accepted);
    let nonce = w.next_nonce();
    let bytes = signed(
        &w.nodes[0],
        "n0",
        nonce,
        Body::ReassignOrder(pb::ReassignOrder {
            order_id: "o1".into(),
            from: "n0".into(),
            reason: "mine".into(),
        }),
    );
    assert!(matches!(
        w.s.apply(&bytes, 22, false),
        Applied::Refused(Refusal::WrongRole { .. })
    ));
}

// ---------------------------------------------------------------------------
// Property: decisions only select eligible nodes
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Register {
        order: u8,
        brokered: bool,
    },
    Decide {
        order: u8,
        selected: u8,
        forge: u8,
    },
    Accept {
        node: u8,
        order: u8,
    },
    Decline {
        node: u8,
        order: u8,
    },
    Claim {
        node: u8,
        order: u8,
    },
    Release {
        node: u8,
        order: u8,
    },
    Ship {
        node: u8,
        order: u8,
    },
    Profile {
        node: u8,
        region: bool,
        capacity: u8,
    },
    /// From `NODES[from]`, or nobody (4).
    Reassign {
        order: u8,
        from: u8,
    },
    Wait,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3u8, any::<bool>()).prop_map(|(order, brokered)| Op::Register { order, brokered }),
        4 => (0..3u8, 0..4u8, 0..6u8).prop_map(|(order, selected, forge)| Op::Decide {
            order,
            selected,
            forge
        }),
        1 => (0..4u8, 0..3u8).prop_map(|(node, order)| Op::Accept { node, order }),
        1 => (0..4u8, 0..3u8).prop_map(|(node, order)| Op::Decline { node, order }),
        1 => (0..4u8, 0..3u8).prop_map(|(node, order)| Op::Claim { node, order }),
        1 => (0..4u8, 0..3u8).prop_map(|(node, order)| Op::Release { node, order }),
        1 => (0..4u8, 0..3u8).prop_map(|(node, order)| Op::Ship { node, order }),
        1 => (0..4u8, any::<bool>(), 1..3u8).prop_map(|(node, region, capacity)| Op::Profile {
            node,
            region,
            capacity
        }),
        1 => (0..3u8, 0..5u8).prop_map(|(order, from)| Op::Reassign { order, from }),
        1 => Just(Op::Wait),
    ]
}

const NODES: [&str; 4] = ["n0", "n1", "n2", "n3"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decisions_only_select_eligible_nodes(ops in proptest::collection::vec(op(), 0..60)) {
        check_decisions(3, ops)?;
    }

    /// Version 4: also every accepted decision lists every eligible node,
    /// and the health fold (declines and reassignments included) replays
    /// identically.
    #[test]
    fn version_4_decisions_list_every_eligible_node_and_health_replays(
        ops in proptest::collection::vec(op(), 0..60)
    ) {
        check_decisions(4, ops)?;
    }
}

fn check_decisions(version: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    {
        let mut w = world_at(4, version);
        let mut t = 1_000u64;
        for op in ops {
            t += 7_000;
            let id = |o: u8| format!("o{o}");
            let e = match op {
                Op::Register { order, brokered } => {
                    if w.s.orders.contains_key(&id(order)) {
                        continue;
                    }
                    let mode = if brokered {
                        pb::SourcingMode::Brokered
                    } else {
                        pb::SourcingMode::Race
                    };
                    register_mode(&mut w, &id(order), mode, t)
                }
                Op::Decide {
                    order,
                    selected,
                    forge,
                } => {
                    let oid = id(order);
                    if !w.s.orders.contains_key(&oid) {
                        continue;
                    }
                    let mut d = match w.s.orders[&oid].awaiting_sourcing(t) {
                        Ok(_) => decision(&w, &oid, &NODES, NODES[selected as usize], t),
                        Err(_) => {
                            let mut d = decision_any(&w, &oid, t);
                            d.selected = NODES[selected as usize].into();
                            d
                        }
                    };
                    match forge {
                        0 => {
                            d.candidates[selected as usize].eligible ^= true;
                            d.candidates[selected as usize].ineligible =
                                if d.candidates[selected as usize].eligible {
                                    String::new()
                                } else {
                                    "at_capacity".into()
                                };
                        }
                        1 => d.candidates[selected as usize].profile_version += 1,
                        2 => d.trigger_seq += 1,
                        // Omits a candidate (hostile under version 4 when
                        // it is eligible).
                        3 if d.candidates.len() > 1 => {
                            let i = (selected as usize + 1) % d.candidates.len();
                            d.candidates.remove(i);
                        }
                        _ => {}
                    }
                    source(&mut w, d, t)
                }
                Op::Reassign { order, from } => {
                    let oid = id(order);
                    if !w.s.orders.contains_key(&oid) {
                        continue;
                    }
                    let from = if from == 4 {
                        String::new()
                    } else {
                        NODES[from as usize].to_string()
                    };
                    reassign(&mut w, &oid, &from, t)
                }
                Op::Accept { node, order } => {
                    let oid = id(order);
                    let Some(o) = w.s.orders.get(&oid) else {
                        continue;
                    };
                    let seq = o
                        .sourcing
                        .as_ref()
                        .and_then(|s| s.assignment.as_ref())
                        .map(|a| a.decision_seq)
                        .unwrap_or(1);
                    accept(&mut w, node as usize, &oid, seq, t)
                }
                Op::Decline { node, order } => {
                    let oid = id(order);
                    let Some(o) = w.s.orders.get(&oid) else {
                        continue;
                    };
                    let seq = o
                        .sourcing
                        .as_ref()
                        .and_then(|s| s.assignment.as_ref())
                        .map(|a| a.decision_seq)
                        .unwrap_or(1);
                    decline(&mut w, node as usize, &oid, seq, t, node == 0)
                }
                Op::Claim { node, order } => {
                    if !w.s.orders.contains_key(&id(order)) {
                        continue;
                    }
                    w.claim(node as usize, &id(order), t)
                }
                Op::Release { node, order } => {
                    if !w.s.orders.contains_key(&id(order)) {
                        continue;
                    }
                    w.release(node as usize, &id(order), t)
                }
                Op::Ship { node, order } => {
                    if !w.s.orders.contains_key(&id(order)) {
                        continue;
                    }
                    w.milestone(node as usize, &id(order), t, pb::Milestone::Shipped)
                }
                Op::Profile {
                    node,
                    region,
                    capacity,
                } => w.node(
                    node as usize,
                    t,
                    Body::PublishProfile(pb::PublishProfile {
                        regions: vec![if region { "cn-sh" } else { "cn-bj" }.into()],
                        max_open_orders: capacity as u32,
                        ..profile()
                    }),
                ),
                Op::Wait => {
                    t += TTL;
                    continue;
                }
            };
            let _ = e;
        }
        // Replay the whole ledger: every accepted decision selected a node
        // that was an eligible candidate in the state before it, with every
        // candidate's eligibility as the rules compute it; and every owner
        // of a brokered order came through an assignment.
        let mut replay = MemState::default();
        for entry in w.s.entries.clone() {
            let a = decode(&entry.command).unwrap();
            if let (true, Some(Body::SourceOrder(d))) = (entry.accepted, &a.command.body) {
                let o = replay.orders[&d.order_id].clone();
                let sel = d.candidates.iter().find(|c| c.node == d.selected).unwrap();
                prop_assert!(sel.eligible);
                if version >= 4 {
                    for n in replay.profiles.keys() {
                        let open = replay.stats(n).unwrap_or_default().open_orders;
                        let eligible = check_candidate(&replay, n, &o, open).ineligible.is_empty();
                        prop_assert!(
                            !eligible || d.candidates.iter().any(|c| &c.node == n),
                            "decision {} omits eligible {}",
                            entry.seq,
                            n
                        );
                    }
                }
                for c in &d.candidates {
                    let p = replay.profile(&c.node);
                    let open = replay.stats(&c.node).unwrap_or_default().open_orders;
                    let ok = replay
                        .party(&c.node)
                        .is_some_and(|p| p.role == pb::Role::Node as i32)
                        && check_eligible(&replay, &c.node, &o).is_ok()
                        && p.as_ref().is_some_and(|p| open < p.max_open_orders as u64);
                    prop_assert_eq!(c.eligible, ok, "{:?}", c);
                    prop_assert_eq!(c.profile_version, p.map(|p| p.version).unwrap_or(0));
                }
            }
            let before = replay.orders.clone();
            let got = if entry.seq == 0 {
                replay.apply(&entry.command, entry.time_ms, true)
            } else {
                replay.apply(&entry.command, entry.time_ms, false)
            };
            let got = appended(got);
            prop_assert_eq!(&got, &entry, "replay differs");
            // The health fold, entry by entry, is the auditor's fold.
            let folded = health_at(replay.orders.values(), entry.seq);
            for (party, st) in &replay.stats {
                prop_assert_eq!(
                    st.health,
                    folded.get(party).copied().unwrap_or_default(),
                    "{} at entry {}",
                    party,
                    entry.seq
                );
            }
            if version < 4 {
                for o in replay.orders.values() {
                    let src = o.sourcing.clone().unwrap_or_default();
                    prop_assert!(src.declined_by.is_empty() && src.reassigned_from.is_empty());
                }
            }
            if let Some(o) = replay.orders.get(&entry.order_id) {
                let brokered = o
                    .sourcing
                    .as_ref()
                    .is_some_and(|s| s.mode == crate::rules::sourcing::SourcingMode::Brokered);
                let was_owner = before.get(&entry.order_id).and_then(|b| b.owner.clone());
                if brokered && entry.accepted && o.owner.is_some() && o.owner != was_owner {
                    let prev = &before[&entry.order_id];
                    let asg = prev.sourcing.as_ref().and_then(|s| s.assignment.clone());
                    prop_assert!(
                        asg.is_some_and(|a| Some(a.to) == o.owner && entry.time_ms <= a.expires_ms),
                        "brokered order {} taken on without its assignment at {}",
                        o.order_id,
                        entry.seq
                    );
                }
            }
        }
        // The final counters are the fold over the final orders.
        let folded = health_at(w.s.orders.values(), u64::MAX);
        for (party, st) in &w.s.stats {
            prop_assert_eq!(st.health, folded.get(party).copied().unwrap_or_default());
        }
    }
    Ok(())
}

/// A decision for an order that awaits none (for the property's hostile cases).
fn decision_any(w: &World, id: &str, t: u64) -> pb::SourceOrder {
    let (trigger, seq) = w.s.orders[id].sourcing_trigger(t);
    pb::SourceOrder {
        order_id: id.into(),
        trigger: trigger.to_pb() as i32,
        trigger_seq: seq,
        policy: "reference".into(),
        policy_version: 1,
        candidates: candidates(w, id, &NODES),
        selected: "n0".into(),
        expires_in_ms: TTL,
    }
}

// ---------------------------------------------------------------------------
// Rules version 4: complete candidate lists, declines and reassignments in
// the health fold
// ---------------------------------------------------------------------------

/// [`world`] at rules version `version`.
fn world_at(nodes: u8, version: u32) -> World {
    let mut w = World::with_rules(nodes, version, 0);
    let e = w.operator(
        13,
        Body::EnrollParty(pb::EnrollParty {
            party_id: "bk".into(),
            role: pb::Role::Broker as i32,
            kind: 0,
            public_key: key(80).verifying_key().to_bytes().to_vec(),
            channel_names: Vec::new(),
        }),
    );
    assert!(e.accepted, "{e:?}");
    w
}

#[test]
fn version_4_rejects_a_decision_that_omits_an_eligible_node() {
    for version in [3, 4] {
        let mut w = world_at(4, version);
        // n3 serves another region: ineligible, it may be left out.
        let e = w.node(
            3,
            14,
            Body::PublishProfile(pb::PublishProfile {
                regions: vec!["cn-bj".into()],
                ..profile()
            }),
        );
        assert!(e.accepted, "{e:?}");
        brokered(&mut w, "o1", 20);
        let omits_n2 = decision(&w, "o1", &["n0", "n1"], "n0", 21);
        let e = source(&mut w, omits_n2, 21);
        if version == 3 {
            // Version 3 decides as before: the listed candidates only.
            assert!(e.accepted, "{e:?}");
            continue;
        }
        rejected(&e, Code::CandidatesIncomplete, "node n2 is eligible");
        // Omitting two: the first missing node in id order is named.
        let omits_two = decision(&w, "o1", &["n2"], "n2", 22);
        rejected(
            &source(&mut w, omits_two, 22),
            Code::CandidatesIncomplete,
            "node n0 is eligible for order o1",
        );
        // An eligible node listed as ineligible is still a mismatch.
        let mut forged = decision(&w, "o1", &["n0", "n1", "n2"], "n0", 23);
        forged.candidates[2].eligible = false;
        forged.candidates[2].ineligible = "at_capacity".into();
        rejected(
            &source(&mut w, forged, 23),
            Code::EligibilityMismatch,
            "candidate n2",
        );
        // Every eligible node listed; the ineligible n3 and a party without
        // a profile (the broker) may be left out.
        let all = decision(&w, "o1", &["n0", "n1", "n2"], "n1", 24);
        let ok = source(&mut w, all, 24);
        assert!(ok.accepted, "{ok:?}");
        // A node at capacity is not eligible: leaving it out is fine.
        let n1 = accept(&mut w, 1, "o1", ok.seq, 25);
        assert!(n1.accepted, "{n1:?}");
        let e = w.node(
            0,
            26,
            Body::PublishProfile(pb::PublishProfile {
                max_open_orders: 1,
                ..profile()
            }),
        );
        assert!(e.accepted);
        brokered(&mut w, "o2", 27);
        assert!(w.claim(0, "o2", 28).code == Code::BrokeredOrder.as_str());
        let d = decide_now(&mut w, "o2", &["n0", "n1", "n2"], "n0", 29);
        assert!(d.accepted, "{d:?}");
        assert!(accept(&mut w, 0, "o2", d.seq, 30).accepted);
        brokered(&mut w, "o3", 31);
        let d = decide_now(&mut w, "o3", &["n1", "n2"], "n2", 32);
        assert!(d.accepted, "n0 is at capacity: {d:?}");
    }
}

#[test]
fn version_4_accepts_a_full_decision_of_eligible_nodes() {
    let mut w = world_at(2, 4);
    brokered(&mut w, "o1", 20);
    // MAX_CANDIDATES eligible candidates: n0, n1 and padding that the
    // rules would find ineligible are not a full eligible list.
    let mut d = decision(&w, "o1", &["n0"], "n0", 21);
    let pad: Vec<String> = (0..MAX_CANDIDATES - 1).map(|i| format!("x{i}")).collect();
    let pad_refs: Vec<&str> = pad.iter().map(String::as_str).collect();
    d.candidates.extend(candidates(&w, "o1", &pad_refs));
    rejected(
        &source(&mut w, d, 21),
        Code::CandidatesIncomplete,
        "node n1",
    );
    // With more eligible nodes than a decision may list, MAX_CANDIDATES
    // eligible ones are complete.
    let n = MAX_CANDIDATES as u8 + 1;
    let mut w = world_at(n, 4);
    brokered(&mut w, "o1", 20);
    let names: Vec<String> = (0..MAX_CANDIDATES).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let e = decide_now(&mut w, "o1", &refs, "n0", 21);
    assert!(e.accepted, "{e:?}");
}

#[test]
fn version_4_counts_a_decline_against_the_node_that_declined() {
    for version in [3, 4] {
        let mut w = world_at(3, version);
        brokered(&mut w, "o1", 20);
        let dec = decide_now(&mut w, "o1", &["n0", "n1", "n2"], "n0", 21);
        assert!(dec.accepted, "{dec:?}");
        // A decline by a node the offer does not name: rejected, counted
        // against nobody.
        rejected(
            &decline(&mut w, 1, "o1", dec.seq, 22, false),
            Code::NotAssignedToSigner,
            "offered to n0",
        );
        let no = decline(&mut w, 0, "o1", dec.seq, 23, true);
        assert!(no.accepted, "{no:?}");
        let src = w.s.orders["o1"].sourcing.clone().unwrap();
        assert_eq!(src.declines, vec![(no.seq, true)]);
        let (n0, n1) = (w.stats(0).health, w.stats(1).health);
        assert_eq!(n1, HealthCounters::default());
        let view = w.s.orders["o1"].to_pb(Vec::new(), 24);
        if version == 3 {
            // Version 3: as before, the decline feeds nothing.
            assert!(src.declined_by.is_empty());
            assert_eq!(n0, HealthCounters::default());
            assert_eq!(health_score(&n0), MAX_HEALTH_SCORE);
            assert!(view.sourcing_declines.is_empty());
            continue;
        }
        assert_eq!(src.declined_by, vec![(no.seq, "n0".to_string())]);
        assert_eq!(n0.declines, 1);
        // One decline, nothing good yet: 1000 × 2 / 3.
        assert_eq!(health_score(&n0), 666);
        assert_eq!(
            view.sourcing_declines,
            vec![pb::SourcingDecline {
                seq: no.seq,
                node: "n0".into(),
                shortage: true,
            }]
        );
        // The auditor's fold agrees, before and after the decline.
        assert_eq!(health_at(w.s.orders.values(), no.seq)["n0"], n0);
        assert!(!health_at(w.s.orders.values(), no.seq - 1).contains_key("n0"));
        // The next decision lists n0 (still eligible) and selects n1.
        let next = decide_now(&mut w, "o1", &["n0", "n1", "n2"], "n1", 25);
        assert!(next.accepted, "{next:?}");
        assert_eq!(awaiting_none(&w, "o1", 26), "n1");
    }
}

fn awaiting_none(w: &World, id: &str, t: u64) -> String {
    w.s.orders[id]
        .sourcing
        .as_ref()
        .and_then(|s| s.live_assignment(t))
        .map(|a| a.to.clone())
        .unwrap_or_default()
}

#[test]
fn version_4_counts_a_reassignment_against_the_node_it_took_the_order_from() {
    for version in [3, 4] {
        let mut w = world_at(3, version);
        // o1: claimed by n0 through its assignment, then taken back.
        brokered(&mut w, "o1", 20);
        let dec = decide_now(&mut w, "o1", &["n0", "n1", "n2"], "n0", 21);
        assert!(accept(&mut w, 0, "o1", dec.seq, 22).accepted);
        let r = reassign(&mut w, "o1", "n0", 23);
        assert!(r.accepted, "{r:?}");
        // o2: offered to n1, which sits on it; the offer is withdrawn.
        brokered(&mut w, "o2", 24);
        let dec = decide_now(&mut w, "o2", &["n0", "n1", "n2"], "n1", 25);
        assert!(dec.accepted, "{dec:?}");
        let r2 = reassign(&mut w, "o2", "n1", 26);
        assert!(r2.accepted, "{r2:?}");
        // o3: nobody holds it: a reassignment from nobody counts nothing.
        brokered(&mut w, "o3", 27);
        let r3 = reassign(&mut w, "o3", "", 28);
        assert!(r3.accepted, "{r3:?}");
        // A reassignment naming the wrong node is rejected and counts nothing.
        let dec = decide_now(&mut w, "o3", &["n0", "n1", "n2"], "n2", 29);
        assert!(dec.accepted);
        rejected(
            &reassign(&mut w, "o3", "n0", 30),
            Code::ReassignMismatch,
            "offered to n2",
        );
        let (n0, n1, n2) = (w.stats(0).health, w.stats(1).health, w.stats(2).health);
        assert_eq!(n2.reassigned, 0);
        if version == 3 {
            assert_eq!((n0.reassigned, n1.reassigned), (0, 0));
            assert_eq!(health_score(&n1), MAX_HEALTH_SCORE);
            assert!(w.s.orders["o1"]
                .sourcing
                .as_ref()
                .unwrap()
                .reassigned_from
                .is_empty());
            continue;
        }
        assert_eq!((n0.reassigned, n1.reassigned), (1, 1));
        assert_eq!(health_score(&n1), 666);
        // n0 took o1 on (taken_on 1) and lost it: 1000 × 2 / 3 as well.
        assert_eq!(health_score(&n0), 666);
        assert_eq!(
            w.s.orders["o2"].sourcing.as_ref().unwrap().reassigned_from,
            vec![(r2.seq, "n1".to_string())]
        );
        let folded = health_at(w.s.orders.values(), u64::MAX);
        assert_eq!((folded["n0"], folded["n1"]), (n0, n1));
        assert_eq!(n0.to_pb(r2.seq).reassigned, 1);
    }
}

#[test]
fn version_3_orders_serialize_as_before() {
    // The new records are left out while empty: a version 3 order's and
    // a node's counters' JSON carry no new key.
    let mut w = world_at(2, 3);
    brokered(&mut w, "o1", 20);
    let dec = decide_now(&mut w, "o1", &["n0", "n1"], "n0", 21);
    assert!(decline(&mut w, 0, "o1", dec.seq, 22, false).accepted);
    let o = serde_json::to_string(&w.s.orders["o1"]).unwrap();
    assert!(
        !o.contains("declined_by") && !o.contains("reassigned_from"),
        "{o}"
    );
    let st = serde_json::to_string(&w.stats(0)).unwrap();
    assert!(!st.contains("reassigned"), "{st}");
}
