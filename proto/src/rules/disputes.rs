//! The responsibility rules: who is liable for an incident on an order,
//! computed from the order's recorded facts alone (docs/disputes.md).
//!
//! Every ruling names the liable party ("" when nobody in the chain is),
//! the rule applied and the ledger entries that are its evidence. The same
//! order and dispute always give the same ruling, so anyone replaying the
//! ledger reproduces it, and the state machine rejects a `ResolveDispute`
//! that says anything else.

use super::carriers::proven_delivery;
use super::code::{Incident, Rule};
use super::state::{Dispute, Event, EventKind, Order};

/// A computed ruling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruling {
    pub liable: String,
    pub rule: Rule,
    pub evidence: Vec<u64>,
    pub explanation: String,
}

fn ruling(liable: &str, rule: Rule, evidence: Vec<u64>, explanation: String) -> Ruling {
    Ruling {
        liable: liable.to_string(),
        rule,
        evidence,
        explanation,
    }
}

/// Who held the goods at `t`, by which entry, and whether that custody
/// began with a clean countersigned acceptance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Custody {
    pub(super) holder: String,
    pub(super) seq: u64,
    pub(super) how: How,
}

/// How a holder came to hold an order's goods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// By its claim.
    Claim,
    /// By a countersigned handoff accepted without damage noted.
    CleanAcceptance,
    /// By a countersigned handoff accepted with damage noted.
    DamagedAcceptance,
    /// As the carrier, since the owner reported it shipped.
    Carrier,
    /// Still the carrier: delivery was reported without proof of delivery.
    CarrierNoProof,
    /// Rules version 3: as the carrier, by its signed tender acceptance.
    SignedTender,
    /// Rules version 3: still the signed carrier: the delivery was reported
    /// on the node's word only.
    CarrierWordOnly,
    /// Rules version 4: the node that shipped to a carrier that is not
    /// enrolled and signed nothing: the carrier is its agent, and it stays
    /// the custodian until delivery.
    ShippersAgent,
}

impl How {
    /// Still the same holder, after a delivery that did not end its custody.
    pub fn is_delivery_kept(self) -> bool {
        matches!(self, How::CarrierNoProof | How::CarrierWordOnly)
    }
}

/// Custody at time `t`: the last custody-moving fact at or before `t`.
fn custody_at(order: &Order, t: u64) -> Option<Custody> {
    order
        .events
        .iter()
        .filter(|e| e.time_ms <= t)
        .fold(None, custody_after)
}

/// Custody after fact `e`, given custody `c` before it. Nobody holds an
/// open, released or lapsed order, nor one delivered with proof; a delivery
/// without proof leaves it with the carrier. Also laid out as intervals over
/// an order's entries for auditors (`custody.rs`).
pub(super) fn custody_after(c: Option<Custody>, e: &Event) -> Option<Custody> {
    match &e.kind {
        // Rules version 3: the node's word does not end a signed carrier's custody.
        EventKind::Delivered { .. }
            if c.as_ref()
                .is_some_and(|c| matches!(c.how, How::SignedTender | How::CarrierWordOnly)) =>
        {
            c.map(|prev| Custody {
                seq: e.seq,
                how: How::CarrierWordOnly,
                ..prev
            })
        }
        // Rules version 4: an unsigned hand-off leaves the goods with the node.
        EventKind::Shipped {
            node, agent: true, ..
        } => Some(Custody {
            holder: node.clone(),
            seq: e.seq,
            how: How::ShippersAgent,
        }),
        // Without proof the node's agent still has the goods: the node's custody.
        EventKind::Delivered { proof: false, .. }
            if c.as_ref().is_some_and(|c| c.how == How::ShippersAgent) =>
        {
            c
        }
        EventKind::TenderAccepted { carrier, .. } => Some(Custody {
            holder: carrier.clone(),
            seq: e.seq,
            how: How::SignedTender,
        }),
        EventKind::DeliveryProven { .. } => None,
        EventKind::Claimed { node, .. } => Some(Custody {
            holder: node.clone(),
            seq: e.seq,
            how: How::Claim,
        }),
        EventKind::HandedOff { to, damaged, .. } => Some(Custody {
            holder: to.clone(),
            seq: e.seq,
            how: if *damaged {
                How::DamagedAcceptance
            } else {
                How::CleanAcceptance
            },
        }),
        EventKind::Released { .. }
        | EventKind::Lapsed { .. }
        | EventKind::FenceCleared { .. }
        | EventKind::FenceExpired { .. }
        | EventKind::Reassigned { .. } => None,
        EventKind::Shipped {
            carrier,
            agent: false,
            ..
        } => Some(Custody {
            holder: carrier.clone(),
            seq: e.seq,
            how: How::Carrier,
        }),
        EventKind::Delivered { proof: true, .. } => None,
        EventKind::Delivered { proof: false, .. } => c.map(|prev| Custody {
            seq: e.seq,
            how: How::CarrierNoProof,
            ..prev
        }),
        // A fenced old owner keeps the goods it picked or packed.
        // A tender leaves the goods with the node until the carrier signs.
        EventKind::Fenced { .. }
        | EventKind::Tendered { .. }
        | EventKind::Cancelled
        | EventKind::WrongPrice { .. }
        | EventKind::MilestoneWithoutOwnership { .. } => c,
    }
}

/// The ruling the rules give for `dispute` on `order`.
pub fn rule_on(order: &Order, dispute: &Dispute) -> Ruling {
    let Some(kind) = Incident::parse(&dispute.kind) else {
        return ruling(
            "",
            Rule::NoRule,
            Vec::new(),
            format!("no rule for {}", dispute.kind),
        );
    };
    match kind {
        Incident::Lost => custodian_rule(order, dispute, "lost"),
        Incident::Damaged => damaged(order, dispute),
        Incident::Late => late(order),
        Incident::DuplicateProcessing => duplicate(order),
        Incident::PriceMismatch => first_fact(
            order,
            |k| match k {
                EventKind::WrongPrice { party } => Some(party.clone()),
                _ => None,
            },
            Rule::WrongPriceQuoted,
            "quoted a price other than the order's current price version",
        ),
    }
}

/// Liability stays with whoever held the goods at the incident, or (rules
/// version 2, a dispute naming a window) with whoever held them in the
/// window.
fn custodian_rule(order: &Order, dispute: &Dispute, what: &str) -> Ruling {
    let t = dispute.incident_ms;
    if dispute.known_good_ms != 0 {
        return window_rule(order, dispute.known_good_ms, t, what, dispute.parcels);
    }
    match custody_at(order, t) {
        None => proven_delivery(order, t, what).unwrap_or_else(|| {
            ruling(
                "",
                Rule::NoCustodian,
                Vec::new(),
                format!("nobody in the chain held order {} at {t}", order.order_id),
            )
        }),
        Some(c) => custody_ruling(order, c, t, what, dispute.parcels),
    }
}

/// Rules version 2: the custody intervals that overlap the window from
/// `good` (last known good) to `bad` (first known bad). A clean
/// countersigned acceptance in the window shows the goods were good when
/// the receiver took them, so the window starts again there. One holder
/// left: the rule for its custody, as at an instant. Several: nobody is
/// liable by the rules and the ruling is escalated (`shared_custody`),
/// citing each holder's custody entry, for the parties to settle.
fn window_rule(order: &Order, good: u64, bad: u64, what: &str, parcels: u32) -> Ruling {
    let mut held: Vec<Custody> = Vec::new();
    let mut c = custody_at(order, good);
    held.extend(c.clone());
    for e in order
        .events
        .iter()
        .filter(|e| e.time_ms > good && e.time_ms <= bad)
    {
        let next = custody_after(c.clone(), e);
        if next != c {
            if let Some(n) = &next {
                if n.how == How::CleanAcceptance {
                    held.clear();
                }
                match held.iter_mut().find(|h| h.holder == n.holder) {
                    // Still the same holder (a delivery without proof): its latest custody.
                    Some(h) if n.how.is_delivery_kept() => *h = n.clone(),
                    Some(_) => {}
                    None => held.push(n.clone()),
                }
            }
        }
        c = next;
    }
    match held.len() {
        0 => proven_delivery(order, bad, what).unwrap_or_else(|| {
            ruling(
                "",
                Rule::NoCustodian,
                Vec::new(),
                format!(
                    "nobody in the chain held order {} between {good} and {bad}",
                    order.order_id
                ),
            )
        }),
        1 => custody_ruling(order, held.remove(0), bad, what, parcels),
        _ => ruling(
            "",
            Rule::SharedCustody,
            held.iter().map(|h| h.seq).collect(),
            format!(
                "order {} {what} between {good} and {bad}: {} held it in that window and no clean countersigned acceptance narrows it to one; escalated",
                order.order_id,
                held.iter()
                    .map(|h| h.holder.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

/// The ruling against the holder of custody `c` for an incident at `t`;
/// `parcels` is what a `lost` dispute names (rules version 4, 0: the whole
/// order).
fn custody_ruling(order: &Order, c: Custody, t: u64, what: &str, parcels: u32) -> Ruling {
    let short = short_at_tender(order, &c);
    if let Some(s) = short
        .as_ref()
        .filter(|s| parcels != 0 && parcels <= s.missing)
    {
        return ruling(
            &s.node,
            Rule::ParcelsShortAtTender,
            vec![s.tender_seq, s.accepted_seq],
            format!(
                "order {} {what} at {t}: {parcels} parcel(s), but {} signed for {} of the {} parcels {} tendered (entry {}), so the missing parcels never left {}",
                order.order_id, s.carrier, s.received, s.tendered, s.node, s.accepted_seq, s.node
            ),
        );
    }
    let unsigned_carrier = || {
        order
            .events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::Shipped { carrier, .. } if e.seq == c.seq => Some(carrier.clone()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let (rule, why) = match c.how {
        How::Claim => (Rule::CustodianAtIncident, "held it by its claim".to_string()),
        How::CleanAcceptance => (
            Rule::CleanAcceptance,
            "accepted it in good condition (a clean, countersigned handoff)".to_string(),
        ),
        How::DamagedAcceptance => (
            Rule::CustodianAtIncident,
            "held it since a countersigned handoff".to_string(),
        ),
        How::Carrier => (Rule::CustodianAtIncident, "held it as the carrier".to_string()),
        How::CarrierNoProof => (
            Rule::DeliveredWithoutProof,
            "reported delivery without proof of delivery, so custody stays with the carrier"
                .to_string(),
        ),
        How::SignedTender => (
            Rule::CarrierSignedTender,
            "held it as the carrier since it signed the tender acceptance".to_string(),
        ),
        How::CarrierWordOnly => (
            Rule::DeliveredOnNodeWord,
            "signed the tender acceptance, and the delivery rests on the node's word only (no delivery scan, no delivery code), so custody stays with the carrier".to_string(),
        ),
        How::ShippersAgent => (
            Rule::UnsignedCarrierIsShippersAgent,
            format!(
                "handed it to {}, which is not an enrolled carrier and signed for nothing: it carried as {}'s agent, so {} stayed the custodian until delivery",
                unsigned_carrier(),
                c.holder,
                c.holder
            ),
        ),
    };
    let mut evidence = vec![c.seq];
    if c.how == How::CarrierWordOnly {
        if let Some(s) = order
            .events
            .iter()
            .rev()
            .find(|e| e.seq < c.seq && matches!(e.kind, EventKind::TenderAccepted { .. }))
        {
            evidence.insert(0, s.seq);
        }
    }
    if c.how == How::CarrierNoProof {
        if let Some(s) = order
            .events
            .iter()
            .rev()
            .find(|e| e.seq < c.seq && matches!(e.kind, EventKind::Shipped { .. }))
        {
            evidence.insert(0, s.seq);
        }
    }
    let mut explanation = format!("order {} {what} at {t}: {} {why}", order.order_id, c.holder);
    if let Some(s) = short {
        explanation.push_str(&format!(
            " (it signed for {} of the {} parcels tendered: a lost dispute for no more than the {} missing names {})",
            s.received, s.tendered, s.missing, s.node
        ));
    }
    ruling(&c.holder, rule, evidence, explanation)
}

/// Rules version 4: a signed carrier's acceptance short of the tender.
struct Short {
    node: String,
    carrier: String,
    tender_seq: u64,
    accepted_seq: u64,
    tendered: u32,
    received: u32,
    missing: u32,
}

/// The shortfall of the tender acceptance custody `c` rests on, when the
/// rules recorded one (`parcels_short_at_tender`, rules version 4 only).
fn short_at_tender(order: &Order, c: &Custody) -> Option<Short> {
    if !matches!(c.how, How::SignedTender | How::CarrierWordOnly) {
        return None;
    }
    let t = order.tender.as_ref()?;
    let a = t.accepted.as_ref()?;
    let recorded = order.exceptions.iter().any(|(kind, by, seq)| {
        kind == super::code::Exception::ParcelsShortAtTender.as_str()
            && *seq == a.seq
            && *by == t.carrier
    });
    (recorded && c.holder == t.carrier && a.parcels < t.parcels).then(|| Short {
        node: t.node.clone(),
        carrier: t.carrier.clone(),
        tender_seq: t.seq,
        accepted_seq: a.seq,
        tendered: t.parcels,
        received: a.parcels,
        missing: t.parcels - a.parcels,
    })
}

/// Damage noted at a countersigned acceptance points to the previous
/// custodian; otherwise the custodian at the incident is liable.
fn damaged(order: &Order, dispute: &Dispute) -> Ruling {
    // Damage noted at any acceptance happened before it, whenever it was reported.
    let noted = order.events.iter().find(|e| {
        matches!(
            e.kind,
            EventKind::HandedOff { damaged: true, .. }
                | EventKind::TenderAccepted { damaged: true, .. }
        )
    });
    if let Some(Event {
        seq,
        kind: EventKind::TenderAccepted { node, carrier, .. },
        ..
    }) = noted
    {
        // Rules version 3: the carrier noted damage when it signed for the goods.
        return ruling(
            node,
            Rule::DamageNotedAtTender,
            vec![*seq],
            format!(
                "{carrier} noted damage when it signed for order {} from {node}, so it was damaged before the tender",
                order.order_id
            ),
        );
    }
    if let Some(e) = noted {
        if let EventKind::HandedOff { from, to, .. } = &e.kind {
            return ruling(
                from,
                Rule::DamageNotedAtAcceptance,
                vec![e.seq],
                format!(
                    "{to} noted damage when it accepted order {} from {from}, so it arrived damaged",
                    order.order_id
                ),
            );
        }
    }
    custodian_rule(order, dispute, "was damaged")
}

/// A lapse is the lapsed owner's; otherwise late when the hand-off to the
/// carrier came after the lease start plus the declared dispatch time of
/// the profile version in force.
fn late(order: &Order) -> Ruling {
    let lapse = order.events.iter().find_map(|e| match &e.kind {
        EventKind::Lapsed { node, deadline_ms }
        | EventKind::Fenced {
            node, deadline_ms, ..
        } => Some((e.seq, node.clone(), *deadline_ms)),
        _ => None,
    });
    if let Some((seq, node, deadline)) = lapse {
        let start = lease_start_before(order, seq, &node);
        let mut evidence: Vec<u64> = start.iter().map(|(s, _, _)| *s).collect();
        evidence.push(seq);
        return ruling(
            &node,
            Rule::LeaseLapsed,
            evidence,
            format!(
                "{node} did not ship order {} by its lease deadline {deadline}",
                order.order_id
            ),
        );
    }
    // Rules version 3: an order registered with SLA terms is judged by its
    // order clock and its channel's targets (`sla.rs`).
    if let Some(terms) = &order.sla {
        return super::sla::late(order, terms);
    }
    let shipped = order.events.iter().find_map(|e| match &e.kind {
        // Rules version 3: a tender is the node's hand-off.
        EventKind::Shipped { node, .. } | EventKind::Tendered { node, .. } => {
            Some((e.seq, e.time_ms, node.clone()))
        }
        _ => None,
    });
    let Some((ship_seq, ship_ms, node)) = shipped else {
        return ruling(
            "",
            Rule::NoBreach,
            Vec::new(),
            format!(
                "order {} has not shipped and no lease lapsed",
                order.order_id
            ),
        );
    };
    match lease_start_before(order, ship_seq, &node) {
        Some((start_seq, start_ms, dispatch)) if ship_ms > start_ms.saturating_add(dispatch) => ruling(
            &node,
            Rule::LateDispatch,
            vec![start_seq, ship_seq],
            format!(
                "{node} took order {} on at {start_ms} and handed it to the carrier at {ship_ms}, after its declared dispatch time of {dispatch} ms",
                order.order_id
            ),
        ),
        _ => ruling(
            "",
            Rule::NoBreach,
            vec![ship_seq],
            format!(
                "order {} was handed to the carrier within the declared dispatch time",
                order.order_id
            ),
        ),
    }
}

/// The claim or acceptance that began `node`'s lease before entry `before`:
/// (entry, time, declared dispatch time of the profile version in force).
fn lease_start_before(order: &Order, before: u64, node: &str) -> Option<(u64, u64, u64)> {
    order
        .events
        .iter()
        .rev()
        .filter(|e| e.seq < before)
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

/// Duplicate processing: the first node that reported a milestone on an
/// order it did not own, or (rules version 2) whose fence ran out before
/// that, neither confirming nor shipping the order it had picked or packed.
fn duplicate(order: &Order) -> Ruling {
    let fact = order.events.iter().find_map(|e| match &e.kind {
        EventKind::MilestoneWithoutOwnership { party } => Some((e.seq, party, false)),
        EventKind::FenceExpired { node, .. } => Some((e.seq, node, true)),
        _ => None,
    });
    match fact {
        Some((seq, node, true)) => ruling(
            node,
            Rule::FenceExpired,
            vec![seq],
            format!(
                "{node} let the fence on order {} run out (entry {seq}) without confirming it did not ship or reporting it shipped",
                order.order_id
            ),
        ),
        _ => first_fact(
            order,
            |k| match k {
                EventKind::MilestoneWithoutOwnership { party } => Some(party.clone()),
                _ => None,
            },
            Rule::MilestoneWithoutOwnership,
            "reported a milestone on an order it did not own",
        ),
    }
}

fn first_fact(
    order: &Order,
    party_of: impl Fn(&EventKind) -> Option<String>,
    rule: Rule,
    what: &str,
) -> Ruling {
    match order
        .events
        .iter()
        .find_map(|e| party_of(&e.kind).map(|p| (e.seq, p)))
    {
        Some((seq, party)) => ruling(
            &party,
            rule,
            vec![seq],
            format!("{party} {what} (entry {seq})"),
        ),
        None => ruling(
            "",
            Rule::NoBreach,
            Vec::new(),
            format!("the ledger shows no such act on order {}", order.order_id),
        ),
    }
}
