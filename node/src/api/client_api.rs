//! The client API: signed commands in, outcomes and ledger reads out.
//!
//! Writes and default (linearizable) reads are served by the leader; a
//! follower forwards them (see `routing.rs`). The write path — admission
//! (decoding, structure, signer, role, signature) on the leader before
//! proposing, so nothing refused is ever appended — is in `write.rs`; the
//! state machine repeats the deterministic part of it at apply time.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbor_proto::pb;
use arbor_proto::pb::arbor_server::Arbor;
use arbor_proto::rules;
use tonic::{Request, Response, Status};

use super::admission::Admission;
use super::read_index::{ReadError, ReadIndex};
use super::routing::{route, within, Deadline};
use super::status;
use crate::identity::ReplicaIdentity;
use crate::net::Peers;
use crate::proofs::MerkleProofs;
use crate::storage::{AppliedHead, CheckedView, LedgerReader};
use crate::types::NodeId;
use crate::Raft;

const DEFAULT_ENTRIES: u32 = 1000;
/// Pause before routing again a call whose leader stepped down under it.
const MOVED_PAUSE: Duration = Duration::from_millis(20);
const MAX_ENTRIES: u32 = 10_000;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone)]
pub struct ArborApi {
    pub id: NodeId,
    /// This replica's client API address (as advertised).
    pub addr: String,
    /// This replica's peer address (as advertised).
    pub peer_addr: String,
    pub raft: Raft,
    pub reader: LedgerReader,
    pub peers: Peers,
    pub identity: ReplicaIdentity,
    pub leaves: MerkleProofs,
    /// The state machine's applied head, for the live feed (`watch.rs`).
    pub applied: AppliedHead,
    pub admission: Admission,
    /// Linearizable reads, confirmed in batched ReadIndex rounds (`read_index.rs`).
    pub reads: ReadIndex,
    /// Reply sizes and open watch streams (`limits.rs`).
    pub limits: crate::limits::ApiLimits,
    /// Proposals and refusals are counted here (`metrics.rs`).
    pub metrics: crate::metrics::Metrics,
    /// Set while the replica catches up after `arbor-node recover`: it does not vote.
    pub recovery: crate::health::Recovery,
}

impl ArborApi {
    /// The deadline of a call: its `grpc-timeout`, capped by
    /// `limits.request-timeout-ms`.
    pub(super) fn deadline<T>(&self, req: &Request<T>) -> Deadline {
        Deadline::of(req, self.limits.limits.request_timeout())
    }

    /// Waits until this leader's state machine reflects everything committed
    /// before the read started (ReadIndex, one round for every read waiting
    /// when it starts: `read_index.rs`). `Moved` when this replica no longer
    /// leads: the caller routes the read again.
    async fn linearize(&self) -> Result<(), Served> {
        match self.reads.linearize().await {
            Ok(()) => Ok(()),
            Err(ReadError::NotLeader) => Err(Served::Moved),
            Err(ReadError::NoQuorum) => Err(Served::Failed(status::unavailable(
                "this leader could not confirm its leadership with a quorum of replicas \
                 in time (no quorum reachable); retry",
                None,
            ))),
            Err(ReadError::Stopped(e)) => Err(Served::Failed(status::unavailable(
                format!("raft is not running on this replica: {e}"),
                None,
            ))),
        }
    }

    /// Repeats a leader-side step that found leadership had moved: routes
    /// again after a short pause (the raft metrics catch up meanwhile).
    pub(super) async fn moved() {
        tokio::time::sleep(MOVED_PAUSE).await;
    }

    fn order_view(&self, order_id: &str) -> Result<pb::OrderView, Status> {
        let order = self
            .reader
            .order(order_id)
            .map_err(status::internal)?
            .ok_or_else(|| status::not_found(format!("order {order_id} is not registered")))?;
        // The order is read and decoded once; its history reads only links.
        let history = self
            .reader
            .order_history_of(&order)
            .map_err(status::internal)?;
        let config = self
            .reader
            .config()
            .map_err(status::internal)?
            .unwrap_or_default();
        Ok(order.to_pb_under(history, now_ms(), &config))
    }

    fn members(&self) -> Vec<pb::Member> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| pb::Member {
                node_id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
                peer_addr: n.peer_addr.clone(),
            })
            .collect()
    }

    pub fn local_status(&self) -> Result<pb::LocalStatusReply, Status> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let leader_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone()))
            .unwrap_or_default();
        let head = self.reader.head().map_err(status::internal)?;
        let config = self.reader.config().map_err(status::internal)?;
        Ok(pb::LocalStatusReply {
            rules: config.as_ref().map(|c| c.rules_pb()),
            node_id: self.id,
            addr: self.addr.clone(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            leader_addr,
            last_applied: m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0),
            last_log: m.last_log_index.unwrap_or(0),
            has_entries: head.is_some(),
            head_seq: head.map(|h| h.seq).unwrap_or(0),
            head_hash: head.map(|h| h.hash.to_vec()).unwrap_or_default(),
            members: self.members(),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index()).unwrap_or(0),
            purged_index: m.purged.as_ref().map(|l| l.index()).unwrap_or(0),
            cluster_id: config.map(|c| c.cluster_id).unwrap_or_default(),
        })
    }
}

/// The end of a leader-side step other than its answer.
pub(super) enum Served {
    /// This replica no longer leads: route the call again.
    Moved,
    Failed(Status),
}

impl From<Status> for Served {
    fn from(s: Status) -> Served {
        Served::Failed(s)
    }
}

/// Serves the request on the leader: forwards it there (once) unless this
/// replica leads, and returns the leader's answer from the handler. The
/// forward is re-routed if the leader stops answering, until the deadline.
macro_rules! on_leader {
    ($api:expr, $req:expr, $dl:expr, $rpc:ident) => {
        if let Some(r) = route(&$api.raft, &$api.peers, &$req, $dl, |mut c, r| async move {
            c.$rpc(r).await
        })
        .await?
        {
            return Ok(r);
        }
    };
}

/// On the leader (forwarded there otherwise), after a ReadIndex round; if
/// leadership moves before the round completes, the read is routed again.
macro_rules! leader_read {
    ($api:expr, $req:expr, $dl:expr, $rpc:ident) => {
        loop {
            on_leader!($api, $req, $dl, $rpc);
            match $api.linearize().await {
                Ok(()) => break,
                Err(Served::Moved) => ArborApi::moved().await,
                Err(Served::Failed(s)) => return Err(s),
            }
        }
    };
}

/// A read that is linearizable unless the request asks for `local`.
macro_rules! linearizable_read {
    ($api:expr, $req:expr, $dl:expr, $rpc:ident) => {
        if !$req.get_ref().local {
            leader_read!($api, $req, $dl, $rpc);
        }
    };
}

#[tonic::async_trait]
impl Arbor for ArborApi {
    async fn submit(
        &self,
        req: Request<pb::SignedCommand>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let dl = self.deadline(&req);
        within(dl, "Submit", async move {
            loop {
                on_leader!(self, req, dl, submit);
                match self.propose(req.get_ref()).await {
                    Ok(r) => return Ok(Response::new(r)),
                    Err(Served::Moved) => ArborApi::moved().await,
                    Err(Served::Failed(s)) => return Err(s),
                }
            }
        })
        .await
    }

    async fn get_order(
        &self,
        req: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::OrderView>, Status> {
        let dl = self.deadline(&req);
        within(dl, "GetOrder", async move {
            linearizable_read!(self, req, dl, get_order);
            self.order_view(&req.get_ref().order_id).map(Response::new)
        })
        .await
    }

    async fn resolve_ref(
        &self,
        req: Request<pb::ResolveRefRequest>,
    ) -> Result<Response<pb::OrderView>, Status> {
        let dl = self.deadline(&req);
        within(dl, "ResolveRef", async move {
            linearizable_read!(self, req, dl, resolve_ref);
            let r = req.get_ref();
            let order_id = self
                .reader
                .order_by_ref(&r.channel, &r.external_id)
                .map_err(status::internal)?
                .ok_or_else(|| {
                    status::not_found(format!(
                        "no order has external reference {}/{}",
                        r.channel, r.external_id
                    ))
                })?;
            self.order_view(&order_id).map(Response::new)
        })
        .await
    }

    async fn get_party(
        &self,
        req: Request<pb::GetPartyRequest>,
    ) -> Result<Response<pb::PartyView>, Status> {
        let dl = self.deadline(&req);
        within(dl, "GetParty", async move {
            linearizable_read!(self, req, dl, get_party);
            let id = &req.get_ref().party_id;
            let p = self
                .reader
                .party(id)
                .map_err(status::internal)?
                .ok_or_else(|| status::not_found(format!("party {id} is not enrolled")))?;
            Ok(Response::new(p.to_pb()))
        })
        .await
    }

    async fn get_profile(
        &self,
        req: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::ProfileView>, Status> {
        let dl = self.deadline(&req);
        within(dl, "GetProfile", async move {
            linearizable_read!(self, req, dl, get_profile);
            let node = &req.get_ref().node;
            let p = self
                .reader
                .profile(node)
                .map_err(status::internal)?
                .ok_or_else(|| {
                    status::not_found(format!(
                        "node {node} has not published a capability profile"
                    ))
                })?;
            Ok(Response::new(p.to_pb()))
        })
        .await
    }

    async fn list_profiles(
        &self,
        req: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesReply>, Status> {
        let dl = self.deadline(&req);
        within(dl, "ListProfiles", async move {
            linearizable_read!(self, req, dl, list_profiles);
            let q = req.get_ref();
            let limit = match q.limit {
                0 => 100,
                n => n.min(1000) as usize,
            };
            let (nodes, more) = self
                .reader
                .profiled_nodes(&q.after, limit)
                .map_err(status::internal)?;
            let mut profiles = Vec::with_capacity(nodes.len());
            for node in &nodes {
                if let Some(p) = self.reader.profile(node).map_err(status::internal)? {
                    profiles.push(p.to_pb());
                }
            }
            let next_after = match (more, nodes.last()) {
                (true, Some(last)) => last.clone(),
                _ => String::new(),
            };
            Ok(Response::new(pb::ListProfilesReply {
                profiles,
                next_after,
            }))
        })
        .await
    }

    async fn list_orders(
        &self,
        req: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersReply>, Status> {
        let dl = self.deadline(&req);
        within(dl, "ListOrders", async move {
            linearizable_read!(self, req, dl, list_orders);
            let q = req.into_inner();
            let status = match q.status.as_str() {
                "" => None,
                s => Some(rules::OrderStatus::parse(s).ok_or_else(|| {
                    status::invalid(format!(
                        "unknown status {s:?}; one of open, claimed, picked, packed, shipped, delivered, cancelled, return_requested, return_claimed, returned"
                    ))
                })?),
            };
            if !q.claimable_by.is_empty() {
                match self
                    .reader
                    .party(&q.claimable_by)
                    .map_err(status::internal)?
                {
                    Some(p) if p.role == pb::Role::Node as i32 => {}
                    Some(_) => {
                        return Err(status::invalid(format!(
                            "{} is not a fulfillment node",
                            q.claimable_by
                        )))
                    }
                    None => {
                        return Err(status::not_found(format!(
                            "party {} is not enrolled",
                            q.claimable_by
                        )))
                    }
                }
            }
            let limit = match q.limit {
                0 => 100,
                n => n.min(1000) as usize,
            };
            let now = now_ms();
            let reader = &self.reader;
            let view = CheckedView::new(reader);
            // Open as a claim would find it, under the rules version in force.
            let config = rules::StateView::config(&view).unwrap_or_default();
            let (orders, next) = reader
                .scan_orders(&q.after, limit, 100_000, |o| {
                    let effective_open = o.open_at(now, &config);
                    status.is_none_or(|s| {
                        s == o.status || (s == rules::OrderStatus::Open && effective_open)
                    }) && (q.owner.is_empty()
                        || (o.owner.as_deref() == Some(q.owner.as_str()) && !o.lease_lapsed(now)))
                        && (q.region.is_empty() || o.destination_region == q.region)
                        && (q.claimable_by.is_empty()
                            || rules::claimable_by(&view, &q.claimable_by, o, now))
                })
                .map_err(status::internal)?;
            view.finish().map_err(|e| {
                status::unavailable(format!("this replica cannot read its state: {e}"), None)
            })?;
            let mut views = Vec::with_capacity(orders.len());
            for o in orders {
                let history = reader.order_history_of(&o).map_err(status::internal)?;
                views.push(o.to_pb_under(history, now, &config));
            }
            Ok(Response::new(pb::ListOrdersReply {
                orders: views,
                next: next.unwrap_or_default(),
            }))
        })
        .await
    }

    async fn preview_ruling(
        &self,
        req: Request<pb::PreviewRulingRequest>,
    ) -> Result<Response<pb::Ruling>, Status> {
        let dl = self.deadline(&req);
        within(dl, "PreviewRuling", async move {
            linearizable_read!(self, req, dl, preview_ruling);
            let q = req.into_inner();
            let order = self
                .reader
                .order(&q.order_id)
                .map_err(status::internal)?
                .ok_or_else(|| {
                    status::not_found(format!("order {} is not registered", q.order_id))
                })?;
            let dispute = order
                .disputes
                .iter()
                .find(|d| d.seq == q.dispute_seq)
                .ok_or_else(|| {
                    status::not_found(format!(
                        "order {} has no dispute opened at entry {}",
                        q.order_id, q.dispute_seq
                    ))
                })?;
            // A resolved dispute answers the ruling the ledger recorded.
            if let Some(done) = &dispute.ruling {
                return Ok(Response::new(pb::Ruling {
                    liable: done.liable.clone(),
                    rule: done.rule.clone(),
                    evidence: done.evidence.clone(),
                    explanation: format!("resolved at entry {}", done.seq),
                    resolved_seq: done.seq,
                }));
            }
            let r = rules::rule_on(&order, dispute);
            Ok(Response::new(pb::Ruling {
                liable: r.liable,
                rule: r.rule.to_string(),
                evidence: r.evidence,
                explanation: r.explanation,
                resolved_seq: 0,
            }))
        })
        .await
    }

    async fn get_node_stats(
        &self,
        req: Request<pb::GetNodeStatsRequest>,
    ) -> Result<Response<pb::NodeStatsView>, Status> {
        let dl = self.deadline(&req);
        within(dl, "GetNodeStats", async move {
            linearizable_read!(self, req, dl, get_node_stats);
            let node = &req.get_ref().node;
            match self.reader.party(node).map_err(status::internal)? {
                Some(p) if p.role == pb::Role::Node as i32 => {}
                Some(_) => {
                    return Err(status::invalid(format!("{node} is not a fulfillment node")))
                }
                None => return Err(status::not_found(format!("party {node} is not enrolled"))),
            }
            // Read first: the counters include at least the entries up to it.
            let head = self.reader.head().map_err(status::internal)?;
            let stats = self
                .reader
                .stats(node)
                .map_err(status::internal)?
                .unwrap_or_default();
            let profile = self.reader.profile(node).map_err(status::internal)?;
            let mut view = stats.to_pb(node, profile.as_ref());
            view.health = Some(stats.health.to_pb(head.map(|h| h.seq).unwrap_or(0)));
            Ok(Response::new(view))
        })
        .await
    }

    async fn get_entries(
        &self,
        req: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesReply>, Status> {
        let dl = self.deadline(&req);
        within(dl, "GetEntries", async move {
            linearizable_read!(self, req, dl, get_entries);
            let r = req.get_ref();
            let limit = match r.limit {
                0 => DEFAULT_ENTRIES,
                n => n.min(MAX_ENTRIES),
            };
            // Cut before the reply passes max-reply-bytes (each entry counted
            // with its field framing), with at least one entry.
            let max = self.limits.limits.max_reply_bytes;
            let budget = max.saturating_sub(crate::limits::REPLY_OVERHEAD);
            let (entries, bytes) = self
                .reader
                .entries_within(
                    r.from_seq,
                    limit as usize,
                    budget,
                    crate::limits::framed_len,
                )
                .map_err(status::internal)?;
            if bytes > budget {
                let seq = entries.first().map_or(r.from_seq, |e| e.seq);
                return Err(crate::limits::entry_too_big(seq, bytes, max));
            }
            let head = self.reader.head().map_err(status::internal)?;
            Ok(Response::new(pb::GetEntriesReply {
                entries: entries.iter().map(|e| e.to_pb()).collect(),
                head_seq: head.map(|h| h.seq).unwrap_or(0),
                empty: head.is_none(),
            }))
        })
        .await
    }

    async fn local_status(
        &self,
        _req: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatusReply>, Status> {
        ArborApi::local_status(self).map(Response::new)
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let me = ArborApi::local_status(self)?;
        let members = me.members.clone();
        let mut replicas = Vec::new();
        let mut unreachable = Vec::new();
        let mut calls = Vec::new();
        for m in &members {
            if m.node_id == self.id {
                continue;
            }
            let peers = self.peers.clone();
            let m = m.clone();
            calls.push(tokio::spawn(async move {
                let (id, peer_addr) = (m.node_id, m.peer_addr.clone());
                let res = async move {
                    let mut c = peers.arbor(id, &peer_addr).map_err(status::internal)?;
                    let mut r = Request::new(pb::LocalStatusRequest {});
                    r.set_timeout(Duration::from_secs(2));
                    c.local_status(r).await.map(|r| r.into_inner())
                };
                (m, tokio::time::timeout(Duration::from_secs(3), res).await)
            }));
        }
        replicas.push(me.clone());
        for c in calls {
            match c.await {
                Ok((_, Ok(Ok(r)))) => replicas.push(r),
                Ok((m, Ok(Err(e)))) => {
                    unreachable.push(format!("{} {}: {}", m.node_id, m.addr, e.message()))
                }
                Ok((m, Err(_))) => unreachable.push(format!("{} {}: timed out", m.node_id, m.addr)),
                Err(e) => unreachable.push(format!("status task failed: {e}")),
            }
        }
        replicas.sort_by_key(|r| r.node_id);
        Ok(Response::new(pb::ClusterStatusReply {
            leader_id: me.leader_id,
            term: me.term,
            members,
            replicas,
            unreachable,
        }))
    }

    async fn get_checkpoint(
        &self,
        req: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::CheckpointReply>, Status> {
        let dl = self.deadline(&req);
        within(dl, "GetCheckpoint", async move {
            leader_read!(self, req, dl, get_checkpoint);
            self.checkpoint().await.map(Response::new)
        })
        .await
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProofReply>, Status> {
        let dl = self.deadline(&req);
        within(dl, "GetInclusionProof", async move {
            leader_read!(self, req, dl, get_inclusion_proof);
            self.inclusion(req.get_ref()).map(Response::new)
        })
        .await
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProofReply>, Status> {
        let dl = self.deadline(&req);
        within(dl, "GetConsistencyProof", async move {
            leader_read!(self, req, dl, get_consistency_proof);
            self.consistency(req.get_ref()).map(Response::new)
        })
        .await
    }

    async fn get_order_map_proof(
        &self,
        req: Request<pb::OrderMapProofRequest>,
    ) -> Result<Response<pb::OrderMapProofReply>, Status> {
        let dl = self.deadline(&req);
        within(dl, "GetOrderMapProof", async move {
            leader_read!(self, req, dl, get_order_map_proof);
            self.order_map_proof(req.get_ref()).await.map(Response::new)
        })
        .await
    }

    async fn get_replica_identity(
        &self,
        _req: Request<pb::ReplicaIdentityRequest>,
    ) -> Result<Response<pb::ReplicaIdentity>, Status> {
        Ok(Response::new(pb::ReplicaIdentity {
            node_id: self.id,
            name: self.identity.name.clone(),
            public_key: self.identity.public_key().to_vec(),
        }))
    }

    type WatchEntriesStream = super::EntryStream;

    /// Served here from this replica's applied state; never forwarded.
    async fn watch_entries(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchEntriesStream>, Status> {
        self.watch(req.into_inner()).map(Response::new)
    }
}
