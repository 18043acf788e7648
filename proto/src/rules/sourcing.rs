//! Sourcing (rules version 3): the records a brokered order keeps and the
//! structural checks of the sourcing commands. The rules that decide them
//! are in `decide/sourcing.rs`; docs/ledger-format.md §4.40 specifies both.

use serde::{Deserialize, Serialize};

use super::state::{EventKind, Order, OrderStatus, Requirements};
use super::validate::{bad, check_id, check_text, MAX_OFFER_MS};
use super::{Code, Refusal, StateView};
use crate::pb;
use crate::pb::command::Body;

/// The most candidates one sourcing decision may list.
pub const MAX_CANDIDATES: usize = 64;
/// The most score components one candidate may list.
pub const MAX_COMPONENTS: usize = 16;
/// The score component the rules recompute: capacity left.
pub const HEADROOM: &str = "headroom";

/// How an order is sourced (set at registration, rules version 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourcingMode {
    /// The first admissible claim wins.
    #[default]
    Race,
    /// Only the node a decision selected takes it on.
    Brokered,
}

impl SourcingMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            SourcingMode::Race => "race",
            SourcingMode::Brokered => "brokered",
        }
    }

    pub fn from_pb(mode: i32) -> Option<SourcingMode> {
        match pb::SourcingMode::try_from(mode).ok()? {
            pb::SourcingMode::Unspecified | pb::SourcingMode::Race => Some(SourcingMode::Race),
            pb::SourcingMode::Brokered => Some(SourcingMode::Brokered),
        }
    }
}

/// What made an order need sourcing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    Registered,
    Lapsed,
    Released,
    Declined,
    OfferExpired,
    Shortage,
    Reassigned,
}

impl Trigger {
    pub const ALL: [Trigger; 7] = [
        Trigger::Registered,
        Trigger::Lapsed,
        Trigger::Released,
        Trigger::Declined,
        Trigger::OfferExpired,
        Trigger::Shortage,
        Trigger::Reassigned,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Registered => "registered",
            Trigger::Lapsed => "lapsed",
            Trigger::Released => "released",
            Trigger::Declined => "declined",
            Trigger::OfferExpired => "offer_expired",
            Trigger::Shortage => "shortage",
            Trigger::Reassigned => "reassigned",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn to_pb(self) -> pb::SourcingTrigger {
        use pb::SourcingTrigger as T;
        match self {
            Trigger::Registered => T::Registered,
            Trigger::Lapsed => T::Lapsed,
            Trigger::Released => T::Released,
            Trigger::Declined => T::Declined,
            Trigger::OfferExpired => T::OfferExpired,
            Trigger::Shortage => T::Shortage,
            Trigger::Reassigned => T::Reassigned,
        }
    }

    pub fn from_pb(t: i32) -> Option<Trigger> {
        use pb::SourcingTrigger as T;
        Some(match T::try_from(t).ok()? {
            T::Unspecified => return None,
            T::Registered => Trigger::Registered,
            T::Lapsed => Trigger::Lapsed,
            T::Released => Trigger::Released,
            T::Declined => Trigger::Declined,
            T::OfferExpired => Trigger::OfferExpired,
            T::Shortage => Trigger::Shortage,
            T::Reassigned => Trigger::Reassigned,
        })
    }
}

/// An assignment offer a sourcing decision opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub to: String,
    pub decision_seq: u64,
    pub expires_ms: u64,
}

/// An order's sourcing record (rules version 3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sourcing {
    pub mode: SourcingMode,
    /// The offer of the latest decision, until it is accepted, declined,
    /// withdrawn or superseded (an expired one stays until then).
    pub assignment: Option<Assignment>,
    /// Accepted decisions, oldest first.
    pub decisions: Vec<u64>,
    /// Declines: (entry, shortage), oldest first.
    pub declines: Vec<(u64, bool)>,
    /// Releases that reported a shortage.
    pub shortages: Vec<u64>,
    /// Accepted reassignments.
    pub reassigns: Vec<u64>,
    /// Rules version 4: who declined, by the declining entry, oldest first
    /// (the health fold counts each against the node). Left out of the
    /// record while empty, so earlier orders serialize as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declined_by: Vec<(u64, String)>,
    /// Rules version 4: the node each reassignment took the order from
    /// (its owner, or the node a live offer named), by entry; a
    /// reassignment from nobody is not listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reassigned_from: Vec<(u64, String)>,
}

/// Structural checks of the sourcing commands (`None`: not one of them).
pub(super) fn validate(body: &Body) -> Option<Result<(), Refusal>> {
    Some(match body {
        Body::SourceOrder(s) => validate_decision(s),
        Body::AcceptAssignment(a) => check_id("order id", &a.order_id).and_then(|_| {
            check_decision_seq(a.decision_seq)?;
            if a.price_version == 0 {
                return Err(bad("price version is 0: quote the order's current price"));
            }
            Ok(())
        }),
        Body::DeclineAssignment(d) => check_id("order id", &d.order_id).and_then(|_| {
            check_decision_seq(d.decision_seq)?;
            check_text("reason", &d.reason, false)
        }),
        Body::ReassignOrder(r) => check_id("order id", &r.order_id).and_then(|_| {
            if !r.from.is_empty() {
                check_id("reassigned node", &r.from)?;
            }
            check_text("reason", &r.reason, true)
        }),
        _ => return None,
    })
}

fn check_decision_seq(seq: u64) -> Result<(), Refusal> {
    if seq == 0 {
        return Err(bad(
            "decision seq is 0: name the entry of the sourcing decision",
        ));
    }
    Ok(())
}

fn validate_decision(s: &pb::SourceOrder) -> Result<(), Refusal> {
    check_id("order id", &s.order_id)?;
    if Trigger::from_pb(s.trigger).is_none() {
        return Err(bad(format!(
            "unknown or unset sourcing trigger {}",
            s.trigger
        )));
    }
    if s.trigger_seq == 0 {
        return Err(bad(
            "trigger seq is 0: name the entry that caused the decision",
        ));
    }
    check_id("policy", &s.policy)?;
    if s.policy_version == 0 {
        return Err(bad("policy version is 0 (versions start at 1)"));
    }
    if s.candidates.is_empty() {
        return Err(bad("a sourcing decision lists no candidate"));
    }
    if s.candidates.len() > MAX_CANDIDATES {
        return Err(bad(format!(
            "a sourcing decision lists {} candidates, more than {MAX_CANDIDATES}",
            s.candidates.len()
        )));
    }
    for (i, c) in s.candidates.iter().enumerate() {
        check_id("candidate node", &c.node)?;
        check_text("candidate basis", &c.basis, false)?;
        if s.candidates[..i].iter().any(|o| o.node == c.node) {
            return Err(bad(format!("candidate {} is listed twice", c.node)));
        }
        match (c.eligible, c.ineligible.as_str()) {
            (true, "") => {}
            (true, _) => {
                return Err(bad(format!(
                    "candidate {} is eligible but names why not",
                    c.node
                )))
            }
            (false, "") => {
                return Err(bad(format!(
                    "candidate {} is not eligible and names no reason",
                    c.node
                )))
            }
            (false, why) if Code::parse(why).is_none() => {
                return Err(bad(format!(
                    "candidate {}: {why:?} is not a rejection code",
                    c.node
                )))
            }
            (false, _) => {}
        }
        if c.components.len() > MAX_COMPONENTS {
            return Err(bad(format!(
                "candidate {} has more than {MAX_COMPONENTS} score components",
                c.node
            )));
        }
        for (j, k) in c.components.iter().enumerate() {
            check_id("score component", &k.name)?;
            if c.components[..j].iter().any(|o| o.name == k.name) {
                return Err(bad(format!(
                    "candidate {}: score component {} is listed twice",
                    c.node, k.name
                )));
            }
        }
    }
    check_id("selected node", &s.selected)?;
    if s.expires_in_ms == 0 || s.expires_in_ms > MAX_OFFER_MS {
        return Err(bad(format!(
            "assignment expiry {} ms is outside 1 ms .. 7 days",
            s.expires_in_ms
        )));
    }
    Ok(())
}

impl Sourcing {
    /// The assignment, if it is still open for an answer at `now_ms`.
    pub fn live_assignment(&self, now_ms: u64) -> Option<&Assignment> {
        self.assignment.as_ref().filter(|a| now_ms <= a.expires_ms)
    }
}

/// Why an order awaits no sourcing decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotAwaiting {
    /// A decision's offer is open for an answer.
    Assigned(Assignment),
    /// Owned, fenced, shipped or later, or cancelled.
    Status(OrderStatus, Option<String>),
}

impl Order {
    /// The latest fact that made the order need sourcing, as of `now_ms`:
    /// its registration, a recorded lapse or fence expiry, a release (a
    /// shortage when it reported one), a decline, a reassignment, or the
    /// decision whose offer ran out unanswered. Later entries win; within
    /// one entry, the sourcing record (decline, reassignment) wins over a
    /// lapse it recorded first.
    pub fn sourcing_trigger(&self, now_ms: u64) -> (Trigger, u64) {
        let src = self.sourcing.clone().unwrap_or_default();
        let mut best = (Trigger::Registered, self.registered_seq);
        let mut take = |t: Trigger, seq: u64| {
            if seq >= best.1 {
                best = (t, seq)
            }
        };
        for e in &self.events {
            match &e.kind {
                EventKind::Lapsed { .. } | EventKind::FenceExpired { .. } => {
                    take(Trigger::Lapsed, e.seq)
                }
                EventKind::Released { .. } | EventKind::FenceCleared { .. } => {
                    if src.shortages.contains(&e.seq) {
                        take(Trigger::Shortage, e.seq)
                    } else {
                        take(Trigger::Released, e.seq)
                    }
                }
                _ => {}
            }
        }
        for &(seq, shortage) in &src.declines {
            take(
                if shortage {
                    Trigger::Shortage
                } else {
                    Trigger::Declined
                },
                seq,
            );
        }
        for &seq in &src.reassigns {
            take(Trigger::Reassigned, seq);
        }
        if let Some(a) = src.assignment.as_ref().filter(|a| now_ms > a.expires_ms) {
            take(Trigger::OfferExpired, a.decision_seq);
        }
        best
    }

    /// The trigger a sourcing decision made at `now_ms` must name: the order
    /// is open, unowned, and no assignment offer is open for an answer.
    pub fn awaiting_sourcing(&self, now_ms: u64) -> Result<(Trigger, u64), NotAwaiting> {
        if self.status != OrderStatus::Open || self.owner.is_some() {
            return Err(NotAwaiting::Status(self.status, self.owner.clone()));
        }
        if let Some(a) = self
            .sourcing
            .as_ref()
            .and_then(|s| s.live_assignment(now_ms))
        {
            return Err(NotAwaiting::Assigned(a.clone()));
        }
        Ok(self.sourcing_trigger(now_ms))
    }

    /// Whether `node` may claim the order at `now_ms` as far as its sourcing
    /// goes (rules version 3): a brokered order only by the node a live
    /// assignment names (the claim is its acceptance).
    pub fn sourcing_allows_claim(&self, node: &str, now_ms: u64, rules: u32) -> bool {
        let Some(src) = self.sourcing.as_ref().filter(|_| rules >= 3) else {
            return true;
        };
        match (src.live_assignment(now_ms), src.mode) {
            (Some(a), _) if a.to == node => true,
            (_, SourcingMode::Brokered) => false,
            _ => true,
        }
    }

    /// The sourcing fields of the order's view (all empty for an order
    /// registered before rules version 3).
    pub(super) fn sourcing_view(&self, now_ms: u64) -> pb::OrderView {
        let Some(src) = &self.sourcing else {
            return pb::OrderView::default();
        };
        let awaiting = self.awaiting_sourcing(now_ms).ok();
        pb::OrderView {
            sourcing_mode: src.mode.as_str().to_string(),
            assignment: src
                .live_assignment(now_ms)
                .filter(|_| self.status == OrderStatus::Open)
                .map(|a| pb::PendingAssignment {
                    to: a.to.clone(),
                    decision_seq: a.decision_seq,
                    expires_ms: a.expires_ms,
                }),
            sourcing_decisions: src.decisions.clone(),
            awaiting_trigger: awaiting
                .map(|(t, _)| t.as_str().to_string())
                .unwrap_or_default(),
            awaiting_trigger_seq: awaiting.map(|(_, s)| s).unwrap_or(0),
            sourcing_declines: src
                .declined_by
                .iter()
                .map(|(seq, node)| pb::SourcingDecline {
                    seq: *seq,
                    node: node.clone(),
                    shortage: src.declines.iter().any(|&(s, short)| s == *seq && short),
                })
                .collect(),
            ..Default::default()
        }
    }
}

impl Sourcing {
    /// The sourcing record as far as an order's view shows it (mode, live
    /// assignment, decisions): enough to decide a claim or an answer on;
    /// `None` for an order without one.
    pub fn from_view(v: &pb::OrderView) -> Option<Sourcing> {
        let mode = match v.sourcing_mode.as_str() {
            "" => return None,
            "brokered" => SourcingMode::Brokered,
            _ => SourcingMode::Race,
        };
        Some(Sourcing {
            mode,
            assignment: v.assignment.as_ref().map(|a| Assignment {
                to: a.to.clone(),
                decision_seq: a.decision_seq,
                expires_ms: a.expires_ms,
            }),
            decisions: v.sourcing_decisions.clone(),
            declines: v
                .sourcing_declines
                .iter()
                .map(|d| (d.seq, d.shortage))
                .collect(),
            declined_by: v
                .sourcing_declines
                .iter()
                .map(|d| (d.seq, d.node.clone()))
                .collect(),
            ..Sourcing::default()
        })
    }
}

/// A candidate's eligibility as the rules compute it for a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateCheck {
    /// The node's profile in force (0: none).
    pub profile_version: u64,
    /// "" when eligible, else the code a claim by it would be rejected with
    /// (`unknown_party`, `not_a_node`, `no_profile`, `region_not_served`,
    /// `cold_chain_required`, `hazmat_required`, `category_not_served`,
    /// `at_capacity`), checked in that order.
    pub ineligible: &'static str,
    /// Capacity left: the profile's max open orders less `open_orders`
    /// (0 without a profile, never negative).
    pub headroom: i64,
}

/// What a claim of `order` by `node`, which has `open_orders` open, would
/// meet eligibility-wise: the one computation the rules, the reference
/// broker and an auditor share.
pub fn check_candidate(
    view: &impl StateView,
    node: &str,
    order: &Order,
    open_orders: u64,
) -> CandidateCheck {
    let profile = view.profile(node);
    let profile_version = profile.as_ref().map(|p| p.version).unwrap_or(0);
    let headroom = profile
        .as_ref()
        .map(|p| {
            (p.max_open_orders as i64)
                .saturating_sub(open_orders as i64)
                .max(0)
        })
        .unwrap_or(0);
    let ineligible = match view.party(node) {
        None => Code::UnknownParty.as_str(),
        Some(p) if p.role != pb::Role::Node as i32 => Code::NotANode.as_str(),
        Some(_) => match super::check_eligible(view, node, order) {
            Err((code, _)) => code.as_str(),
            Ok(_) if headroom <= 0 => Code::AtCapacity.as_str(),
            Ok(_) => "",
        },
    };
    CandidateCheck {
        profile_version,
        ineligible,
        headroom,
    }
}

/// The order as far as eligibility looks at it (id, destination region,
/// requirements), from its view.
pub fn order_for_sourcing(v: &pb::OrderView) -> Order {
    let req = v.requirements.clone().unwrap_or_default();
    Order {
        order_id: v.order_id.clone(),
        external_refs: Vec::new(),
        lines: Vec::new(),
        currency: v.currency.clone(),
        total: v.total,
        destination_region: v.destination_region.clone(),
        requirements: Requirements {
            cold_chain: req.cold_chain,
            hazmat: req.hazmat,
            category: req.category,
        },
        promised_delivery_ms: v.promised_delivery_ms,
        price_version: v.price_version,
        status: OrderStatus::parse(&v.status).unwrap_or(OrderStatus::Open),
        owner: None,
        custodian: None,
        registered_by: v.registered_by.clone(),
        registered_seq: v.registered_seq,
        claimed_seq: 0,
        lease: None,
        offer: None,
        fence: None,
        carrier: String::new(),
        tracking_id: String::new(),
        proof_of_delivery: String::new(),
        last_lapsed_owner: String::new(),
        return_node: String::new(),
        refund: 0,
        exceptions: Vec::new(),
        events: Vec::new(),
        disputes: Vec::new(),
        sourcing: Sourcing::from_view(v),
        sla: None,
        last_seq: 0,
        tender: None,
        delivery_code_sha256: Vec::new(),
        delivery_code_used_seq: 0,
        delivery_grade: None,
    }
}
