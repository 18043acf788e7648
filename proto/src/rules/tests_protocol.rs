//! The full protocol, tested as rules: profiles, leases, handoffs,
//! milestones, price amendments, returns, keys — unit cases for each rule
//! and a property test over random command sequences.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::mem::Applied;
use super::tests::{appended, enroll, key, order, profile, setup, signed};
use super::*;
use crate::ledger::Entry;
use crate::pb::command::Body;

const HOUR: u64 = 3_600_000;
const GRACE: u64 = 1_000; // the tests' genesis lease grace

struct World {
    s: MemState,
    op: SigningKey,
    ch: SigningKey,
    nodes: Vec<SigningKey>,
    nonce: u64,
}

impl World {
    fn new(nodes: u8) -> World {
        let (s, op, ch, nodes) = setup(nodes);
        World {
            s,
            op,
            ch,
            nodes,
            nonce: 1000,
        }
    }

    fn next_nonce(&mut self) -> u64 {
        self.nonce += 1;
        self.nonce
    }

    /// Applies a command signed by node `n` at time `t`.
    fn node(&mut self, n: usize, t: u64, body: Body) -> Entry {
        let nonce = self.next_nonce();
        let bytes = signed(&self.nodes[n], &format!("n{n}"), nonce, body);
        appended(self.s.apply(&bytes, t, false))
    }

    fn channel(&mut self, t: u64, body: Body) -> Entry {
        let nonce = self.next_nonce();
        let bytes = signed(&self.ch, "shop", nonce, body);
        appended(self.s.apply(&bytes, t, false))
    }

    fn operator(&mut self, t: u64, body: Body) -> Entry {
        let nonce = self.next_nonce();
        let bytes = signed(&self.op, "ops", nonce, body);
        appended(self.s.apply(&bytes, t, false))
    }

    fn register(&mut self, id: &str, t: u64) -> Entry {
        let e = self.channel(t, Body::RegisterOrder(order(id, &format!("m-{id}"), 500)));
        assert!(e.accepted, "{e:?}");
        e
    }

    fn register_with(&mut self, o: pb::RegisterOrder, t: u64) -> Entry {
        let e = self.channel(t, Body::RegisterOrder(o));
        assert!(e.accepted, "{e:?}");
        e
    }

    fn claim(&mut self, n: usize, id: &str, t: u64) -> Entry {
        let o = &self.s.orders[id];
        let (version, total) = (o.price_version, o.total);
        self.node(
            n,
            t,
            Body::ClaimOrder(pb::ClaimOrder {
                order_id: id.into(),
                price_version: version,
                total,
            }),
        )
    }

    fn milestone(&mut self, n: usize, id: &str, t: u64, m: pb::Milestone) -> Entry {
        let mut body = pb::ReportMilestone {
            order_id: id.into(),
            milestone: m as i32,
            ..Default::default()
        };
        if m == pb::Milestone::Shipped {
            body.carrier = "sf-express".into();
            body.tracking_id = "SF123".into();
        }
        if m == pb::Milestone::Delivered {
            body.proof_of_delivery = "pod/photo-1".into();
        }
        self.node(n, t, Body::ReportMilestone(body))
    }

    fn offer(&mut self, n: usize, id: &str, to: &str, t: u64, ttl: u64) -> Entry {
        self.node(
            n,
            t,
            Body::OfferHandoff(pb::OfferHandoff {
                order_id: id.into(),
                to: to.into(),
                expires_in_ms: ttl,
            }),
        )
    }

    fn accept(&mut self, n: usize, id: &str, offer_seq: u64, t: u64, damaged: bool) -> Entry {
        self.node(
            n,
            t,
            Body::AcceptHandoff(pb::AcceptHandoff {
                order_id: id.into(),
                offer_seq,
                damaged,
                note: if damaged {
                    "box crushed".into()
                } else {
                    String::new()
                },
            }),
        )
    }

    fn publish(&mut self, n: usize, t: u64, p: pb::PublishProfile) -> Entry {
        let e = self.node(n, t, Body::PublishProfile(p));
        assert!(e.accepted);
        e
    }

    fn stats(&self, n: usize) -> NodeStats {
        self.s
            .stats
            .get(&format!("n{n}"))
            .cloned()
            .unwrap_or_default()
    }
}

fn rejected(e: &Entry, code: Code, needle: &str) {
    assert!(!e.accepted, "expected {code}, got accepted: {e:?}");
    assert_eq!(e.code, code.as_str(), "{}", e.message);
    assert!(
        e.message.contains(needle),
        "{:?} does not contain {needle:?}",
        e.message
    );
}

#[test]
fn the_profile_in_force_gates_every_claim() {
    let mut w = World::new(2);
    // A node without a profile.
    let k = key(50);
    let e = w.operator(
        13,
        Body::EnrollParty(pb::EnrollParty {
            party_id: "bare".into(),
            role: pb::Role::Node as i32,
            kind: pb::NodeKind::Store as i32,
            public_key: k.verifying_key().to_bytes().to_vec(),
        }),
    );
    assert!(e.accepted);
    w.register("o1", 20);
    let bytes = signed(
        &k,
        "bare",
        1,
        Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o1".into(),
            price_version: 1,
            total: 1000,
        }),
    );
    rejected(
        &appended(w.s.apply(&bytes, 21, false)),
        Code::NoProfile,
        "bare",
    );

    let mut far = order("o-bj", "m-bj", 5);
    far.destination_region = "cn-bj".into();
    w.register_with(far, 22);
    rejected(&w.claim(0, "o-bj", 23), Code::RegionNotServed, "cn-bj");

    let mut cold = order("o-cold", "m-cold", 5);
    cold.requirements = Some(pb::Requirements {
        cold_chain: true,
        ..Default::default()
    });
    w.register_with(cold, 24);
    rejected(
        &w.claim(0, "o-cold", 25),
        Code::ColdChainRequired,
        "cold chain",
    );

    let mut haz = order("o-haz", "m-haz", 5);
    haz.requirements = Some(pb::Requirements {
        hazmat: true,
        ..Default::default()
    });
    w.register_with(haz, 26);
    rejected(&w.claim(0, "o-haz", 27), Code::HazmatRequired, "hazmat");

    let mut cat = order("o-cat", "m-cat", 5);
    cat.requirements = Some(pb::Requirements {
        category: "fresh-food".into(),
        ..Default::default()
    });
    w.register_with(cat, 28);
    rejected(
        &w.claim(0, "o-cat", 29),
        Code::CategoryNotServed,
        "fresh-food",
    );

    // Version 2 of n0's profile covers all of it, with capacity 2.
    let e = w.publish(
        0,
        30,
        pb::PublishProfile {
            regions: vec!["cn-sh".into(), "cn-bj".into()],
            max_open_orders: 2,
            dispatch_time_ms: HOUR,
            cold_chain: true,
            hazmat: true,
            categories: vec!["fresh-food".into()],
            ..Default::default()
        },
    );
    assert_eq!(w.s.profiles["n0"].version, 2);
    assert_eq!(w.s.profiles["n0"].published_seq, e.seq);
    assert!(w.claim(0, "o-bj", 31).accepted);
    assert!(w.claim(0, "o-cold", 32).accepted);
    rejected(&w.claim(0, "o-haz", 33), Code::AtCapacity, "2 open orders");
    assert_eq!(w.stats(0).open_orders, 2);
    assert_eq!(
        w.s.orders["o-cold"].lease.as_ref().unwrap().profile_version,
        2
    );
    // Shipping one frees capacity.
    assert!(
        w.milestone(0, "o-cold", 34, pb::Milestone::Shipped)
            .accepted
    );
    assert!(w.claim(0, "o-haz", 35).accepted);
    assert_eq!(w.stats(0).open_orders, 2);
    assert_eq!(w.stats(0).claims, 3);
}

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
            "damage_noted_at_handoff".to_string(),
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

#[test]
fn rotated_and_revoked_keys() {
    let mut w = World::new(1);
    let old = w.nodes[0].clone();
    let new = key(70);
    let claim_with = |k: &SigningKey, nonce: u64| {
        signed(
            k,
            "n0",
            nonce,
            Body::ClaimOrder(pb::ClaimOrder {
                order_id: "o1".into(),
                price_version: 1,
                total: 1000,
            }),
        )
    };
    w.register("o1", 20);
    let before = claim_with(&old, 1);
    assert!(admit(&w.s, &before).is_ok());
    let rot = w.operator(
        21,
        Body::RotateKey(pb::RotateKey {
            party_id: "n0".into(),
            public_key: new.verifying_key().to_bytes().to_vec(),
        }),
    );
    assert!(rot.accepted);
    assert_eq!(w.s.parties["n0"].key_seq, rot.seq);
    // The old key signs nothing any more; the new one does.
    assert_eq!(
        admit(&w.s, &before).unwrap_err().kind(),
        RefusalKind::BadSignature
    );
    let (_, verified) = admit(&w.s, &claim_with(&new, 2)).unwrap();
    assert_eq!(verified.unwrap(), new.verifying_key().to_bytes().to_vec());
    // A command admitted under the old key but committed after the rotation.
    let old_key = old.verifying_key().to_bytes();
    let r = apply(&w.s, &before, 99, 22, false, Some(&old_key)).unwrap_err();
    assert_eq!(r.kind(), RefusalKind::KeyChanged);
    // Keys are never reused.
    let reuse = w.operator(
        23,
        Body::RotateKey(pb::RotateKey {
            party_id: "n0".into(),
            public_key: old_key.to_vec(),
        }),
    );
    rejected(&reuse, Code::KeyInUse, "n0");

    // Revoked: refused outright, nothing appended.
    let rev = w.operator(
        24,
        Body::RevokeKey(pb::RevokeKey {
            party_id: "n0".into(),
            reason: "laptop stolen".into(),
        }),
    );
    assert!(rev.accepted);
    let n = w.s.entries.len();
    match w.s.apply(&claim_with(&new, 3), 25, false) {
        Applied::Refused(r) => assert_eq!(r.kind(), RefusalKind::RevokedKey),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        admit(&w.s, &claim_with(&new, 4)).unwrap_err().kind(),
        RefusalKind::RevokedKey
    );
    assert_eq!(w.s.entries.len(), n);
    // The last operator cannot be revoked.
    let last = w.operator(
        26,
        Body::RevokeKey(pb::RevokeKey {
            party_id: "ops".into(),
            reason: "oops".into(),
        }),
    );
    rejected(&last, Code::LastOperator, "ops");
    // Enrolling a second operator makes it possible.
    let k2 = key(71);
    assert!(
        w.operator(27, {
            let e = enroll(
                &w.op,
                0,
                "ops-2",
                pb::Role::Operator,
                pb::NodeKind::Unspecified,
                &k2,
            );
            let a = decode(&e).unwrap();
            a.command.body.unwrap()
        })
        .accepted
    );
    let e = w.operator(
        28,
        Body::RevokeKey(pb::RevokeKey {
            party_id: "ops".into(),
            reason: "rotation".into(),
        }),
    );
    assert!(e.accepted);
    assert_eq!(w.s.config.as_ref().unwrap().active_operators, 1);
}

#[test]
fn malformed_protocol_commands_are_refused() {
    let mut w = World::new(1);
    let n = w.s.entries.len();
    let bad: Vec<Body> = vec![
        Body::PublishProfile(pb::PublishProfile::default()),
        Body::PublishProfile(pb::PublishProfile {
            regions: vec!["cn-sh".into()],
            max_open_orders: 0,
            dispatch_time_ms: 1,
            ..Default::default()
        }),
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o1".into(),
            milestone: pb::Milestone::Shipped as i32,
            ..Default::default()
        }),
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o1".into(),
            milestone: pb::Milestone::Picked as i32,
            tracking_id: "x".into(),
            ..Default::default()
        }),
        Body::ReleaseOrder(pb::ReleaseOrder {
            order_id: "o1".into(),
            reason: String::new(),
        }),
        Body::OfferHandoff(pb::OfferHandoff {
            order_id: "o1".into(),
            to: "n0".into(),
            expires_in_ms: 0,
        }),
        Body::ReceiveReturn(pb::ReceiveReturn {
            order_id: "o1".into(),
            refund: -1,
            price_version: 1,
        }),
        Body::ReportException(pb::ReportException {
            order_id: "o1".into(),
            kind: 0,
            note: String::new(),
        }),
    ];
    for body in bad {
        let nonce = w.next_nonce();
        let bytes = signed(&w.nodes[0], "n0", nonce, body.clone());
        match w.s.apply(&bytes, 30, false) {
            Applied::Refused(r) => assert_eq!(r.kind(), RefusalKind::Malformed, "{body:?}: {r}"),
            other => panic!("{body:?}: {other:?}"),
        }
    }
    assert_eq!(w.s.entries.len(), n);
}

// ---------------------------------------------------------------------------
// Property test over random command sequences
// ---------------------------------------------------------------------------

const NODES: usize = 3;
const ORDERS: u8 = 3;

#[derive(Clone, Debug)]
enum Op {
    Register(u8),
    Claim {
        node: u8,
        order: u8,
        stale: bool,
    },
    Release {
        node: u8,
        order: u8,
    },
    Offer {
        node: u8,
        order: u8,
        to: u8,
    },
    Accept {
        node: u8,
        order: u8,
    },
    Decline {
        node: u8,
        order: u8,
    },
    Milestone {
        node: u8,
        order: u8,
        m: u8,
    },
    Cancel(u8),
    Amend {
        order: u8,
        stale: bool,
    },
    RequestReturn(u8),
    ClaimReturn {
        node: u8,
        order: u8,
    },
    ReceiveReturn {
        node: u8,
        order: u8,
        over: bool,
    },
    /// Let time pass (long enough, sometimes, for leases and offers to run out).
    Wait(u64),
    Resend(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NODES as u8;
    let o = 0..ORDERS;
    prop_oneof![
        1 => o.clone().prop_map(Op::Register),
        3 => (n.clone(), o.clone(), any::<bool>()).prop_map(|(node, order, stale)| Op::Claim { node, order, stale }),
        1 => (n.clone(), o.clone()).prop_map(|(node, order)| Op::Release { node, order }),
        2 => (n.clone(), o.clone(), n.clone()).prop_map(|(node, order, to)| Op::Offer { node, order, to }),
        2 => (n.clone(), o.clone()).prop_map(|(node, order)| Op::Accept { node, order }),
        1 => (n.clone(), o.clone()).prop_map(|(node, order)| Op::Decline { node, order }),
        3 => (n.clone(), o.clone(), 1u8..5).prop_map(|(node, order, m)| Op::Milestone { node, order, m }),
        1 => o.clone().prop_map(Op::Cancel),
        1 => (o.clone(), any::<bool>()).prop_map(|(order, stale)| Op::Amend { order, stale }),
        1 => o.clone().prop_map(Op::RequestReturn),
        1 => (n.clone(), o.clone()).prop_map(|(node, order)| Op::ClaimReturn { node, order }),
        1 => (n.clone(), o.clone(), any::<bool>()).prop_map(|(node, order, over)| Op::ReceiveReturn { node, order, over }),
        2 => prop_oneof![Just(10u64), Just(600u64), Just(HOUR + GRACE + 1)].prop_map(Op::Wait),
        1 => (0usize..64).prop_map(Op::Resend),
    ]
}

/// A world where n0 serves everything with room for 2 orders, n1 also
/// handles returns, n2 serves another region only.
fn prop_world() -> World {
    let mut w = World::new(NODES as u8);
    w.publish(
        0,
        13,
        pb::PublishProfile {
            regions: vec!["cn-sh".into()],
            max_open_orders: 2,
            dispatch_time_ms: HOUR,
            ..Default::default()
        },
    );
    w.publish(
        1,
        13,
        pb::PublishProfile {
            handles_returns: true,
            ..profile()
        },
    );
    w.publish(
        2,
        13,
        pb::PublishProfile {
            regions: vec!["cn-bj".into()],
            ..profile()
        },
    );
    w
}

fn command(w: &World, op: &Op, nonce: u64) -> Option<Vec<u8>> {
    let oid = |o: &u8| format!("o{o}");
    let node = |n: &u8| (&w.nodes[*n as usize], format!("n{n}"));
    let order = |o: &u8| w.s.orders.get(&oid(o));
    let by_node = |n: &u8, body: Body| {
        let (k, id) = node(n);
        Some(signed(k, &id, nonce, body))
    };
    let by_channel = |body: Body| Some(signed(&w.ch, "shop", nonce, body));
    match op {
        Op::Register(o) => by_channel(Body::RegisterOrder(order_fixture(&oid(o)))),
        Op::Claim {
            node: n,
            order: o,
            stale,
        } => {
            let (v, t) = order(o).map_or((1, 1000), |x| (x.price_version, x.total));
            let v = if *stale && v > 1 { v - 1 } else { v };
            by_node(
                n,
                Body::ClaimOrder(pb::ClaimOrder {
                    order_id: oid(o),
                    price_version: v,
                    total: t,
                }),
            )
        }
        Op::Release { node: n, order: o } => by_node(
            n,
            Body::ReleaseOrder(pb::ReleaseOrder {
                order_id: oid(o),
                reason: "r".into(),
            }),
        ),
        Op::Offer {
            node: n,
            order: o,
            to,
        } => by_node(
            n,
            Body::OfferHandoff(pb::OfferHandoff {
                order_id: oid(o),
                to: format!("n{to}"),
                expires_in_ms: 500,
            }),
        ),
        Op::Accept { node: n, order: o } | Op::Decline { node: n, order: o } => {
            let seq = order(o)
                .and_then(|x| x.offer.as_ref())
                .map_or(1, |f| f.offer_seq);
            let body = if matches!(op, Op::Accept { .. }) {
                Body::AcceptHandoff(pb::AcceptHandoff {
                    order_id: oid(o),
                    offer_seq: seq,
                    damaged: seq % 2 == 0,
                    note: String::new(),
                })
            } else {
                Body::DeclineHandoff(pb::DeclineHandoff {
                    order_id: oid(o),
                    offer_seq: seq,
                    reason: String::new(),
                })
            };
            by_node(n, body)
        }
        Op::Milestone {
            node: n,
            order: o,
            m,
        } => {
            let milestone = pb::Milestone::try_from(*m as i32).unwrap();
            let mut body = pb::ReportMilestone {
                order_id: oid(o),
                milestone: *m as i32,
                ..Default::default()
            };
            if milestone == pb::Milestone::Shipped {
                body.carrier = "carrier-x".into();
                body.tracking_id = "t-1".into();
            }
            by_node(n, Body::ReportMilestone(body))
        }
        Op::Cancel(o) => by_channel(Body::CancelOrder(pb::CancelOrder {
            order_id: oid(o),
            reason: String::new(),
        })),
        Op::Amend { order: o, stale } => {
            let v = order(o).map_or(1, |x| x.price_version);
            let base = if *stale { v + 1 } else { v };
            let price = 400 + (nonce % 7) as i64;
            by_channel(Body::AmendPrice(pb::AmendPrice {
                order_id: oid(o),
                base_version: base,
                lines: vec![pb::OrderLine {
                    sku: "sku-1".into(),
                    quantity: 2,
                    unit_price: price,
                }],
                total: 2 * price,
                reason: "promo".into(),
            }))
        }
        Op::RequestReturn(o) => by_channel(Body::RequestReturn(pb::RequestReturn {
            order_id: oid(o),
            reason: String::new(),
        })),
        Op::ClaimReturn { node: n, order: o } => {
            by_node(n, Body::ClaimReturn(pb::ClaimReturn { order_id: oid(o) }))
        }
        Op::ReceiveReturn {
            node: n,
            order: o,
            over,
        } => {
            let (v, t) = order(o).map_or((1, 0), |x| (x.price_version, x.total));
            by_node(
                n,
                Body::ReceiveReturn(pb::ReceiveReturn {
                    order_id: oid(o),
                    refund: if *over { t + 1 } else { t },
                    price_version: v,
                }),
            )
        }
        Op::Wait(_) | Op::Resend(_) => None,
    }
}

fn order_fixture(id: &str) -> pb::RegisterOrder {
    order(id, &format!("m-{id}"), 500)
}

/// Runs the ops, checking the invariants after every step; returns the state.
fn run_checked(ops: &[Op]) -> Result<MemState, TestCaseError> {
    let mut w = prop_world();
    let mut now = 1_000u64;
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let bytes = match op {
            Op::Wait(ms) => {
                now += ms;
                continue;
            }
            Op::Resend(k) if sent.is_empty() => continue,
            Op::Resend(k) => sent[k % sent.len()].clone(),
            _ => command(&w, op, 10_000 + i as u64).expect("a command"),
        };
        sent.push(bytes.clone());
        // The clock jitters backwards sometimes: entries must not.
        let stamp = now.saturating_sub((i as u64 * 7) % 5);
        let before = w.s.clone();
        let applied = w.s.apply(&bytes, stamp, false);
        let Applied::Appended(e) = applied else {
            continue;
        };
        check_step(&before, &w.s, &e)?;
    }
    Ok(w.s)
}

fn check_step(before: &MemState, after: &MemState, e: &Entry) -> Result<(), TestCaseError> {
    // Time never goes backwards.
    if let Some(prev) = before.entries.last() {
        prop_assert!(e.time_ms >= prev.time_ms);
    }
    let a = decode(&e.command).unwrap();
    let signer = a.envelope.signer.as_str();
    let body = a.command.body.as_ref().unwrap();
    let lapsed = e.message.contains("lapsed");
    for (id, o) in &after.orders {
        let Some(b) = before.orders.get(id) else {
            continue;
        };
        // Price versions only increase, by an accepted amendment, one at a time.
        if o.price_version != b.price_version {
            prop_assert!(e.accepted && matches!(body, Body::AmendPrice(_)));
            prop_assert_eq!(o.price_version, b.price_version + 1);
        }
        // Ownership changes only by a claim, an accepted handoff, a release or a recorded lapse.
        if o.owner != b.owner {
            prop_assert!(e.accepted, "owner changed by a rejected entry");
            prop_assert!(
                lapsed
                    || matches!(
                        body,
                        Body::ClaimOrder(_) | Body::AcceptHandoff(_) | Body::ReleaseOrder(_)
                    ),
                "owner of {} changed by {:?}",
                id,
                body
            );
        }
        // Custody changes only with ownership or by the owner's shipping/delivery.
        if o.custodian != b.custodian {
            prop_assert!(e.accepted);
            prop_assert!(
                lapsed
                    || matches!(
                        body,
                        Body::ClaimOrder(_)
                            | Body::AcceptHandoff(_)
                            | Body::ReleaseOrder(_)
                            | Body::ReportMilestone(_)
                    ),
                "custody of {} changed by {:?}",
                id,
                body
            );
        }
    }
    if e.accepted {
        match body {
            Body::ClaimOrder(c) => {
                let b = &before.orders[&c.order_id];
                // Never two owners: the order was free (or its lease had run out).
                prop_assert!(b.owner.is_none() || b.lease_lapsed(e.time_ms));
                // The amount matched the version in force.
                prop_assert_eq!(c.price_version, b.price_version);
                prop_assert_eq!(c.total, b.total);
                // The owner was eligible when it claimed.
                prop_assert!(check_eligible(before, signer, b).is_ok());
                let p = &before.profiles[signer];
                let mut open = before.stats.get(signer).map_or(0, |s| s.open_orders);
                // Re-claiming its own lapsed order: the lapse recorded first frees its place.
                if b.owner.as_deref() == Some(signer) {
                    open -= 1;
                }
                prop_assert!(open < p.max_open_orders as u64);
            }
            Body::AcceptHandoff(h) => {
                let b = &before.orders[&h.order_id];
                prop_assert!(check_eligible(before, signer, b).is_ok());
                prop_assert_eq!(b.offer.as_ref().map(|f| f.to.as_str()), Some(signer));
            }
            Body::ReceiveReturn(r) => {
                let b = &before.orders[&r.order_id];
                prop_assert_eq!(r.price_version, b.price_version);
                prop_assert!(r.refund <= b.total);
            }
            _ => {}
        }
    }
    // The capacity counters agree with the orders.
    for n in 0..NODES {
        let node = format!("n{n}");
        let owned = after
            .orders
            .values()
            .filter(|o| o.owner.as_deref() == Some(node.as_str()) && o.status.is_leased())
            .count() as u64;
        let counted = after.stats.get(&node).map_or(0, |s| s.open_orders);
        prop_assert_eq!(owned, counted, "open orders of {}", node);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn protocol_invariants_hold_for_any_command_sequence(ops in proptest::collection::vec(op(), 0..80)) {
        let s = run_checked(&ops)?;
        // Replaying the same sequence gives the same entries byte for byte.
        let again = run_checked(&ops)?;
        prop_assert_eq!(&s.entries, &again.entries);
        for (i, e) in s.entries.iter().enumerate() {
            prop_assert_eq!(e.seq, i as u64);
            prop_assert!(e.verify_link(i.checked_sub(1).map(|p| s.entries[p].head()).as_ref()).is_ok());
        }
    }
}

// ---------------------------------------------------------------------------
// Disputes: one worked example per responsibility rule (docs/disputes.md)
// ---------------------------------------------------------------------------

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
        }),
    );
    rejected(&e, Code::IncidentInFuture, "10000");
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
