//! Replica-to-replica raft traffic over tonic.
//!
//! One tonic `Channel` per peer (from [`crate::net::Peers`], over mutual
//! TLS to the member's peer port), created lazily and reused for every RPC (a
//! channel multiplexes HTTP/2 streams and reconnects by itself). Raft
//! messages travel bincode-encoded (see [`super::codec`]) inside
//! `RaftPayload.data` (they never leave the cluster); a snapshot travels as
//! a client stream of `RaftPayload`s, the file in chunks beside its metadata.

use futures::StreamExt;
use std::time::Duration;

use arbor_proto::pb;
use arbor_proto::pb::raft_client::RaftClient;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::OptionalSend;
use tonic::transport::Channel;

use super::codec;
use crate::net::Peers;
use crate::storage::SnapshotData;
use crate::types::{Member, NodeId, TypeConfig};

/// Creates per-peer clients sharing one channel per member.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
}

impl Network {
    pub fn new(peers: Peers) -> Network {
        Network { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: node.peer_addr.clone(),
            client: self.peers.raft(target, &node.peer_addr),
        }
    }
}

/// The least time an AppendEntries that carries entries is given before the
/// leader gives up on it. openraft gives every append the heartbeat interval
/// (100 ms by default) and sends one at a time per follower; a follower busy
/// applying, or waiting on its synced log write, often takes longer under
/// load, and a timed-out append is not free: the replication stream is
/// dropped and re-opened, after a back-off, and the same entries are sent
/// (and decoded and checked) again. A 400,000-order run saw about three such
/// timeouts a second. Heartbeats (no entries) keep openraft's interval: they
/// carry the leader's liveness, and a late one is worth nothing.
const APPEND_TIMEOUT: Duration = Duration::from_secs(1);

/// How long an AppendEntries may take (see [`APPEND_TIMEOUT`]).
fn append_timeout(heartbeat: bool, openraft_ttl: Duration) -> Duration {
    if heartbeat {
        openraft_ttl
    } else {
        openraft_ttl.max(APPEND_TIMEOUT)
    }
}

/// The raft client for one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, String>,
}

fn unreachable(msg: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(msg))
}

impl PeerClient {
    fn client(&self) -> Result<RaftClient<Channel>, String> {
        self.client.clone()
    }

    fn status_error(&self, rpc: &str, s: tonic::Status) -> RPCError<TypeConfig> {
        let msg = format!(
            "{rpc} to node {} at {}: {}",
            self.target,
            self.addr,
            s.message()
        );
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                unreachable(msg)
            }
            _ => RPCError::Network(NetworkError::from_string(msg)),
        }
    }

    async fn call<Req, Resp>(
        &self,
        rpc: &'static str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let mut client = self.client().map_err(unreachable)?;
        let data = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(pb::RaftPayload {
            data,
            blob: Vec::new(),
        });
        request.set_timeout(ttl);
        let reply = match rpc {
            "append_entries" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => unreachable!("unknown raft rpc {rpc}"),
        }
        .map_err(|s| self.status_error(rpc, s))?;
        codec::decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = append_timeout(rpc.entries.is_empty(), option.hard_ttl());
        self.call("append_entries", &rpc, ttl).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }

    /// Sends the snapshot as a stream of chunks of at most
    /// `storage::snapshot::CHUNK_BYTES`, read from its file, or produced from
    /// its checkpoint, as the stream is polled (HTTP/2 flow control paces
    /// it): memory holds a chunk or two, whatever the snapshot's size. Each
    /// chunk is read or produced on tokio's blocking pool (producing one
    /// reads and compresses about a MiB of records), so neither this task
    /// nor the others sharing its thread wait for it.
    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self
            .client()
            .map_err(|m| StreamingError::Unreachable(Unreachable::from_string(m)))?;
        let data = codec::encode(&(&vote, &snapshot.meta)).map_err(|e| NetworkError::new(&e))?;
        let (first, file) = next_chunk(snapshot.snapshot)
            .await
            .map_err(|e| NetworkError::from_string(format!("read the snapshot to send: {e}")))?;
        let rest = futures::stream::unfold(Some(file), |file| async move {
            match next_chunk(file?).await {
                Ok((chunk, _)) if chunk.is_empty() => None,
                Ok((chunk, file)) => Some((
                    pb::RaftPayload {
                        data: Vec::new(),
                        blob: chunk,
                    },
                    Some(file),
                )),
                Err(e) => {
                    // Ending early makes the receiver's check fail (the file
                    // is cut); the error is what the log should say.
                    tracing::warn!(error = %e, "reading the snapshot to send failed");
                    None
                }
            }
        });
        let stream =
            futures::stream::once(async move { pb::RaftPayload { data, blob: first } }).chain(rest);
        let mut request = tonic::Request::new(stream);
        request.set_timeout(option.hard_ttl().max(Duration::from_secs(60)));
        let reply = client.install_snapshot(request).await.map_err(|s| {
            NetworkError::from_string(format!(
                "install_snapshot to node {} at {}: {}",
                self.target,
                self.addr,
                s.message()
            ))
        })?;
        let resp: SnapshotResponse<TypeConfig> =
            codec::decode(&reply.into_inner().data).map_err(|e| NetworkError::new(&e))?;
        Ok(resp)
    }
}

/// The next chunk of `data`, read or produced on tokio's blocking pool, and
/// `data` to go on from.
async fn next_chunk(mut data: SnapshotData) -> Result<(Vec<u8>, SnapshotData), String> {
    tokio::task::spawn_blocking(move || {
        let chunk = data.next_chunk();
        chunk.map(|c| (c, data)).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends carrying entries wait at least a second for a busy follower;
    /// heartbeats keep openraft's interval, and a longer ttl is kept.
    #[test]
    fn appends_outlast_a_busy_follower_and_heartbeats_do_not() {
        let hb = Duration::from_millis(100);
        assert_eq!(append_timeout(false, hb), APPEND_TIMEOUT);
        assert_eq!(append_timeout(true, hb), hb);
        assert_eq!(
            append_timeout(false, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}
