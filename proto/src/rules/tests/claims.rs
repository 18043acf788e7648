//! Claims and leases: leases lapse by leader time, a lapse is recorded by the
//! next accepted command (or `RecordLapse`), shipping ends the lease, late
//! shipments are counted, releases reopen the order.

use super::world::*;
use super::*;

#[test]
fn a_lease_lapses_by_leader_time_and_the_lapse_is_recorded() {
    let mut w = World::new(2);
    w.register("o1", 20);
    let c = w.claim(0, "o1", 100);
    assert!(c.accepted);
    let deadline = 100 + HOUR + GRACE;
    assert_eq!(
        w.s.orders["o1"].lease.as_ref().unwrap().deadline_ms,
        deadline
    );
    // At the deadline the lease still holds.
    rejected(
        &w.claim(1, "o1", deadline),
        Code::AlreadyOwned,
        "owned by n0",
    );
    // One millisecond later another node may claim; the entry names the lapse.
    let e = w.claim(1, "o1", deadline + 1);
    assert!(e.accepted, "{e:?}");
    assert!(e.message.contains("lease of n0 lapsed"), "{}", e.message);
    let o = &w.s.orders["o1"];
    assert_eq!(o.owner.as_deref(), Some("n1"));
    assert_eq!(o.last_lapsed_owner, "n0");
    assert_eq!(o.claimed_seq, e.seq);
    assert_eq!(w.stats(0).lapses, 1);
    assert_eq!(w.stats(0).open_orders, 0);
    assert_eq!(w.stats(1).open_orders, 1);
    // The old owner can no longer report milestones.
    rejected(
        &w.milestone(0, "o1", deadline + 2, pb::Milestone::Picked),
        Code::NotOwner,
        "owned by n1",
    );
}

#[test]
fn a_lapse_is_not_recorded_by_a_rejected_command_but_seen_by_it() {
    let mut w = World::new(2);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let late = 100 + HOUR + GRACE + 5;
    let e = w.milestone(0, "o1", late, pb::Milestone::Picked);
    rejected(&e, Code::NotOwner, "lease of n0 lapsed");
    // Nothing was written: the lapse is still to be recorded.
    assert_eq!(w.stats(0).lapses, 0);
    assert_eq!(w.s.orders["o1"].owner.as_deref(), Some("n0"));
    assert!(w.claim(1, "o1", late + 1).accepted);
    assert_eq!(w.stats(0).lapses, 1);
}

#[test]
fn a_lapsed_owner_frees_its_capacity_by_releasing() {
    let mut w = World::new(1);
    w.publish(
        0,
        13,
        pb::PublishProfile {
            max_open_orders: 1,
            ..profile()
        },
    );
    w.register("o1", 20);
    w.register("o2", 21);
    assert!(w.claim(0, "o1", 100).accepted);
    let late = 100 + HOUR + GRACE + 1;
    // Still counted against its capacity until the lapse is recorded.
    rejected(&w.claim(0, "o2", late), Code::AtCapacity, "1 open orders");
    let release = w.node(
        0,
        late + 1,
        Body::ReleaseOrder(pb::ReleaseOrder {
            shortage: false,
            order_id: "o1".into(),
            reason: "too late, giving it back".into(),
        }),
    );
    assert!(release.accepted, "{release:?}");
    assert!(
        release.message.contains("lease of n0 lapsed"),
        "{}",
        release.message
    );
    assert_eq!(
        (
            w.stats(0).lapses,
            w.stats(0).releases,
            w.stats(0).open_orders
        ),
        (1, 0, 0)
    );
    assert_eq!(w.s.orders["o1"].status, OrderStatus::Open);
    assert!(w.claim(0, "o2", late + 2).accepted);
}

#[test]
fn shipping_ends_the_lease() {
    let mut w = World::new(2);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    assert!(w.milestone(0, "o1", 200, pb::Milestone::Shipped).accepted);
    rejected(
        &w.claim(1, "o1", 100 + 10 * HOUR),
        Code::AlreadyOwned,
        "owned by n0",
    );
    let o = &w.s.orders["o1"];
    assert_eq!(o.custodian.as_deref(), Some("sf-express"));
    assert_eq!(o.tracking_id, "SF123");
    assert_eq!(w.stats(0).shipped, 1);
    assert_eq!(w.stats(0).late_shipments, 0);
}

#[test]
fn a_late_shipment_is_counted_against_the_declared_dispatch_time() {
    let mut w = World::new(1);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    // After dispatch time, inside the grace: still the owner, but late.
    assert!(
        w.milestone(0, "o1", 100 + HOUR + 1, pb::Milestone::Shipped)
            .accepted
    );
    assert_eq!(w.stats(0).late_shipments, 1);
}

#[test]
fn release_returns_the_order_to_open() {
    let mut w = World::new(2);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let release = || {
        Body::ReleaseOrder(pb::ReleaseOrder {
            shortage: false,
            order_id: "o1".into(),
            reason: "out of stock".into(),
        })
    };
    rejected(&w.node(1, 101, release()), Code::NotOwner, "owned by n0");
    let e = w.node(0, 102, release());
    assert!(e.accepted);
    assert_eq!(w.s.orders["o1"].status, OrderStatus::Open);
    assert_eq!(w.s.orders["o1"].owner, None);
    assert_eq!(w.stats(0).releases, 1);
    assert_eq!(w.stats(0).open_orders, 0);
    assert!(w.claim(1, "o1", 103).accepted);
}

#[test]
fn record_lapse_is_accepted_only_for_a_lapsed_lease_and_only_from_a_replica() {
    let mut w = World::new(1);
    let rk = key(85);
    assert!(
        w.operator(
            14,
            Body::EnrollParty(pb::EnrollParty {
                party_id: "arbor-replica-1".into(),
                role: pb::Role::Replica as i32,
                kind: 0,
                public_key: rk.verifying_key().to_bytes().to_vec(),
                channel_names: Vec::new(),
            }),
        )
        .accepted
    );
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let sweep = |nonce: u64| {
        signed(
            &rk,
            "arbor-replica-1",
            nonce,
            Body::RecordLapse(pb::RecordLapse {
                order_id: "o1".into(),
            }),
        )
    };
    let early = appended(w.s.apply(&sweep(1), 200, false));
    rejected(&early, Code::NotLapsed, "its lease runs until");
    let late = 100 + HOUR + GRACE + 1;
    let e = appended(w.s.apply(&sweep(2), late, false));
    assert!(e.accepted, "{e:?}");
    assert!(e.message.contains("lease of n0 lapsed"), "{}", e.message);
    assert_eq!((w.stats(0).lapses, w.stats(0).open_orders), (1, 0));
    assert_eq!(w.s.orders["o1"].owner, None);
    rejected(
        &appended(w.s.apply(&sweep(3), late + 1, false)),
        Code::NotLapsed,
        "open",
    );
    // Nodes do not sweep.
    let bytes = signed(
        &w.nodes[0],
        "n0",
        9,
        Body::RecordLapse(pb::RecordLapse {
            order_id: "o1".into(),
        }),
    );
    match w.s.apply(&bytes, late + 2, false) {
        Applied::Refused(r) => assert_eq!(r.kind(), RefusalKind::WrongRole),
        other => panic!("{other:?}"),
    }
}
