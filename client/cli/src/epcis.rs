//! `arbor audit epcis`: an order's custody events (or those of a range of
//! ledger entries) as a GS1 EPCIS 2.0 JSON-LD document. docs/epcis.md
//! specifies the mapping.
//!
//! Only verified entries are written: each is fetched with an inclusion
//! proof against a checkpoint whose signatures were checked (the checks of
//! `arbor audit trace`); if any fails, nothing is written. The document
//! carries that checkpoint (its signed note), and every event its ledger
//! seq and entry hash, under the `arbor` prefix of `@context`, so a receiver
//! can ask arbor for the same proof, or check it against the note.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arbor_client::audit::TrustedCheckpoint;
use arbor_client::{pb, Client};
use clap::Args;
use pb::command::Body;
use serde_json::{json, Map, Value};

use super::explore::Trust;
use super::output::{kv, render, utc, Reply};
use super::trace::{check_entry, Step};
use super::Ctx;

/// The standard's JSON-LD context.
pub const EPCIS_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";
/// The IRI the `arbor:` prefix of the extension fields expands to.
pub const ARBOR_NS: &str = "urn:arbor:epcis:";

#[derive(Args)]
pub struct EpcisArgs {
    /// Canonical order id whose custody events to write (or give --from and --to)
    #[arg(value_name = "ORDER_ID", required_unless_present_all = ["from", "to"], conflicts_with_all = ["from", "to"])]
    pub order_id: Option<String>,
    /// First ledger entry of the range to write (with --to)
    #[arg(long, value_name = "SEQ", requires = "to")]
    pub from: Option<u64>,
    /// Last ledger entry of the range to write (with --from)
    #[arg(long, value_name = "SEQ", requires = "from")]
    pub to: Option<u64>,
    /// File to write the JSON-LD document to (must not exist; `-` for standard output)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub trust: crate::audit::TrustArg,
}

/// Entries of a range read at most (a range is fetched in full before writing).
pub const MAX_RANGE: u64 = 100_000;

/// A custody event's entry, verified, with what the mapping needs beside it.
pub struct Source<'a> {
    pub step: &'a Step,
    pub order_id: &'a str,
    /// The order's lines (for `quantityList`).
    pub lines: &'a [pb::OrderLine],
    /// For an accepted handoff: who offered it (the offer's signer); for a
    /// tender acceptance, who tendered it.
    pub offered_by: Option<&'a str>,
}

pub async fn run(ctx: &Ctx, a: EpcisArgs) -> Result<Reply> {
    let to_stdout = a.out.as_os_str() == "-";
    if !to_stdout && a.out.exists() {
        bail!(
            "{} already exists; refusing to overwrite it",
            a.out.display()
        );
    }
    let client = ctx.client().await?;
    // Read the order first, so the checkpoint fetched next covers its history.
    let order = match &a.order_id {
        Some(id) => Some(client.get_order(id).await?),
        None => None,
    };
    let trust = match a.trust.load()? {
        Some(t) => Trust::Pinned(Box::new(t)),
        None => Trust::Ledger,
    };
    let unverified = matches!(trust, Trust::Ledger);
    let tc = trust
        .checkpoint(&client)
        .await
        .map_err(|e| anyhow::anyhow!("the checkpoint could not be verified: {e}"))?;
    let cluster_id = super::explore::cluster_id(&client, ctx.cluster_id.as_deref(), &tc)
        .await
        .map_err(|e| anyhow::anyhow!("cluster id: {e}"))?;
    let seqs: Vec<(u64, String)> = match (&order, a.from, a.to) {
        (Some(o), _, _) => o.history.iter().map(|s| (*s, o.order_id.clone())).collect(),
        (None, Some(from), Some(to)) => range(&client, &tc, from, to).await?,
        _ => bail!("give an ORDER_ID, or --from SEQ and --to SEQ"),
    };
    let mut checker = Checker::new(&client, &tc, &cluster_id);
    let mut steps = Vec::with_capacity(seqs.len());
    for (seq, order_id) in &seqs {
        steps.push((checker.check(*seq, order_id).await, order_id.clone()));
    }
    // The offers that accepted handoffs answer, checked too (they name the sender).
    let mut offers: HashMap<u64, Step> = HashMap::new();
    for (s, order_id) in &steps {
        if let (true, Some(Body::AcceptHandoff(h))) = (s.accepted(), &s.body) {
            if !steps.iter().any(|(o, _)| o.seq == h.offer_seq)
                && !offers.contains_key(&h.offer_seq)
            {
                offers.insert(h.offer_seq, checker.check(h.offer_seq, order_id).await);
            }
        }
    }
    let failed: Vec<String> = steps
        .iter()
        .map(|(s, _)| s)
        .chain(offers.values())
        .filter_map(|s| match (&s.proof, s.signature.ok()) {
            (Err(e), _) => Some(format!("entry {}: proof failed: {e}", s.seq)),
            (Ok(()), false) => Some(format!(
                "entry {}: signature failed: {}",
                s.seq,
                s.signature.text()
            )),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} entries failed verification, nothing written; first: {}",
            failed.len(),
            failed[0]
        );
    }
    // The orders' lines (one read per order in a range).
    let mut lines: HashMap<String, Vec<pb::OrderLine>> = HashMap::new();
    if let Some(o) = &order {
        lines.insert(o.order_id.clone(), o.lines.clone());
    }
    for (s, order_id) in &steps {
        if is_custody(s) && !lines.contains_key(order_id) {
            let l = client.get_order(order_id).await?.lines;
            lines.insert(order_id.clone(), l);
        }
    }
    let all: Vec<&Step> = steps
        .iter()
        .map(|(s, _)| s)
        .chain(offers.values())
        .collect();
    let sources: Vec<Source<'_>> = steps
        .iter()
        .filter(|(s, _)| is_custody(s))
        .map(|(s, order_id)| Source {
            step: s,
            order_id,
            lines: lines.get(order_id).map(Vec::as_slice).unwrap_or_default(),
            offered_by: match &s.body {
                Some(Body::AcceptHandoff(h)) => all
                    .iter()
                    .find(|o| o.seq == h.offer_seq)
                    .map(|o| o.signer.as_str()),
                // The tender is in the order's history: the node that tendered.
                Some(Body::AcceptTender(t)) => all
                    .iter()
                    .find(|o| o.seq == t.tender_seq)
                    .map(|o| o.signer.as_str()),
                _ => None,
            },
        })
        .collect();
    let doc = document(&cluster_id, &tc, &sources, crate::explore::now_ms());
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    let verdict = |mut r: Reply| {
        if unverified {
            r.unverified = Some(crate::audit::UNVERIFIED_CLUSTER.to_string());
        }
        r
    };
    if to_stdout {
        return Ok(verdict(Reply::new(text)));
    }
    write_new(&a.out, text.as_bytes())?;
    let summary = json!({
        "file": a.out.display().to_string(),
        "events": sources.len(),
        "entries_checked": steps.len() + offers.len(),
        "checkpoint": {"origin": tc.checkpoint.origin, "size": tc.checkpoint.size, "root": hex::encode(tc.checkpoint.root)},
    });
    Ok(verdict(Reply::new(render(ctx.format, summary, || {
        kv(&[
            ("file", a.out.display().to_string()),
            ("events", sources.len().to_string()),
            (
                "verified",
                format!(
                    "{} entries, each proven in the checkpoint of size {} cosigned by {}",
                    steps.len() + offers.len(),
                    tc.checkpoint.size,
                    tc.signed_by.join(", ")
                ),
            ),
        ])
    }))))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The entries `from..=to` that concern an order, with their order ids.
async fn range(
    client: &Client,
    tc: &TrustedCheckpoint,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, String)>> {
    let size = tc.checkpoint.size;
    if from > to || to >= size {
        bail!("cannot export entries {from}..={to}: the checkpoint covers entries 0..{size}");
    }
    if to - from >= MAX_RANGE {
        bail!("the range {from}..={to} has more than {MAX_RANGE} entries; split it");
    }
    let mut out = Vec::new();
    let mut next = from;
    while next <= to {
        let limit = u32::try_from(to - next + 1).unwrap_or(1000).min(1000);
        let page = client.get_entries(next, limit).await?;
        if page.entries.is_empty() {
            bail!("the cluster served no entry from {next} on");
        }
        for e in page.entries.iter().take_while(|e| e.seq <= to) {
            if e.seq != next {
                bail!("asked for entry {next}, the cluster served entry {}", e.seq);
            }
            // Only what may become an event is fetched again with its proof.
            let accepted = e.outcome.as_ref().is_some_and(|o| o.accepted);
            if !e.order_id.is_empty() && accepted && custody_kind(&e.command) {
                out.push((e.seq, e.order_id.clone()));
            }
            next += 1;
        }
    }
    Ok(out)
}

/// Whether an entry's command is of a kind [`mapping`] turns into an event
/// (read from the bytes as served; the entries kept are then verified).
fn custody_kind(command: &[u8]) -> bool {
    use prost::Message;
    let Ok(env) = pb::SignedCommand::decode(command) else {
        return false;
    };
    matches!(
        pb::Command::decode(env.command.as_slice()).map(|c| c.body),
        Ok(Some(
            Body::ClaimOrder(_)
                | Body::AcceptHandoff(_)
                | Body::ReportMilestone(_)
                | Body::ClaimReturn(_)
                | Body::ReceiveReturn(_)
                | Body::AcceptTender(_)
                | Body::ScanDelivery(_)
        ))
    )
}

/// [`check_entry`] with the signers' parties read once.
struct Checker<'a> {
    client: &'a Client,
    tc: &'a TrustedCheckpoint,
    cluster_id: &'a str,
    parties: HashMap<String, Result<pb::PartyView, String>>,
}

impl<'a> Checker<'a> {
    fn new(client: &'a Client, tc: &'a TrustedCheckpoint, cluster_id: &'a str) -> Checker<'a> {
        Checker {
            client,
            tc,
            cluster_id,
            parties: HashMap::new(),
        }
    }

    async fn check(&mut self, seq: u64, order_id: &str) -> Step {
        check_entry(
            self.client,
            self.tc,
            self.cluster_id,
            order_id,
            seq,
            &mut self.parties,
        )
        .await
    }
}

/// Whether an entry is a custody event the document carries.
pub fn is_custody(s: &Step) -> bool {
    s.accepted() && mapping(s).is_some()
}

/// The CBV business step and disposition of a custody event.
fn mapping(s: &Step) -> Option<(&'static str, Option<&'static str>)> {
    Some(match s.body.as_ref()? {
        Body::ClaimOrder(_) => ("accepting", Some("in_progress")),
        Body::AcceptHandoff(h) if h.damaged => ("receiving", Some("damaged")),
        Body::AcceptHandoff(_) => ("receiving", Some("in_progress")),
        Body::ReportMilestone(m) => match pb::Milestone::try_from(m.milestone).ok()? {
            pb::Milestone::Picked => ("picking", Some("in_progress")),
            pb::Milestone::Packed => ("packing", Some("in_progress")),
            pb::Milestone::Shipped => ("shipping", Some("in_transit")),
            pb::Milestone::Delivered
                if m.proof_of_delivery.is_empty() && m.delivery_code.is_empty() =>
            {
                ("arriving", Some("in_transit"))
            }
            pb::Milestone::Delivered => ("arriving", None),
            _ => return None,
        },
        Body::ClaimReturn(_) => ("accepting", Some("returned")),
        Body::ReceiveReturn(_) => ("receiving", Some("returned")),
        // Rules version 3: the carrier signs for the goods, then delivers them.
        Body::AcceptTender(t) if t.damaged => ("receiving", Some("damaged")),
        Body::AcceptTender(_) => ("receiving", Some("in_transit")),
        Body::ScanDelivery(_) => ("arriving", None),
        _ => return None,
    })
}

/// Percent-encodes what an RFC 8141 URN's specific string may not hold
/// (arbor ids are letters, digits and `_ - . : @ /`; everything else is encoded).
fn urn_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `urn:arbor:<cluster>:party:<party id>`: a party of the cluster.
pub fn party_urn(cluster: &str, party: &str) -> String {
    format!("urn:arbor:{}:party:{}", urn_part(cluster), urn_part(party))
}

/// `urn:arbor:<cluster>:location:<party id>`: the premises of a party.
pub fn location_urn(cluster: &str, party: &str) -> String {
    format!(
        "urn:arbor:{}:location:{}",
        urn_part(cluster),
        urn_part(party)
    )
}

/// `urn:arbor:<cluster>:order:<order id>`: the goods of an order (the EPC).
pub fn order_urn(cluster: &str, order: &str) -> String {
    format!("urn:arbor:{}:order:{}", urn_part(cluster), urn_part(order))
}

fn party_list(kind: &str, field: &str, cluster: &str, parties: &[&str]) -> Value {
    Value::Array(
        parties
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| json!({"type": kind, field: party_urn(cluster, p)}))
            .collect(),
    )
}

/// One custody event as an EPCIS `ObjectEvent`.
pub fn event(cluster: &str, src: &Source<'_>) -> Option<Value> {
    let s = src.step;
    let (biz_step, disposition) = mapping(s)?;
    let entry = s.entry.as_ref()?;
    let signer = s.signer.as_str();
    let time = utc(entry.time_ms);
    let mut ev = Map::new();
    ev.insert("type".into(), json!("ObjectEvent"));
    ev.insert("eventTime".into(), json!(time));
    ev.insert("recordTime".into(), json!(time));
    ev.insert("eventTimeZoneOffset".into(), json!("+00:00"));
    ev.insert(
        "eventID".into(),
        json!(format!("urn:arbor:{}:entry:{}", urn_part(cluster), s.seq)),
    );
    ev.insert("epcList".into(), json!([order_urn(cluster, src.order_id)]));
    if !src.lines.is_empty() {
        let q: Vec<Value> = src
            .lines
            .iter()
            .map(|l| {
                json!({"epcClass": format!("urn:arbor:{}:sku:{}", urn_part(cluster), urn_part(&l.sku)),
                       "quantity": l.quantity, "uom": "H87"})
            })
            .collect();
        ev.insert("quantityList".into(), Value::Array(q));
    }
    ev.insert("action".into(), json!("OBSERVE"));
    ev.insert("bizStep".into(), json!(biz_step));
    if let Some(d) = disposition {
        ev.insert("disposition".into(), json!(d));
    }
    // Where it happened: the premises of the signing party, except in transit.
    let in_transit = match &s.body {
        Some(Body::ReportMilestone(m)) => {
            m.milestone == pb::Milestone::Shipped as i32
                || m.milestone == pb::Milestone::Delivered as i32
        }
        Some(Body::AcceptTender(_) | Body::ScanDelivery(_)) => true,
        _ => false,
    };
    ev.insert(
        "readPoint".into(),
        json!({"id": location_urn(cluster, signer)}),
    );
    if !in_transit {
        ev.insert(
            "bizLocation".into(),
            json!({"id": location_urn(cluster, signer)}),
        );
    }
    let (sources, dests): (Vec<&str>, Vec<&str>) = match &s.body {
        Some(Body::ClaimOrder(_)) | Some(Body::ClaimReturn(_)) | Some(Body::ReceiveReturn(_)) => {
            (vec![], vec![signer])
        }
        Some(Body::AcceptHandoff(_)) | Some(Body::AcceptTender(_)) => {
            (src.offered_by.into_iter().collect(), vec![signer])
        }
        Some(Body::ReportMilestone(m)) if m.milestone == pb::Milestone::Shipped as i32 => {
            (vec![signer], vec![m.carrier.as_str()])
        }
        _ => (vec![], vec![]),
    };
    if !sources.is_empty() {
        ev.insert(
            "sourceList".into(),
            party_list("possessing_party", "source", cluster, &sources),
        );
    }
    if !dests.is_empty() {
        ev.insert(
            "destinationList".into(),
            party_list("possessing_party", "destination", cluster, &dests),
        );
    }
    let tracking = match &s.body {
        Some(Body::ReportMilestone(m)) => Some((m.carrier.as_str(), m.tracking_id.as_str())),
        Some(Body::AcceptTender(t)) => Some((signer, t.tracking_id.as_str())),
        Some(Body::ScanDelivery(d)) => Some((signer, d.tracking_id.as_str())),
        _ => None,
    };
    if let Some((carrier, id)) = tracking.filter(|(_, id)| !id.is_empty()) {
        ev.insert(
            "bizTransactionList".into(),
            json!([{"type": "bol", "bizTransaction": format!("urn:arbor:{}:tracking:{}:{}",
                urn_part(cluster), urn_part(carrier), urn_part(id))}]),
        );
    }
    // The extension: where the event is in the ledger, to ask arbor for its proof.
    ev.insert("arbor:seq".into(), json!(s.seq));
    ev.insert("arbor:entryHash".into(), json!(hex::encode(entry.hash)));
    ev.insert("arbor:orderId".into(), json!(src.order_id));
    ev.insert("arbor:signer".into(), json!(party_urn(cluster, signer)));
    ev.insert("arbor:command".into(), json!(s.kind));
    match &s.body {
        Some(Body::AcceptHandoff(h)) => {
            ev.insert("arbor:offerSeq".into(), json!(h.offer_seq));
            if !h.note.is_empty() {
                ev.insert("arbor:note".into(), json!(h.note));
            }
        }
        Some(Body::ReportMilestone(m)) if m.tender => {
            ev.insert("arbor:tender".into(), json!(true));
        }
        Some(Body::ReportMilestone(m)) if !m.delivery_code.is_empty() => {
            ev.insert("arbor:deliveryGrade".into(), json!("code"));
        }
        Some(Body::ReportMilestone(m)) if !m.proof_of_delivery.is_empty() => {
            ev.insert("arbor:proofOfDelivery".into(), json!(m.proof_of_delivery));
        }
        Some(Body::AcceptTender(t)) => {
            ev.insert("arbor:tenderSeq".into(), json!(t.tender_seq));
            ev.insert("arbor:parcels".into(), json!(t.parcels));
        }
        Some(Body::ScanDelivery(d)) => {
            let grade = if d.delivery_code.is_empty() {
                "scan"
            } else {
                "code"
            };
            ev.insert("arbor:deliveryGrade".into(), json!(grade));
        }
        Some(Body::ReceiveReturn(r)) => {
            ev.insert("arbor:refund".into(), json!(r.refund));
        }
        _ => {}
    }
    Some(Value::Object(ev))
}

/// The whole document: the events in ledger order, and the checkpoint that
/// proves them.
pub fn document(
    cluster: &str,
    tc: &TrustedCheckpoint,
    sources: &[Source<'_>],
    now_ms: u64,
) -> Value {
    let events: Vec<Value> = sources.iter().filter_map(|s| event(cluster, s)).collect();
    json!({
        "@context": [EPCIS_CONTEXT, {"arbor": ARBOR_NS}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": utc(now_ms),
        "arbor:cluster": cluster,
        "arbor:checkpoint": {
            "arbor:origin": tc.checkpoint.origin,
            "arbor:size": tc.checkpoint.size,
            "arbor:root": hex::encode(tc.checkpoint.root),
            "arbor:time": utc(tc.checkpoint.time_ms),
            "arbor:signedBy": tc.signed_by,
            "arbor:note": tc.reply.note,
        },
        "epcisBody": { "eventList": events },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Sig;
    use arbor_proto::ledger::checkpoint::Checkpoint;
    use arbor_proto::ledger::Entry;

    fn step(seq: u64, signer: &str, accepted: bool, body: Body) -> Step {
        Step {
            seq,
            proof: Ok(()),
            entry: Some(Entry {
                seq,
                time_ms: 1_765_000_000_000 + seq,
                command: Vec::new(),
                accepted,
                code: if accepted {
                    "accepted"
                } else {
                    "already_owned"
                }
                .into(),
                message: String::new(),
                order_id: "o-1".into(),
                order_prev_seq: 0,
                prev_hash: [0; 32],
                hash: [seq as u8; 32],
            }),
            signer: signer.into(),
            kind: "x".into(),
            body: Some(body),
            signature: Sig::Verified { key_seq: 0 },
        }
    }

    fn tc() -> TrustedCheckpoint {
        TrustedCheckpoint {
            reply: pb::CheckpointReply {
                note: "arbor/c1\n9\nAAAA\n".into(),
                ..Default::default()
            },
            checkpoint: Checkpoint {
                origin: "arbor/c1".into(),
                size: 9,
                root: [7; 32],
                time_ms: 1_765_000_000_100,
                map: None,
            },
            signed_by: vec!["arbor-replica-1".into()],
            keys: vec![],
            quorum: 1,
            fingerprint: None,
            anchored: None,
        }
    }

    fn milestone(m: pb::Milestone, carrier: &str, pod: &str) -> Body {
        Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o-1".into(),
            milestone: m as i32,
            carrier: carrier.into(),
            tracking_id: if carrier.is_empty() { "" } else { "T 1" }.into(),
            proof_of_delivery: pod.into(),
            ..Default::default()
        })
    }

    /// GS1's schema beside the clone (or a parent of it), as the cluster test finds it.
    fn schema() -> Option<jsonschema::Validator> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::var_os("ARBOR_EPCIS_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                root.canonicalize()
                    .ok()?
                    .ancestors()
                    .skip(1)
                    .map(|d| d.join("shared/epcis"))
                    .find(|d| d.is_dir())
            })?;
        let text = std::fs::read_to_string(dir.join("EPCIS-JSON-Schema.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        jsonschema::options()
            .should_validate_formats(true)
            .build(&v)
            .ok()
    }

    #[test]
    fn custody_events_map_to_cbv_and_validate() {
        let claim = Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o-1".into(),
            price_version: 1,
            total: 5,
        });
        let steps = [
            step(2, "n1", true, claim.clone()),
            step(3, "n9", false, claim),
            step(
                4,
                "n1",
                true,
                Body::OfferHandoff(pb::OfferHandoff {
                    order_id: "o-1".into(),
                    to: "wh@x/1".into(),
                    expires_in_ms: 1,
                }),
            ),
            step(
                5,
                "wh@x/1",
                true,
                Body::AcceptHandoff(pb::AcceptHandoff {
                    order_id: "o-1".into(),
                    offer_seq: 4,
                    damaged: true,
                    note: "<b>dented</b>".into(),
                }),
            ),
            step(
                6,
                "wh@x/1",
                true,
                milestone(pb::Milestone::Shipped, "sf", ""),
            ),
            step(
                7,
                "wh@x/1",
                true,
                milestone(pb::Milestone::Delivered, "", "pod-1"),
            ),
            step(
                8,
                "wh@x/1",
                true,
                Body::ReceiveReturn(pb::ReceiveReturn {
                    order_id: "o-1".into(),
                    refund: 5,
                    price_version: 1,
                }),
            ),
        ];
        let lines = [pb::OrderLine {
            sku: "sku 1".into(),
            quantity: 2,
            unit_price: 1,
        }];
        let sources: Vec<Source<'_>> = steps
            .iter()
            .filter(|s| is_custody(s))
            .map(|s| Source {
                step: s,
                order_id: "o-1",
                lines: &lines,
                offered_by: (s.seq == 5).then_some("n1"),
            })
            .collect();
        let doc = document("c1", &tc(), &sources, 1_765_000_000_200);
        let ev = doc["epcisBody"]["eventList"].as_array().unwrap();
        let got: Vec<(u64, &str, &str)> = ev
            .iter()
            .map(|e| {
                (
                    e["arbor:seq"].as_u64().unwrap(),
                    e["bizStep"].as_str().unwrap(),
                    e["disposition"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        // The rejected claim and the offer are not custody events.
        assert_eq!(
            got,
            [
                (2, "accepting", "in_progress"),
                (5, "receiving", "damaged"),
                (6, "shipping", "in_transit"),
                (7, "arriving", "-"),
                (8, "receiving", "returned"),
            ]
        );
        assert_eq!(ev[1]["sourceList"][0]["source"], "urn:arbor:c1:party:n1");
        assert_eq!(
            ev[1]["destinationList"][0]["destination"],
            "urn:arbor:c1:party:wh@x/1"
        );
        assert_eq!(ev[1]["arbor:note"], "<b>dented</b>");
        assert_eq!(
            ev[2]["destinationList"][0]["destination"],
            "urn:arbor:c1:party:sf"
        );
        assert!(ev[2].get("bizLocation").is_none());
        assert_eq!(
            ev[2]["bizTransactionList"][0]["bizTransaction"],
            "urn:arbor:c1:tracking:sf:T%201"
        );
        assert_eq!(
            ev[0]["quantityList"][0]["epcClass"],
            "urn:arbor:c1:sku:sku%201"
        );
        assert_eq!(ev[0]["arbor:entryHash"], hex::encode([2u8; 32]));
        assert_eq!(ev[0]["eventTime"], "2025-12-06T05:46:40.002Z");
        assert_eq!(doc["arbor:checkpoint"]["arbor:size"], 9);

        let v = schema().expect(
            "GS1's EPCIS schema in shared/epcis/ beside the clone (or set ARBOR_EPCIS_DIR)",
        );
        let errors: Vec<String> = v
            .iter_errors(&doc)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert_eq!(errors, Vec::<String>::new(), "{doc:#}");
        // A wrong CBV value is caught: the validation means something.
        let mut bad = doc.clone();
        bad["epcisBody"]["eventList"][0]["bizStep"] =
            "urn:epcglobal:cbv:bizstep:teleporting".into();
        assert!(!v.is_valid(&bad));
    }

    #[test]
    fn a_carrier_signed_tender_maps_to_receiving_by_the_carrier() {
        let tender = Body::ReportMilestone(pb::ReportMilestone {
            order_id: "o-1".into(),
            milestone: pb::Milestone::Shipped as i32,
            carrier: "sf".into(),
            tracking_id: "N-1".into(),
            tender: true,
            parcels: 2,
            ..Default::default()
        });
        let steps = [
            step(6, "n1", true, tender),
            step(
                7,
                "sf",
                true,
                Body::AcceptTender(pb::AcceptTender {
                    order_id: "o-1".into(),
                    tender_seq: 6,
                    tracking_id: "SF-1".into(),
                    parcels: 2,
                    ..Default::default()
                }),
            ),
            step(
                8,
                "sf",
                true,
                Body::ScanDelivery(pb::ScanDelivery {
                    order_id: "o-1".into(),
                    tracking_id: "SF-1".into(),
                    delivery_code: "K7Q2M9XD44AB".into(),
                    note: String::new(),
                }),
            ),
        ];
        let sources: Vec<Source<'_>> = steps
            .iter()
            .filter(|s| is_custody(s))
            .map(|s| Source {
                step: s,
                order_id: "o-1",
                lines: &[],
                offered_by: (s.seq == 7).then_some("n1"),
            })
            .collect();
        let doc = document("c1", &tc(), &sources, 1_765_000_000_200);
        let ev = doc["epcisBody"]["eventList"].as_array().unwrap();
        let got: Vec<(&str, &str)> = ev
            .iter()
            .map(|e| {
                (
                    e["bizStep"].as_str().unwrap(),
                    e["disposition"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("shipping", "in_transit"),
                ("receiving", "in_transit"),
                ("arriving", "-")
            ]
        );
        assert_eq!(ev[0]["arbor:tender"], true);
        assert_eq!(ev[1]["sourceList"][0]["source"], "urn:arbor:c1:party:n1");
        assert_eq!(
            ev[1]["destinationList"][0]["destination"],
            "urn:arbor:c1:party:sf"
        );
        assert_eq!(
            ev[1]["bizTransactionList"][0]["bizTransaction"],
            "urn:arbor:c1:tracking:sf:SF-1"
        );
        assert!(ev[1].get("bizLocation").is_none());
        assert_eq!(ev[2]["arbor:deliveryGrade"], "code");
        if let Some(v) = schema() {
            let errors: Vec<String> = v
                .iter_errors(&doc)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert_eq!(errors, Vec::<String>::new(), "{doc:#}");
        }
    }
}
