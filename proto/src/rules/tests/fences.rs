//! Rules version 2, fenced work in progress: a lapse of an order that was
//! picked or packed fences it for the old owner, which confirms it did not
//! ship (the order opens) or reports the hand-off (counted late); nobody
//! else claims it until the fence runs out, and that expiry stands against
//! the old owner.

use super::world::*;
use super::*;
use crate::rules::custody::{self, OrderEntry};

const FENCE: u64 = 2 * HOUR;

/// A version 2 world; n0 claimed "o1" at 100 and reported `m` (picked or packed).
fn in_progress(m: pb::Milestone) -> (World, u64) {
    let mut w = World::with_rules(2, 2, FENCE);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    assert!(w.milestone(0, "o1", 200, m).accepted);
    (w, 100 + HOUR + GRACE)
}

#[test]
fn a_lapsed_packed_order_is_fenced_for_its_old_owner_and_refused_to_others() {
    let (mut w, deadline) = in_progress(pb::Milestone::Packed);
    let e = w.claim(1, "o1", deadline + 1);
    rejected(&e, Code::Fenced, "fenced for n0 until");
    assert!(e.message.contains("while it was packed"), "{}", e.message);
    // A rejected claim records nothing; the sweep records the fence.
    assert_eq!(w.s.orders["o1"].status, OrderStatus::Packed);
    let rk = w.replica(deadline + 2);
    let lapse = w.sweep(&rk, "o1", deadline + 3);
    assert!(lapse.accepted, "{lapse:?}");
    let until = deadline + FENCE;
    assert!(
        lapse
            .message
            .ends_with(&format!("+ grace), fenced until {until}")),
        "{}",
        lapse.message
    );
    let o = &w.s.orders["o1"];
    assert_eq!(o.status, OrderStatus::Fenced);
    assert_eq!(o.owner, None);
    // The old owner still holds the goods.
    assert_eq!(o.custodian.as_deref(), Some("n0"));
    let f = o.fence.as_ref().unwrap();
    assert_eq!(
        (
            f.node.as_str(),
            f.status,
            f.lapsed_seq,
            f.from_ms,
            f.until_ms
        ),
        ("n0", OrderStatus::Packed, lapse.seq, deadline, until)
    );
    assert_eq!((w.stats(0).lapses, w.stats(0).open_orders), (1, 0));
    let view = o.to_pb(Vec::new(), deadline + 4);
    assert_eq!(
        (
            view.status.as_str(),
            view.fenced_node.as_str(),
            view.fence_until_ms
        ),
        ("fenced", "n0", until)
    );
    assert!(!view.fence_expired && !view.lease_lapsed);
    // Still refused up to the fence's end, and not claimable for listings.
    rejected(&w.claim(1, "o1", until), Code::Fenced, "fenced for n0");
    assert!(!claimable_by(&w.s, "n1", &w.s.orders["o1"], until));
    assert!(claimable_by(&w.s, "n1", &w.s.orders["o1"], until + 1));
    // The sweep has nothing to record before the fence's end.
    rejected(
        &w.sweep(&rk, "o1", until),
        Code::NotLapsed,
        "it is fenced for n0 until",
    );
    // Another node's milestone is evidence against it, as before.
    rejected(
        &w.milestone(1, "o1", until, pb::Milestone::Shipped),
        Code::NotOwner,
        "has no owner (fenced)",
    );
}

#[test]
fn the_old_owner_ships_from_the_fence_counted_late_and_delivers() {
    let (mut w, deadline) = in_progress(pb::Milestone::Picked);
    // The claim records the lapse, fencing the order, and is refused.
    rejected(&w.claim(1, "o1", deadline + 1), Code::Fenced, "picked");
    // A command by the old owner records the fence itself: picking again is out of order.
    rejected(
        &w.milestone(0, "o1", deadline + 5, pb::Milestone::Packed),
        Code::MilestoneOutOfOrder,
        "can only report shipped",
    );
    let shipped = w.milestone(0, "o1", deadline + 10, pb::Milestone::Shipped);
    assert!(shipped.accepted, "{shipped:?}");
    assert!(
        shipped.message.contains("fenced until"),
        "{}",
        shipped.message
    );
    let o = &w.s.orders["o1"];
    assert_eq!(o.status, OrderStatus::Shipped);
    assert_eq!(o.owner.as_deref(), Some("n0"));
    assert_eq!(o.custodian.as_deref(), Some("sf-express"));
    assert_eq!(o.fence, None);
    let s = w.stats(0);
    assert_eq!(
        (
            s.lapses,
            s.shipped,
            s.late_shipments,
            s.open_orders,
            s.fence_expiries
        ),
        (1, 1, 1, 0, 0)
    );
    assert!(
        w.milestone(0, "o1", deadline + 20, pb::Milestone::Delivered)
            .accepted
    );
    // A late dispute rules the lapse against the old owner.
    let d = Dispute {
        seq: 99,
        kind: "late".into(),
        incident_ms: deadline + 20,
        opened_by: "shop".into(),
        ruling: None,
        known_good_ms: 0,
        parcels: 0,
    };
    let r = rule_on(&w.s.orders["o1"], &d);
    assert_eq!((r.liable.as_str(), r.rule), ("n0", Rule::LeaseLapsed));
}

#[test]
fn the_old_owner_confirms_it_did_not_ship_and_the_order_opens() {
    let (mut w, deadline) = in_progress(pb::Milestone::Packed);
    // The confirmation in the same entry that records the fence.
    let r = w.release(0, "o1", deadline + 1);
    assert!(r.accepted, "{r:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(
        (o.status, o.owner.as_deref(), o.custodian.as_deref()),
        (OrderStatus::Open, None, None)
    );
    assert!(matches!(
        o.events.last().unwrap().kind,
        EventKind::FenceCleared { ref node } if node == "n0"
    ));
    // Not a release of a lease it held: only the lapse is counted.
    assert_eq!((w.stats(0).lapses, w.stats(0).releases), (1, 0));
    let c = w.claim(1, "o1", deadline + 2);
    assert!(c.accepted, "{c:?}");
    // Once confirmed, its ship report is evidence against it.
    rejected(
        &w.milestone(0, "o1", deadline + 3, pb::Milestone::Shipped),
        Code::NotOwner,
        "owned by n1",
    );
}

#[test]
fn a_fence_that_runs_out_opens_the_order_and_stands_against_the_old_owner() {
    let (mut w, deadline) = in_progress(pb::Milestone::Packed);
    let rk = w.replica(deadline);
    let fenced = w.sweep(&rk, "o1", deadline + 1);
    assert!(fenced.accepted);
    // The worked example of docs/disputes.md §4.4.
    assert_eq!((deadline, fenced.seq), (3_601_100, 10));
    let lost = Dispute {
        seq: 99,
        kind: "lost".into(),
        incident_ms: 5_000_000,
        opened_by: "shop".into(),
        ruling: None,
        known_good_ms: 0,
        parcels: 0,
    };
    let r = rule_on(&w.s.orders["o1"], &lost);
    assert_eq!(
        (r.liable.as_str(), r.rule, r.evidence.clone()),
        ("n0", Rule::CustodianAtIncident, vec![7])
    );
    let until = deadline + FENCE;
    let x = w.sweep(&rk, "o1", until + 1);
    assert!(x.accepted, "{x:?}");
    assert_eq!(
        x.message,
        format!(
            "fence of n0 expired at {until} (lapsed at entry {})",
            x.seq - 1
        )
    );
    let o = &w.s.orders["o1"];
    assert_eq!(
        (o.status, o.custodian.as_deref()),
        (OrderStatus::Open, None)
    );
    assert_eq!(w.stats(0).fence_expiries, 1);
    assert!(w.claim(1, "o1", until + 2).accepted);
    // The old owner's late report is now a milestone without ownership, and
    // a duplicate-processing dispute rules the expiry against it.
    rejected(
        &w.milestone(0, "o1", until + 3, pb::Milestone::Shipped),
        Code::NotOwner,
        "owned by n1",
    );
    let d = Dispute {
        seq: 99,
        kind: "duplicate_processing".into(),
        incident_ms: until + 3,
        opened_by: "shop".into(),
        ruling: None,
        known_good_ms: 0,
        parcels: 0,
    };
    let r = rule_on(&w.s.orders["o1"], &d);
    assert_eq!((r.liable.as_str(), r.rule), ("n0", Rule::FenceExpired));
    assert_eq!(r.evidence, vec![x.seq]);
    assert_eq!(x.seq, 11);
}

#[test]
fn one_entry_records_the_lapse_and_the_expiry_when_both_have_passed() {
    let (mut w, deadline) = in_progress(pb::Milestone::Packed);
    let until = deadline + FENCE;
    let c = w.claim(1, "o1", until + 1);
    assert!(c.accepted, "{c:?}");
    let (lapse, expiry) = c.message.split_once("; ").expect("two notes");
    assert!(lapse.ends_with(&format!("fenced until {until}")), "{lapse}");
    assert_eq!(
        expiry,
        format!("fence of n0 expired at {until} (lapsed at entry {})", c.seq)
    );
    let s = w.stats(0);
    assert_eq!((s.lapses, s.fence_expiries, s.open_orders), (1, 1, 0));
    assert_eq!(w.s.orders["o1"].owner.as_deref(), Some("n1"));
}

#[test]
fn a_claimed_order_lapses_as_before_under_version_2() {
    let mut w = World::with_rules(2, 2, FENCE);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let c = w.claim(1, "o1", 100 + HOUR + GRACE + 1);
    assert!(c.accepted, "{c:?}");
    assert!(!c.message.contains("fenced"), "{}", c.message);
    assert_eq!(w.s.orders["o1"].owner.as_deref(), Some("n1"));
}

#[test]
fn a_cancel_ends_the_fence() {
    let (mut w, deadline) = in_progress(pb::Milestone::Packed);
    let e = w.channel(
        deadline + 1,
        Body::CancelOrder(pb::CancelOrder {
            order_id: "o1".into(),
            reason: String::new(),
        }),
    );
    assert!(e.accepted, "{e:?}");
    let o = &w.s.orders["o1"];
    assert_eq!((o.status, &o.fence), (OrderStatus::Cancelled, &None));
    rejected(
        &w.milestone(0, "o1", deadline + 2, pb::Milestone::Shipped),
        Code::OrderCancelled,
        "cancelled",
    );
}

#[test]
fn the_fence_is_taken_from_the_version_in_force_at_the_lapse() {
    // fence_ms 0 under version 2 is the default of two hours.
    let mut w = World::with_rules(2, 2, 0);
    assert_eq!(w.s.config.as_ref().unwrap().fence(), DEFAULT_FENCE_MS);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    assert!(w.milestone(0, "o1", 200, pb::Milestone::Packed).accepted);
    rejected(&w.claim(1, "o1", 100 + HOUR + GRACE + 1), Code::Fenced, "");
    let until = 100 + HOUR + GRACE + DEFAULT_FENCE_MS;
    rejected(
        &w.claim(1, "o1", until),
        Code::Fenced,
        &format!("until {until}"),
    );
    assert!(w.claim(1, "o1", until + 1).accepted);
}

/// The custody an auditor lays out from the entries alone follows the fence
/// as the rules do: the old owner holds the goods through it.
#[test]
fn custody_from_the_entries_follows_the_fence() {
    let (mut w, deadline) = in_progress(pb::Milestone::Packed);
    let rk = w.replica(deadline);
    let fenced = w.sweep(&rk, "o1", deadline + 1);
    let shipped = w.milestone(0, "o1", deadline + 2, pb::Milestone::Shipped);
    assert!(fenced.accepted && shipped.accepted);
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
        .map(|i| (i.holder, i.from_seq, i.end.map(|e| e.seq)))
        .collect();
    let claim_seq = w.s.orders["o1"]
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Claimed { .. }))
        .unwrap()
        .seq;
    assert_eq!(
        spans,
        vec![
            ("n0".to_string(), claim_seq, Some(shipped.seq)),
            ("sf-express".to_string(), shipped.seq, None)
        ]
    );
    assert!(entries
        .iter()
        .any(|e| e.lapse().is_some_and(|l| l.fenced_until_ms.is_some())));
}
