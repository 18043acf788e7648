//! `arbor cluster rules` and `arbor cluster set-rules`: the rules version
//! and configuration in force (from a replica's status), and the operator's
//! `SetRulesVersion` that raises the version, sets the fence and, from
//! version 3, the claim deadline of each dispute kind.

use std::path::PathBuf;

use anyhow::Result;
use arbor_client::{pb, Commands};
use clap::Args;
use serde_json::json;

use super::output::{kv, render, submit_reply, Reply};
use super::{operator_signer, Ctx};
use crate::exit::{CliError, Exit};

#[derive(Args)]
pub struct SetRulesArgs {
    /// The rules version from this entry on (never lower than the one in force)
    #[arg(value_name = "VERSION")]
    pub version: u32,
    /// The fence of a lapsed picked or packed order (version 2 and later): a duration such as 2h [default: the rules' default, 2h]
    #[arg(long, value_name = "DURATION", value_parser = crate::time::parse_duration)]
    pub fence: Option<std::time::Duration>,
    /// A claim deadline (version 3): KIND=DURATION, KIND one of lost, damaged, late, duplicate_processing, price_mismatch (repeatable; a kind not named gets its default)
    #[arg(long = "claim-deadline", value_name = "KIND=DURATION", value_parser = parse_deadline)]
    pub claim_deadlines: Vec<String>,
    /// Operator key file [default: $ARBOR_OPERATOR_KEY, then $ARBOR_KEY]
    #[arg(long, value_name = "OPKEY")]
    pub key: Option<PathBuf>,
}

/// Checks one `KIND=DURATION` as typed (the parser `arbor-node` shares).
fn parse_deadline(s: &str) -> std::result::Result<String, String> {
    arbor_proto::rules::parse_claim_deadline(s)?;
    Ok(s.to_string())
}

fn deadlines(values: &[String]) -> Result<Option<pb::ClaimDeadlines>> {
    if values.is_empty() {
        return Ok(None);
    }
    let d = arbor_proto::rules::ClaimDeadlines::parse_all(values)
        .map_err(|e| CliError::new(Exit::Usage, format!("--claim-deadline: {e}")))?;
    Ok(Some(d.to_pb()))
}

fn deadlines_json(d: &pb::ClaimDeadlines) -> serde_json::Value {
    json!({
        "lost_ms": d.lost_ms,
        "damaged_ms": d.damaged_ms,
        "late_ms": d.late_ms,
        "duplicate_processing_ms": d.duplicate_processing_ms,
        "price_mismatch_ms": d.price_mismatch_ms,
    })
}

fn days(ms: u64) -> String {
    const DAY: u64 = 24 * 3_600_000;
    if ms.is_multiple_of(DAY) {
        format!("{}d", ms / DAY)
    } else {
        format!("{ms} ms")
    }
}

/// `arbor cluster rules`.
pub async fn show(ctx: &Ctx) -> Result<Reply> {
    let Some((cluster_id, r)) = ctx.client().await?.rules_config().await? else {
        return Err(
            CliError::new(Exit::Unavailable, "the cluster has no genesis entry yet").into(),
        );
    };
    let d = r.claim_deadlines.unwrap_or_default();
    let json = json!({
        "cluster_id": cluster_id,
        "rules_version": r.rules_version,
        "rules_seq": r.rules_seq,
        "fence_ms": r.fence_ms,
        "lease_grace_ms": r.lease_grace_ms,
        "claim_deadlines": deadlines_json(&d),
    });
    Ok(Reply::new(render(ctx.format, json, || {
        let mut pairs = vec![
            ("cluster id", cluster_id.clone()),
            (
                "rules version",
                format!("{} (since entry {})", r.rules_version, r.rules_seq),
            ),
            ("lease grace", format!("{} ms", r.lease_grace_ms)),
        ];
        if r.rules_version >= 2 {
            pairs.push(("fence", format!("{} ms", r.fence_ms)));
        }
        if r.rules_version >= 3 {
            pairs.push((
                "claim deadlines",
                format!(
                    "lost {}, damaged {}, late {}, duplicate_processing {}, price_mismatch {}",
                    days(d.lost_ms),
                    days(d.damaged_ms),
                    days(d.late_ms),
                    days(d.duplicate_processing_ms),
                    days(d.price_mismatch_ms)
                ),
            ));
        }
        kv(&pairs)
    })))
}

/// `arbor cluster set-rules`.
pub async fn set(ctx: &Ctx, a: SetRulesArgs) -> Result<Reply> {
    let op = operator_signer(ctx, a.key).await?;
    let fence_ms = a.fence.map(|d| d.as_millis() as u64).unwrap_or(0);
    let cmd = op.set_rules(a.version, fence_ms, deadlines(&a.claim_deadlines)?);
    let r = ctx.client().await?.submit(cmd).await?;
    let mut reply = submit_reply(ctx.format, &r);
    let o = r.outcome.clone().unwrap_or_default();
    if o.accepted && !o.message.is_empty() && ctx.format == super::output::Format::Table {
        reply.text.push_str(&format!("{}\n", o.message));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_deadlines_parse_by_kind_and_refuse_nonsense() {
        assert_eq!(parse_deadline("damaged=14d").unwrap(), "damaged=14d");
        assert!(parse_deadline("stolen=1d").is_err());
        assert!(parse_deadline("late").is_err());
        assert!(parse_deadline("late=0s").is_err());
        assert!(parse_deadline("late=soon").is_err());
        assert!(parse_deadline("late=3651d").is_err());
        let d = deadlines(&["lost=5ms".into(), "late=7ms".into()])
            .unwrap()
            .unwrap();
        assert_eq!((d.lost_ms, d.late_ms, d.damaged_ms), (5, 7, 0));
        assert!(deadlines(&["lost=5ms".into(), "lost=6ms".into()]).is_err());
        assert_eq!(deadlines(&[]).unwrap(), None);
    }
}
