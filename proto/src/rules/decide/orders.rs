//! Orders: registration (with the external references that map to it),
//! price amendments by the registering channel, and cancellation.

use super::super::sla::SlaTerms;
use super::super::state::{lines_from_pb, EventKind, Order, OrderStatus, Requirements};
use super::super::{Code, Decision, Effect, StateView};
use super::{rej, OnOrder, Reject};
use crate::pb;

pub(super) fn register(
    view: &impl StateView,
    signer: &str,
    r: &pb::RegisterOrder,
    seq: u64,
    now: u64,
) -> Decision {
    // Rules version 3: the order's SLA clock starts at its registration.
    let rules = view.config().map(|c| c.rules()).unwrap_or(1);
    if rules < 3 && r.ship_by_ms != 0 {
        return Decision::reject(
            Code::NotInRulesVersion,
            format!("a ship-by needs rules version 3; the rules are at version {rules}"),
            "",
        );
    }
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
    if let Some(refused) = super::carriers::register_check(view, r) {
        return refused;
    }
    // Rules version 4: a delivery code hash belongs to one order.
    let index_code = rules >= 4 && !r.delivery_code_sha256.is_empty();
    if index_code {
        if let Some(other) = view.order_by_delivery_code(&r.delivery_code_sha256) {
            return Decision::reject(
                Code::DeliveryCodeReused,
                format!(
                    "the delivery code hash of order {} is already registered for order {other}; a delivery code belongs to one order",
                    r.order_id
                ),
                "",
            );
        }
    }
    let rules = view.config().map(|c| c.rules()).unwrap_or(1);
    let sourcing = match super::sourcing::on_register(rules, r.sourcing_mode) {
        Ok(s) => s,
        Err((code, message)) => return Decision::reject(code, message, ""),
    };
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
        sla: (rules >= 3).then_some(SlaTerms {
            sourceable_ms: now,
            ship_by_ms: r.ship_by_ms,
        }),
        sourcing,
        last_seq: seq,
        tender: None,
        delivery_code_sha256: r.delivery_code_sha256.clone(),
        delivery_code_used_seq: 0,
        delivery_grade: None,
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
    if index_code {
        effects.push(Effect::PutDeliveryCode {
            hash: r.delivery_code_sha256.clone(),
            order_id: r.order_id.clone(),
        });
    }
    effects.push(Effect::PutOrder(order));
    Decision::accept(r.order_id.clone(), effects)
}

impl<V: StateView> OnOrder<'_, V> {
    pub(super) fn amend_price(&mut self, a: &pb::AmendPrice) -> Result<(), Reject> {
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

    pub(super) fn cancel(&mut self) -> Result<(), Reject> {
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
        self.order.fence = None;
        self.event(EventKind::Cancelled);
        Ok(())
    }
}
