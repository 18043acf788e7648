//! Handoffs: custody moves only on acceptance, and the receiver must be
//! eligible like a claimant.

use super::world::*;
use super::*;

#[test]
fn a_handoff_chain_moves_custody_only_on_acceptance() {
    let mut w = World::new(3);
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    rejected(
        &w.offer(1, "o1", "n2", 101, 1000),
        Code::NotOwner,
        "owned by n0",
    );
    rejected(
        &w.offer(0, "o1", "n0", 102, 1000),
        Code::HandoffToSelf,
        "n0",
    );
    rejected(&w.offer(0, "o1", "shop", 102, 1000), Code::NotANode, "shop");
    let offer = w.offer(0, "o1", "n1", 103, 1000);
    assert!(offer.accepted);
    // Until accepted, the sender holds it.
    assert_eq!(w.s.orders["o1"].custodian.as_deref(), Some("n0"));
    rejected(
        &w.offer(0, "o1", "n2", 104, 1000),
        Code::OfferPending,
        "offered to n1",
    );
    rejected(
        &w.accept(2, "o1", offer.seq, 105, false),
        Code::NotOfferedToSigner,
        "offered to n1",
    );
    rejected(
        &w.accept(1, "o1", offer.seq + 100, 105, false),
        Code::OfferMismatch,
        "not",
    );
    let acc = w.accept(1, "o1", offer.seq, 106, false);
    assert!(acc.accepted, "{acc:?}");
    let o = &w.s.orders["o1"];
    assert_eq!(o.owner.as_deref(), Some("n1"));
    assert_eq!(o.custodian.as_deref(), Some("n1"));
    assert_eq!(o.claimed_seq, acc.seq);
    assert!(o.offer.is_none());
    assert_eq!(w.stats(0).handoffs_out, 1);
    assert_eq!(w.stats(0).open_orders, 0);
    assert_eq!(w.stats(1).handoffs_in, 1);
    assert_eq!(w.stats(1).open_orders, 1);

    // n1 -> n2: declined, stays with n1.
    let offer2 = w.offer(1, "o1", "n2", 200, 1000);
    let dec = w.node(
        2,
        201,
        Body::DeclineHandoff(pb::DeclineHandoff {
            order_id: "o1".into(),
            offer_seq: offer2.seq,
            reason: "full".into(),
        }),
    );
    assert!(dec.accepted);
    assert_eq!(w.s.orders["o1"].owner.as_deref(), Some("n1"));
    rejected(
        &w.accept(2, "o1", offer2.seq, 202, false),
        Code::NoOffer,
        "no pending",
    );

    // An offer that expires leaves it with the sender.
    let offer3 = w.offer(1, "o1", "n2", 300, 50);
    rejected(
        &w.accept(2, "o1", offer3.seq, 351, false),
        Code::OfferExpired,
        "expired at 350",
    );
    assert_eq!(w.s.orders["o1"].owner.as_deref(), Some("n1"));
    // After expiry a new offer may be made; acceptance noting damage.
    let offer4 = w.offer(1, "o1", "n2", 400, 1000);
    assert!(offer4.accepted);
    let acc = w.accept(2, "o1", offer4.seq, 401, true);
    assert!(acc.accepted);
    let o = &w.s.orders["o1"];
    assert_eq!(o.owner.as_deref(), Some("n2"));
    assert_eq!(
        o.exceptions,
        vec![(
            Exception::DamageNotedAtHandoff.to_string(),
            "n2".to_string(),
            acc.seq
        )]
    );
}

#[test]
fn the_receiver_must_be_eligible_like_a_claimant() {
    let mut w = World::new(2);
    w.publish(
        1,
        13,
        pb::PublishProfile {
            regions: vec!["cn-bj".into()],
            max_open_orders: 5,
            dispatch_time_ms: HOUR,
            ..Default::default()
        },
    );
    w.register("o1", 20);
    assert!(w.claim(0, "o1", 100).accepted);
    let offer = w.offer(0, "o1", "n1", 101, 1000);
    rejected(
        &w.accept(1, "o1", offer.seq, 102, false),
        Code::RegionNotServed,
        "cn-sh",
    );
    assert_eq!(w.s.orders["o1"].owner.as_deref(), Some("n0"));
}
