//! Membership: the replicas the ledger says the cluster should have.
//!
//! Genesis records the first members; `AddReplica` and `RemoveReplica`
//! (operator-signed) change that *desired membership*. Every replica in it
//! is meant to be a voter: promotion is not a command of its own, the
//! leader adds a new replica as a learner and promotes it once it has
//! caught up. The structure (node id > 0, addresses `HOST:PORT`) is checked
//! by `validate`; what depends on the state is decided here. None of these
//! concern an order.

use super::super::state::Replica;
use super::super::{Code, Decision, Effect, StateView};
use crate::pb;

pub(super) fn add(view: &impl StateView, a: &pb::AddReplica, seq: u64) -> Decision {
    let mut m = view.membership().unwrap_or_default();
    if let Some(r) = m.replicas.get(&a.node_id) {
        return Decision::reject(
            Code::ReplicaExists,
            format!(
                "replica {} is already a member at {} (peer {}), added by entry {}",
                r.node_id, r.addr, r.peer_addr, r.added_seq
            ),
            "",
        );
    }
    if let Some(r) = m.replicas.values().find(|r| {
        [&r.addr, &r.peer_addr]
            .iter()
            .any(|x| **x == a.addr || **x == a.peer_addr)
    }) {
        return Decision::reject(
            Code::ReplicaAddressInUse,
            format!(
                "replica {} already uses {} (peer {})",
                r.node_id, r.addr, r.peer_addr
            ),
            "",
        );
    }
    m.replicas.insert(
        a.node_id,
        Replica {
            node_id: a.node_id,
            addr: a.addr.clone(),
            peer_addr: a.peer_addr.clone(),
            added_seq: seq,
        },
    );
    m.changed_seq = seq;
    let mut d = Decision::accept("", vec![Effect::PutMembership(m.clone())]);
    d.message = format!(
        "replica {} at {} (peer {}) joins; desired membership {}",
        a.node_id,
        a.addr,
        a.peer_addr,
        ids(&m.replicas)
    );
    d
}

pub(super) fn remove(view: &impl StateView, r: &pb::RemoveReplica, seq: u64) -> Decision {
    let mut m = view.membership().unwrap_or_default();
    if !m.replicas.contains_key(&r.node_id) {
        return Decision::reject(
            Code::UnknownReplica,
            format!(
                "replica {} is not a member; desired membership {}",
                r.node_id,
                ids(&m.replicas)
            ),
            "",
        );
    }
    if m.replicas.len() == 1 {
        return Decision::reject(
            Code::LastReplica,
            format!(
                "replica {} is the last voter; add another before removing it",
                r.node_id
            ),
            "",
        );
    }
    m.replicas.remove(&r.node_id);
    m.changed_seq = seq;
    let mut d = Decision::accept("", vec![Effect::PutMembership(m.clone())]);
    d.message = format!(
        "replica {} leaves; desired membership {}",
        r.node_id,
        ids(&m.replicas)
    );
    d
}

/// `{1, 2, 3}`.
fn ids(replicas: &std::collections::BTreeMap<u64, Replica>) -> String {
    let ids: Vec<String> = replicas.keys().map(|id| id.to_string()).collect();
    format!("{{{}}}", ids.join(", "))
}
