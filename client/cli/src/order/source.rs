//! `arbor order source`: a sourcing decision by the reference broker
//! (rules version 3), and how decisions are shown.

use arbor_client::pb;
use serde_json::{json, Value};

/// A `SourceOrder` body as JSON.
pub fn decision_json(s: &pb::SourceOrder) -> Value {
    let trigger = arbor_proto::rules::sourcing::Trigger::from_pb(s.trigger)
        .map(|t| t.as_str())
        .unwrap_or("unspecified");
    json!({
        "order_id": s.order_id,
        "trigger": trigger,
        "trigger_seq": s.trigger_seq,
        "policy": s.policy,
        "policy_version": s.policy_version,
        "candidates": s.candidates.iter().map(|c| json!({
            "node": c.node,
            "profile_version": c.profile_version,
            "eligible": c.eligible,
            "ineligible": c.ineligible,
            "score": c.score,
            "components": c.components.iter().map(|k| (k.name.clone(), json!(k.value))).collect::<serde_json::Map<_, _>>(),
            "basis": c.basis,
        })).collect::<Vec<_>>(),
        "selected": s.selected,
        "expires_in_ms": s.expires_in_ms,
    })
}

/// `arbor order source`: read, decide, sign and submit (or show).
pub async fn run(
    ctx: &crate::Ctx,
    order_id: &str,
    candidates: &[String],
    expires_in_ms: u64,
    dry_run: bool,
    key: Option<std::path::PathBuf>,
) -> anyhow::Result<crate::output::Reply> {
    use arbor_client::broker::{Candidates, ReferenceBroker};
    use arbor_client::Commands;

    use crate::exit::{fail, Exit};
    use crate::output::{render, submit_reply, Reply};

    let client = ctx.client().await?;
    let order = client.get_order(order_id).await?;
    // Rules version 4: a decision lists every eligible node, so every node
    // with a profile is read; version 3 lists the candidates given.
    let rules = client
        .rules_config()
        .await?
        .map(|(_, r)| r.rules_version)
        .unwrap_or(1);
    let facts = if rules >= 4 {
        Candidates::read_all(&client, candidates).await?
    } else if candidates.is_empty() {
        return fail(
            Exit::Usage,
            format!(
                "the cluster is at rules version {rules}: name the candidates with --candidates A,B,C"
            ),
        );
    } else {
        Candidates::read(&client, candidates).await?
    };
    let broker = ReferenceBroker {
        expires_in_ms,
        ..ReferenceBroker::default()
    }
    .with_health(facts.ledger_health());
    let decision = match broker.decide(&order, &facts) {
        Ok(d) => d,
        Err(e) => return fail(Exit::RefusedLocally, e.to_string()),
    };
    if dry_run {
        let json = decision_json(&decision);
        let text = render(ctx.format, json, || decision_table(&decision));
        return Ok(Reply::new(text));
    }
    let signer = crate::signing_key(ctx, key).await?;
    let reply = client.submit(signer.source_order(decision.clone())).await?;
    let mut out = submit_reply(ctx.format, &reply);
    if ctx.format == crate::output::Format::Table {
        out.text = format!("{}{}", decision_table(&decision), out.text);
    }
    Ok(out)
}

/// The decision as lines for people.
fn decision_table(s: &pb::SourceOrder) -> String {
    let trigger = arbor_proto::rules::sourcing::Trigger::from_pb(s.trigger)
        .map(|t| t.as_str())
        .unwrap_or("unspecified");
    let mut out = format!(
        "order {}: trigger {} (entry {}), policy {} v{}\n",
        s.order_id, trigger, s.trigger_seq, s.policy, s.policy_version
    );
    for c in &s.candidates {
        let parts: Vec<String> = c
            .components
            .iter()
            .map(|k| format!("{} {}", k.name, k.value))
            .collect();
        let mark = if c.node == s.selected { "*" } else { " " };
        let elig = if c.eligible {
            "eligible".to_string()
        } else {
            format!("not eligible ({})", c.ineligible)
        };
        let basis = if c.basis.is_empty() {
            String::new()
        } else {
            format!("; {}", c.basis)
        };
        out.push_str(&format!(
            "{mark} {} profile v{}: {elig}, score {} ({}){basis}\n",
            c.node,
            c.profile_version,
            c.score,
            parts.join(", ")
        ));
    }
    out.push_str(&format!(
        "selected {}, offer open {} ms\n",
        s.selected, s.expires_in_ms
    ));
    out
}
