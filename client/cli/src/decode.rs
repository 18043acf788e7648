//! A signed command decoded for people and for `jq`: the signer, the kind
//! (`claim_order`, `report_milestone:shipped`, ...) and every field of the
//! body as JSON (times as RFC 3339 beside their `_ms` field, keys in hex).

use arbor_client::pb;
use arbor_client::pb::command::Body;
use prost::Message;
use serde_json::{json, Value};

use super::output::utc;

/// The signer and the decoded command of a `SignedCommand`'s bytes.
pub struct Decoded {
    /// "-" when unsigned, "?" when the bytes do not decode.
    pub signer: String,
    /// `claim_order`, `report_milestone:shipped`, `empty`, `undecodable`.
    pub kind: String,
    /// `{"kind": ..., "nonce": ..., <body fields>}`, or null when undecodable
    /// (`kind` without the milestone: `report_milestone`, with `milestone`).
    pub json: Value,
}

pub fn decode_signed(bytes: &[u8]) -> Decoded {
    let Ok(env) = pb::SignedCommand::decode(bytes) else {
        return Decoded {
            signer: "?".into(),
            kind: "undecodable".into(),
            json: Value::Null,
        };
    };
    let signer = if env.signer.is_empty() {
        "-".to_string()
    } else {
        env.signer
    };
    match pb::Command::decode(env.command.as_slice()) {
        Ok(c) => {
            let kind = kind_of(&c);
            let mut json = body_json(&c);
            if let Value::Object(m) = &mut json {
                let mut full = serde_json::Map::new();
                let base = kind.split(':').next().unwrap_or_default();
                full.insert("kind".into(), json!(base));
                // A string: a u64 nonce does not survive a JSON double (jq).
                full.insert("nonce".into(), json!(c.nonce.to_string()));
                full.append(m);
                json = Value::Object(full);
            }
            Decoded { signer, kind, json }
        }
        Err(_) => Decoded {
            signer,
            kind: "undecodable".into(),
            json: Value::Null,
        },
    }
}

/// `claim_order`; a milestone names its kind: `report_milestone:shipped`.
pub fn kind_of(c: &pb::Command) -> String {
    match &c.body {
        None => "empty".into(),
        Some(Body::ReportMilestone(m)) => {
            format!("report_milestone:{}", milestone_name(m.milestone))
        }
        Some(_) => snake_case(arbor_proto::rules::command_name(c)),
    }
}

/// `ClaimOrder` -> `claim_order`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

pub fn milestone_name(m: i32) -> &'static str {
    match pb::Milestone::try_from(m) {
        Ok(pb::Milestone::Picked) => "picked",
        Ok(pb::Milestone::Packed) => "packed",
        Ok(pb::Milestone::Shipped) => "shipped",
        Ok(pb::Milestone::Delivered) => "delivered",
        _ => "unspecified",
    }
}

fn exception_name(k: i32) -> &'static str {
    match pb::ExceptionKind::try_from(k) {
        Ok(pb::ExceptionKind::Damaged) => "damaged",
        Ok(pb::ExceptionKind::Lost) => "lost",
        Ok(pb::ExceptionKind::Delayed) => "delayed",
        _ => "unspecified",
    }
}

fn incident_name(k: i32) -> &'static str {
    match pb::IncidentKind::try_from(k) {
        Ok(pb::IncidentKind::Lost) => "lost",
        Ok(pb::IncidentKind::Damaged) => "damaged",
        Ok(pb::IncidentKind::Late) => "late",
        Ok(pb::IncidentKind::DuplicateProcessing) => "duplicate_processing",
        Ok(pb::IncidentKind::PriceMismatch) => "price_mismatch",
        _ => "unspecified",
    }
}

fn lines(ls: &[pb::OrderLine]) -> Value {
    json!(ls
        .iter()
        .map(|l| json!({"sku": l.sku, "quantity": l.quantity, "unit_price": l.unit_price}))
        .collect::<Vec<_>>())
}

/// A time field as `<name>_ms` and `<name>` (RFC 3339), or only `_ms` when 0.
fn time(m: &mut serde_json::Map<String, Value>, name: &str, ms: u64) {
    m.insert(format!("{name}_ms"), json!(ms));
    if ms != 0 {
        m.insert(name.to_string(), json!(utc(ms)));
    }
}

/// The body's fields as one JSON object.
pub fn body_json(c: &pb::Command) -> Value {
    let Some(body) = &c.body else {
        return json!({});
    };
    let out = match body {
        Body::Genesis(g) => json!({
            "cluster_id": g.cluster_id,
            "operators": g.operators.iter().map(|o| json!({"party_id": o.party_id, "public_key": hex::encode(&o.public_key)})).collect::<Vec<_>>(),
            "lease_grace_ms": g.lease_grace_ms,
            "members": g.members.iter().map(|r| json!({"node_id": r.node_id, "addr": r.addr, "peer_addr": r.peer_addr})).collect::<Vec<_>>(),
            "rules_version": g.rules_version,
            "fence_ms": g.fence_ms,
            // Rules version 3 and later: as recorded (0: the kind's default).
            "claim_deadlines": g.claim_deadlines.as_ref().map(|d| json!({
                "lost_ms": d.lost_ms,
                "damaged_ms": d.damaged_ms,
                "late_ms": d.late_ms,
                "duplicate_processing_ms": d.duplicate_processing_ms,
                "price_mismatch_ms": d.price_mismatch_ms,
            })),
        }),
        Body::EnrollParty(e) => json!({
            "party_id": e.party_id,
            "role": super::output::role_name(e.role),
            "node_kind": super::output::kind_name(e.kind),
            "public_key": hex::encode(&e.public_key),
        }),
        Body::RegisterOrder(r) => {
            let mut v = json!({
                "order_id": r.order_id,
                "external_refs": r.external_refs.iter().map(|x| json!({"channel": x.channel, "external_id": x.external_id})).collect::<Vec<_>>(),
                "lines": lines(&r.lines),
                "currency": r.currency,
                "total": r.total,
                "destination_region": r.destination_region,
                "requirements": r.requirements.as_ref().map(|q| json!({"cold_chain": q.cold_chain, "hazmat": q.hazmat, "category": q.category})),
            });
            time(
                v.as_object_mut().expect("object"),
                "promised_delivery",
                r.promised_delivery_ms,
            );
            if !r.delivery_code_sha256.is_empty() {
                v["delivery_code_sha256"] = json!(hex::encode(&r.delivery_code_sha256));
            }
            if r.ship_by_ms != 0 {
                time(v.as_object_mut().expect("object"), "ship_by", r.ship_by_ms);
            }
            v
        }
        Body::ClaimOrder(c) => json!({
            "order_id": c.order_id, "price_version": c.price_version, "total": c.total,
        }),
        Body::RotateKey(r) => {
            json!({"party_id": r.party_id, "public_key": hex::encode(&r.public_key)})
        }
        Body::RevokeKey(r) => json!({"party_id": r.party_id, "reason": r.reason}),
        Body::PublishProfile(p) => json!({
            "regions": p.regions, "max_open_orders": p.max_open_orders,
            "dispatch_time_ms": p.dispatch_time_ms, "handles_returns": p.handles_returns,
            "cold_chain": p.cold_chain, "hazmat": p.hazmat, "categories": p.categories,
        }),
        Body::AmendPrice(a) => json!({
            "order_id": a.order_id, "base_version": a.base_version, "lines": lines(&a.lines),
            "total": a.total, "reason": a.reason,
        }),
        Body::CancelOrder(c) => json!({"order_id": c.order_id, "reason": c.reason}),
        Body::ReleaseOrder(r) => json!({"order_id": r.order_id, "reason": r.reason}),
        Body::OfferHandoff(o) => json!({
            "order_id": o.order_id, "to": o.to, "expires_in_ms": o.expires_in_ms,
        }),
        Body::AcceptHandoff(a) => json!({
            "order_id": a.order_id, "offer_seq": a.offer_seq, "damaged": a.damaged, "note": a.note,
        }),
        Body::DeclineHandoff(d) => json!({
            "order_id": d.order_id, "offer_seq": d.offer_seq, "reason": d.reason,
        }),
        Body::ReportMilestone(m) => {
            let mut v = json!({
                "order_id": m.order_id, "milestone": milestone_name(m.milestone),
                "carrier": m.carrier, "tracking_id": m.tracking_id,
                "proof_of_delivery": m.proof_of_delivery,
                "price_version": m.price_version, "total": m.total,
            });
            // Rules version 3: shown only when set.
            if m.tender {
                v["tender"] = json!(true);
                v["parcels"] = json!(m.parcels);
                // Rules version 4: the tender's own timeout.
                if m.tender_timeout_ms != 0 {
                    v["tender_timeout_ms"] = json!(m.tender_timeout_ms);
                }
            }
            if !m.delivery_code.is_empty() {
                v["delivery_code"] = json!(m.delivery_code);
            }
            v
        }
        Body::AcceptTender(a) => json!({
            "order_id": a.order_id, "tender_seq": a.tender_seq, "tracking_id": a.tracking_id,
            "parcels": a.parcels, "weight_grams": a.weight_grams, "description": a.description,
            "damaged": a.damaged, "note": a.note,
        }),
        Body::ScanDelivery(d) => json!({
            "order_id": d.order_id, "tracking_id": d.tracking_id,
            "delivery_code": d.delivery_code, "note": d.note,
        }),
        Body::ReportException(x) => json!({
            "order_id": x.order_id, "exception": exception_name(x.kind), "note": x.note,
        }),
        Body::RequestReturn(r) => json!({"order_id": r.order_id, "reason": r.reason}),
        Body::ClaimReturn(r) => json!({"order_id": r.order_id}),
        Body::ReceiveReturn(r) => json!({
            "order_id": r.order_id, "refund": r.refund, "price_version": r.price_version,
        }),
        Body::OpenDispute(d) => {
            let mut v = json!({
                "order_id": d.order_id, "incident": incident_name(d.kind),
                "incident_ms": d.incident_ms, "statement": d.statement,
            });
            if d.incident_ms != 0 {
                v["incident_time"] = json!(utc(d.incident_ms));
            }
            if d.known_good_ms != 0 {
                v["known_good_ms"] = json!(d.known_good_ms);
                v["known_good_time"] = json!(utc(d.known_good_ms));
            }
            // Rules version 4: the parcels a lost dispute is about.
            if d.parcels != 0 {
                v["parcels"] = json!(d.parcels);
            }
            v
        }
        Body::ResolveDispute(r) => json!({
            "order_id": r.order_id, "dispute_seq": r.dispute_seq, "liable": r.liable,
            "rule": r.rule, "evidence": r.evidence,
        }),
        Body::RecordLapse(r) => json!({"order_id": r.order_id}),
        Body::AddReplica(a) => {
            json!({"node_id": a.node_id, "addr": a.addr, "peer_addr": a.peer_addr})
        }
        Body::RemoveReplica(r) => json!({"node_id": r.node_id}),
        Body::SetRulesVersion(r) => {
            let mut v = json!({"version": r.version, "fence_ms": r.fence_ms});
            if let Some(d) = &r.claim_deadlines {
                v["claim_deadlines"] = json!({
                    "lost_ms": d.lost_ms,
                    "damaged_ms": d.damaged_ms,
                    "late_ms": d.late_ms,
                    "duplicate_processing_ms": d.duplicate_processing_ms,
                    "price_mismatch_ms": d.price_mismatch_ms,
                });
            }
            v
        }
        // Rules version 3: sourcing.
        Body::SourceOrder(s) => crate::order::source::decision_json(s),
        Body::AcceptAssignment(a) => json!({
            "order_id": a.order_id, "decision_seq": a.decision_seq,
            "price_version": a.price_version, "total": a.total,
        }),
        Body::DeclineAssignment(d) => json!({
            "order_id": d.order_id, "decision_seq": d.decision_seq,
            "reason": d.reason, "shortage": d.shortage,
        }),
        Body::ReassignOrder(r) => {
            json!({"order_id": r.order_id, "from": r.from, "reason": r.reason})
        }
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_client::Commands;

    #[test]
    fn decodes_signer_kind_and_fields() {
        let id = arbor_client::Identity::generate("store-1").for_cluster("t");
        let d = decode_signed(&id.claim_order("o-1", 2, 2598).encode_to_vec());
        assert_eq!(d.signer, "store-1");
        assert_eq!(d.kind, "claim_order");
        assert_eq!(d.json["kind"], "claim_order");
        assert_eq!(d.json["order_id"], "o-1");
        assert_eq!(d.json["price_version"], 2);
        assert_eq!(d.json["total"], 2598);

        let d = decode_signed(&id.report_shipped("o-1", "sf", "SF1").encode_to_vec());
        assert_eq!(d.kind, "report_milestone:shipped");
        assert_eq!(d.json["kind"], "report_milestone");
        assert_eq!(d.json["milestone"], "shipped");
        assert_eq!(d.json["carrier"], "sf");

        let d = decode_signed(
            &id.open_dispute("o-1", pb::IncidentKind::Lost, 1_765_121_024_123, "gone")
                .encode_to_vec(),
        );
        assert_eq!(d.json["incident"], "lost");
        assert_eq!(d.json["incident_ms"], 1_765_121_024_123u64);
        assert_eq!(d.json["incident_time"], "2025-12-07T15:23:44.123Z");

        // A genesis shows the claim deadlines it records (none: null).
        let genesis = |d: Option<pb::ClaimDeadlines>| pb::Command {
            nonce: 0,
            body: Some(pb::command::Body::Genesis(pb::Genesis {
                cluster_id: "t".into(),
                rules_version: 4,
                claim_deadlines: d,
                ..Default::default()
            })),
        };
        let g = body_json(&genesis(Some(pb::ClaimDeadlines {
            damaged_ms: 14 * 86_400_000,
            ..Default::default()
        })));
        assert_eq!(g["claim_deadlines"]["damaged_ms"], 14 * 86_400_000u64);
        assert_eq!(g["claim_deadlines"]["lost_ms"], 0);
        assert_eq!(g["rules_version"], 4);
        assert!(body_json(&genesis(None))["claim_deadlines"].is_null());

        let bad = decode_signed(&[0xff, 0xff]);
        assert_eq!(bad.kind, "undecodable");
        assert!(bad.json.is_null());
    }
}
