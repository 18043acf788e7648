//! A property test over random command sequences of the whole protocol: the
//! invariants (one owner, custody and capacity counters, monotonic time and
//! price versions) hold after every step, and a replay is byte-identical.
//! Run under rules version 1 and 2; under version 2 also: never two nodes
//! physically in progress on one order outside a fence.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::rules::custody::{FenceExpiryNote, LapseNote};

use super::world::*;
use super::*;

const NODES: usize = 3;
const ORDERS: u8 = 3;

#[derive(Clone, Debug)]
pub(super) enum Op {
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

pub(super) fn op() -> impl Strategy<Value = Op> {
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
fn prop_world(rules: Rules) -> World {
    let mut w = World::with_rules(NODES as u8, rules.version, rules.fence_ms);
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
                shortage: false,
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

/// The rules a run is under: the genesis version and fence.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rules {
    version: u32,
    fence_ms: u64,
}

const V1: Rules = Rules {
    version: 0,
    fence_ms: 0,
};

/// A fence short enough for the runs' waits to outlast it.
const V2: Rules = Rules {
    version: 2,
    fence_ms: 1_000,
};

/// Version 3 with the same short fence (the health fold's property test).
pub(super) const V3: Rules = Rules {
    version: 3,
    fence_ms: 1_000,
};

/// The nodes that have goods of an order physically in hand, by order: a
/// node enters by an accepted `picked` or `packed`, passes them on by a
/// countersigned handoff, and leaves by shipping them, by giving the order
/// up (a release, or the confirmation of a fenced owner), by a cancel, or
/// when its fence runs out (the expiry stands against it). Tracked from the
/// entries alone, not from the rules' state.
type Workers = BTreeMap<String, BTreeSet<String>>;

/// Under version 2: no lapse drops a node with goods in hand without a
/// fence, and no node starts picking or packing while another has them.
fn track_workers(workers: &mut Workers, e: &Entry) -> Result<(), TestCaseError> {
    if !e.accepted || e.order_id.is_empty() {
        return Ok(());
    }
    let a = decode(&e.command).unwrap();
    let signer = a.envelope.signer.clone();
    let w = workers.entry(e.order_id.clone()).or_default();
    for note in e.message.split("; ") {
        if let Some(l) = LapseNote::parse(note) {
            prop_assert!(
                l.fenced_until_ms.is_some() || !w.contains(&l.owner),
                "{} lapsed with goods in hand and no fence: {}",
                l.owner,
                e.message
            );
        }
        if let Some(x) = FenceExpiryNote::parse(note) {
            w.remove(&x.node);
        }
    }
    match a.command.body.as_ref().unwrap() {
        Body::ReportMilestone(m) => match pb::Milestone::try_from(m.milestone) {
            Ok(pb::Milestone::Picked | pb::Milestone::Packed) => {
                prop_assert!(
                    w.iter().all(|n| *n == signer),
                    "{} started on order {} while {:?} have goods in hand",
                    signer,
                    e.order_id,
                    w
                );
                w.insert(signer);
            }
            Ok(pb::Milestone::Shipped) => {
                w.remove(&signer);
            }
            _ => {}
        },
        Body::ReleaseOrder(_) => {
            w.remove(&signer);
        }
        // The goods moved to the signer, countersigned.
        Body::AcceptHandoff(_) if !w.is_empty() => {
            w.clear();
            w.insert(signer);
        }
        Body::CancelOrder(_) => w.clear(),
        _ => {}
    }
    Ok(())
}

/// Runs the ops, checking the invariants after every step; returns the state.
fn run_checked(ops: &[Op]) -> Result<MemState, TestCaseError> {
    run_under(V1, ops)
}

/// [`run_checked`] under the given rules.
pub(super) fn run_under(rules: Rules, ops: &[Op]) -> Result<MemState, TestCaseError> {
    let mut w = prop_world(rules);
    let mut workers = Workers::new();
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
        if rules.version >= 2 {
            track_workers(&mut workers, &e)?;
        }
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
    let config = before.config.clone().unwrap_or_default();
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
            // Or (version 2) by the fenced old owner shipping.
            let from_fence = b.status == OrderStatus::Fenced
                && b.fence.as_ref().is_some_and(|f| f.node == signer)
                && o.owner.as_deref() == Some(signer);
            prop_assert!(
                lapsed
                    || from_fence
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
                // Open by the rules in force: never within a fence.
                prop_assert!(
                    b.open_at(e.time_ms, &config),
                    "claimed while {:?}",
                    b.status
                );
                prop_assert!(b.status != OrderStatus::Fenced || b.fence_expired(e.time_ms));
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

    #[test]
    fn version_2_never_has_two_nodes_in_progress_outside_a_fence(ops in proptest::collection::vec(op(), 0..80)) {
        let s = run_under(V2, &ops)?;
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
