//! `arbor audit dispute ORDER`: preview the ruling the responsibility rules
//! compute for a dispute, and (`--resolve`) sign and submit exactly that ruling.

use std::path::PathBuf;

use anyhow::Result;
use arbor_client::{pb, Client, Commands};
use serde_json::{json, Value};

use super::exit::{fail, Exit};
use super::ledger::command_summary;
use super::output::{kv, render, utc, Reply};
use super::{signing_key, Ctx};

/// The dispute to rule on: `--dispute SEQ`, or the order's only open one.
fn pick_dispute(order: &pb::OrderView, seq: Option<u64>) -> Result<pb::DisputeView> {
    let describe = |d: &pb::DisputeView| {
        format!(
            "seq {} ({}, incident {}, opened by {}{})",
            d.seq,
            d.kind,
            utc(d.incident_ms),
            d.opened_by,
            if d.resolved { ", resolved" } else { "" }
        )
    };
    if let Some(seq) = seq {
        return order
            .disputes
            .iter()
            .find(|d| d.seq == seq)
            .cloned()
            .ok_or_else(|| {
                let all: Vec<String> = order.disputes.iter().map(describe).collect();
                anyhow::anyhow!(
                    "order {} has no dispute opened at entry {seq}; its disputes: {}",
                    order.order_id,
                    if all.is_empty() {
                        "none".to_string()
                    } else {
                        all.join("; ")
                    }
                )
            });
    }
    let open: Vec<&pb::DisputeView> = order.disputes.iter().filter(|d| !d.resolved).collect();
    match open.as_slice() {
        [d] => Ok((*d).clone()),
        [] if order.disputes.is_empty() => fail(
            Exit::NotFound,
            format!(
                "order {} has no dispute (open one with `arbor order dispute`)",
                order.order_id
            ),
        ),
        // None open: the latest resolved one, with its recorded ruling.
        [] => Ok(order
            .disputes
            .iter()
            .max_by_key(|d| d.seq)
            .cloned()
            .expect("not empty")),
        many => fail(
            Exit::Usage,
            format!(
                "order {} has {} open disputes; pass --dispute SEQ: {}",
                order.order_id,
                many.len(),
                many.iter()
                    .map(|d| describe(d))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
    }
}

/// One line per evidence entry: seq, time, command kind, signer, outcome.
async fn evidence(client: &Client, seqs: &[u64]) -> Vec<Value> {
    let mut out = Vec::new();
    for &seq in seqs {
        let v = match client.get_entries(seq, 1).await {
            Ok(r) => match r.entries.into_iter().find(|e| e.seq == seq) {
                Some(e) => {
                    let (signer, kind) = command_summary(&e.command);
                    let o = e.outcome.unwrap_or_default();
                    json!({"seq": seq, "time_ms": e.time_ms, "time": utc(e.time_ms),
                           "command_kind": kind, "signer": signer, "code": o.code, "message": o.message})
                }
                None => json!({"seq": seq, "error": "not served"}),
            },
            Err(e) => json!({"seq": seq, "error": e.to_string()}),
        };
        out.push(v);
    }
    out
}

pub async fn dispute(
    ctx: &Ctx,
    order_id: &str,
    seq: Option<u64>,
    resolve: bool,
    key: Option<PathBuf>,
) -> Result<Reply> {
    // Load the key first: a missing key should not cost a round trip.
    let auditor = if resolve {
        Some(signing_key(ctx, key).await?)
    } else {
        None
    };
    let client = ctx.client().await?;
    let order = client.get_order(order_id).await?;
    let d = pick_dispute(&order, seq)?;
    let ruling = client.preview_ruling(order_id, d.seq).await?;
    if resolve && d.resolved {
        let at = d.ruling.as_ref().map(|r| r.resolved_seq).unwrap_or(0);
        return fail(
            Exit::RefusedLocally,
            format!(
                "the dispute opened at entry {} of order {order_id} was already resolved at entry {at}; nothing was signed",
                d.seq
            ),
        );
    }
    let submitted = match &auditor {
        Some(a) => {
            let cmd = a.resolve_dispute(
                order_id,
                d.seq,
                &ruling.liable,
                &ruling.rule,
                ruling.evidence.clone(),
            );
            Some(client.submit(cmd).await?)
        }
        None => None,
    };
    let ev = evidence(&client, &ruling.evidence).await;
    let recorded = d.ruling.clone().filter(|_| d.resolved);
    let outcome = submitted
        .as_ref()
        .map(|r| (r.seq, r.outcome.clone().unwrap_or_default()));
    let json = json!({
        "order_id": order_id,
        "dispute": {
            "seq": d.seq,
            "kind": d.kind,
            "incident_ms": d.incident_ms,
            "incident_time": utc(d.incident_ms),
            "opened_by": d.opened_by,
            "resolved": d.resolved,
        },
        "ruling": {
            "liable": ruling.liable,
            "rule": ruling.rule,
            "evidence": ruling.evidence,
            "explanation": ruling.explanation,
        },
        "evidence": ev,
        "recorded_ruling": recorded.as_ref().map(|r| json!({
            "liable": r.liable, "rule": r.rule, "evidence": r.evidence, "resolved_seq": r.resolved_seq,
        })),
        "submitted": outcome.as_ref().map(|(seq, o)| json!({
            "seq": seq, "accepted": o.accepted, "code": o.code, "message": o.message,
        })),
    });
    let text = render(ctx.format, json, || {
        let liable = if ruling.liable.is_empty() {
            "nobody".to_string()
        } else {
            ruling.liable.clone()
        };
        let mut rows = vec![
            ("order", order_id.to_string()),
            (
                "dispute",
                format!(
                    "seq {}: {} by {}, incident {}",
                    d.seq,
                    d.kind,
                    d.opened_by,
                    utc(d.incident_ms)
                ),
            ),
            ("liable", liable),
            ("rule", ruling.rule.clone()),
            ("explanation", ruling.explanation.clone()),
        ];
        for e in &ev {
            let line = match e.get("error") {
                Some(err) => format!("seq {}: {}", e["seq"], err.as_str().unwrap_or("?")),
                None => format!(
                    "seq {} {} {} by {} ({})",
                    e["seq"],
                    e["time"].as_str().unwrap_or(""),
                    e["command_kind"].as_str().unwrap_or(""),
                    e["signer"].as_str().unwrap_or(""),
                    e["code"].as_str().unwrap_or("")
                ),
            };
            rows.push(("evidence", line));
        }
        if let Some(r) = &recorded {
            rows.push((
                "resolved",
                format!(
                    "at seq {}: {} liable by rule {}",
                    r.resolved_seq,
                    if r.liable.is_empty() {
                        "nobody"
                    } else {
                        &r.liable
                    },
                    r.rule
                ),
            ));
        } else if outcome.is_none() {
            rows.push((
                "next",
                format!(
                    "arbor audit dispute {order_id} --dispute {} --resolve --key AUDITOR.key",
                    d.seq
                ),
            ));
        }
        if let Some((seq, o)) = &outcome {
            rows.push((
                "submitted",
                if o.accepted {
                    format!("seq {seq}: accepted")
                } else {
                    format!("seq {seq}: rejected ({}): {}", o.code, o.message)
                },
            ));
        }
        kv(&rows)
    });
    let mut reply = Reply::new(text);
    reply.rejected = outcome.as_ref().is_some_and(|(_, o)| !o.accepted);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(disputes: &[(u64, bool)]) -> pb::OrderView {
        pb::OrderView {
            order_id: "o-1".into(),
            disputes: disputes
                .iter()
                .map(|&(seq, resolved)| pb::DisputeView {
                    seq,
                    kind: "lost".into(),
                    resolved,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_only_open_dispute_is_picked_or_the_choice_is_listed() {
        assert_eq!(
            pick_dispute(&order(&[(5, true), (9, false)]), None)
                .unwrap()
                .seq,
            9
        );
        assert_eq!(pick_dispute(&order(&[(5, true)]), Some(5)).unwrap().seq, 5);
        let e = pick_dispute(&order(&[(5, false), (9, false)]), None).unwrap_err();
        assert!(
            e.to_string().contains("seq 5") && e.to_string().contains("seq 9"),
            "{e}"
        );
        let e = pick_dispute(&order(&[]), None).unwrap_err();
        assert!(e.to_string().contains("no dispute"), "{e}");
        // None open: the latest resolved one (its recorded ruling is shown).
        assert_eq!(pick_dispute(&order(&[(5, true)]), None).unwrap().seq, 5);
        assert_eq!(
            pick_dispute(&order(&[(5, true), (7, true)]), None)
                .unwrap()
                .seq,
            7
        );
        let e = pick_dispute(&order(&[(5, true)]), Some(6)).unwrap_err();
        assert!(e.to_string().contains("seq 5"), "{e}");
    }
}
