//! Cluster bootstrap from one replica.
//!
//! The bootstrap replica initialises raft with itself as the only voter, so it
//! leads at once and can append the genesis entry (the operator keys). It then
//! adds every other configured member as a learner — waiting for it to catch
//! up — and promotes it to voter. A marker file records that this finished, so
//! a restart does not re-add a member an operator has since removed. Every
//! step is idempotent: a crash at any point is resumed on the next start.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use arbor_proto::pb;
use openraft::ChangeMembers;
use prost::Message;
use tracing::{info, warn};

use crate::api::client_api::now_ms;
use crate::config::OperatorKey;
use crate::storage::LedgerReader;
use crate::types::Member;
use crate::types::{NodeId, Request, Response};
use crate::Raft;

const DONE_MARKER: &str = "bootstrap-complete";

pub struct Bootstrap {
    pub id: NodeId,
    /// This replica's addresses.
    pub me: Member,
    pub raft: Raft,
    pub reader: LedgerReader,
    pub data_dir: PathBuf,
    pub cluster_id: String,
    pub lease_grace_ms: u64,
    pub operators: Vec<OperatorKey>,
    pub members: BTreeMap<NodeId, Member>,
}

/// The genesis command: unsigned, naming the operator keys.
pub fn genesis_command(
    cluster_id: &str,
    lease_grace_ms: u64,
    operators: &[OperatorKey],
) -> Vec<u8> {
    let cmd = pb::Command {
        nonce: 0,
        body: Some(pb::command::Body::Genesis(pb::Genesis {
            cluster_id: cluster_id.to_string(),
            operators: operators
                .iter()
                .map(|o| pb::GenesisOperator {
                    party_id: o.party_id.clone(),
                    public_key: o.public_key.to_vec(),
                })
                .collect(),
            lease_grace_ms,
        })),
    };
    pb::SignedCommand {
        command: cmd.encode_to_vec(),
        signer: String::new(),
        signature: Vec::new(),
    }
    .encode_to_vec()
}

impl Bootstrap {
    /// Initialises raft if this data directory is new, then keeps working in
    /// the background until genesis is written and every member is a voter.
    pub async fn start(self) -> Result<(), String> {
        let done = self.data_dir.join(DONE_MARKER);
        if done.exists() {
            return Ok(());
        }
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| e.to_string())?;
        if !initialized {
            let me = BTreeMap::from([(self.id, self.me.clone())]);
            self.raft
                .initialize(me)
                .await
                .map_err(|e| format!("initialize: {e}"))?;
            info!(node = self.id, "initialised a new cluster");
        }
        tokio::spawn(async move {
            if let Err(e) = self.run().await {
                warn!(error = %e, "bootstrap stopped");
            }
        });
        Ok(())
    }

    async fn run(self) -> Result<(), String> {
        loop {
            if self.raft.is_leader() {
                match self.step().await {
                    Ok(true) => {
                        std::fs::write(self.data_dir.join(DONE_MARKER), b"done\n")
                            .map_err(|e| format!("write bootstrap marker: {e}"))?;
                        info!("bootstrap complete");
                        return Ok(());
                    }
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "bootstrap step failed; retrying"),
                }
            }
            let rx = self.raft.metrics();
            let mut rx = rx;
            let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
            if self.raft.metrics().borrow_watched().running_state.is_err() {
                return Err("raft stopped".into());
            }
        }
    }

    /// One pass; true when everything is done.
    async fn step(&self) -> Result<bool, String> {
        if self.reader.head().map_err(|e| e.to_string())?.is_none() {
            let req = Request {
                command: genesis_command(&self.cluster_id, self.lease_grace_ms, &self.operators),
                time_ms: now_ms(),
                genesis: true,
                verified_key: Vec::new(),
            };
            let resp = self
                .raft
                .client_write(req)
                .await
                .map_err(|e| format!("genesis: {e}"))?;
            match resp.response() {
                Response::Appended { seq, .. } => info!(seq, "genesis entry appended"),
                other => warn!(?other, "genesis not appended"),
            }
        }
        let voters: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let mut all = true;
        for (id, node) in &self.members {
            if voters.contains(id) {
                continue;
            }
            all = false;
            let addr = node.to_string();
            let node = node.clone();
            match tokio::time::timeout(
                Duration::from_secs(30),
                self.raft.add_learner(*id, node, true),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("add learner {id}: {e}")),
                Err(_) => return Err(format!("member {id} at {addr} has not caught up yet")),
            }
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                .await
                .map_err(|e| format!("promote {id}: {e}"))?;
            info!(member = id, %addr, "member promoted to voter");
        }
        Ok(all)
    }
}
