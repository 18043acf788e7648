//! The business rules: what each command does to the state.
//!
//! Every decision is a function of the state view, the signer, the command,
//! its sequence number and the leader's (monotonic) time stamp on its entry.
//! Leases and handoff offers run out by that time, evaluated when a command
//! touches the order: a lapse is recorded by the first accepted command on
//! the order after the deadline (a new claim, a cancel, ...) and named in its
//! entry's message.
//!
//! This file dispatches a command to its family and holds what every order
//! command shares: [`OnOrder`] (the order as the command leaves it), the
//! evidence a rejection leaves for the responsibility rules, and the common
//! guards (owner only, channel only, not cancelled, price quoted right).
//! The families:
//!
//! - [`parties_keys`]: genesis, enrolment, key rotation and revocation;
//! - [`membership`]: the desired membership (replicas added and removed);
//! - [`profiles`]: capability profiles and the eligibility they give;
//! - [`orders`]: registration, price amendments, cancellation;
//! - [`claims`]: claims, releases, leases and their lapses;
//! - [`handoffs`]: offers between nodes, accepted or declined;
//! - [`milestones`]: the fulfilment milestones and exceptions;
//! - [`returns`]: return requests, claims and receipts;
//! - [`disputes`]: opening disputes and recording the rules' ruling;
//! - [`versions`]: the rules version in force, raised by an operator;
//! - [`carriers`]: tenders to enrolled carriers, their signed acceptance
//!   and graded proof of delivery (rules version 3).
//! - [`sourcing`]: sourcing decisions and their assignment offers (version 3).
//!
//! Rules that differ between rules versions ask [`OnOrder::rules`] for the
//! version in force at the entry being decided, so an old ledger replays
//! under its own rules (docs/ledger-format.md, "Rules versions").

use std::collections::BTreeMap;

use super::state::{Event, EventKind, NodeStats, Order, OrderStatus};
use super::{Code, Decision, Effect, StateView};
use crate::pb;
use crate::pb::command::Body;

mod carriers;
mod claims;
mod deadlines;
mod disputes;
mod handoffs;
mod membership;
mod milestones;
mod orders;
mod parties_keys;
mod profiles;
mod returns;
mod sourcing;
mod versions;

pub use profiles::{check_eligible, claimable_by};

/// Decides a structurally valid, authorized command appended at `seq` with
/// leader time `now_ms`.
///
/// Pure: the same view, command, sequence and time give the same decision.
pub fn decide(
    view: &impl StateView,
    signer: &str,
    cmd: &pb::Command,
    seq: u64,
    now_ms: u64,
) -> Decision {
    let mut d = match cmd.body.as_ref() {
        Some(Body::Genesis(g)) => parties_keys::genesis(g, seq),
        Some(Body::EnrollParty(e)) => parties_keys::enroll(view, e, seq),
        Some(Body::RotateKey(r)) => parties_keys::rotate_key(view, r, seq),
        Some(Body::RevokeKey(r)) => parties_keys::revoke_key(view, r),
        Some(Body::PublishProfile(p)) => profiles::publish_profile(view, signer, p, seq),
        Some(Body::RegisterOrder(r)) => orders::register(view, signer, r, seq, now_ms),
        Some(Body::AddReplica(a)) => membership::add(view, a, seq),
        Some(Body::RemoveReplica(r)) => membership::remove(view, r, seq),
        Some(Body::SetRulesVersion(r)) => versions::set(view, r, seq),
        Some(body) => match order_id_of(body) {
            Some(order_id) => on_order(view, signer, order_id, body, seq, now_ms),
            None => Decision::reject(Code::Malformed, "command concerns no order", ""),
        },
        // validate_command refuses a missing body before we get here.
        None => Decision::reject(Code::Malformed, "command has no body", ""),
    };
    link_order_history(view, &mut d, seq);
    super::health::account(view, &mut d, seq);
    d
}

/// The order an order command concerns.
pub fn order_id_of(body: &Body) -> Option<&str> {
    Some(match body {
        Body::RegisterOrder(c) => &c.order_id,
        Body::ClaimOrder(c) => &c.order_id,
        Body::AmendPrice(c) => &c.order_id,
        Body::CancelOrder(c) => &c.order_id,
        Body::ReleaseOrder(c) => &c.order_id,
        Body::OfferHandoff(c) => &c.order_id,
        Body::AcceptHandoff(c) => &c.order_id,
        Body::DeclineHandoff(c) => &c.order_id,
        Body::ReportMilestone(c) => &c.order_id,
        Body::ReportException(c) => &c.order_id,
        Body::RequestReturn(c) => &c.order_id,
        Body::ClaimReturn(c) => &c.order_id,
        Body::ReceiveReturn(c) => &c.order_id,
        Body::OpenDispute(c) => &c.order_id,
        Body::ResolveDispute(c) => &c.order_id,
        Body::RecordLapse(c) => &c.order_id,
        Body::AcceptTender(c) => &c.order_id,
        Body::ScanDelivery(c) => &c.order_id,
        Body::SourceOrder(c) => &c.order_id,
        Body::AcceptAssignment(c) => &c.order_id,
        Body::DeclineAssignment(c) => &c.order_id,
        Body::ReassignOrder(c) => &c.order_id,
        Body::Genesis(_)
        | Body::EnrollParty(_)
        | Body::RotateKey(_)
        | Body::RevokeKey(_)
        | Body::PublishProfile(_)
        | Body::AddReplica(_)
        | Body::RemoveReplica(_)
        | Body::SetRulesVersion(_) => return None,
    })
}

/// Links the entry into its order's history: records the order's previous
/// entry and moves the order's head to this sequence number.
fn link_order_history(view: &impl StateView, d: &mut Decision, seq: u64) {
    if d.order_id.is_empty() {
        return;
    }
    // The order as this decision leaves it (a put in the effects), else as it was.
    let put = d.effects.iter_mut().find_map(|e| match e {
        Effect::PutOrder(o) if o.order_id == d.order_id => Some(o),
        _ => None,
    });
    match put {
        Some(o) => {
            d.order_prev_seq = view.order_last_seq(&d.order_id).unwrap_or(0);
            o.last_seq = seq;
        }
        None => {
            if let Some(mut o) = view.order(&d.order_id) {
                d.order_prev_seq = o.last_seq;
                o.last_seq = seq;
                d.effects.push(Effect::PutOrder(o));
            } else {
                // Concerns an order that does not exist: nothing to link.
                d.order_prev_seq = 0;
            }
        }
    }
}

/// A rejection: code and message.
type Reject = (Code, String);

fn rej<T>(code: Code, message: String) -> Result<T, Reject> {
    Err((code, message))
}

/// Deciding one command on one existing order: the order as the command
/// leaves it and the node counters it touches.
struct OnOrder<'a, V> {
    view: &'a V,
    signer: &'a str,
    seq: u64,
    now: u64,
    order: Order,
    stats: BTreeMap<String, NodeStats>,
    /// Set when the owner's lease ran out before this entry.
    lapse_note: Option<String>,
    /// Rules version 4: what else an accepted entry's message says, after
    /// any lapse note, joined by "; " (e.g. [`super::custody::UnsignedNote`]).
    notes: Vec<String>,
}

fn on_order(
    view: &impl StateView,
    signer: &str,
    order_id: &str,
    body: &Body,
    seq: u64,
    now: u64,
) -> Decision {
    let Some(order) = view.order(order_id) else {
        return Decision::reject(
            Code::UnknownOrder,
            format!("order {order_id} is not registered"),
            "",
        );
    };
    let mut o = OnOrder {
        view,
        signer,
        seq,
        now,
        order,
        stats: BTreeMap::new(),
        lapse_note: None,
        notes: Vec::new(),
    };
    // Disputes change no custody: they neither record a lapse nor depend on
    // one being recorded, so a preview from the stored state and the
    // resolution agree.
    if !matches!(body, Body::OpenDispute(_) | Body::ResolveDispute(_)) {
        o.record_lapse();
    }
    let result = match body {
        Body::ClaimOrder(c) => o.claim(c),
        Body::AmendPrice(c) => o.amend_price(c),
        Body::CancelOrder(_) => o.cancel(),
        Body::ReleaseOrder(c) => o.release_reported(c),
        Body::OfferHandoff(c) => o.offer(c),
        Body::AcceptHandoff(c) => o.accept(c),
        Body::DeclineHandoff(c) => o.decline(c),
        Body::ReportMilestone(c) => o.milestone(c),
        Body::ReportException(c) => o.exception(c),
        Body::RequestReturn(_) => o.request_return(),
        Body::ClaimReturn(_) => o.claim_return(),
        Body::ReceiveReturn(c) => o.receive_return(c),
        Body::OpenDispute(c) => o.open_dispute(c),
        Body::ResolveDispute(c) => o.resolve_dispute(c),
        Body::RecordLapse(_) => o.lapse_recorded(),
        Body::AcceptTender(c) => o.accept_tender(c),
        Body::ScanDelivery(c) => o.scan_delivery(c),
        Body::SourceOrder(c) => o.source(c),
        Body::AcceptAssignment(c) => o.accept_assignment(c),
        Body::DeclineAssignment(c) => o.decline_assignment(c),
        Body::ReassignOrder(c) => o.reassign(c),
        _ => rej(Code::Malformed, "not an order command".into()),
    };
    let order_id = o.order.order_id.clone();
    match result {
        Err((code, mut message)) => {
            if let Some(note) = &o.lapse_note {
                message = format!("{message} ({note})");
            }
            let mut d = Decision::reject(code, message, order_id);
            // Some rejections are evidence for the responsibility rules.
            let fact = match (code, body) {
                (Code::PriceMismatch | Code::StalePriceVersion, _) => Some(EventKind::WrongPrice {
                    party: signer.to_string(),
                }),
                (Code::NotOwner, Body::ReportMilestone(_)) => {
                    Some(EventKind::MilestoneWithoutOwnership {
                        party: signer.to_string(),
                    })
                }
                _ => None,
            };
            if let (Some(kind), Some(mut stored)) = (fact, view.order(&d.order_id)) {
                stored.events.push(Event {
                    seq,
                    time_ms: now,
                    kind,
                });
                d.effects.push(Effect::PutOrder(stored));
            }
            d
        }
        Ok(()) => {
            let mut effects = vec![Effect::PutOrder(o.order)];
            effects.extend(
                o.stats
                    .into_iter()
                    .map(|(node, stats)| Effect::PutStats { node, stats }),
            );
            let mut d = Decision::accept(order_id, effects);
            d.message = o
                .lapse_note
                .into_iter()
                .chain(o.notes)
                .collect::<Vec<_>>()
                .join("; ");
            d
        }
    }
}

impl<V: StateView> OnOrder<'_, V> {
    fn stats_mut(&mut self, node: &str) -> &mut NodeStats {
        if !self.stats.contains_key(node) {
            let current = self.view.stats(node).unwrap_or_default();
            self.stats.insert(node.to_string(), current);
        }
        self.stats.get_mut(node).expect("inserted above")
    }

    /// The rules version in force at this entry.
    fn rules(&self) -> u32 {
        self.view.config().map(|c| c.rules()).unwrap_or(1)
    }

    /// The fence in force at this entry (rules version 2 and later).
    fn fence_ms(&self) -> u64 {
        self.view.config().map(|c| c.fence()).unwrap_or_default()
    }

    fn grace(&self) -> u64 {
        self.view.config().map(|c| c.lease_grace_ms).unwrap_or(0)
    }

    fn event(&mut self, kind: EventKind) {
        self.order.events.push(Event {
            seq: self.seq,
            time_ms: self.now,
            kind,
        });
    }

    fn status(&self) -> &'static str {
        self.order.status.as_str()
    }

    fn not_cancelled(&self) -> Result<(), Reject> {
        if self.order.status == OrderStatus::Cancelled {
            return rej(
                Code::OrderCancelled,
                format!("order {} is cancelled", self.order.order_id),
            );
        }
        Ok(())
    }

    /// The signer must own the order.
    fn owner_only(&self) -> Result<(), Reject> {
        match &self.order.owner {
            Some(owner) if owner == self.signer => Ok(()),
            Some(owner) => rej(
                Code::NotOwner,
                format!(
                    "order {} is owned by {owner}, not {}",
                    self.order.order_id, self.signer
                ),
            ),
            None => rej(
                Code::NotOwner,
                format!(
                    "order {} has no owner ({}); {} does not own it",
                    self.order.order_id,
                    self.status(),
                    self.signer
                ),
            ),
        }
    }

    /// The signer must be the channel that registered the order.
    fn channel_only(&self) -> Result<(), Reject> {
        if self.order.registered_by != self.signer {
            return rej(
                Code::NotOrderChannel,
                format!(
                    "order {} was registered by channel {}, not {}",
                    self.order.order_id, self.order.registered_by, self.signer
                ),
            );
        }
        Ok(())
    }

    fn leased(&self) -> Result<(), Reject> {
        self.not_cancelled()?;
        if !self.order.status.is_leased() {
            let code = if self.order.status >= OrderStatus::Shipped {
                Code::AlreadyShipped
            } else {
                Code::NotClaimed
            };
            return rej(
                code,
                format!("order {} is {}", self.order.order_id, self.status()),
            );
        }
        Ok(())
    }

    fn quote(&self, version: u64, total: i64) -> Result<(), Reject> {
        if version != self.order.price_version || total != self.order.total {
            return rej(
                Code::PriceMismatch,
                format!(
                    "order {} is at price version {} total {} {}; quoted version {version} total {total}",
                    self.order.order_id, self.order.price_version, self.order.total, self.order.currency
                ),
            );
        }
        Ok(())
    }
}
