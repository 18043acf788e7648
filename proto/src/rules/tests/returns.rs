//! Returns: claimed by a node that handles them, refunds bounded by what was
//! paid.

use super::world::*;
use super::*;

#[test]
fn returns_are_claimed_by_a_node_that_handles_them_and_refunds_are_bounded() {
    let mut w = World::new(2);
    w.publish(
        1,
        13,
        pb::PublishProfile {
            regions: vec!["cn-sh".into()],
            max_open_orders: 5,
            dispatch_time_ms: HOUR,
            handles_returns: true,
            ..Default::default()
        },
    );
    w.register("o1", 20);
    let req = Body::RequestReturn(pb::RequestReturn {
        order_id: "o1".into(),
        reason: "wrong size".into(),
    });
    rejected(&w.channel(21, req.clone()), Code::NotDelivered, "open");
    assert!(w.claim(0, "o1", 22).accepted);
    assert!(w.milestone(0, "o1", 23, pb::Milestone::Shipped).accepted);
    assert!(w.milestone(0, "o1", 24, pb::Milestone::Delivered).accepted);
    let claim_ret = Body::ClaimReturn(pb::ClaimReturn {
        order_id: "o1".into(),
    });
    rejected(
        &w.node(1, 25, claim_ret.clone()),
        Code::NoReturnRequested,
        "delivered",
    );
    assert!(w.channel(26, req).accepted);
    rejected(
        &w.node(0, 27, claim_ret.clone()),
        Code::ReturnsNotHandled,
        "n0",
    );
    assert!(w.node(1, 28, claim_ret.clone()).accepted);
    rejected(&w.node(0, 29, claim_ret), Code::ReturnAlreadyClaimed, "n1");
    let receive = |refund: i64, version: u64| {
        Body::ReceiveReturn(pb::ReceiveReturn {
            order_id: "o1".into(),
            refund,
            price_version: version,
        })
    };
    rejected(&w.node(0, 30, receive(100, 1)), Code::NotReturnNode, "n1");
    rejected(
        &w.node(1, 31, receive(1001, 1)),
        Code::RefundExceedsPaid,
        "1000 CNY",
    );
    rejected(
        &w.node(1, 32, receive(100, 2)),
        Code::PriceMismatch,
        "price version 1",
    );
    assert!(w.node(1, 33, receive(1000, 1)).accepted);
    let o = &w.s.orders["o1"];
    assert_eq!(o.status, OrderStatus::Returned);
    assert_eq!(o.refund, 1000);
}
