//! Rendering a checked trace: the custody intervals with their proofs, as
//! JSON or text.

use arbor_client::audit::TrustedCheckpoint;
use arbor_client::pb;
use arbor_proto::rules::custody::{self, How, OrderEntry};
use arbor_proto::rules::EventKind;
use pb::command::Body;
use serde_json::{json, Value};

use super::*;
use crate::output::utc;

/// Who held the goods when ([`custody::intervals`] over the entries), in
/// words, with what the order's view says beside it.
pub(crate) fn custody(order: &pb::OrderView, steps: &[Step]) -> Vec<Interval> {
    let views: Vec<OrderEntry<'_>> = steps.iter().map(Step::view).collect();
    let mut out: Vec<Interval> = custody::intervals(&views)
        .iter()
        .map(|i| shown(i, steps))
        .collect();
    if let Some(cur) = out.last_mut().filter(|c| c.to.is_none()) {
        if order.lease_lapsed {
            cur.notes.push(format!(
                "lease deadline {} has passed; the next command on the order records the lapse",
                utc(order.lease_deadline_ms)
            ));
        }
        if order.custodian != cur.holder {
            cur.notes.push(format!(
                "the order's view names custodian {:?}",
                order.custodian
            ));
        }
    } else if !order.custodian.is_empty() {
        out.push(Interval {
            holder: order.custodian.clone(),
            from_seq: 0,
            from_ms: 0,
            started_by: "?".into(),
            to: None,
            ended_by: String::new(),
            notes: vec![
                "the order's view names this custodian; no entry here gives it custody".into(),
            ],
        });
    }
    out
}

/// One computed interval in words: how it began and ended, from the entries.
fn shown(i: &custody::Interval, steps: &[Step]) -> Interval {
    let started = step_at(steps, i.from_seq);
    let started_by = match (i.how, started.and_then(|s| s.body.as_ref())) {
        (How::Claim, _) => "claim".to_string(),
        (How::CleanAcceptance | How::DamagedAcceptance, Some(Body::AcceptHandoff(a))) => {
            let from = step_at(steps, a.offer_seq)
                .map(|o| o.signer.as_str())
                .unwrap_or_default();
            let mut how = format!("accepted handoff from {from} (offer seq {})", a.offer_seq);
            if i.how == How::DamagedAcceptance {
                how.push_str(", damage noted");
            }
            how
        }
        (How::Carrier | How::CarrierNoProof, Some(Body::ReportMilestone(m))) => {
            let by = started.map(|s| s.signer.as_str()).unwrap_or_default();
            format!("shipped by {by}, tracking {}", m.tracking_id)
        }
        // Rules version 4: the node keeps custody of what it handed to an unsigned carrier.
        (How::ShippersAgent, Some(Body::ReportMilestone(m))) => format!(
            "shipped with {} (not an enrolled carrier: the node's agent, the node stays custodian), tracking {}",
            m.carrier, m.tracking_id
        ),
        (How::SignedTender | How::CarrierWordOnly, Some(Body::AcceptTender(a))) => format!(
            "signed the tender acceptance (tender seq {}), tracking {}, {} parcels",
            a.tender_seq, a.tracking_id, a.parcels
        ),
        _ => "?".to_string(),
    };
    let ended_by = i.end.as_ref().map(|e| {
        let at = step_at(steps, e.seq);
        match (&e.fact, at.and_then(|s| s.body.as_ref())) {
            (EventKind::Lapsed { .. }, _) => format!(
                "lease lapsed (recorded here: {})",
                at.map(Step::message).unwrap_or_default()
            ),
            (EventKind::Released { .. }, _) => "released".to_string(),
            (EventKind::FenceCleared { node }, _) => {
                format!("{node} confirmed it did not ship (fence cleared)")
            }
            (EventKind::FenceExpired { .. }, _) => format!(
                "fence ran out (recorded here: {})",
                at.map(Step::message).unwrap_or_default()
            ),
            (EventKind::HandedOff { to, .. }, Some(Body::AcceptHandoff(a))) => {
                format!("handed off to {to} (offer seq {})", a.offer_seq)
            }
            (
                EventKind::Shipped {
                    carrier,
                    agent: true,
                    ..
                },
                _,
            ) => {
                format!("shipped with {carrier}, not an enrolled carrier: the node stays custodian")
            }
            (EventKind::Shipped { carrier, .. }, _) => format!("shipped with {carrier}"),
            (EventKind::Delivered { .. }, Some(Body::ReportMilestone(m))) => {
                format!("delivered (proof {})", m.proof_of_delivery)
            }
            (EventKind::Claimed { node, .. }, _) => format!("claimed by {node}"),
            (EventKind::TenderAccepted { carrier, .. }, _) => {
                format!("signed for by {carrier} (tender accepted)")
            }
            (EventKind::DeliveryProven { by, grade }, _) => {
                format!("delivered, proof graded {grade} ({by})")
            }
            (fact, _) => format!("{fact:?}"),
        }
    });
    Interval {
        holder: i.holder.clone(),
        from_seq: i.from_seq,
        from_ms: i.from_ms,
        started_by,
        to: i.end.as_ref().map(|e| (e.seq, e.time_ms)),
        ended_by: ended_by.unwrap_or_default(),
        notes: i
            .deliveries_without_proof
            .iter()
            .map(|seq| {
                if i.how == How::SignedTender {
                    format!(
                        "delivery reported at seq {seq} on the node's word: custody stays with {}, which signed for it",
                        i.holder
                    )
                } else {
                    format!(
                        "delivery reported at seq {seq} without proof: custody stays with {}",
                        i.holder
                    )
                }
            })
            .collect(),
    }
}

pub(crate) fn interval_proofs_ok(i: &Interval, steps: &[Step]) -> bool {
    let ok = |seq: u64| steps.iter().any(|s| s.seq == seq && s.proof_ok());
    ok(i.from_seq) && i.to.is_none_or(|(seq, _)| ok(seq))
}

pub(super) fn trace_json(
    order: &pb::OrderView,
    tc: &TrustedCheckpoint,
    steps: &[Step],
    custody: &[Interval],
) -> Value {
    let entries: Vec<Value> = steps
        .iter()
        .map(|s| {
            let (summary, details) = describe(s, steps);
            let e = s.entry.as_ref();
            json!({
                "seq": s.seq,
                "time_ms": s.time_ms(),
                "time": utc(s.time_ms()),
                "signer": s.signer,
                "command_kind": s.kind,
                "summary": summary,
                "details": details,
                "accepted": e.map(|e| e.accepted),
                "code": e.map(|e| e.code.clone()),
                "message": e.map(|e| e.message.clone()),
                "lapse": s.lapse(),
                "hash": e.map(|e| hex::encode(e.hash)),
                "proof": match &s.proof { Ok(()) => json!({"ok": true}), Err(m) => json!({"ok": false, "error": m}) },
                "signature": s.signature.json(),
            })
        })
        .collect();
    let custody: Vec<Value> = custody
        .iter()
        .map(|i| {
            json!({
                "holder": i.holder,
                "from_seq": i.from_seq,
                "from_ms": i.from_ms,
                "from_time": utc(i.from_ms),
                "started_by": i.started_by,
                "to_seq": i.to.map(|t| t.0),
                "to_ms": i.to.map(|t| t.1),
                "to_time": i.to.map(|t| utc(t.1)),
                "ended_by": i.to.map(|_| i.ended_by.clone()),
                "notes": i.notes,
                "proofs_ok": interval_proofs_ok(i, steps),
            })
        })
        .collect();
    let disputes: Vec<Value> = order
        .disputes
        .iter()
        .map(|d| {
            json!({
                "seq": d.seq,
                "kind": d.kind,
                "incident_ms": d.incident_ms,
                "opened_by": d.opened_by,
                "resolved": d.resolved,
                "ruling": d.ruling.as_ref().map(|r| json!({
                    "liable": r.liable, "rule": r.rule, "evidence": r.evidence, "resolved_seq": r.resolved_seq,
                })),
            })
        })
        .collect();
    let cp = &tc.checkpoint;
    json!({
        "order_id": order.order_id,
        "status": order.status,
        "owner": order.owner,
        "custodian": order.custodian,
        "price_version": order.price_version,
        "total": order.total,
        "currency": order.currency,
        "lease_deadline_ms": order.lease_deadline_ms,
        "lease_lapsed": order.lease_lapsed,
        "last_lapsed_owner": order.last_lapsed_owner,
        "checkpoint": {
            "origin": cp.origin,
            "size": cp.size,
            "root": hex::encode(cp.root),
            "time_ms": cp.time_ms,
            "signed_by": tc.signed_by,
            "replicas": tc.keys.iter().map(|k| k.name.clone()).collect::<Vec<_>>(),
            "quorum": tc.quorum,
            "trust": tc.fingerprint,
            "anchored": tc.anchored,
        },
        "verified_against_trust": tc.fingerprint.is_some(),
        "history": order.history,
        "entries": entries,
        "custody": custody,
        "disputes": disputes,
        "proofs_verified": steps.iter().filter(|s| s.proof_ok()).count(),
        "all_proofs_ok": steps.iter().all(Step::proof_ok),
        "all_signatures_ok": steps.iter().all(|s| s.signature.ok()),
    })
}

pub(super) fn trace_text(
    order: &pb::OrderView,
    tc: &TrustedCheckpoint,
    steps: &[Step],
    custody: &[Interval],
) -> String {
    let cp = &tc.checkpoint;
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    out.push_str(&format!(
        "order {}: {}, owner {}, custodian {}, price version {} total {} {}\n",
        order.order_id,
        order.status,
        dash(&order.owner),
        dash(&order.custodian),
        order.price_version,
        order.total,
        order.currency
    ));
    if order.lease_deadline_ms != 0 {
        out.push_str(&format!(
            "lease deadline {}{}\n",
            utc(order.lease_deadline_ms),
            if order.lease_lapsed { " (passed)" } else { "" }
        ));
    }
    if !order.last_lapsed_owner.is_empty() {
        out.push_str(&format!("last lapsed owner {}\n", order.last_lapsed_owner));
    }
    let ok = steps.iter().filter(|s| s.proof_ok()).count();
    out.push_str(&format!(
        "checkpoint {} size {} root {}, cosigned by {} (quorum {} of {} {})\n",
        cp.origin,
        cp.size,
        hex::encode(cp.root),
        tc.signed_by.join(", "),
        tc.quorum,
        tc.keys.len(),
        match &tc.fingerprint {
            Some(f) => format!("pinned keys, trust {f}"),
            None => "replica keys the cluster reported: UNVERIFIED, no --trust given".into(),
        }
    ));
    out.push_str(&format!(
        "proofs: {ok} of {} entries included in that checkpoint\n\ntimeline\n",
        steps.len()
    ));
    for s in steps {
        let (summary, _) = describe(s, steps);
        out.push_str(&format!(
            "{} seq {} {} {} — {}; {}\n",
            s.mark(),
            s.seq,
            utc(s.time_ms()),
            summary,
            s.outcome(),
            s.signature.text()
        ));
        if let Some(m) = s.lapse() {
            out.push_str(&format!("    lapse: {m}\n"));
        }
        if let Err(e) = &s.proof {
            out.push_str(&format!("    proof: {e}\n"));
        }
    }
    out.push_str("\ncustody\n");
    if custody.is_empty() {
        out.push_str("  nobody has held the order\n");
    }
    for i in custody {
        let mark = if interval_proofs_ok(i, steps) {
            "[proof ok]"
        } else {
            "[proof FAILED]"
        };
        let to = match i.to {
            Some((seq, ms)) => format!("to {} (seq {seq}): {}", utc(ms), i.ended_by),
            None => "to now (still held)".to_string(),
        };
        out.push_str(&format!(
            "{mark} held by {} from {} (seq {}, {}) {to}\n",
            i.holder,
            utc(i.from_ms),
            i.from_seq,
            i.started_by
        ));
        for n in &i.notes {
            out.push_str(&format!("    note: {n}\n"));
        }
    }
    if !order.disputes.is_empty() {
        out.push_str("\ndisputes\n");
        for d in &order.disputes {
            let state = match &d.ruling {
                Some(r) if d.resolved => format!(
                    "resolved at seq {}: {} liable by rule {}",
                    r.resolved_seq,
                    if r.liable.is_empty() {
                        "nobody"
                    } else {
                        &r.liable
                    },
                    r.rule
                ),
                _ => format!(
                    "open (preview: arbor audit dispute {} --dispute {})",
                    order.order_id, d.seq
                ),
            };
            out.push_str(&format!(
                "  seq {} {} by {}, incident {}: {state}\n",
                d.seq,
                d.kind,
                d.opened_by,
                utc(d.incident_ms)
            ));
        }
    }
    out
}
