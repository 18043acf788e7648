//! Orders: nothing happens after a cancel; price amendments bump the version
//! and stale quotes are rejected.

use super::world::*;
use super::*;

#[test]
fn nothing_happens_after_cancel() {
    let mut w = World::new(1);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 21).accepted);
    let cancel = |reason: &str| {
        Body::CancelOrder(pb::CancelOrder {
            order_id: "o1".into(),
            reason: reason.into(),
        })
    };
    assert!(w.channel(22, cancel("customer changed mind")).accepted);
    assert_eq!(w.stats(0).open_orders, 0);
    rejected(
        &w.channel(23, cancel("again")),
        Code::AlreadyCancelled,
        "already",
    );
    rejected(
        &w.milestone(0, "o1", 24, pb::Milestone::Picked),
        Code::OrderCancelled,
        "cancelled",
    );
    rejected(&w.claim(0, "o1", 25), Code::OrderCancelled, "cancelled");
}

#[test]
fn price_amendments_bump_the_version_and_stale_quotes_are_rejected() {
    let mut w = World::new(1);
    w.register("o1", 20);
    let amend = |base: u64, price: i64| {
        Body::AmendPrice(pb::AmendPrice {
            order_id: "o1".into(),
            base_version: base,
            lines: vec![pb::OrderLine {
                sku: "sku-1".into(),
                quantity: 2,
                unit_price: price,
            }],
            total: 2 * price,
            reason: "coupon applied".into(),
        })
    };
    let e = w.channel(21, amend(1, 450));
    assert!(e.accepted);
    assert_eq!(w.s.orders["o1"].price_version, 2);
    assert_eq!(w.s.orders["o1"].total, 900);
    rejected(
        &w.channel(22, amend(1, 400)),
        Code::StalePriceVersion,
        "at price version 2",
    );
    // A claim quoting version 1 is rejected naming version 2.
    let stale = w.node(
        0,
        23,
        Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o1".into(),
            price_version: 1,
            total: 1000,
        }),
    );
    rejected(&stale, Code::PriceMismatch, "price version 2 total 900 CNY");
    assert!(w.claim(0, "o1", 24).accepted);
    let m = w.node(
        0,
        25,
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o1".into(),
            milestone: pb::Milestone::Picked as i32,
            price_version: 1,
            total: 1000,
            ..Default::default()
        }),
    );
    rejected(&m, Code::PriceMismatch, "price version 2");
    // Only the registering channel amends.
    let other = key(60);
    w.operator(
        26,
        Body::EnrollParty(pb::EnrollParty {
            party_id: "jd".into(),
            role: pb::Role::Channel as i32,
            kind: 0,
            public_key: other.verifying_key().to_bytes().to_vec(),
        }),
    );
    let bytes = signed(&other, "jd", 1, amend(2, 1));
    rejected(
        &appended(w.s.apply(&bytes, 27, false)),
        Code::NotOrderChannel,
        "registered by channel shop",
    );
}
