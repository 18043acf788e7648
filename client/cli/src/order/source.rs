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
        })).collect::<Vec<_>>(),
        "selected": s.selected,
        "expires_in_ms": s.expires_in_ms,
    })
}
