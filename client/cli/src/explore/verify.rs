//! What the explorer verifies, on the auditor's side, before it shows
//! anything as verified: the checkpoint's signatures against the trust the
//! auditor has ([`Trust`]), and each entry's inclusion proof against that
//! checkpoint, its hash and its signature (the checks of `arbor audit
//! trace`, [`crate::trace::check_entry`]).

use std::collections::HashMap;

use arbor_client::audit::TrustedCheckpoint;
use arbor_client::{pb, Client};

use crate::trace::{check_entry, Step};

/// Where the replica keys that a checkpoint must be signed by come from:
/// a pinned trust file (`--trust FILE`, keys the auditor fixed beforehand,
/// [`Client::checkpoint_against`]), or, without one, the ledger itself
/// ([`Client::trusted_checkpoint`]: the replica keys the cluster reports as
/// enrolled, a quorum of them), which shows internal consistency only.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The replica keys enrolled in the ledger (internal consistency only).
    Ledger,
    /// The keys of a trust file, with its fingerprint.
    Pinned(Box<arbor_proto::audit::Trust>),
}

impl Trust {
    /// Said on every page next to "verified".
    pub fn describe(&self) -> String {
        match self {
            Trust::Ledger => "UNVERIFIED against pinned trust: checkpoint signatures checked against \
                 the replica keys the cluster reports as enrolled (internal consistency only; \
                 pass --trust FILE from `arbor audit trust init`)"
                .to_string(),
            Trust::Pinned(t) => format!(
                "checkpoint signatures checked against the pinned trust {} (a quorum of its replica keys)",
                t.fingerprint()
            ),
        }
    }

    /// The cluster's current checkpoint, verified against this trust.
    pub async fn checkpoint(&self, client: &Client) -> Result<TrustedCheckpoint, String> {
        match self {
            Trust::Ledger => client.trusted_checkpoint().await.map_err(|e| e.to_string()),
            Trust::Pinned(t) => client
                .checkpoint_against(t)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// The cluster id command signatures name: `--cluster-id`, else the
/// checkpoint's origin (`arbor/<cluster id>`), else the cluster's own.
pub async fn cluster_id(
    client: &Client,
    given: Option<&str>,
    tc: &TrustedCheckpoint,
) -> Result<String, String> {
    if let Some(id) = given {
        return Ok(id.to_string());
    }
    if let Some(id) = tc.checkpoint.origin.strip_prefix("arbor/") {
        return Ok(id.to_string());
    }
    client.cluster_id().await.map_err(|e| e.to_string())
}

/// Every entry of `order`'s history, each checked against `tc`.
pub async fn order_steps(
    client: &Client,
    tc: &TrustedCheckpoint,
    cluster_id: &str,
    order: &pb::OrderView,
) -> Vec<Step> {
    let mut parties = HashMap::new();
    let mut steps = Vec::with_capacity(order.history.len());
    for &seq in &order.history {
        steps.push(check_entry(client, tc, cluster_id, &order.order_id, seq, &mut parties).await);
    }
    steps
}
