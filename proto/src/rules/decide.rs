//! The business rules: what each command does to the state.
//!
//! Every decision is a function of the state view, the signer, the command,
//! its sequence number and the leader's (monotonic) time stamp on its entry.
//! Leases and handoff offers run out by that time, evaluated when a command
//! touches the order: a lapse is recorded by the first accepted command on
//! the order after the deadline (a new claim, a cancel, ...) and named in its
//! entry's message.

use std::collections::BTreeMap;

use super::disputes::rule_on;
use super::state::{
    lines_from_pb, ClusterConfig, Dispute, Event, EventKind, Lease, NodeStats, Offer, Order,
    OrderStatus, Party, Profile, Requirements, RulingRecord,
};
use super::{role_name, Code, Decision, Effect, Incident, Rule, StateView};
use crate::pb;
use crate::pb::command::Body;

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
        Some(Body::Genesis(g)) => genesis(g, seq),
        Some(Body::EnrollParty(e)) => enroll(view, e, seq),
        Some(Body::RotateKey(r)) => rotate_key(view, r, seq),
        Some(Body::RevokeKey(r)) => revoke_key(view, r),
        Some(Body::PublishProfile(p)) => publish_profile(view, signer, p, seq),
        Some(Body::RegisterOrder(r)) => register(view, signer, r, seq),
        Some(body) => match order_id_of(body) {
            Some(order_id) => on_order(view, signer, order_id, body, seq, now_ms),
            None => Decision::reject(Code::Malformed, "command concerns no order", ""),
        },
        // validate_command refuses a missing body before we get here.
        None => Decision::reject(Code::Malformed, "command has no body", ""),
    };
    link_order_history(view, &mut d, seq);
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
        Body::Genesis(_)
        | Body::EnrollParty(_)
        | Body::RotateKey(_)
        | Body::RevokeKey(_)
        | Body::PublishProfile(_) => return None,
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
            let before = view.order(&d.order_id);
            d.order_prev_seq = before.map(|b| b.last_seq).unwrap_or(0);
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

// ---------------------------------------------------------------------------
// Parties, keys, profiles
// ---------------------------------------------------------------------------

fn genesis(g: &pb::Genesis, seq: u64) -> Decision {
    let mut effects: Vec<Effect> = g
        .operators
        .iter()
        .map(|op| {
            Effect::PutParty(Party {
                party_id: op.party_id.clone(),
                role: pb::Role::Operator as i32,
                kind: pb::NodeKind::Unspecified as i32,
                public_key: op.public_key.clone(),
                enrolled_seq: seq,
                key_seq: seq,
                revoked: false,
            })
        })
        .collect();
    effects.push(Effect::PutConfig(ClusterConfig {
        cluster_id: g.cluster_id.clone(),
        lease_grace_ms: g.lease_grace_ms,
        active_operators: g.operators.len() as u64,
    }));
    Decision::accept("", effects)
}

fn enroll(view: &impl StateView, e: &pb::EnrollParty, seq: u64) -> Decision {
    if let Some(existing) = view.party(&e.party_id) {
        let role = pb::Role::try_from(existing.role).unwrap_or(pb::Role::Unspecified);
        return Decision::reject(
            Code::PartyExists,
            format!(
                "party {} is already enrolled as {} (entry {})",
                existing.party_id,
                role_name(role),
                existing.enrolled_seq
            ),
            "",
        );
    }
    if let Some(holder) = view.party_by_key(&e.public_key) {
        return Decision::reject(
            Code::KeyInUse,
            format!("public key is already enrolled for party {holder}"),
            "",
        );
    }
    let mut effects = vec![Effect::PutParty(Party {
        party_id: e.party_id.clone(),
        role: e.role,
        kind: e.kind,
        public_key: e.public_key.clone(),
        enrolled_seq: seq,
        key_seq: seq,
        revoked: false,
    })];
    if e.role == pb::Role::Operator as i32 {
        let mut config = view.config().unwrap_or_default();
        config.active_operators += 1;
        effects.push(Effect::PutConfig(config));
    }
    Decision::accept("", effects)
}

fn unknown_party(party_id: &str) -> Decision {
    Decision::reject(
        Code::UnknownParty,
        format!("party {party_id} is not enrolled"),
        "",
    )
}

fn rotate_key(view: &impl StateView, r: &pb::RotateKey, seq: u64) -> Decision {
    let Some(mut party) = view.party(&r.party_id) else {
        return unknown_party(&r.party_id);
    };
    if let Some(holder) = view.party_by_key(&r.public_key) {
        return Decision::reject(
            Code::KeyInUse,
            format!("public key is (or was) enrolled for party {holder}; keys are never reused"),
            "",
        );
    }
    let mut effects = Vec::new();
    if party.revoked && party.role == pb::Role::Operator as i32 {
        let mut config = view.config().unwrap_or_default();
        config.active_operators += 1;
        effects.push(Effect::PutConfig(config));
    }
    party.public_key = r.public_key.clone();
    party.key_seq = seq;
    party.revoked = false;
    effects.insert(0, Effect::PutParty(party));
    Decision::accept("", effects)
}

fn revoke_key(view: &impl StateView, r: &pb::RevokeKey) -> Decision {
    let Some(mut party) = view.party(&r.party_id) else {
        return unknown_party(&r.party_id);
    };
    if party.revoked {
        return Decision::reject(
            Code::AlreadyRevoked,
            format!("the key of party {} is already revoked", party.party_id),
            "",
        );
    }
    let mut effects = Vec::new();
    if party.role == pb::Role::Operator as i32 {
        let mut config = view.config().unwrap_or_default();
        if config.active_operators <= 1 {
            return Decision::reject(
                Code::LastOperator,
                format!(
                    "{} holds the last operator key that is not revoked; enrol another operator first",
                    party.party_id
                ),
                "",
            );
        }
        config.active_operators -= 1;
        effects.push(Effect::PutConfig(config));
    }
    party.revoked = true;
    effects.insert(0, Effect::PutParty(party));
    Decision::accept("", effects)
}

fn publish_profile(
    view: &impl StateView,
    signer: &str,
    p: &pb::PublishProfile,
    seq: u64,
) -> Decision {
    let version = view.profile(signer).map(|old| old.version).unwrap_or(0) + 1;
    Decision::accept(
        "",
        vec![Effect::PutProfile(Profile {
            node: signer.to_string(),
            version,
            published_seq: seq,
            regions: p.regions.clone(),
            max_open_orders: p.max_open_orders,
            dispatch_time_ms: p.dispatch_time_ms,
            handles_returns: p.handles_returns,
            cold_chain: p.cold_chain,
            hazmat: p.hazmat,
            categories: p.categories.clone(),
        })],
    )
}

// ---------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------

fn register(view: &impl StateView, signer: &str, r: &pb::RegisterOrder, seq: u64) -> Decision {
    if let Some(existing) = view.order(&r.order_id) {
        return Decision::reject(
            Code::DuplicateOrder,
            format!(
                "order {} is already registered (entry {})",
                existing.order_id, existing.registered_seq
            ),
            existing.order_id,
        );
    }
    for x in &r.external_refs {
        if let Some(owner) = view.order_by_ref(&x.channel, &x.external_id) {
            return Decision::reject(
                Code::ExternalRefTaken,
                format!(
                    "external reference {}/{} already belongs to order {owner}",
                    x.channel, x.external_id
                ),
                owner,
            );
        }
    }
    let req = r.requirements.clone().unwrap_or_default();
    let order = Order {
        order_id: r.order_id.clone(),
        external_refs: r
            .external_refs
            .iter()
            .map(|x| (x.channel.clone(), x.external_id.clone()))
            .collect(),
        lines: lines_from_pb(&r.lines),
        currency: r.currency.clone(),
        total: r.total,
        destination_region: r.destination_region.clone(),
        requirements: Requirements {
            cold_chain: req.cold_chain,
            hazmat: req.hazmat,
            category: req.category,
        },
        promised_delivery_ms: r.promised_delivery_ms,
        price_version: 1,
        status: OrderStatus::Open,
        owner: None,
        custodian: None,
        registered_by: signer.to_string(),
        registered_seq: seq,
        claimed_seq: 0,
        lease: None,
        offer: None,
        carrier: String::new(),
        tracking_id: String::new(),
        proof_of_delivery: String::new(),
        last_lapsed_owner: String::new(),
        return_node: String::new(),
        refund: 0,
        exceptions: Vec::new(),
        events: Vec::new(),
        disputes: Vec::new(),
        last_seq: seq,
    };
    let mut effects: Vec<Effect> = r
        .external_refs
        .iter()
        .map(|x| Effect::PutRef {
            channel: x.channel.clone(),
            external_id: x.external_id.clone(),
            order_id: r.order_id.clone(),
        })
        .collect();
    effects.push(Effect::PutOrder(order));
    Decision::accept(r.order_id.clone(), effects)
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
        Body::ReleaseOrder(_) => o.release(),
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
            d.message = o.lapse_note.unwrap_or_default();
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

    fn grace(&self) -> u64 {
        self.view.config().map(|c| c.lease_grace_ms).unwrap_or(0)
    }

    /// If the owner's lease ran out before this entry, the order is open
    /// again and the lapse is counted against the old owner. Only written
    /// if the command is accepted; otherwise the next command finds it again.
    fn record_lapse(&mut self) {
        if !self.order.lease_lapsed(self.now) {
            return;
        }
        let (Some(owner), Some(lease)) = (self.order.owner.take(), self.order.lease.take()) else {
            return;
        };
        let s = self.stats_mut(&owner);
        s.lapses += 1;
        s.open_orders = s.open_orders.saturating_sub(1);
        self.lapse_note = Some(format!(
            "lease of {owner} lapsed at {} (owner since entry {}, dispatch time {} ms of profile v{} + grace)",
            lease.deadline_ms, self.order.claimed_seq, lease.dispatch_time_ms, lease.profile_version
        ));
        self.order.status = OrderStatus::Open;
        self.order.custodian = None;
        self.order.offer = None;
        self.order.claimed_seq = 0;
        self.event(EventKind::Lapsed {
            node: owner.clone(),
            deadline_ms: lease.deadline_ms,
        });
        self.order.last_lapsed_owner = owner;
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

    /// A node may take the order on (claim or receive it): its profile in
    /// force serves the region and every requirement, with capacity left.
    fn eligible(&mut self, node: &str) -> Result<Profile, Reject> {
        let profile = check_eligible(self.view, node, &self.order)?;
        let open = self.stats_mut(node).open_orders;
        if open >= profile.max_open_orders as u64 {
            return rej(
                Code::AtCapacity,
                format!(
                    "node {node} has {open} open orders; its profile v{} allows {}",
                    profile.version, profile.max_open_orders
                ),
            );
        }
        Ok(profile)
    }

    /// Makes `node` the owner and custodian, with a fresh lease.
    fn take_on(&mut self, node: &str, profile: &Profile) {
        let grace = self.grace();
        self.order.owner = Some(node.to_string());
        self.order.custodian = Some(node.to_string());
        self.order.claimed_seq = self.seq;
        self.order.offer = None;
        self.order.lease = Some(Lease {
            start_ms: self.now,
            deadline_ms: self
                .now
                .saturating_add(profile.dispatch_time_ms)
                .saturating_add(grace),
            profile_version: profile.version,
            dispatch_time_ms: profile.dispatch_time_ms,
        });
        self.stats_mut(node).open_orders += 1;
    }

    /// The owner gives the order up (release, cancel): no longer counted.
    fn drop_owner_count(&mut self) {
        if let (Some(owner), true) = (self.order.owner.clone(), self.order.status.is_leased()) {
            let s = self.stats_mut(&owner);
            s.open_orders = s.open_orders.saturating_sub(1);
        }
    }

    fn claim(&mut self, c: &pb::ClaimOrder) -> Result<(), Reject> {
        self.not_cancelled()?;
        if let Some(owner) = &self.order.owner {
            return rej(
                Code::AlreadyOwned,
                format!(
                    "order {} is owned by {owner} (since entry {})",
                    self.order.order_id, self.order.claimed_seq
                ),
            );
        }
        if self.order.status != OrderStatus::Open {
            return rej(
                Code::NotOpen,
                format!("order {} is {}", self.order.order_id, self.status()),
            );
        }
        self.quote(c.price_version, c.total)?;
        let signer = self.signer;
        let profile = self.eligible(signer)?;
        self.order.status = OrderStatus::Claimed;
        self.take_on(signer, &profile);
        self.stats_mut(signer).claims += 1;
        self.event(EventKind::Claimed {
            node: signer.to_string(),
            profile_version: profile.version,
            dispatch_time_ms: profile.dispatch_time_ms,
        });
        Ok(())
    }

    fn amend_price(&mut self, a: &pb::AmendPrice) -> Result<(), Reject> {
        self.channel_only()?;
        self.not_cancelled()?;
        if self.order.status == OrderStatus::Returned {
            return rej(
                Code::OrderClosed,
                format!("order {} was returned", self.order.order_id),
            );
        }
        if a.base_version != self.order.price_version {
            return rej(
                Code::StalePriceVersion,
                format!(
                    "order {} is at price version {} (total {} {}); the amendment is based on version {}",
                    self.order.order_id,
                    self.order.price_version,
                    self.order.total,
                    self.order.currency,
                    a.base_version
                ),
            );
        }
        self.order.lines = lines_from_pb(&a.lines);
        self.order.total = a.total;
        self.order.price_version += 1;
        Ok(())
    }

    fn cancel(&mut self) -> Result<(), Reject> {
        self.channel_only()?;
        if self.order.status == OrderStatus::Cancelled {
            return rej(
                Code::AlreadyCancelled,
                format!("order {} is already cancelled", self.order.order_id),
            );
        }
        if self.order.status >= OrderStatus::Shipped {
            return rej(
                Code::AlreadyShipped,
                format!(
                    "order {} is {}: too late to cancel",
                    self.order.order_id,
                    self.status()
                ),
            );
        }
        self.drop_owner_count();
        self.order.status = OrderStatus::Cancelled;
        self.order.offer = None;
        self.event(EventKind::Cancelled);
        Ok(())
    }

    fn release(&mut self) -> Result<(), Reject> {
        // The owner whose lease just lapsed gives it up: the lapse recorded by
        // this entry already returned the order and freed its capacity.
        if self.lapse_note.is_some() && self.order.last_lapsed_owner == self.signer {
            return Ok(());
        }
        self.owner_only()?;
        self.leased()?;
        self.drop_owner_count();
        let signer = self.signer;
        self.stats_mut(signer).releases += 1;
        self.event(EventKind::Released {
            node: signer.to_string(),
        });
        self.order.status = OrderStatus::Open;
        self.order.owner = None;
        self.order.custodian = None;
        self.order.lease = None;
        self.order.offer = None;
        self.order.claimed_seq = 0;
        Ok(())
    }

    /// The pending offer, if it has not expired.
    fn live_offer(&self) -> Option<&Offer> {
        self.order
            .offer
            .as_ref()
            .filter(|o| self.now <= o.expires_ms)
    }

    fn offer(&mut self, h: &pb::OfferHandoff) -> Result<(), Reject> {
        self.owner_only()?;
        self.leased()?;
        if let Some(o) = self.live_offer() {
            return rej(
                Code::OfferPending,
                format!(
                    "order {} is already offered to {} (entry {}, expires at {})",
                    self.order.order_id, o.to, o.offer_seq, o.expires_ms
                ),
            );
        }
        if h.to == self.signer {
            return rej(
                Code::HandoffToSelf,
                format!("{} already owns the order", h.to),
            );
        }
        match self.view.party(&h.to) {
            None => {
                return rej(
                    Code::UnknownParty,
                    format!("party {} is not enrolled", h.to),
                )
            }
            Some(p) if p.role != pb::Role::Node as i32 => {
                return rej(
                    Code::NotANode,
                    format!("party {} is not a fulfillment node", h.to),
                )
            }
            Some(_) => {}
        }
        self.order.offer = Some(Offer {
            to: h.to.clone(),
            offer_seq: self.seq,
            expires_ms: self.now.saturating_add(h.expires_in_ms),
        });
        Ok(())
    }

    /// The offer the receiver answers: it must be addressed to the signer,
    /// be the one named and not have expired.
    fn answered_offer(&self, offer_seq: u64) -> Result<Offer, Reject> {
        let id = &self.order.order_id;
        let Some(offer) = self.order.offer.clone() else {
            return rej(
                Code::NoOffer,
                format!("order {id} has no pending handoff offer"),
            );
        };
        if offer.to != self.signer {
            return rej(
                Code::NotOfferedToSigner,
                format!("order {id} is offered to {}, not {}", offer.to, self.signer),
            );
        }
        if offer.offer_seq != offer_seq {
            return rej(
                Code::OfferMismatch,
                format!(
                    "the pending offer of order {id} is entry {}, not {offer_seq}",
                    offer.offer_seq
                ),
            );
        }
        if self.now > offer.expires_ms {
            return rej(
                Code::OfferExpired,
                format!(
                    "the offer of order {id} (entry {}) expired at {}",
                    offer.offer_seq, offer.expires_ms
                ),
            );
        }
        Ok(offer)
    }

    fn accept(&mut self, a: &pb::AcceptHandoff) -> Result<(), Reject> {
        self.answered_offer(a.offer_seq)?;
        self.leased()?;
        let signer = self.signer;
        let profile = self.eligible(signer)?;
        let sender = self.order.owner.clone().unwrap_or_default();
        {
            let s = self.stats_mut(&sender);
            s.open_orders = s.open_orders.saturating_sub(1);
            s.handoffs_out += 1;
        }
        self.take_on(signer, &profile);
        self.stats_mut(signer).handoffs_in += 1;
        self.event(EventKind::HandedOff {
            from: sender,
            to: signer.to_string(),
            damaged: a.damaged,
            profile_version: profile.version,
            dispatch_time_ms: profile.dispatch_time_ms,
        });
        if a.damaged {
            self.order.exceptions.push((
                "damage_noted_at_handoff".into(),
                signer.to_string(),
                self.seq,
            ));
        }
        Ok(())
    }

    fn decline(&mut self, d: &pb::DeclineHandoff) -> Result<(), Reject> {
        self.answered_offer(d.offer_seq)?;
        self.order.offer = None;
        Ok(())
    }

    fn milestone(&mut self, m: &pb::ReportMilestone) -> Result<(), Reject> {
        self.not_cancelled()?;
        self.owner_only()?;
        if m.price_version != 0 {
            self.quote(m.price_version, m.total)?;
        }
        use OrderStatus::*;
        let milestone = pb::Milestone::try_from(m.milestone).unwrap_or(pb::Milestone::Unspecified);
        let (next, allowed_from): (OrderStatus, &[OrderStatus]) = match milestone {
            pb::Milestone::Picked => (Picked, &[Claimed]),
            pb::Milestone::Packed => (Packed, &[Claimed, Picked]),
            pb::Milestone::Shipped => (Shipped, &[Claimed, Picked, Packed]),
            pb::Milestone::Delivered => (Delivered, &[Shipped]),
            pb::Milestone::Unspecified => {
                return rej(Code::Malformed, "milestone is not set".into())
            }
        };
        if !allowed_from.contains(&self.order.status) {
            return rej(
                Code::MilestoneOutOfOrder,
                format!(
                    "order {} is {}; {} can only follow {}",
                    self.order.order_id,
                    self.status(),
                    next.as_str(),
                    allowed_from
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            );
        }
        let signer = self.signer;
        match next {
            Shipped => {
                if let Some(o) = self.live_offer() {
                    return rej(
                        Code::OfferPending,
                        format!(
                            "order {} is offered to {} (entry {}); the offer must be answered or expire before shipping",
                            self.order.order_id, o.to, o.offer_seq
                        ),
                    );
                }
                let late = self
                    .order
                    .lease
                    .as_ref()
                    .is_some_and(|l| self.now > l.start_ms.saturating_add(l.dispatch_time_ms));
                let s = self.stats_mut(signer);
                s.open_orders = s.open_orders.saturating_sub(1);
                s.shipped += 1;
                if late {
                    s.late_shipments += 1;
                }
                self.order.offer = None;
                self.order.carrier = m.carrier.clone();
                self.order.tracking_id = m.tracking_id.clone();
                self.order.custodian = Some(m.carrier.clone());
                self.event(EventKind::Shipped {
                    node: signer.to_string(),
                    carrier: m.carrier.clone(),
                });
            }
            Delivered => {
                self.stats_mut(signer).delivered += 1;
                self.order.proof_of_delivery = m.proof_of_delivery.clone();
                if !m.proof_of_delivery.is_empty() {
                    // Delivered with proof: nobody in the chain holds it any more.
                    self.order.custodian = None;
                }
                self.event(EventKind::Delivered {
                    node: signer.to_string(),
                    proof: !m.proof_of_delivery.is_empty(),
                });
            }
            _ => {}
        }
        self.order.status = next;
        Ok(())
    }

    fn exception(&mut self, e: &pb::ReportException) -> Result<(), Reject> {
        self.not_cancelled()?;
        let is_owner = self.order.owner.as_deref() == Some(self.signer);
        if !is_owner && self.order.registered_by != self.signer {
            return rej(
                Code::NotEntitled,
                format!(
                    "only the owner ({}) or the registering channel ({}) report exceptions on order {}",
                    self.order.owner.as_deref().unwrap_or("nobody"),
                    self.order.registered_by,
                    self.order.order_id
                ),
            );
        }
        let kind = match pb::ExceptionKind::try_from(e.kind) {
            Ok(pb::ExceptionKind::Damaged) => "damaged",
            Ok(pb::ExceptionKind::Lost) => "lost",
            Ok(pb::ExceptionKind::Delayed) => "delayed",
            _ => return rej(Code::Malformed, "exception kind is not set".into()),
        };
        self.order
            .exceptions
            .push((kind.into(), self.signer.to_string(), self.seq));
        Ok(())
    }

    fn request_return(&mut self) -> Result<(), Reject> {
        self.channel_only()?;
        if self.order.status != OrderStatus::Delivered {
            return rej(
                Code::NotDelivered,
                format!(
                    "order {} is {}; a return needs a delivered order",
                    self.order.order_id,
                    self.status()
                ),
            );
        }
        self.order.status = OrderStatus::ReturnRequested;
        Ok(())
    }

    fn claim_return(&mut self) -> Result<(), Reject> {
        let id = &self.order.order_id;
        match self.order.status {
            OrderStatus::ReturnRequested => {}
            OrderStatus::ReturnClaimed | OrderStatus::Returned => {
                return rej(
                    Code::ReturnAlreadyClaimed,
                    format!(
                        "the return of order {id} is claimed by {}",
                        self.order.return_node
                    ),
                )
            }
            _ => {
                return rej(
                    Code::NoReturnRequested,
                    format!("order {id} is {}; no return is requested", self.status()),
                )
            }
        }
        let Some(p) = self.view.profile(self.signer) else {
            return rej(
                Code::NoProfile,
                format!(
                    "node {} has not published a capability profile",
                    self.signer
                ),
            );
        };
        if !p.handles_returns {
            return rej(
                Code::ReturnsNotHandled,
                format!(
                    "the profile v{} of node {} does not handle returns",
                    p.version, self.signer
                ),
            );
        }
        if !p.regions.contains(&self.order.destination_region) {
            return rej(
                Code::RegionNotServed,
                format!(
                    "the profile v{} of node {} serves {}, not {}",
                    p.version,
                    self.signer,
                    p.regions.join(", "),
                    self.order.destination_region
                ),
            );
        }
        self.order.status = OrderStatus::ReturnClaimed;
        self.order.return_node = self.signer.to_string();
        Ok(())
    }

    fn receive_return(&mut self, r: &pb::ReceiveReturn) -> Result<(), Reject> {
        let id = &self.order.order_id;
        if self.order.status != OrderStatus::ReturnClaimed {
            return rej(
                Code::NoReturnClaimed,
                format!("order {id} is {}; no return is in progress", self.status()),
            );
        }
        if self.order.return_node != self.signer {
            return rej(
                Code::NotReturnNode,
                format!(
                    "the return of order {id} is claimed by {}, not {}",
                    self.order.return_node, self.signer
                ),
            );
        }
        if r.price_version != self.order.price_version {
            return rej(
                Code::PriceMismatch,
                format!(
                    "order {id} is at price version {} (total {} {}); the refund quoted version {}",
                    self.order.price_version,
                    self.order.total,
                    self.order.currency,
                    r.price_version
                ),
            );
        }
        if r.refund > self.order.total {
            return rej(
                Code::RefundExceedsPaid,
                format!(
                    "refund {} exceeds {} {} paid at price version {}",
                    r.refund, self.order.total, self.order.currency, self.order.price_version
                ),
            );
        }
        self.order.status = OrderStatus::Returned;
        self.order.refund = r.refund;
        Ok(())
    }
}

impl<V: StateView> OnOrder<'_, V> {
    /// `RecordLapse`: accepted only when this entry recorded a lapse.
    fn lapse_recorded(&mut self) -> Result<(), Reject> {
        if self.lapse_note.is_some() {
            return Ok(());
        }
        let o = &self.order;
        let deadline = o
            .lease
            .as_ref()
            .filter(|_| o.status.is_leased())
            .map(|l| format!("its lease runs until {}", l.deadline_ms))
            .unwrap_or_else(|| format!("it is {} with no lease running", o.status.as_str()));
        rej(
            Code::NotLapsed,
            format!("order {} has nothing to lapse: {deadline}", o.order_id),
        )
    }

    fn open_dispute(&mut self, d: &pb::OpenDispute) -> Result<(), Reject> {
        if d.incident_ms > self.now {
            return rej(
                Code::IncidentInFuture,
                format!(
                    "incident time {} is after this entry's time {}",
                    d.incident_ms, self.now
                ),
            );
        }
        let Some(kind) = Incident::from_pb(d.kind) else {
            return rej(Code::Malformed, "incident kind is not set".into());
        };
        self.order.disputes.push(Dispute {
            seq: self.seq,
            kind: kind.as_str().into(),
            incident_ms: d.incident_ms,
            opened_by: self.signer.to_string(),
            ruling: None,
        });
        Ok(())
    }

    fn resolve_dispute(&mut self, r: &pb::ResolveDispute) -> Result<(), Reject> {
        let id = self.order.order_id.clone();
        let Some(i) = self
            .order
            .disputes
            .iter()
            .position(|d| d.seq == r.dispute_seq)
        else {
            return rej(
                Code::UnknownDispute,
                format!(
                    "order {id} has no dispute opened at entry {}",
                    r.dispute_seq
                ),
            );
        };
        let dispute = &self.order.disputes[i];
        if let Some(done) = &dispute.ruling {
            return rej(
                Code::AlreadyResolved,
                format!(
                    "the dispute of entry {} was resolved at entry {}",
                    r.dispute_seq, done.seq
                ),
            );
        }
        let computed = rule_on(&self.order, dispute);
        if computed.liable != r.liable
            || Rule::parse(&r.rule) != Some(computed.rule)
            || computed.evidence != r.evidence
        {
            return rej(
                Code::RulingMismatch,
                format!(
                    "the rules find {} liable under {} on evidence {:?} ({}); the ruling says {} under {} on {:?}",
                    if computed.liable.is_empty() { "nobody" } else { &computed.liable },
                    computed.rule,
                    computed.evidence,
                    computed.explanation,
                    if r.liable.is_empty() { "nobody" } else { &r.liable },
                    r.rule,
                    r.evidence
                ),
            );
        }
        self.order.disputes[i].ruling = Some(RulingRecord {
            liable: computed.liable,
            rule: computed.rule.as_str().into(),
            evidence: computed.evidence,
            seq: self.seq,
        });
        Ok(())
    }
}

/// The profile checks of eligibility (capacity aside): the node has a
/// profile whose regions and capabilities cover the order.
pub fn check_eligible(view: &impl StateView, node: &str, order: &Order) -> Result<Profile, Reject> {
    let Some(p) = view.profile(node) else {
        return rej(
            Code::NoProfile,
            format!("node {node} has not published a capability profile"),
        );
    };
    let v = p.version;
    if !p.regions.contains(&order.destination_region) {
        return rej(
            Code::RegionNotServed,
            format!(
                "profile v{v} of node {node} serves {}, not the destination {}",
                p.regions.join(", "),
                order.destination_region
            ),
        );
    }
    let req = &order.requirements;
    if req.cold_chain && !p.cold_chain {
        return rej(
            Code::ColdChainRequired,
            format!(
                "order {} needs cold chain; profile v{v} of node {node} has none",
                order.order_id
            ),
        );
    }
    if req.hazmat && !p.hazmat {
        return rej(
            Code::HazmatRequired,
            format!(
                "order {} contains hazardous goods; profile v{v} of node {node} does not handle hazmat",
                order.order_id
            ),
        );
    }
    if !req.category.is_empty() && !p.categories.contains(&req.category) {
        return rej(
            Code::CategoryNotServed,
            format!(
                "order {} is category {}; profile v{v} of node {node} handles [{}]",
                order.order_id,
                req.category,
                p.categories.join(", ")
            ),
        );
    }
    Ok(p)
}

/// Whether `node` could claim `order` now: open (or lapsed), eligible by
/// profile, below capacity. For listings; the ledger decides.
pub fn claimable_by(view: &impl StateView, node: &str, order: &Order, now_ms: u64) -> bool {
    let open = order.status == OrderStatus::Open || order.lease_lapsed(now_ms);
    if !open || order.status == OrderStatus::Cancelled {
        return false;
    }
    let Ok(p) = check_eligible(view, node, order) else {
        return false;
    };
    let stats = view.stats(node).unwrap_or_default();
    stats.open_orders < p.max_open_orders as u64
}
