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
            channel_names: Vec::new(),
        }),
    );
    let bytes = signed(&other, "jd", 1, amend(2, 1));
    rejected(
        &appended(w.s.apply(&bytes, 27, false)),
        Code::NotOrderChannel,
        "registered by channel shop",
    );
}

/// A channel registers external references only under the channel names its
/// enrolment allows (its own id when it named none): another channel's
/// reference is refused, nothing appended.
#[test]
fn a_channel_registers_references_only_under_its_own_names() {
    let mut w = World::new(0);
    let jd = key(61);
    let e = w.operator(
        20,
        Body::EnrollParty(pb::EnrollParty {
            party_id: "jd".into(),
            role: pb::Role::Channel as i32,
            kind: 0,
            public_key: jd.verifying_key().to_bytes().to_vec(),
            channel_names: Vec::new(),
        }),
    );
    assert!(e.accepted, "{e:?}");
    assert_eq!(w.s.parties["jd"].to_pb().channel_names, vec!["jd"]);
    assert_eq!(w.s.parties["shop"].to_pb().channel_names, vec!["meituan"]);
    let with_ref = |id: &str, channel: &str| {
        let mut o = order(id, "x-2011", 500);
        o.external_refs[0].channel = channel.into();
        Body::RegisterOrder(o)
    };
    let n = w.s.entries.len();
    // "shop" (allowed: meituan) takes jd's reference; jd takes meituan's.
    for (k, signer, body) in [
        (&w.ch, "shop", with_ref("o1", "jd")),
        (&jd, "jd", with_ref("o2", "meituan")),
        (&w.ch, "shop", with_ref("o3", "shop")),
    ] {
        match w.s.apply(&signed(k, signer, 9, body), 21, false) {
            Applied::Refused(r) => {
                assert_eq!(r.kind(), RefusalKind::ForeignReference, "{r}");
                assert!(r.to_string().contains(signer), "{r}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(w.s.entries.len(), n, "nothing appended");
    assert!(w.s.orders.is_empty());
    // Under its own names both register.
    let e = appended(w.s.apply(&signed(&jd, "jd", 10, with_ref("o2", "jd")), 22, false));
    assert!(e.accepted, "{e:?}");
    w.register_with(
        match with_ref("o1", "meituan") {
            Body::RegisterOrder(o) => o,
            _ => unreachable!(),
        },
        23,
    );

    // Only a channel names reference channels, each once.
    let bad = |role: pb::Role, names: &[&str]| pb::Command {
        nonce: 1,
        body: Some(Body::EnrollParty(pb::EnrollParty {
            party_id: "x".into(),
            role: role as i32,
            kind: if role == pb::Role::Node { 1 } else { 0 },
            public_key: key(62).verifying_key().to_bytes().to_vec(),
            channel_names: names.iter().map(|s| s.to_string()).collect(),
        })),
    };
    for (cmd, why) in [
        (bad(pb::Role::Node, &["jd"]), "only channel parties"),
        (bad(pb::Role::Channel, &["jd", "jd"]), "listed twice"),
        (bad(pb::Role::Channel, &["j d"]), "contains"),
    ] {
        let err = crate::rules::validate_command(&cmd).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    assert!(crate::rules::validate_command(&bad(pb::Role::Channel, &["jd", "jd.com"])).is_ok());
}
