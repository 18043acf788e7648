//! A health score per node, folded from ledger facts (docs/disputes.md §9).
//!
//! The fold reads only what the ledger records: the facts of every order
//! (`Order::events`) and the rulings of its disputes, each with the entry
//! that recorded it. Folding the facts of entries `0..=seq` gives the
//! counters "as of" `seq`; [`health_score`] turns counters into a score
//! with integer arithmetic only. So a replica (which keeps the counters in
//! each node's [`NodeStats`](super::NodeStats), folded entry by entry as it
//! applies them, [`account`]), a broker (which reads them with the node's
//! stats and may call [`health_score`] itself) and an auditor (which folds
//! an export's replayed orders with [`health_at`]) compute the same.
//!
//! The fold is not a rule: it decides no outcome, so it is the same under
//! every rules version and needs none. What it reads is: rules version 4
//! records two more facts in an order's sourcing record (the node that
//! declined an assignment offer, and the node a reassignment took the
//! order from), which the fold counts; under earlier versions they are
//! never recorded, so those ledgers fold as before.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::{Event, EventKind, NodeStats, Order};
use super::{Decision, Effect, StateView};
use crate::pb;

/// What the fold counts for one party (a node; a carrier or channel named
/// liable by a ruling gets counters too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCounters {
    /// Orders it took on (claimed or accepted by handoff), once per order.
    #[serde(default)]
    pub taken_on: u64,
    /// Orders whose first `Shipped` fact is its.
    #[serde(default)]
    pub shipped: u64,
    /// Of those, shipped no later than its first lease start on the order
    /// plus the declared dispatch time of the profile in force then.
    #[serde(default)]
    pub on_time: u64,
    /// `Lapsed` and `Fenced` facts naming it.
    #[serde(default)]
    pub lapses: u64,
    /// `Released` facts naming it.
    #[serde(default)]
    pub releases: u64,
    /// Assignment offers it declined (rules version 4 records the decliner:
    /// `Sourcing::declined_by`; nothing feeds it under earlier versions).
    #[serde(default)]
    pub declines: u64,
    /// `FenceExpired` facts naming it.
    #[serde(default)]
    pub fence_expiries: u64,
    /// Acceptances of a handoff from it that noted damage.
    #[serde(default)]
    pub damage_noted: u64,
    /// Dispute rulings naming it liable.
    #[serde(default)]
    pub rulings_against: u64,
    /// Rules version 4: reassignments that took an order away from it (its
    /// claim, or the live assignment offer it sat on:
    /// `Sourcing::reassigned_from`). Left out of the record while 0, so
    /// the counters of earlier ledgers serialize as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reassigned: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl HealthCounters {
    fn add(&mut self, d: &HealthCounters) {
        self.taken_on += d.taken_on;
        self.shipped += d.shipped;
        self.on_time += d.on_time;
        self.lapses += d.lapses;
        self.releases += d.releases;
        self.declines += d.declines;
        self.fence_expiries += d.fence_expiries;
        self.damage_noted += d.damage_noted;
        self.rulings_against += d.rulings_against;
        self.reassigned += d.reassigned;
    }

    /// Acts that count for it: shipments on time.
    pub fn good(&self) -> u64 {
        self.on_time
    }

    /// Acts that count against it, with their weights: a late shipment,
    /// a lapse, a release, a decline, a reassignment away from it, damage
    /// noted by a receiver 1 each; a fence that ran out and a ruling
    /// against it 2 each.
    pub fn bad(&self) -> u64 {
        let late = self.shipped.saturating_sub(self.on_time);
        late.saturating_add(self.lapses)
            .saturating_add(self.releases)
            .saturating_add(self.declines)
            .saturating_add(self.reassigned)
            .saturating_add(self.damage_noted)
            .saturating_add(self.fence_expiries.saturating_mul(2))
            .saturating_add(self.rulings_against.saturating_mul(2))
    }

    pub fn to_pb(&self, as_of_seq: u64) -> pb::HealthView {
        pb::HealthView {
            as_of_seq,
            shipped: self.shipped,
            on_time: self.on_time,
            lapses: self.lapses,
            releases: self.releases,
            declines: self.declines,
            fence_expiries: self.fence_expiries,
            damage_noted: self.damage_noted,
            rulings_against: self.rulings_against,
            taken_on: self.taken_on,
            score: health_score(self),
            reassigned: self.reassigned,
        }
    }

    /// The counters a `NodeStatsView` carries (what a broker reads).
    pub fn from_pb(v: &pb::HealthView) -> HealthCounters {
        HealthCounters {
            taken_on: v.taken_on,
            shipped: v.shipped,
            on_time: v.on_time,
            lapses: v.lapses,
            releases: v.releases,
            declines: v.declines,
            fence_expiries: v.fence_expiries,
            damage_noted: v.damage_noted,
            rulings_against: v.rulings_against,
            reassigned: v.reassigned,
        }
    }
}

/// The most a score can be.
pub const MAX_HEALTH_SCORE: u32 = 1000;

/// A party's health score, 0 to 1000, from its counters:
/// `1000 × (good + 2) / (good + bad + 2)`, rounded down, computed in
/// 128-bit integers. A party with no history scores 1000; every act
/// against it weighs as [`HealthCounters::bad`] says.
pub fn health_score(h: &HealthCounters) -> u32 {
    let good = h.good() as u128 + 2;
    let all = good + h.bad() as u128;
    (u128::from(MAX_HEALTH_SCORE) * good / all) as u32
}

/// Folds fact `e` of an order (whose facts before it are `before`) into
/// the counters of the parties it concerns.
fn fold_event(before: &[Event], e: &Event, counters: &mut BTreeMap<String, HealthCounters>) {
    let first_start = |node: &str| {
        before.iter().find_map(|p| match &p.kind {
            EventKind::Claimed {
                node: n,
                dispatch_time_ms,
                ..
            } if n == node => Some((p.time_ms, *dispatch_time_ms)),
            EventKind::HandedOff {
                to,
                dispatch_time_ms,
                ..
            } if to == node => Some((p.time_ms, *dispatch_time_ms)),
            _ => None,
        })
    };
    fn at<'m>(c: &'m mut BTreeMap<String, HealthCounters>, party: &str) -> &'m mut HealthCounters {
        c.entry(party.to_string()).or_default()
    }
    match &e.kind {
        EventKind::Claimed { node, .. } => {
            if first_start(node).is_none() {
                at(counters, node).taken_on += 1;
            }
        }
        EventKind::HandedOff {
            from, to, damaged, ..
        } => {
            if first_start(to).is_none() {
                at(counters, to).taken_on += 1;
            }
            if *damaged {
                at(counters, from).damage_noted += 1;
            }
        }
        EventKind::Released { node } => at(counters, node).releases += 1,
        EventKind::Lapsed { node, .. } | EventKind::Fenced { node, .. } => {
            at(counters, node).lapses += 1
        }
        EventKind::FenceExpired { node, .. } => at(counters, node).fence_expiries += 1,
        // A tender to an enrolled carrier (version 3) is the node's hand-off.
        EventKind::Shipped { node, .. } | EventKind::Tendered { node, .. } => {
            let first = !before.iter().any(|p| {
                matches!(
                    p.kind,
                    EventKind::Shipped { .. } | EventKind::Tendered { .. }
                )
            });
            if first {
                let on_time = first_start(node)
                    .is_some_and(|(start, d)| e.time_ms <= start.saturating_add(d));
                let c = at(counters, node);
                c.shipped += 1;
                if on_time {
                    c.on_time += 1;
                }
            }
        }
        // The carrier noted damage when it signed for the goods.
        EventKind::TenderAccepted {
            node,
            damaged: true,
            ..
        } => at(counters, node).damage_noted += 1,
        EventKind::Delivered { .. }
        | EventKind::TenderAccepted { .. }
        | EventKind::DeliveryProven { .. }
        | EventKind::Reassigned { .. }
        | EventKind::Cancelled
        | EventKind::WrongPrice { .. }
        | EventKind::MilestoneWithoutOwnership { .. }
        | EventKind::FenceCleared { .. } => {}
    }
}

/// Folds what entries `seq_in` select recorded on `order` (their facts and
/// the rulings they appended) into `counters`.
fn fold_order(
    order: &Order,
    seq_in: impl Fn(u64) -> bool,
    counters: &mut BTreeMap<String, HealthCounters>,
) {
    for (i, e) in order.events.iter().enumerate() {
        if seq_in(e.seq) {
            fold_event(&order.events[..i], e, counters);
        }
    }
    // Rules version 4: the sourcing record's declines and reassignments
    // (empty under earlier versions).
    if let Some(src) = &order.sourcing {
        for (seq, node) in &src.declined_by {
            if seq_in(*seq) {
                counters.entry(node.clone()).or_default().declines += 1;
            }
        }
        for (seq, node) in &src.reassigned_from {
            if seq_in(*seq) {
                counters.entry(node.clone()).or_default().reassigned += 1;
            }
        }
    }
    for d in &order.disputes {
        if let Some(r) = d.ruling.as_ref().filter(|r| seq_in(r.seq)) {
            if !r.liable.is_empty() {
                counters
                    .entry(r.liable.clone())
                    .or_default()
                    .rulings_against += 1;
            }
        }
    }
}

/// The auditor's fold: every party's counters as of entry `as_of_seq`,
/// from the orders of a replayed state (an export's, or a replica's).
/// Facts and rulings recorded by later entries are left out, so this is
/// the state the counters had right after `as_of_seq` was applied.
pub fn health_at<'a>(
    orders: impl IntoIterator<Item = &'a Order>,
    as_of_seq: u64,
) -> BTreeMap<String, HealthCounters> {
    let mut counters = BTreeMap::new();
    for o in orders {
        fold_order(o, |seq| seq <= as_of_seq, &mut counters);
    }
    counters
}

/// The replica's fold, one entry at a time: adds what the decision's order
/// records at `seq` to the counters of the parties concerned, in the
/// `PutStats` effects of the decision (merged with the counters the rules
/// already changed, or read from `view`).
pub(super) fn account(view: &impl StateView, d: &mut Decision, seq: u64) {
    let mut deltas = BTreeMap::new();
    for e in &d.effects {
        if let Effect::PutOrder(o) = e {
            fold_order(o, |s| s == seq, &mut deltas);
        }
    }
    for (party, delta) in deltas {
        let put = d.effects.iter_mut().find_map(|e| match e {
            Effect::PutStats { node, stats } if *node == party => Some(stats),
            _ => None,
        });
        match put {
            Some(stats) => stats.health.add(&delta),
            None => {
                let mut stats: NodeStats = view.stats(&party).unwrap_or_default();
                stats.health.add(&delta);
                d.effects.push(Effect::PutStats { node: party, stats });
            }
        }
    }
}
