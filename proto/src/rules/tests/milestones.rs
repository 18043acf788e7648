//! Milestones follow the lifecycle; exceptions come from the owner or the
//! registering channel.

use super::world::*;
use super::*;

#[test]
fn milestones_follow_the_lifecycle() {
    let mut w = World::new(2);
    w.register("o1", 20);
    rejected(
        &w.milestone(0, "o1", 21, pb::Milestone::Picked),
        Code::NotOwner,
        "no owner",
    );
    assert!(w.claim(0, "o1", 22).accepted);
    rejected(
        &w.milestone(0, "o1", 23, pb::Milestone::Delivered),
        Code::MilestoneOutOfOrder,
        "delivered can only follow shipped",
    );
    rejected(
        &w.milestone(1, "o1", 23, pb::Milestone::Picked),
        Code::NotOwner,
        "owned by n0",
    );
    assert!(w.milestone(0, "o1", 24, pb::Milestone::Picked).accepted);
    assert!(w.milestone(0, "o1", 25, pb::Milestone::Packed).accepted);
    rejected(
        &w.milestone(0, "o1", 26, pb::Milestone::Picked),
        Code::MilestoneOutOfOrder,
        "is packed",
    );
    assert!(w.milestone(0, "o1", 27, pb::Milestone::Shipped).accepted);
    // No handoff or release once shipped.
    rejected(
        &w.offer(0, "o1", "n1", 28, 100),
        Code::AlreadyShipped,
        "shipped",
    );
    let cancel = w.channel(
        29,
        Body::CancelOrder(pb::CancelOrder {
            order_id: "o1".into(),
            reason: String::new(),
        }),
    );
    rejected(&cancel, Code::AlreadyShipped, "too late");
    assert!(w.milestone(0, "o1", 30, pb::Milestone::Delivered).accepted);
    let o = &w.s.orders["o1"];
    assert_eq!(o.status, OrderStatus::Delivered);
    assert_eq!(o.custodian, None, "delivered with proof: nobody holds it");
    assert_eq!(o.proof_of_delivery, "pod/photo-1");
    assert_eq!(w.stats(0).delivered, 1);
}

#[test]
fn exceptions_come_from_the_owner_or_the_channel() {
    let mut w = World::new(2);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 21).accepted);
    let exc = Body::ReportException(pb::ReportException {
        order_id: "o1".into(),
        kind: pb::ExceptionKind::Delayed as i32,
        note: "truck broke down".into(),
    });
    rejected(
        &w.node(1, 22, exc.clone()),
        Code::NotEntitled,
        "only the owner (n0)",
    );
    assert!(w.node(0, 23, exc.clone()).accepted);
    assert!(w.channel(24, exc).accepted);
    assert_eq!(w.s.orders["o1"].exceptions.len(), 2);
}
