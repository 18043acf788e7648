//! Rendering orders: one order (`order get`) and a page of them (`order list`).

use arbor_client::pb;
use serde_json::json;

use crate::output::{kv, render, utc, Table};
use crate::Ctx;

pub(super) fn list_orders(ctx: &Ctx, r: &pb::ListOrdersReply) -> String {
    let json = json!({
        "orders": r.orders.iter().map(order_json).collect::<Vec<_>>(),
        "next": r.next,
    });
    render(ctx.format, json, || {
        let mut t = Table::new(&[
            "ORDER",
            "STATUS",
            "OWNER",
            "REGION",
            "PRICE",
            "LEASE DEADLINE",
        ]);
        for o in &r.orders {
            t.row(vec![
                o.order_id.clone(),
                status_text(o),
                dash(&o.owner),
                o.destination_region.clone(),
                format!("v{} {} {}", o.price_version, o.total, o.currency),
                deadline_text(o),
            ]);
        }
        let mut out = t.render();
        if !r.next.is_empty() {
            out.push_str(&format!("more: --after {}\n", r.next));
        }
        out
    })
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn status_text(o: &pb::OrderView) -> String {
    if o.lease_fenced && o.status != "fenced" {
        format!("{} (lease ran out: fenced for its owner)", o.status)
    } else if o.lease_lapsed {
        format!("{} (lease lapsed)", o.status)
    } else {
        o.status.clone()
    }
}

fn deadline_text(o: &pb::OrderView) -> String {
    if o.lease_deadline_ms == 0 {
        "-".into()
    } else {
        utc(o.lease_deadline_ms)
    }
}

fn order_json(o: &pb::OrderView) -> serde_json::Value {
    let req = o.requirements.clone().unwrap_or_default();
    let mut v = json!({
        "order_id": o.order_id,
        "status": o.status,
        "owner": o.owner,
        "custodian": o.custodian,
        "price_version": o.price_version,
        "currency": o.currency,
        "total": o.total,
        "destination_region": o.destination_region,
        "requirements": {"cold_chain": req.cold_chain, "hazmat": req.hazmat, "category": req.category},
        "promised_delivery_ms": o.promised_delivery_ms,
        "promised_delivery": (o.promised_delivery_ms != 0).then(|| utc(o.promised_delivery_ms)),
        "ship_by_ms": o.ship_by_ms,
        "ship_by": (o.ship_by_ms != 0).then(|| utc(o.ship_by_ms)),
        "sourceable_ms": o.sourceable_ms,
        "lease_fenced": o.lease_fenced,
        "registered_by": o.registered_by,
        "registered_seq": o.registered_seq,
        "claimed_seq": o.claimed_seq,
        "lease_deadline_ms": o.lease_deadline_ms,
        "lease_deadline": (o.lease_deadline_ms != 0).then(|| utc(o.lease_deadline_ms)),
        "lease_lapsed": o.lease_lapsed,
        "claim_profile_version": o.claim_profile_version,
        "offer": o.offer.as_ref().map(|f| json!({"to": f.to, "offer_seq": f.offer_seq, "expires_ms": f.expires_ms, "expires": utc(f.expires_ms)})),
        "carrier": o.carrier,
        "tracking_id": o.tracking_id,
        "proof_of_delivery": o.proof_of_delivery,
        "last_lapsed_owner": o.last_lapsed_owner,
        "return_node": o.return_node,
        "refund": o.refund,
        "exceptions": o.exceptions,
        "external_refs": o.external_refs.iter()
            .map(|r| json!({"channel": r.channel, "external_id": r.external_id}))
            .collect::<Vec<_>>(),
        "lines": o.lines.iter()
            .map(|l| json!({"sku": l.sku, "quantity": l.quantity, "unit_price": l.unit_price}))
            .collect::<Vec<_>>(),
        "history": o.history,
    });
    // Rules version 3: the tender to a carrier and the delivery's grade, when there are any.
    if o.tender_seq != 0 {
        v["tender"] = json!({
            "carrier": o.tender_carrier,
            "tender_seq": o.tender_seq,
            "parcels": o.tender_parcels,
            "accepted_seq": o.tender_accepted_seq,
            "received_parcels": o.received_parcels,
            "received_weight_grams": o.received_weight_grams,
        });
        // Rules version 4: when the pending tender expires.
        if o.tender_expires_ms != 0 {
            v["tender"]["expires_ms"] = json!(o.tender_expires_ms);
        }
    }
    if !o.delivery_grade.is_empty() {
        v["delivery_grade"] = json!(o.delivery_grade);
    }
    if o.delivery_code_registered {
        v["delivery_code"] = json!({
            "sha256": hex::encode(&o.delivery_code_sha256),
            "used_seq": o.delivery_code_used_seq,
        });
    }
    v
}

/// Rules version 3: the order's sourcing, added to its JSON when it has any.
fn with_sourcing(mut json: serde_json::Value, o: &pb::OrderView) -> serde_json::Value {
    if !o.sourcing_mode.is_empty() {
        json["sourcing"] = json!({
            "mode": o.sourcing_mode,
            "assignment": o.assignment.as_ref().map(|a| json!({"to": a.to, "decision_seq": a.decision_seq, "expires_ms": a.expires_ms, "expires": utc(a.expires_ms)})),
            "decisions": o.sourcing_decisions,
            "awaiting_trigger": o.awaiting_trigger,
            "awaiting_trigger_seq": o.awaiting_trigger_seq,
        });
    }
    json
}

pub(super) fn show_order(ctx: &Ctx, o: &pb::OrderView) -> String {
    let json = with_sourcing(order_json(o), o);
    render(ctx.format, json, || {
        let owner = if o.owner.is_empty() {
            "-".to_string()
        } else {
            format!("{} (claimed at seq {})", o.owner, o.claimed_seq)
        };
        let refs: Vec<String> = o
            .external_refs
            .iter()
            .map(|r| format!("{}/{}", r.channel, r.external_id))
            .collect();
        let history: Vec<String> = o.history.iter().map(u64::to_string).collect();
        let req = o.requirements.clone().unwrap_or_default();
        let mut needs: Vec<String> = Vec::new();
        if req.cold_chain {
            needs.push("cold chain".into());
        }
        if req.hazmat {
            needs.push("hazmat".into());
        }
        if !req.category.is_empty() {
            needs.push(format!("category {}", req.category));
        }
        let mut rows = vec![
            ("order", o.order_id.clone()),
            ("status", status_text(o)),
            ("owner", owner),
            ("custodian", dash(&o.custodian)),
            ("lease deadline", deadline_text(o)),
            (
                "promised by",
                if o.promised_delivery_ms == 0 {
                    "-".into()
                } else {
                    utc(o.promised_delivery_ms)
                },
            ),
            (
                "ship by",
                if o.ship_by_ms == 0 {
                    "-".into()
                } else {
                    utc(o.ship_by_ms)
                },
            ),
            (
                "price",
                format!(
                    "version {}, total {} {}",
                    o.price_version, o.total, o.currency
                ),
            ),
            ("region", o.destination_region.clone()),
            (
                "registered",
                format!("seq {} by {}", o.registered_seq, o.registered_by),
            ),
            ("refs", refs.join(", ")),
            (
                "requires",
                if needs.is_empty() {
                    "-".into()
                } else {
                    needs.join(", ")
                },
            ),
        ];
        if let Some(f) = &o.offer {
            rows.push((
                "offer",
                format!(
                    "to {} (offer seq {}, expires {}; accept with --offer-seq {})",
                    f.to,
                    f.offer_seq,
                    utc(f.expires_ms),
                    f.offer_seq
                ),
            ));
        }
        if !o.sourcing_mode.is_empty() {
            let mut line = o.sourcing_mode.clone();
            if let Some(a) = &o.assignment {
                line += &format!(
                    "; offered to {} by decision {} until {}",
                    a.to,
                    a.decision_seq,
                    utc(a.expires_ms)
                );
            }
            if !o.awaiting_trigger.is_empty() {
                line += &format!(
                    "; awaits a decision: trigger {} (entry {})",
                    o.awaiting_trigger, o.awaiting_trigger_seq
                );
            }
            rows.push(("sourcing", line));
        }
        if !o.carrier.is_empty() {
            rows.push((
                "shipped",
                format!("{} tracking {}", o.carrier, o.tracking_id),
            ));
        }
        if o.tender_seq != 0 {
            let state = if o.tender_accepted_seq == 0 {
                "pending: the node holds the goods until the carrier signs".to_string()
            } else {
                format!(
                    "signed for at seq {} ({} parcels)",
                    o.tender_accepted_seq, o.received_parcels
                )
            };
            rows.push((
                "tender",
                format!("to {} at seq {}, {state}", o.tender_carrier, o.tender_seq),
            ));
        }
        if !o.proof_of_delivery.is_empty() {
            rows.push(("delivery proof", o.proof_of_delivery.clone()));
        }
        if !o.delivery_grade.is_empty() {
            rows.push(("delivery grade", o.delivery_grade.clone()));
        }
        if !o.last_lapsed_owner.is_empty() {
            rows.push(("lapsed owner", o.last_lapsed_owner.clone()));
        }
        if !o.return_node.is_empty() {
            rows.push(("return", format!("{} refund {}", o.return_node, o.refund)));
        }
        if !o.exceptions.is_empty() {
            rows.push(("exceptions", o.exceptions.join("; ")));
        }
        rows.push(("history", format!("seq {}", history.join(", "))));
        let mut out = kv(&rows);
        let mut t = Table::new(&["SKU", "QTY", "UNIT PRICE", "AMOUNT"]);
        for l in &o.lines {
            let amount = i128::from(l.quantity) * i128::from(l.unit_price);
            t.row(vec![
                l.sku.clone(),
                l.quantity.to_string(),
                l.unit_price.to_string(),
                amount.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
        out
    })
}
