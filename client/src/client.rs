//! The cluster client: one lazy channel per endpoint, and a retry loop that
//! hides leader changes.
//!
//! Replicas forward writes and linearizable reads to the leader themselves. A
//! call still fails transiently while an election runs, while a replica is down,
//! or when a forwarded request meets a second hop: the server then answers
//! `UNAVAILABLE`, possibly with the leader's address in `x-arbor-leader`. The
//! loop retries such failures — at the hinted leader if there is one, else at
//! the next endpoint — with exponential backoff until the call's deadline.
//! Answers that retrying cannot change (`INVALID_ARGUMENT`, `NOT_FOUND`,
//! `PERMISSION_DENIED`, ...) are returned at once.
//!
//! Resending a `SignedCommand` is safe: the cluster applies identical bytes
//! once and answers a resend with the original outcome, so `submit` retries
//! the very same bytes and never re-signs.

use std::collections::HashMap;
use std::error::Error as _;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_proto::pb;
use arbor_proto::pb::arbor_client::ArborClient;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::commands::Commands;
use crate::endpoints::{key, lazy_channel, parse_endpoints};
use crate::error::ClientError;
use crate::transport::Transport;
use arbor_proto::identity::Signer;

pub use arbor_proto::wire::LEADER_HEADER;
/// Overall deadline of one call, retries included, unless [`Client::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of one attempt against one replica.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// What a membership command did ([`Client::change_membership`]).
#[derive(Clone, Debug)]
pub struct MembershipChange {
    /// The ledger outcome: sequence number, accepted or rejected (with the
    /// code), and whether it was a duplicate of an earlier submission.
    pub reply: pb::SubmitReply,
    /// Raft's membership as the leader last reported it (empty if none answered).
    pub members: Vec<pb::Member>,
    /// Raft's membership reflects the change (only waited for when it was
    /// accepted now, not for a rejection or a duplicate).
    pub in_effect: bool,
}

/// A handle on an arbor cluster. Cheap to clone; clones share channels.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Duration,
}

struct Inner {
    /// As configured, in order.
    endpoints: Vec<String>,
    /// One per endpoint, same order.
    channels: Vec<Channel>,
    /// Leaders named in hints that are not among `endpoints`, by URI.
    hinted: Mutex<HashMap<String, Channel>>,
    /// Index of the endpoint that answered last; calls start there.
    preferred: AtomicUsize,
    transport: Transport,
}

/// Where the next attempt goes.
enum Target {
    Configured(usize),
    Hinted(String, Channel),
}

impl Client {
    /// A client for `endpoints` (`host:port`; items may be comma-separated
    /// lists) over `transport`. Connects lazily: this never fails because a
    /// replica is down, only when the list is empty or malformed.
    pub async fn connect(
        endpoints: &[String],
        transport: &Transport,
    ) -> Result<Client, ClientError> {
        let endpoints = parse_endpoints(endpoints)?;
        let channels = endpoints
            .iter()
            .map(|e| lazy_channel(e, transport))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                channels,
                hinted: Mutex::new(HashMap::new()),
                preferred: AtomicUsize::new(0),
                transport: transport.clone(),
            }),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets the overall deadline of each call, retries included (default 15 s).
    pub fn with_timeout(mut self, total: Duration) -> Client {
        self.timeout = total;
        self
    }

    /// The transport every channel uses.
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// The configured endpoints, as written (split and trimmed).
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Proposes a signed command and waits for its outcome. A rejected outcome
    /// is `Ok` (check `outcome.accepted`); `duplicate` is set when the cluster
    /// had already applied these exact bytes.
    pub async fn submit(&self, cmd: pb::SignedCommand) -> Result<pb::SubmitReply, ClientError> {
        self.unary(&cmd, |mut c, r| async move { c.submit(r).await })
            .await
    }

    /// An order by id (linearizable).
    pub async fn get_order(&self, order_id: &str) -> Result<pb::OrderView, ClientError> {
        let req = pb::GetOrderRequest {
            order_id: order_id.to_string(),
            local: false,
        };
        self.unary(&req, |mut c, r| async move { c.get_order(r).await })
            .await
    }

    /// The order that a channel's external reference belongs to (linearizable).
    pub async fn resolve_ref(
        &self,
        channel: &str,
        external_id: &str,
    ) -> Result<pb::OrderView, ClientError> {
        let req = pb::ResolveRefRequest {
            channel: channel.to_string(),
            external_id: external_id.to_string(),
            local: false,
        };
        self.unary(&req, |mut c, r| async move { c.resolve_ref(r).await })
            .await
    }

    /// An enrolled party (linearizable).
    pub async fn get_party(&self, party_id: &str) -> Result<pb::PartyView, ClientError> {
        let req = pb::GetPartyRequest {
            party_id: party_id.to_string(),
            local: false,
        };
        self.unary(&req, |mut c, r| async move { c.get_party(r).await })
            .await
    }

    /// A node's capability profile in force (linearizable).
    pub async fn get_profile(&self, node: &str) -> Result<pb::ProfileView, ClientError> {
        let req = pb::GetProfileRequest {
            node: node.to_string(),
            local: false,
        };
        self.unary(&req, |mut c, r| async move { c.get_profile(r).await })
            .await
    }

    /// Every node's profile in force, in node id order (linearizable; read
    /// a page of up to 1000 at a time until the end).
    pub async fn list_profiles(&self) -> Result<Vec<pb::ProfileView>, ClientError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let req = pb::ListProfilesRequest {
                after: after.clone(),
                limit: 1000,
                local: false,
            };
            let page = self
                .unary(&req, |mut c, r| async move { c.list_profiles(r).await })
                .await?;
            out.extend(page.profiles);
            if page.next_after.is_empty() {
                return Ok(out);
            }
            after = page.next_after;
        }
    }

    /// One page of orders matching the filter (linearizable). Continue with
    /// `after = reply.next` until it is empty.
    pub async fn list_orders(
        &self,
        filter: pb::ListOrdersRequest,
    ) -> Result<pb::ListOrdersReply, ClientError> {
        self.unary(&filter, |mut c, r| async move { c.list_orders(r).await })
            .await
    }

    /// A node's counters and capacity (linearizable).
    pub async fn node_stats(&self, node: &str) -> Result<pb::NodeStatsView, ClientError> {
        let req = pb::GetNodeStatsRequest {
            node: node.to_string(),
            local: false,
        };
        self.unary(&req, |mut c, r| async move { c.get_node_stats(r).await })
            .await
    }

    /// The ruling the responsibility rules compute now for the dispute opened
    /// at entry `dispute_seq` of `order_id` (linearizable): liable party, rule,
    /// evidence entries and a one-sentence explanation. `resolved_seq` is the
    /// `ResolveDispute` entry once the dispute is resolved, else 0. An auditor
    /// resolves it by signing exactly this ruling
    /// ([`Commands::resolve_dispute`](crate::Commands::resolve_dispute)).
    pub async fn preview_ruling(
        &self,
        order_id: &str,
        dispute_seq: u64,
    ) -> Result<pb::Ruling, ClientError> {
        let req = pb::PreviewRulingRequest {
            order_id: order_id.to_string(),
            dispute_seq,
            local: false,
        };
        self.unary(&req, |mut c, r| async move { c.preview_ruling(r).await })
            .await
    }

    /// Ledger entries from `from_seq` on, at most `limit` (0: server default), linearizable.
    pub async fn get_entries(
        &self,
        from_seq: u64,
        limit: u32,
    ) -> Result<pb::GetEntriesReply, ClientError> {
        let req = pb::GetEntriesRequest {
            from_seq,
            limit,
            local: false,
        };
        self.call(|mut c| async move { c.get_entries(req).await })
            .await
    }

    /// The cluster's membership and every reachable replica's own status.
    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusReply, ClientError> {
        self.call(|mut c| async move { c.cluster_status(pb::ClusterStatusRequest {}).await })
            .await
    }

    /// The cluster id its genesis entry fixed, which every command signature
    /// names (`Identity::for_cluster`): read from a replica's own status, or
    /// from the cluster's when that replica has not applied genesis yet.
    pub async fn cluster_id(&self) -> Result<String, ClientError> {
        let local = self
            .call(|mut c| async move { c.local_status(pb::LocalStatusRequest {}).await })
            .await?;
        if !local.cluster_id.is_empty() {
            return Ok(local.cluster_id);
        }
        let status = self.cluster_status().await?;
        status
            .replicas
            .into_iter()
            .map(|r| r.cluster_id)
            .find(|id| !id.is_empty())
            .ok_or_else(|| ClientError::Status {
                code: tonic::Code::FailedPrecondition,
                message: "the cluster has no genesis entry yet, so no cluster id to sign for"
                    .into(),
            })
    }

    /// The rules the cluster decides by (version, fence, lease grace, claim
    /// deadlines), as the replica answering has applied them, with the
    /// cluster id; `None` before genesis.
    pub async fn rules_config(&self) -> Result<Option<(String, pb::RulesConfig)>, ClientError> {
        let local = self
            .call(|mut c| async move { c.local_status(pb::LocalStatusRequest {}).await })
            .await?;
        Ok(local.rules.map(|r| (local.cluster_id, r)))
    }

    /// Adds replica `node_id` serving clients at `addr` and peers at
    /// `peer_addr`: an operator-signed `AddReplica` (see
    /// [`Client::change_membership`]), waiting up to the client's timeout.
    pub async fn add_replica(
        &self,
        operator: &Signer,
        node_id: u64,
        addr: &str,
        peer_addr: &str,
    ) -> Result<MembershipChange, ClientError> {
        let cmd = operator.add_replica(node_id, addr, peer_addr);
        self.change_membership(cmd, self.timeout).await
    }

    /// Removes replica `node_id`: an operator-signed `RemoveReplica` (see
    /// [`Client::change_membership`]), waiting up to the client's timeout.
    pub async fn remove_replica(
        &self,
        operator: &Signer,
        node_id: u64,
    ) -> Result<MembershipChange, ClientError> {
        let cmd = operator.remove_replica(node_id);
        self.change_membership(cmd, self.timeout).await
    }

    /// Submits a signed `AddReplica` or `RemoveReplica` and returns its
    /// ledger outcome. If the command was accepted now (not a duplicate of
    /// an earlier submission), waits up to `wait` until the leader's raft
    /// membership reflects it: the replica a voter, or gone.
    /// [`MembershipChange::in_effect`] says whether it did; if not, the
    /// leader is still working on it (a new replica still catching up, say).
    pub async fn change_membership(
        &self,
        cmd: pb::SignedCommand,
        wait: Duration,
    ) -> Result<MembershipChange, ClientError> {
        use prost::Message as _;
        let target = pb::Command::decode(cmd.command.as_slice())
            .ok()
            .and_then(|c| c.body)
            .and_then(|b| match b {
                pb::command::Body::AddReplica(a) => Some((a.node_id, true)),
                pb::command::Body::RemoveReplica(r) => Some((r.node_id, false)),
                _ => None,
            })
            .ok_or_else(|| {
                ClientError::InvalidInput("not an AddReplica or RemoveReplica command".into())
            })?;
        let reply = self.submit(cmd).await?;
        let accepted = reply.outcome.as_ref().is_some_and(|o| o.accepted);
        let mut change = MembershipChange {
            reply,
            members: Vec::new(),
            in_effect: false,
        };
        if !accepted || change.reply.duplicate {
            if let Some(members) = self.leader_members().await {
                change.members = members;
            }
            return Ok(change);
        }
        let deadline = Instant::now() + wait;
        loop {
            if let Some(members) = self.leader_members().await {
                let (id, add) = target;
                let done = match members.iter().find(|m| m.node_id == id) {
                    Some(m) => add && m.voter,
                    None => !add,
                };
                change.members = members;
                if done {
                    change.in_effect = true;
                    return Ok(change);
                }
            }
            if Instant::now() >= deadline {
                return Ok(change);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Raft's membership as the leader sees it (`None` if no leader answered).
    async fn leader_members(&self) -> Option<Vec<pb::Member>> {
        let s = self.cluster_status().await.ok()?;
        s.replicas
            .into_iter()
            .find(|r| r.state == "Leader")
            .map(|r| r.members)
    }

    /// The status of the replica at `endpoint` itself; one attempt, never elsewhere.
    pub async fn local_status(
        transport: &Transport,
        endpoint: &str,
    ) -> Result<pb::LocalStatusReply, ClientError> {
        call_one(transport, endpoint, |mut c| async move {
            c.local_status(pb::LocalStatusRequest {}).await
        })
        .await
    }

    /// Ledger entries as stored on the replica at `endpoint` (possibly stale).
    pub async fn local_entries(
        transport: &Transport,
        endpoint: &str,
        from_seq: u64,
        limit: u32,
    ) -> Result<pb::GetEntriesReply, ClientError> {
        let req = pb::GetEntriesRequest {
            from_seq,
            limit,
            local: true,
        };
        call_one(transport, endpoint, |mut c| async move {
            c.get_entries(req).await
        })
        .await
    }

    /// An order as the replica at `endpoint` sees it (possibly stale).
    pub async fn local_order(
        transport: &Transport,
        endpoint: &str,
        order_id: &str,
    ) -> Result<pb::OrderView, ClientError> {
        let req = pb::GetOrderRequest {
            order_id: order_id.to_string(),
            local: true,
        };
        call_one(transport, endpoint, |mut c| async move {
            c.get_order(req).await
        })
        .await
    }

    /// The overall deadline of each call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The endpoint that answered last (calls start there).
    pub(crate) fn preferred(&self) -> usize {
        self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len()
    }

    /// Configured endpoint `i` (modulo their count) and its channel.
    pub(crate) fn endpoint_channel(&self, i: usize) -> (String, Channel) {
        let i = i % self.inner.endpoints.len();
        (
            self.inner.endpoints[i].clone(),
            self.inner.channels[i].clone(),
        )
    }

    /// Runs `f` against the cluster until it answers or the deadline passes.
    /// One unary call with `req` through [`Client::call`]'s retry loop: each
    /// attempt sends a copy of the same request (the same signed bytes).
    pub(crate) async fn unary<Req, T, F, Fut>(&self, req: &Req, f: F) -> Result<T, ClientError>
    where
        Req: Clone,
        F: Fn(ArborClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(|c| f(c, req.clone())).await
    }

    pub(crate) async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(ArborClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let inner = &self.inner;
        let n = inner.endpoints.len();
        let deadline = Instant::now() + self.timeout;
        let mut idx = inner.preferred.load(Ordering::Relaxed) % n;
        let mut target = Target::Configured(idx);
        let mut backoff = BACKOFF_START;
        let mut followed_hint = false;

        loop {
            let (name, channel) = match &target {
                Target::Configured(i) => (inner.endpoints[*i].clone(), inner.channels[*i].clone()),
                Target::Hinted(addr, ch) => (addr.clone(), ch.clone()),
            };
            let per_attempt =
                ATTEMPT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            let status = match tokio::time::timeout(per_attempt, f(ArborClient::new(channel))).await
            {
                Ok(Ok(reply)) => {
                    if let Target::Configured(i) = target {
                        inner.preferred.store(i, Ordering::Relaxed);
                    }
                    return Ok(reply.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    per_attempt.as_millis()
                )),
            };
            if !retryable(&status) {
                return Err(ClientError::from_status(&status));
            }
            let last = format!("{name}: {}", describe(&status));
            let exhausted = || {
                ClientError::Unavailable(format!(
                    "no answer within {} ms; last error from {last}",
                    self.timeout.as_millis()
                ))
            };

            // Pick the next target: the hinted leader if it is somewhere new, else the next endpoint.
            let hint = leader_hint(&status).filter(|h| key(h) != key(&name));
            let hinted = hint.is_some();
            target = match hint {
                Some(h) => match inner.endpoints.iter().position(|e| key(e) == key(&h)) {
                    Some(i) => {
                        idx = i;
                        Target::Configured(i)
                    }
                    None => match self.hinted_channel(&h) {
                        Some(ch) => Target::Hinted(h, ch),
                        None => {
                            idx = (idx + 1) % n;
                            Target::Configured(idx)
                        }
                    },
                },
                None => {
                    idx = (idx + 1) % n;
                    Target::Configured(idx)
                }
            };

            // Follow a fresh hint at once; otherwise (or on a second hint in a row) back off.
            let now = Instant::now();
            if now >= deadline {
                return Err(exhausted());
            }
            if hinted && !followed_hint {
                followed_hint = true;
                continue;
            }
            followed_hint = false;
            if now + backoff >= deadline {
                return Err(exhausted());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// A channel to a hinted leader outside the configured list, made once.
    fn hinted_channel(&self, addr: &str) -> Option<Channel> {
        let mut map = self.inner.hinted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(key(addr)) {
            return Some(ch.clone());
        }
        let ch = lazy_channel(addr, &self.inner.transport).ok()?;
        map.insert(key(addr).to_string(), ch.clone());
        Some(ch)
    }
}

/// One attempt against one replica; transport failures become `Unavailable`.
pub(crate) async fn call_one<T, F, Fut>(
    transport: &Transport,
    endpoint: &str,
    f: F,
) -> Result<T, ClientError>
where
    F: FnOnce(ArborClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let channel = lazy_channel(endpoint, transport)?;
    match tokio::time::timeout(ATTEMPT_TIMEOUT, f(ArborClient::new(channel))).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(s)) if s.source().is_some() => Err(ClientError::Unavailable(format!(
            "{endpoint}: {}",
            describe(&s)
        ))),
        Ok(Err(s)) => Err(ClientError::from_status(&s)),
        Err(_) => Err(ClientError::Unavailable(format!(
            "{endpoint}: no answer within {} ms",
            ATTEMPT_TIMEOUT.as_millis()
        ))),
    }
}

/// Whether another attempt (here or elsewhere) could succeed.
fn retryable(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => true,
        // Made on this side from a transport failure (the status has a source),
        // not an answer from a server.
        Code::Unknown | Code::Internal => s.source().is_some(),
        _ => false,
    }
}

/// The leader address a server put in its `UNAVAILABLE` answer, if any.
fn leader_hint(s: &Status) -> Option<String> {
    let v = s.metadata().get(LEADER_HEADER)?.to_str().ok()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// The status message followed by any transport causes not already in it.
pub(crate) fn describe(s: &Status) -> String {
    let mut out = s.message().to_string();
    let mut src = s.source();
    while let Some(e) = src {
        let m = e.to_string();
        if !m.is_empty() && !out.contains(&m) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&m);
        }
        src = e.source();
    }
    if out.is_empty() {
        out = crate::error::code_name(s.code()).to_string();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_errors_are_retried() {
        assert!(retryable(&Status::unavailable("no leader")));
        assert!(retryable(&Status::deadline_exceeded("slow")));
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::Internal,
            Code::Unknown,
        ] {
            assert!(!retryable(&Status::new(code, "x")), "{code:?}");
        }
        let transport = Status::from_error(Box::new(std::io::Error::other("broken pipe")));
        assert_eq!(transport.code(), Code::Unknown);
        assert!(retryable(&transport));
    }

    #[test]
    fn leader_hint_is_read_from_metadata() {
        let mut s = Status::unavailable("not the leader");
        assert_eq!(leader_hint(&s), None);
        s.metadata_mut()
            .insert(LEADER_HEADER, "127.0.0.1:7102".parse().unwrap());
        assert_eq!(leader_hint(&s).as_deref(), Some("127.0.0.1:7102"));
    }

    #[tokio::test]
    async fn connect_needs_endpoints_but_no_server() {
        let err = Client::connect(&[], &Transport::InsecurePlaintext)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ClientError::InvalidInput(_)));
        let c = Client::connect(
            &["127.0.0.1:1,127.0.0.1:2".to_string()],
            &Transport::InsecurePlaintext,
        )
        .await
        .unwrap();
        assert_eq!(c.endpoints(), ["127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[tokio::test]
    async fn unreachable_cluster_fails_within_the_deadline() {
        let c = Client::connect(
            &["127.0.0.1:1,127.0.0.1:2".to_string()],
            &Transport::InsecurePlaintext,
        )
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(800));
        let started = std::time::Instant::now();
        let err = c.get_order("o-1").await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(err, ClientError::Unavailable(_)), "{err}");
        assert_eq!(err.code(), Some(Code::Unavailable));
        assert!(!err.to_string().contains('\n'));

        let err = Client::local_status(&Transport::InsecurePlaintext, "127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
