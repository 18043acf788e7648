//! The rules version: genesis fixes it (absent: version 1), an operator's
//! `SetRulesVersion` raises it from its own entry on and never lowers it.
//! Each version's changes are in docs/ledger-format.md, "Rules versions".

use super::super::state::ClusterConfig;
use super::super::{Code, Decision, Effect, StateView};
use crate::pb;

pub(super) fn set(view: &impl StateView, r: &pb::SetRulesVersion, seq: u64) -> Decision {
    // Authorized commands only come after genesis, which records a config.
    let config = view.config().unwrap_or_default();
    let current = config.rules();
    if r.version < current {
        return Decision::reject(
            Code::RulesVersionLowered,
            format!(
                "the rules are at version {current} (since entry {}); a rules version is never lowered, {} asked",
                config.rules_seq, r.version
            ),
            "",
        );
    }
    let config = ClusterConfig {
        rules_version: r.version,
        rules_seq: seq,
        fence_ms: r.fence_ms,
        claim_deadlines: super::super::ClaimDeadlines::from_pb(r.claim_deadlines.as_ref()),
        ..config
    };
    let mut d = Decision::accept("", vec![Effect::PutConfig(config)]);
    d.message = format!(
        "rules version {} from entry {seq} (was {current})",
        r.version
    );
    d
}
