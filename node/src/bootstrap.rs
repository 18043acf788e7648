//! Cluster bootstrap from one replica.
//!
//! The bootstrap replica initialises raft with itself as the only voter, so it
//! leads at once and can append the genesis entry: the operator keys and the
//! configured members, the ledger's first desired membership. The membership
//! reconciler (`membership.rs`) then adds every other member as a learner and
//! promotes it once it has caught up, as it does for every later
//! `AddReplica`. A marker file records that genesis is written, so a restart
//! never proposes it again. Every step is idempotent: a crash at any point is
//! resumed on the next start.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use arbor_proto::pb;
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
    /// The fence genesis records (0: the rules' default).
    pub fence_ms: u64,
    /// The claim deadlines genesis records (all 0: the defaults).
    pub claim_deadlines: arbor_proto::rules::ClaimDeadlines,
    pub operators: Vec<OperatorKey>,
    pub members: BTreeMap<NodeId, Member>,
}

/// The genesis command: unsigned, naming the operator keys and the members.
/// New clusters start under the newest rules version, with `fence_ms` (0:
/// the rules' default) and `claim_deadlines` (none recorded: the defaults).
pub fn genesis_command(
    cluster_id: &str,
    lease_grace_ms: u64,
    fence_ms: u64,
    claim_deadlines: &arbor_proto::rules::ClaimDeadlines,
    operators: &[OperatorKey],
    members: &BTreeMap<NodeId, Member>,
) -> Vec<u8> {
    let cmd = pb::Command {
        nonce: 0,
        body: Some(pb::command::Body::Genesis(pb::Genesis {
            claim_deadlines: claim_deadlines.is_set().then(|| claim_deadlines.to_pb()),
            cluster_id: cluster_id.to_string(),
            operators: operators
                .iter()
                .map(|o| pb::GenesisOperator {
                    party_id: o.party_id.clone(),
                    public_key: o.public_key.to_vec(),
                })
                .collect(),
            lease_grace_ms,
            members: members
                .iter()
                .map(|(id, m)| pb::ReplicaMember {
                    node_id: *id,
                    addr: m.addr.clone(),
                    peer_addr: m.peer_addr.clone(),
                })
                .collect(),
            rules_version: arbor_proto::rules::CURRENT_RULES_VERSION,
            fence_ms,
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
    /// the background until genesis is written.
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

    /// One pass; true when genesis is in the ledger.
    async fn step(&self) -> Result<bool, String> {
        if self.reader.head().map_err(|e| e.to_string())?.is_some() {
            return Ok(true);
        }
        let req = Request {
            command: genesis_command(
                &self.cluster_id,
                self.lease_grace_ms,
                self.fence_ms,
                &self.claim_deadlines,
                &self.operators,
                &self.members,
            ),
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
            Response::Appended { seq, .. } => {
                info!(seq, members = ?self.members.keys().collect::<Vec<_>>(), "genesis entry appended");
                Ok(true)
            }
            other => Err(format!("genesis not appended: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_proto::rules::{Applied, ClaimDeadlines, MemState};

    /// The genesis records the configured claim deadlines (none: the
    /// defaults), and the rules accept it and keep them.
    #[test]
    fn genesis_records_the_claim_deadlines_given() {
        let ops = [OperatorKey {
            party_id: "ops".into(),
            public_key: ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .to_bytes(),
        }];
        let members = BTreeMap::new();
        let d = ClaimDeadlines::parse_all(&["damaged=14d"]).unwrap();
        let bytes = genesis_command("t", 1_000, 0, &d, &ops, &members);
        let mut s = MemState::default();
        let applied = s.apply(&bytes, 1, true);
        assert!(
            matches!(&applied, Applied::Appended(e) if e.accepted),
            "{applied:?}"
        );
        let config = s.config.clone().unwrap();
        assert_eq!(config.claim_deadlines.damaged_ms, 14 * 86_400_000);
        assert_eq!(config.claim_deadlines.lost_ms, 0);
        let none = genesis_command("t", 1_000, 0, &ClaimDeadlines::default(), &ops, &members);
        let signed = pb::SignedCommand::decode(none.as_slice()).unwrap();
        let cmd = pb::Command::decode(signed.command.as_slice()).unwrap();
        let Some(pb::command::Body::Genesis(g)) = cmd.body else {
            panic!("not a genesis");
        };
        assert_eq!(g.claim_deadlines, None);
    }
}
