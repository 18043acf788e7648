//! `arbor audit trace ORDER`: one order's custody timeline, every entry
//! proven to be in the quorum-cosigned ledger.
//!
//! For each entry of the order's history: an inclusion proof against a
//! checkpoint signed by a quorum of the pinned replica keys
//! ([`Client::checkpoint_against`], with `--trust`; without it the keys the
//! cluster reports, [`Client::trusted_checkpoint`], and the result is
//! unverified), the entry's own hash, its
//! signed command decoded (who did what), and its signature checked against
//! the signer's key — when that key is the one the party had then (it was
//! set before the entry). Who held the goods when, and which entry recorded
//! a lapse, is computed by `arbor_proto::rules::custody` from the entries'
//! outcomes and commands (the custody the responsibility rules use); this
//! module renders it.

use std::collections::HashMap;

use anyhow::Result;
use arbor_client::audit::{verify_inclusion, Trust, TrustedCheckpoint};
use arbor_client::{pb, Client};
use arbor_proto::ledger::{verify_command, Entry};
use arbor_proto::rules::custody::OrderEntry;
use pb::command::Body;
use prost::Message;
use serde_json::{json, Value};

use super::ledger::snake_case;
use super::output::{render, utc, Reply};
use super::Ctx;

/// Said of an entry signed with a key the party has since replaced.
pub const KEY_ROTATED: &str = "key rotated since; verified offline by `arbor audit verify`";

/// One entry of the order's history, as checked (the explorer renders it too).
pub(crate) struct Step {
    pub(crate) seq: u64,
    /// `Ok` when the inclusion proof and the entry's hash verified.
    pub(crate) proof: Result<(), String>,
    /// The entry (verified if `proof` is `Ok`; as served otherwise).
    pub(crate) entry: Option<Entry>,
    pub(crate) signer: String,
    pub(crate) kind: String,
    pub(crate) body: Option<Body>,
    pub(crate) signature: Sig,
}

#[derive(Clone, Debug)]
pub(crate) enum Sig {
    /// Verified with the key the party has had since entry `key_seq`.
    Verified {
        key_seq: u64,
    },
    /// The party's key was set at or after this entry.
    Rotated {
        key_seq: u64,
    },
    Failed(String),
}

impl Sig {
    pub(crate) fn ok(&self) -> bool {
        !matches!(self, Sig::Failed(_))
    }

    fn status(&self) -> &'static str {
        match self {
            Sig::Verified { .. } => "verified",
            Sig::Rotated { .. } => "key_rotated",
            Sig::Failed(_) => "failed",
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            Sig::Verified { key_seq } => format!("signature verified (key of seq {key_seq})"),
            Sig::Rotated { .. } => KEY_ROTATED.to_string(),
            Sig::Failed(why) => format!("signature FAILED: {why}"),
        }
    }

    fn json(&self) -> Value {
        match self {
            Sig::Verified { key_seq } | Sig::Rotated { key_seq } => {
                json!({"status": self.status(), "key_seq": key_seq, "text": self.text()})
            }
            Sig::Failed(why) => json!({"status": "failed", "error": why, "text": self.text()}),
        }
    }
}

impl Step {
    pub(crate) fn proof_ok(&self) -> bool {
        self.proof.is_ok()
    }

    fn mark(&self) -> &'static str {
        if self.proof_ok() {
            "[proof ok]"
        } else {
            "[proof FAILED]"
        }
    }

    pub(crate) fn accepted(&self) -> bool {
        self.entry.as_ref().is_some_and(|e| e.accepted)
    }

    pub(crate) fn time_ms(&self) -> u64 {
        self.entry.as_ref().map(|e| e.time_ms).unwrap_or(0)
    }

    fn message(&self) -> &str {
        self.entry
            .as_ref()
            .map(|e| e.message.as_str())
            .unwrap_or("")
    }

    /// The entry as the custody computation reads it.
    fn view(&self) -> OrderEntry<'_> {
        OrderEntry {
            seq: self.seq,
            time_ms: self.time_ms(),
            signer: &self.signer,
            accepted: self.accepted(),
            message: self.message(),
            body: self.body.as_ref(),
        }
    }

    /// The lapse this entry recorded (its message, the rules' note), if any.
    pub(crate) fn lapse(&self) -> Option<&str> {
        self.view().lapse().map(|_| self.message())
    }

    pub(crate) fn outcome(&self) -> String {
        match &self.entry {
            None => "-".into(),
            Some(e) if e.accepted => "accepted".into(),
            Some(e) if e.message.is_empty() => format!("rejected ({})", e.code),
            Some(e) => format!("rejected ({}): {}", e.code, e.message),
        }
    }
}

/// A span of custody as shown: who held the goods between two entries.
pub(crate) struct Interval {
    pub(crate) holder: String,
    pub(crate) from_seq: u64,
    pub(crate) from_ms: u64,
    pub(crate) started_by: String,
    pub(crate) to: Option<(u64, u64)>,
    pub(crate) ended_by: String,
    pub(crate) notes: Vec<String>,
}

pub async fn trace(ctx: &Ctx, order_id: &str, trust: Option<&Trust>) -> Result<Reply> {
    let client = ctx.client().await?;
    let order = client.get_order(order_id).await?;
    // Fetched after the order, so it covers every entry of its history.
    // With a trust, only the pinned keys count; never the cluster's own word.
    let tc = match trust {
        Some(t) => client.checkpoint_against(t).await?,
        None => client.trusted_checkpoint().await?,
    };
    // Signatures name the cluster id; the cosigned checkpoint's origin,
    // `arbor/<cluster id>`, says which (unless --cluster-id does).
    let cluster_id = match (&ctx.cluster_id, tc.checkpoint.origin.strip_prefix("arbor/")) {
        (Some(id), _) => id.clone(),
        (None, Some(id)) => id.to_string(),
        (None, None) => ctx.cluster_id().await?,
    };
    let mut parties: HashMap<String, Result<pb::PartyView, String>> = HashMap::new();
    let mut steps = Vec::with_capacity(order.history.len());
    for &seq in &order.history {
        steps.push(check_entry(&client, &tc, &cluster_id, order_id, seq, &mut parties).await);
    }
    let custody = render::custody(&order, &steps);
    let failures: Vec<String> = steps
        .iter()
        .filter_map(|s| match (&s.proof, &s.signature) {
            (Err(e), _) => Some(format!("entry {}: proof failed: {e}", s.seq)),
            (Ok(()), Sig::Failed(e)) => Some(format!("entry {}: signature failed: {e}", s.seq)),
            _ => None,
        })
        .collect();

    let json = trace_json(&order, &tc, &steps, &custody);
    let text = render(ctx.format, json, || {
        trace_text(&order, &tc, &steps, &custody)
    });
    let mut reply = Reply::new(text);
    if tc.fingerprint.is_none() {
        reply.unverified = Some(super::audit::UNVERIFIED_CLUSTER.into());
    }
    if !failures.is_empty() {
        reply.failed = Some(format!(
            "{} of {} entries of order {order_id} failed verification; first: {}",
            failures.len(),
            steps.len(),
            failures[0]
        ));
    }
    Ok(reply)
}

/// Fetches entry `seq` with its inclusion proof and checks everything it can.
pub(crate) async fn check_entry(
    client: &Client,
    tc: &TrustedCheckpoint,
    cluster_id: &str,
    order_id: &str,
    seq: u64,
    parties: &mut HashMap<String, Result<pb::PartyView, String>>,
) -> Step {
    let size = tc.checkpoint.size;
    let mut step = Step {
        seq,
        proof: Ok(()),
        entry: None,
        signer: String::new(),
        kind: "?".into(),
        body: None,
        signature: Sig::Failed("not checked".into()),
    };
    if seq >= size {
        step.proof = Err(format!(
            "entry {seq} is not covered by the checkpoint of size {size}"
        ));
        return step;
    }
    match client.get_inclusion_proof(seq, size).await {
        Err(e) => step.proof = Err(format!("no inclusion proof: {e}")),
        Ok(reply) => match verify_inclusion(&reply, seq, size, &tc.checkpoint.root) {
            Ok(e) => {
                if e.order_id != order_id {
                    step.proof = Err(format!(
                        "entry {seq} concerns order {:?}, not {order_id}",
                        e.order_id
                    ));
                }
                step.entry = Some(e);
            }
            Err(err) => {
                step.proof = Err(err.to_string());
                step.entry = reply.entry.as_ref().and_then(|p| Entry::from_pb(p).ok());
            }
        },
    }
    let Some(entry) = &step.entry else {
        return step;
    };
    let env = match pb::SignedCommand::decode(entry.command.as_slice()) {
        Ok(env) => env,
        Err(e) => {
            step.signature = Sig::Failed(format!("the command envelope does not decode: {e}"));
            return step;
        }
    };
    step.signer = env.signer.clone();
    match pb::Command::decode(env.command.as_slice()) {
        Ok(cmd) => {
            step.kind = snake_case(arbor_proto::rules::command_name(&cmd));
            step.body = cmd.body;
        }
        Err(e) => step.kind = format!("undecodable ({e})"),
    }
    if !parties.contains_key(&env.signer) {
        let p = client
            .get_party(&env.signer)
            .await
            .map_err(|e| e.to_string());
        parties.insert(env.signer.clone(), p);
    }
    step.signature = match &parties[&env.signer] {
        Err(e) => Sig::Failed(format!("signer {} cannot be read: {e}", env.signer)),
        Ok(p) if p.key_seq >= seq => Sig::Rotated { key_seq: p.key_seq },
        Ok(p) => match verify_command(&env, cluster_id, &p.public_key) {
            Ok(()) => Sig::Verified { key_seq: p.key_seq },
            Err(e) => Sig::Failed(format!(
                "does not verify with the key {} has had since entry {}: {e}",
                env.signer, p.key_seq
            )),
        },
    };
    step
}

fn step_at(steps: &[Step], seq: u64) -> Option<&Step> {
    steps.iter().find(|s| s.seq == seq)
}

/// What the entry says, in one sentence, and its fields as JSON.
pub(crate) fn describe(step: &Step, steps: &[Step]) -> (String, Value) {
    let by = &step.signer;
    let Some(body) = &step.body else {
        return (format!("{} by {by}", step.kind), json!({}));
    };
    let hand = |offer_seq: u64| -> (String, Value) {
        match step_at(steps, offer_seq) {
            Some(o) => (
                format!(
                    "offer seq {offer_seq} signed by {} ({}, {})",
                    o.signer,
                    o.signature.text(),
                    o.mark()
                ),
                json!({"seq": offer_seq, "signer": o.signer, "signature": o.signature.json(), "proof_ok": o.proof_ok()}),
            ),
            None => (
                format!("offer seq {offer_seq} (not in this order's history)"),
                json!({"seq": offer_seq}),
            ),
        }
    };
    match body {
        Body::RegisterOrder(r) => (
            format!(
                "registered by {by}: {} line(s), total {} {} locked at price version 1, to {}",
                r.lines.len(),
                r.total,
                r.currency,
                r.destination_region
            ),
            json!({"total": r.total, "currency": r.currency, "region": r.destination_region,
                   "external_refs": r.external_refs.iter().map(|x| format!("{}/{}", x.channel, x.external_id)).collect::<Vec<_>>()}),
        ),
        Body::ClaimOrder(c) => {
            // Only an accepted claim makes its signer the owner.
            let mut details =
                json!({"claimant": by, "price_version": c.price_version, "total": c.total});
            let verb = if step.accepted() {
                details["owner"] = json!(by);
                "claimed"
            } else {
                "claim"
            };
            (
                format!(
                    "{verb} by {by} at price version {}, total {}",
                    c.price_version, c.total
                ),
                details,
            )
        }
        Body::AmendPrice(a) => (
            format!(
                "price amended by {by}: version {} -> {}, total {} ({})",
                a.base_version,
                a.base_version + 1,
                a.total,
                a.reason
            ),
            json!({"base_version": a.base_version, "version": a.base_version + 1, "total": a.total, "reason": a.reason}),
        ),
        Body::CancelOrder(c) => (
            format!("cancelled by {by}: {}", c.reason),
            json!({"reason": c.reason}),
        ),
        Body::ReleaseOrder(r) => (
            format!("released by {by}: {}", r.reason),
            json!({"reason": r.reason}),
        ),
        Body::OfferHandoff(o) => (
            format!(
                "handoff offered by {by} to {} (offer seq {}, open {} s)",
                o.to,
                step.seq,
                o.expires_in_ms / 1000
            ),
            json!({"from": by, "to": o.to, "offer_seq": step.seq, "expires_in_ms": o.expires_in_ms}),
        ),
        Body::AcceptHandoff(a) => {
            let (offer, offer_json) = hand(a.offer_seq);
            let noted = match (a.damaged, a.note.is_empty()) {
                (true, true) => ", damage noted".to_string(),
                (true, false) => format!(", damage noted: {}", a.note),
                (false, true) => String::new(),
                (false, false) => format!(", noted: {}", a.note),
            };
            (
                format!("handoff accepted by {by}{noted}; {offer}"),
                json!({"receiver": by, "offer_seq": a.offer_seq, "offer": offer_json, "damaged": a.damaged, "note": a.note}),
            )
        }
        Body::DeclineHandoff(d) => {
            let (offer, offer_json) = hand(d.offer_seq);
            (
                format!("handoff declined by {by} ({}); {offer}", d.reason),
                json!({"receiver": by, "offer_seq": d.offer_seq, "offer": offer_json, "reason": d.reason}),
            )
        }
        Body::ReportMilestone(m) => {
            let name = match pb::Milestone::try_from(m.milestone) {
                Ok(pb::Milestone::Picked) => "picked",
                Ok(pb::Milestone::Packed) => "packed",
                Ok(pb::Milestone::Shipped) => "shipped",
                Ok(pb::Milestone::Delivered) => "delivered",
                _ => "unknown milestone",
            };
            let mut text = format!("{name} reported by {by}");
            match name {
                "shipped" if m.tender => text.push_str(&format!(
                    ": tendered to carrier {} ({} parcels), which takes custody only by signing for it",
                    m.carrier, m.parcels
                )),
                "delivered" if !m.delivery_code.is_empty() => {
                    text.push_str(": the recipient's one-time delivery code presented (grade code)")
                }
                "shipped" => text.push_str(&format!(
                    ": handed to carrier {}, tracking {}",
                    m.carrier, m.tracking_id
                )),
                "delivered" if m.proof_of_delivery.is_empty() => {
                    text.push_str(": no proof of delivery (custody stays with the carrier)")
                }
                "delivered" => {
                    text.push_str(&format!(": proof of delivery {}", m.proof_of_delivery))
                }
                _ => {}
            }
            if m.price_version != 0 {
                text.push_str(&format!(
                    " (quoting price version {}, total {})",
                    m.price_version, m.total
                ));
            }
            (
                text,
                json!({"milestone": name, "carrier": m.carrier, "tracking_id": m.tracking_id,
                       "proof_of_delivery": m.proof_of_delivery, "price_version": m.price_version, "total": m.total}),
            )
        }
        Body::ReportException(x) => {
            let kind = match pb::ExceptionKind::try_from(x.kind) {
                Ok(pb::ExceptionKind::Damaged) => "damaged",
                Ok(pb::ExceptionKind::Lost) => "lost",
                Ok(pb::ExceptionKind::Delayed) => "delayed",
                _ => "unknown",
            };
            (
                format!("exception {kind} reported by {by}: {}", x.note),
                json!({"exception": kind, "note": x.note}),
            )
        }
        Body::RequestReturn(r) => (
            format!("return requested by {by}: {}", r.reason),
            json!({"reason": r.reason}),
        ),
        Body::ClaimReturn(_) => (format!("return claimed by {by}"), json!({})),
        Body::ReceiveReturn(r) => (
            format!(
                "return received by {by}: refund {} at price version {}",
                r.refund, r.price_version
            ),
            json!({"refund": r.refund, "price_version": r.price_version}),
        ),
        Body::OpenDispute(d) => {
            let kind = incident_name(d.kind);
            (
                format!(
                    "dispute opened by {by}: {kind}, incident at {}{}",
                    utc(d.incident_ms),
                    if d.statement.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", d.statement)
                    }
                ),
                json!({"dispute_seq": step.seq, "incident": kind, "incident_ms": d.incident_ms, "statement": d.statement}),
            )
        }
        Body::ResolveDispute(r) => {
            let liable = if r.liable.is_empty() {
                "nobody".to_string()
            } else {
                r.liable.clone()
            };
            let ev: Vec<String> = r.evidence.iter().map(u64::to_string).collect();
            (
                format!(
                    "ruling by {by} on dispute seq {}: {liable} liable by rule {} (evidence seq {})",
                    r.dispute_seq,
                    r.rule,
                    ev.join(", ")
                ),
                json!({"dispute_seq": r.dispute_seq, "liable": r.liable, "rule": r.rule, "evidence": r.evidence}),
            )
        }
        Body::AcceptTender(a) => (
            format!(
                "tender of seq {} signed for by carrier {by}: {} parcels, {} g, tracking {}{}",
                a.tender_seq,
                a.parcels,
                a.weight_grams,
                a.tracking_id,
                if a.damaged { ", damage noted" } else { "" }
            ),
            json!({"tender_seq": a.tender_seq, "tracking_id": a.tracking_id, "parcels": a.parcels,
                   "weight_grams": a.weight_grams, "description": a.description, "damaged": a.damaged, "note": a.note}),
        ),
        Body::ScanDelivery(d) => (
            format!(
                "delivery scanned by carrier {by}, tracking {} (grade {})",
                d.tracking_id,
                if d.delivery_code.is_empty() {
                    "scan"
                } else {
                    "code"
                }
            ),
            json!({"tracking_id": d.tracking_id, "delivery_code_presented": !d.delivery_code.is_empty(), "note": d.note}),
        ),
        _ => (format!("{} by {by}", step.kind), json!({})),
    }
}

pub fn incident_name(kind: i32) -> &'static str {
    match pb::IncidentKind::try_from(kind) {
        Ok(pb::IncidentKind::Lost) => "lost",
        Ok(pb::IncidentKind::Damaged) => "damaged",
        Ok(pb::IncidentKind::Late) => "late",
        Ok(pb::IncidentKind::DuplicateProcessing) => "duplicate_processing",
        Ok(pb::IncidentKind::PriceMismatch) => "price_mismatch",
        _ => "unknown",
    }
}

mod render;
pub(crate) use render::{custody, interval_proofs_ok};
use render::{trace_json, trace_text};

#[cfg(test)]
mod tests {
    use super::*;

    fn step(seq: u64, signer: &str, accepted: bool, message: &str, body: Body) -> Step {
        Step {
            seq,
            proof: Ok(()),
            entry: Some(Entry {
                seq,
                time_ms: 1000 + seq,
                command: Vec::new(),
                accepted,
                code: if accepted {
                    "accepted"
                } else {
                    "already_owned"
                }
                .into(),
                message: message.into(),
                order_id: "o-1".into(),
                order_prev_seq: 0,
                prev_hash: [0; 32],
                hash: [0; 32],
            }),
            signer: signer.into(),
            kind: "x".into(),
            body: Some(body),
            signature: Sig::Verified { key_seq: 0 },
        }
    }

    fn claim() -> Body {
        Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o-1".into(),
            price_version: 1,
            total: 3000,
        })
    }

    fn milestone(m: pb::Milestone, carrier: &str, pod: &str) -> Body {
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o-1".into(),
            milestone: m as i32,
            carrier: carrier.into(),
            tracking_id: "T1".into(),
            proof_of_delivery: pod.into(),
            ..Default::default()
        })
    }

    #[test]
    fn custody_follows_claims_releases_lapses_shipping_and_delivery() {
        let release = Body::ReleaseOrder(pb::ReleaseOrder {
            shortage: false,
            order_id: "o-1".into(),
            reason: "no stock".into(),
        });
        let lapse = "lease of n2 lapsed at 1999 (owner since entry 4, dispatch time 1 ms of profile v1 + grace)";
        let steps = vec![
            step(2, "n1", true, "", claim()),
            step(3, "n1", true, "", release),
            step(4, "n2", true, "", claim()),
            step(5, "n9", false, "order o-1 is owned by n2", claim()),
            step(6, "n3", true, lapse, claim()),
            step(
                7,
                "n3",
                true,
                "",
                milestone(pb::Milestone::Shipped, "sf", ""),
            ),
            step(
                8,
                "n3",
                true,
                "",
                milestone(pb::Milestone::Delivered, "", ""),
            ),
            step(
                9,
                "n3",
                true,
                "",
                milestone(pb::Milestone::Delivered, "", "pod/1"),
            ),
        ];
        let view = pb::OrderView::default();
        let c = render::custody(&view, &steps);
        let got: Vec<(&str, u64, Option<u64>)> = c
            .iter()
            .map(|i| (i.holder.as_str(), i.from_seq, i.to.map(|t| t.0)))
            .collect();
        assert_eq!(
            got,
            [
                ("n1", 2, Some(3)),
                ("n2", 4, Some(6)),
                ("n3", 6, Some(7)),
                ("sf", 7, Some(9)),
            ]
        );
        assert_eq!(c[0].ended_by, "released");
        assert!(
            c[1].ended_by.starts_with("lease lapsed"),
            "{}",
            c[1].ended_by
        );
        assert!(c[3].notes[0].contains("without proof"), "{:?}", c[3].notes);
        assert_eq!(steps[4].lapse(), Some(lapse));
        assert_eq!(steps[3].lapse(), None);

        // A proof failure marks the entry and the intervals it bounds.
        let mut bad = steps;
        bad[2].proof = Err("path does not lead to the root".into());
        let c = render::custody(&view, &bad);
        assert!(render::interval_proofs_ok(&c[0], &bad));
        assert!(!render::interval_proofs_ok(&c[1], &bad));
        assert_eq!(bad[2].mark(), "[proof FAILED]");
    }

    #[test]
    fn a_rejected_claim_never_names_its_signer_owner() {
        let steps = vec![
            step(2, "n1", true, "", claim()),
            step(
                3,
                "n9",
                false,
                "order o-1 is owned by n1 (since entry 2)",
                claim(),
            ),
        ];
        let (text, details) = describe(&steps[1], &steps);
        assert!(text.starts_with("claim by n9 "), "{text}");
        assert_eq!(details["claimant"], "n9");
        assert!(details.get("owner").is_none(), "{details}");
        let (text, details) = describe(&steps[0], &steps);
        assert!(text.starts_with("claimed by n1 "), "{text}");
        assert_eq!(details["owner"], "n1");

        let view = pb::OrderView {
            owner: "n1".into(),
            custodian: "n1".into(),
            ..Default::default()
        };
        let c = render::custody(&view, &steps);
        let got: Vec<(&str, u64, Option<u64>)> = c
            .iter()
            .map(|i| (i.holder.as_str(), i.from_seq, i.to.map(|t| t.0)))
            .collect();
        assert_eq!(got, [("n1", 2, None)]);
        assert!(c[0].notes.is_empty(), "{:?}", c[0].notes);
    }
}
