//! Where a request is served: on this replica if it leads, else forwarded to
//! the leader's peer port (mutual TLS) over a cached channel. A request that was already
//! forwarded once is never forwarded again: it is answered `UNAVAILABLE` with
//! the leader's address, and the client library retries there.

use openraft::async_runtime::WatchReceiver;
use std::future::Future;
use std::time::Duration;

use arbor_proto::pb::arbor_client::ArborClient;
use openraft::ServerState;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::status::{self, FORWARDED_HEADER};
use crate::net::Peers;
use crate::types::{Member, NodeId};
use crate::Raft;

/// Who leads, as this replica sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leader {
    Me,
    Other { id: NodeId, member: Member },
    Unknown,
}

pub fn leader(raft: &Raft) -> Leader {
    // Read in place: this runs on every routed request.
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    if m.state == ServerState::Leader {
        return Leader::Me;
    }
    match m.current_leader {
        Some(id) => match m.membership_config.membership().get_node(&id) {
            Some(n) => Leader::Other {
                id,
                member: n.clone(),
            },
            None => Leader::Unknown,
        },
        None => Leader::Unknown,
    }
}

/// Waits up to `patience` for a leader to be known (elections take ~1 s).
pub async fn wait_leader(raft: &Raft, patience: Duration) -> Leader {
    let deadline = tokio::time::Instant::now() + patience;
    let mut rx = raft.metrics();
    loop {
        let l = leader(raft);
        if l != Leader::Unknown {
            return l;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            return Leader::Unknown;
        }
    }
}

/// Serves here (returns `Ok(None)`) or forwards to the leader (returns its answer).
pub async fn route<Req, T, F, Fut>(
    raft: &Raft,
    peers: &Peers,
    req: &Request<Req>,
    call: F,
) -> Result<Option<Response<T>>, Status>
where
    Req: Clone,
    F: FnOnce(ArborClient<Channel>, Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    match wait_leader(raft, Duration::from_secs(3)).await {
        Leader::Me => Ok(None),
        Leader::Unknown => Err(status::unavailable(
            "no leader elected yet; retry shortly",
            None,
        )),
        Leader::Other { id, member } => {
            if req.metadata().get(FORWARDED_HEADER).is_some() {
                return Err(status::unavailable(
                    "this replica is not the leader",
                    Some(&member.addr),
                ));
            }
            forward(peers, id, &member, req.get_ref().clone(), call)
                .await
                .map(Some)
        }
    }
}

/// Sends `body` to replica `id`'s peer port, marked as forwarded. Failures
/// name the member's client address as the hint.
pub async fn forward<Req, T, F, Fut>(
    peers: &Peers,
    id: NodeId,
    member: &Member,
    body: Req,
    call: F,
) -> Result<Response<T>, Status>
where
    F: FnOnce(ArborClient<Channel>, Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let addr = member.addr.as_str();
    let client = peers
        .arbor(id, &member.peer_addr)
        .map_err(status::internal)?;
    let mut fwd = Request::new(body);
    fwd.metadata_mut()
        .insert(FORWARDED_HEADER, "1".parse().expect("static header"));
    fwd.set_timeout(Duration::from_secs(30));
    call(client, fwd).await.map_err(|s| {
        if matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ) && !s.metadata().contains_key(status::LEADER_HEADER)
        {
            status::unavailable(
                format!("leader at {addr} did not answer: {}", s.message()),
                Some(addr),
            )
        } else {
            s
        }
    })
}
