//! Parties and keys: genesis, enrolment, key rotation and revocation.
//!
//! None of these concern an order. An operator key can be revoked only while
//! another operator's key is in force, so the cluster never loses the last
//! party that can enrol and rotate.

use super::super::state::{ClusterConfig, Membership, Party, Replica};
use super::super::{role_name, Code, Decision, Effect, StateView};
use crate::pb;

pub(super) fn genesis(g: &pb::Genesis, seq: u64) -> Decision {
    let mut effects: Vec<Effect> = g
        .operators
        .iter()
        .map(|op| {
            Effect::PutParty(Party {
                party_id: op.party_id.clone(),
                role: pb::Role::Operator as i32,
                kind: pb::NodeKind::Unspecified as i32,
                public_key: op.public_key.clone(),
                enrolled_seq: seq,
                key_seq: seq,
                revoked: false,
                channel_names: Vec::new(),
            })
        })
        .collect();
    effects.push(Effect::PutConfig(ClusterConfig {
        cluster_id: g.cluster_id.clone(),
        lease_grace_ms: g.lease_grace_ms,
        active_operators: g.operators.len() as u64,
        rules_version: g.rules_version,
        rules_seq: seq,
        fence_ms: g.fence_ms,
        claim_deadlines: super::super::ClaimDeadlines::from_pb(g.claim_deadlines.as_ref()),
    }));
    // The replicas the cluster starts with: the first desired membership.
    effects.push(Effect::PutMembership(Membership {
        replicas: g
            .members
            .iter()
            .map(|m| {
                let r = Replica {
                    node_id: m.node_id,
                    addr: m.addr.clone(),
                    peer_addr: m.peer_addr.clone(),
                    added_seq: seq,
                };
                (m.node_id, r)
            })
            .collect(),
        changed_seq: seq,
    }));
    Decision::accept("", effects)
}

pub(super) fn enroll(view: &impl StateView, e: &pb::EnrollParty, seq: u64) -> Decision {
    if let Some(existing) = view.party(&e.party_id) {
        let role = pb::Role::try_from(existing.role).unwrap_or(pb::Role::Unspecified);
        return Decision::reject(
            Code::PartyExists,
            format!(
                "party {} is already enrolled as {} (entry {})",
                existing.party_id,
                role_name(role),
                existing.enrolled_seq
            ),
            "",
        );
    }
    if let Some(holder) = view.party_by_key(&e.public_key) {
        return Decision::reject(
            Code::KeyInUse,
            format!("public key is already enrolled for party {holder}"),
            "",
        );
    }
    if let Some(refused) = super::carriers::enroll_check(view, e) {
        return refused;
    }
    let mut effects = vec![Effect::PutParty(Party {
        party_id: e.party_id.clone(),
        role: e.role,
        kind: e.kind,
        public_key: e.public_key.clone(),
        enrolled_seq: seq,
        key_seq: seq,
        revoked: false,
        channel_names: e.channel_names.clone(),
    })];
    if e.role == pb::Role::Operator as i32 {
        let mut config = view.config().unwrap_or_default();
        config.active_operators += 1;
        effects.push(Effect::PutConfig(config));
    }
    Decision::accept("", effects)
}

fn unknown_party(party_id: &str) -> Decision {
    Decision::reject(
        Code::UnknownParty,
        format!("party {party_id} is not enrolled"),
        "",
    )
}

pub(super) fn rotate_key(view: &impl StateView, r: &pb::RotateKey, seq: u64) -> Decision {
    let Some(mut party) = view.party(&r.party_id) else {
        return unknown_party(&r.party_id);
    };
    if let Some(holder) = view.party_by_key(&r.public_key) {
        return Decision::reject(
            Code::KeyInUse,
            format!("public key is (or was) enrolled for party {holder}; keys are never reused"),
            "",
        );
    }
    let mut effects = Vec::new();
    if party.revoked && party.role == pb::Role::Operator as i32 {
        let mut config = view.config().unwrap_or_default();
        config.active_operators += 1;
        effects.push(Effect::PutConfig(config));
    }
    party.public_key = r.public_key.clone();
    party.key_seq = seq;
    party.revoked = false;
    effects.insert(0, Effect::PutParty(party));
    Decision::accept("", effects)
}

pub(super) fn revoke_key(view: &impl StateView, r: &pb::RevokeKey) -> Decision {
    let Some(mut party) = view.party(&r.party_id) else {
        return unknown_party(&r.party_id);
    };
    if party.revoked {
        return Decision::reject(
            Code::AlreadyRevoked,
            format!("the key of party {} is already revoked", party.party_id),
            "",
        );
    }
    let mut effects = Vec::new();
    if party.role == pb::Role::Operator as i32 {
        let mut config = view.config().unwrap_or_default();
        if config.active_operators <= 1 {
            return Decision::reject(
                Code::LastOperator,
                format!(
                    "{} holds the last operator key that is not revoked; enrol another operator first",
                    party.party_id
                ),
                "",
            );
        }
        config.active_operators -= 1;
        effects.push(Effect::PutConfig(config));
    }
    party.revoked = true;
    effects.insert(0, Effect::PutParty(party));
    Decision::accept("", effects)
}
