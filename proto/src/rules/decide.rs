//! The business rules: what each command does to the state.

use super::state::{Line, Order, OrderStatus, Party};
use super::{role_name, Decision, Effect, StateView};
use crate::pb;
use crate::pb::command::Body;

/// Decides a structurally valid, authorized command appended at `seq`.
///
/// Pure: the same view, command and sequence give the same decision.
pub fn decide(view: &impl StateView, signer: &str, cmd: &pb::Command, seq: u64) -> Decision {
    let mut d = match cmd.body.as_ref() {
        Some(Body::Genesis(g)) => genesis(g, seq),
        Some(Body::EnrollParty(e)) => enroll(view, e, seq),
        Some(Body::RegisterOrder(r)) => register(view, signer, r, seq),
        Some(Body::ClaimOrder(c)) => claim(view, signer, c, seq),
        // validate_command refuses a missing body before we get here.
        None => Decision::reject("malformed", "command has no body", ""),
    };
    link_order_history(view, &mut d, seq);
    d
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

fn genesis(g: &pb::Genesis, seq: u64) -> Decision {
    let effects = g
        .operators
        .iter()
        .map(|op| {
            Effect::PutParty(Party {
                party_id: op.party_id.clone(),
                role: pb::Role::Operator as i32,
                kind: pb::NodeKind::Unspecified as i32,
                public_key: op.public_key.clone(),
                enrolled_seq: seq,
            })
        })
        .collect();
    Decision::accept("", effects)
}

fn enroll(view: &impl StateView, e: &pb::EnrollParty, seq: u64) -> Decision {
    if let Some(existing) = view.party(&e.party_id) {
        let role = pb::Role::try_from(existing.role).unwrap_or(pb::Role::Unspecified);
        return Decision::reject(
            "party_exists",
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
            "key_in_use",
            format!("public key is already enrolled for party {holder}"),
            "",
        );
    }
    Decision::accept(
        "",
        vec![Effect::PutParty(Party {
            party_id: e.party_id.clone(),
            role: e.role,
            kind: e.kind,
            public_key: e.public_key.clone(),
            enrolled_seq: seq,
        })],
    )
}

fn register(view: &impl StateView, signer: &str, r: &pb::RegisterOrder, seq: u64) -> Decision {
    if let Some(existing) = view.order(&r.order_id) {
        return Decision::reject(
            "duplicate_order",
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
                "external_ref_taken",
                format!(
                    "external reference {}/{} already belongs to order {owner}",
                    x.channel, x.external_id
                ),
                owner,
            );
        }
    }
    let order = Order {
        order_id: r.order_id.clone(),
        external_refs: r
            .external_refs
            .iter()
            .map(|x| (x.channel.clone(), x.external_id.clone()))
            .collect(),
        lines: r
            .lines
            .iter()
            .map(|l| Line {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price,
            })
            .collect(),
        currency: r.currency.clone(),
        total: r.total,
        destination_region: r.destination_region.clone(),
        price_version: 1,
        status: OrderStatus::Open,
        owner: None,
        registered_by: signer.to_string(),
        registered_seq: seq,
        claimed_seq: 0,
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

fn claim(view: &impl StateView, signer: &str, c: &pb::ClaimOrder, seq: u64) -> Decision {
    let Some(mut order) = view.order(&c.order_id) else {
        return Decision::reject(
            "unknown_order",
            format!("order {} is not registered", c.order_id),
            "",
        );
    };
    if let Some(owner) = &order.owner {
        return Decision::reject(
            "already_owned",
            format!(
                "order {} is owned by {owner} (claimed at entry {})",
                order.order_id, order.claimed_seq
            ),
            order.order_id,
        );
    }
    if c.price_version != order.price_version || c.total != order.total {
        return Decision::reject(
            "price_mismatch",
            format!(
                "order {} is locked at price version {} total {} {}; the claim quoted version {} total {}",
                order.order_id, order.price_version, order.total, order.currency, c.price_version, c.total
            ),
            order.order_id,
        );
    }
    order.owner = Some(signer.to_string());
    order.status = OrderStatus::Claimed;
    order.claimed_seq = seq;
    let id = order.order_id.clone();
    Decision::accept(id, vec![Effect::PutOrder(order)])
}
