//! SLA clocks (rules version 3): the `late` rule judged against the
//! channel's ship-by and promised delivery as well as the node's own
//! declared dispatch, with an order clock that no release, reclaim or
//! handoff restarts (docs/disputes.md §4.3).
//!
//! An order registered under version 3 carries its [`SlaTerms`]: when it
//! became sourceable (its registration) and the channel's ship-by. Its
//! clock runs from there; the facts cut it into stretches, each the
//! responsibility of one party: a node from the claim or accepted handoff
//! that made it the owner until it released it, handed it on or shipped;
//! the sourcer ([`sourcer_at`], the channel today) while nobody owned it.
//! A node is judged by its **first** lease start on the order, so
//! releasing and claiming again does not give it a new clock.
//!
//! Orders registered under an earlier version have no terms and keep the
//! late rule of their version, so their rulings replay unchanged.

use serde::{Deserialize, Serialize};

use super::code::Rule;
use super::disputes::Ruling;
use super::state::{ClusterConfig, EventKind, Order, OrderStatus};
use crate::pb;

/// What an order registered under rules version 3 is judged against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaTerms {
    /// When the order became sourceable: its registration entry's time.
    pub sourceable_ms: u64,
    /// The channel's ship-by (0: none): the latest hand-off to the carrier
    /// it expects. Never after the order's promised delivery.
    pub ship_by_ms: u64,
}

/// Who was sourcing the order in the unowned stretch that began at entry
/// `from_seq`: the registering channel.
///
/// The hook for brokered sourcing: when a broker role signs the sourcing
/// decisions of an order, the stretch an assignment of its covers is the
/// broker's, and this is the one function to teach it (it is handed the
/// order, whose facts will carry the assignments, and the entry that made
/// the order sourceable).
pub fn sourcer_at(order: &Order, from_seq: u64) -> String {
    let _ = from_seq;
    order.registered_by.clone()
}

/// A stretch of the order's clock before its first shipment: who owned it
/// from entry `seq` at `time_ms` (`None`: nobody, the sourcer's time).
#[derive(Clone, Debug)]
struct Stretch {
    holder: Option<String>,
    seq: u64,
    time_ms: u64,
    /// Began with an accepted handoff (the sender held the stretch before).
    by_handoff: bool,
}

/// A node's first lease start on the order: (entry, time, declared
/// dispatch time of the profile version in force then).
pub fn first_start(order: &Order, node: &str, before_seq: u64) -> Option<(u64, u64, u64)> {
    order
        .events
        .iter()
        .filter(|e| e.seq < before_seq)
        .find_map(|e| match &e.kind {
            EventKind::Claimed {
                node: n,
                dispatch_time_ms,
                ..
            } if n == node => Some((e.seq, e.time_ms, *dispatch_time_ms)),
            EventKind::HandedOff {
                to,
                dispatch_time_ms,
                ..
            } if to == node => Some((e.seq, e.time_ms, *dispatch_time_ms)),
            _ => None,
        })
}

fn stretches(order: &Order, terms: &SlaTerms, before_seq: u64) -> Vec<Stretch> {
    let mut out = vec![Stretch {
        holder: None,
        seq: order.registered_seq,
        time_ms: terms.sourceable_ms,
        by_handoff: false,
    }];
    for e in order.events.iter().filter(|e| e.seq < before_seq) {
        let (holder, by_handoff) = match &e.kind {
            EventKind::Claimed { node, .. } => (Some(node.clone()), false),
            EventKind::HandedOff { to, .. } => (Some(to.clone()), true),
            EventKind::Released { .. }
            | EventKind::Lapsed { .. }
            | EventKind::FenceCleared { .. }
            | EventKind::FenceExpired { .. } => (None, false),
            _ => continue,
        };
        out.push(Stretch {
            holder,
            seq: e.seq,
            time_ms: e.time_ms,
            by_handoff,
        });
    }
    out
}

/// The `late` rule of version 3 for an order no lease of which lapsed
/// (a lapse is judged first, as in every version): see docs/disputes.md
/// §4.3 for the steps this follows.
pub(super) fn late(order: &Order, terms: &SlaTerms) -> Ruling {
    let id = &order.order_id;
    let shipped = order.events.iter().find_map(|e| match &e.kind {
        // A tender to an enrolled carrier is the node's hand-off.
        EventKind::Shipped { node, carrier, .. } | EventKind::Tendered { node, carrier } => {
            Some((e.seq, e.time_ms, node.clone(), carrier.clone()))
        }
        _ => None,
    });
    let Some((ship_seq, ship_ms, node, carrier)) = shipped else {
        return ruling(
            "",
            Rule::NoBreach,
            Vec::new(),
            format!("order {id} has not shipped and no lease lapsed"),
        );
    };
    // 1. The shipping node's own promise, from its first lease start.
    if let Some((start_seq, start_ms, dispatch)) = first_start(order, &node, ship_seq) {
        if ship_ms > start_ms.saturating_add(dispatch) {
            return ruling(
                &node,
                Rule::LateDispatch,
                vec![start_seq, ship_seq],
                format!(
                    "{node} took order {id} on at {start_ms} and handed it to the carrier at {ship_ms}, after its declared dispatch time of {dispatch} ms"
                ),
            );
        }
    }
    // 2. The channel's target for the hand-off: its ship-by, else the promised delivery.
    let target = match (terms.ship_by_ms, order.promised_delivery_ms) {
        (0, 0) => None,
        (0, p) => Some((p, "promised delivery")),
        (s, _) => Some((s, "ship-by")),
    };
    if let Some((at, what)) = target.filter(|(at, _)| ship_ms > *at) {
        return missed(order, terms, ship_seq, ship_ms, at, what);
    }
    // 3. Dispatched in time: a delivery after the promise is the carrier's.
    let promised = order.promised_delivery_ms;
    if promised != 0 {
        let delivered = order.events.iter().find(|e| {
            e.seq > ship_seq
                && matches!(
                    e.kind,
                    EventKind::Delivered { .. } | EventKind::DeliveryProven { .. }
                )
        });
        if let Some(d) = delivered.filter(|d| d.time_ms > promised) {
            return ruling(
                &carrier,
                Rule::LateDelivery,
                vec![ship_seq, d.seq],
                format!(
                    "{carrier} had order {id} from {ship_ms} and delivered it at {}, after the promised delivery {promised}",
                    d.time_ms
                ),
            );
        }
    }
    ruling(
        "",
        Rule::NoBreach,
        vec![ship_seq],
        format!("order {id} was handed to the carrier within the declared dispatch time"),
    )
}

/// The hand-off came after the target `at`: whose time was it? The
/// stretch running at `at`; if its holder had taken the order on (first
/// lease start) in time for its declared dispatch to fit `at`, that node;
/// if it came by a handoff, the sender's stretch is asked the same; if by
/// a claim, or nobody held it, the sourcer of the unowned stretch before.
fn missed(
    order: &Order,
    terms: &SlaTerms,
    ship_seq: u64,
    ship_ms: u64,
    at: u64,
    what: &str,
) -> Ruling {
    let id = &order.order_id;
    let all = stretches(order, terms, ship_seq);
    let mut i = all.iter().rposition(|s| s.time_ms <= at).unwrap_or(0);
    let sourced = |src: &Stretch, claim: Option<u64>| {
        let sourcer = sourcer_at(order, src.seq);
        let mut evidence = vec![src.seq];
        evidence.extend(claim);
        evidence.push(ship_seq);
        ruling(
            &sourcer,
            Rule::SourcedLate,
            evidence,
            format!(
                "order {id} was not taken on in time for its {what} {at}: it was sourceable from {} (entry {}) and {sourcer} was sourcing it; it reached the carrier at {ship_ms}",
                src.time_ms, src.seq
            ),
        )
    };
    loop {
        let s = &all[i];
        let Some(holder) = &s.holder else {
            return sourced(s, None);
        };
        if let Some((start_seq, start_ms, dispatch)) = first_start(order, holder, ship_seq) {
            if start_ms.saturating_add(dispatch) <= at {
                return ruling(
                    holder,
                    Rule::MissedShipBy,
                    vec![start_seq, ship_seq],
                    format!(
                        "{holder} took order {id} on at {start_ms} with a declared dispatch time of {dispatch} ms, in time for its {what} {at}, and it reached the carrier only at {ship_ms}"
                    ),
                );
            }
        }
        if i == 0 {
            // Not reachable: the first stretch is the unowned one.
            return sourced(s, None);
        }
        if !s.by_handoff {
            // Claimed too late for the target: the stretch before was unowned.
            return sourced(&all[i - 1], Some(s.seq));
        }
        i -= 1;
    }
}

fn ruling(liable: &str, rule: Rule, evidence: Vec<u64>, explanation: String) -> Ruling {
    Ruling {
        liable: liable.to_string(),
        rule,
        evidence,
        explanation,
    }
}

impl Order {
    /// The view of the order a replica serves, under the rules of `config`:
    /// [`Order::to_pb`], with a lease that ran out while the order was
    /// picked or packed under rules version 2 or later shown as fenced
    /// (`lease_fenced`), not lapsed: the lapse will fence it for its owner
    /// and nobody else may claim it.
    pub fn to_pb_under(
        &self,
        history: Vec<u64>,
        now_ms: u64,
        config: &ClusterConfig,
    ) -> pb::OrderView {
        let mut v = self.to_pb(history, now_ms);
        let fences =
            config.rules() >= 2 && matches!(self.status, OrderStatus::Picked | OrderStatus::Packed);
        if v.lease_lapsed && fences {
            v.lease_lapsed = false;
            v.lease_fenced = true;
        }
        if self.status == OrderStatus::Fenced {
            v.lease_fenced = true;
        }
        if let Some((seq, ms, what)) = super::deadlines::claim_anchor(self) {
            v.claim_from_seq = seq;
            v.claim_from_ms = ms;
            v.claim_from_delivery = what == "delivery";
        }
        v
    }
}
