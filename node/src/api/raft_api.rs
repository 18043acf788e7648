//! The replica-to-replica service, on the peer port only: hands raft RPCs to
//! the local openraft once the caller is authenticated as the member it
//! claims to be ([`super::peer_auth`]) and the message is plausible (terms
//! and indexes far from overflow, no jump of the term beyond
//! [`MAX_TERM_STEP`]); cosigns checkpoints for members.
//!
//! openraft trusts its network: a vote with term u64::MAX would be granted,
//! persisted and then overflow at the next election. Nothing reaches it
//! before these checks.

use super::status;

use arbor_proto::pb;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, VoteOf};
use tonic::{Request, Response, Status};

use super::client_api::ArborApi;
use super::peer_auth::PeerAuth;
use crate::raft::codec;
use crate::storage::{SnapshotData, SnapshotInbox};
use crate::types::TypeConfig;
use crate::Raft;

/// No term or log index a peer sends may reach this: far below overflow.
pub const MAX_TERM: u64 = 1 << 48;
pub const MAX_INDEX: u64 = 1 << 62;
/// How far beyond this replica's current term a peer's term may be.
pub const MAX_TERM_STEP: u64 = 1 << 20;

pub struct RaftApi {
    pub raft: Raft,
    pub auth: PeerAuth,
    /// For cosigning (this replica's ledger and identity).
    pub api: ArborApi,
    /// Where snapshots sent by the leader are received.
    pub snapshots: SnapshotInbox,
}

fn decode<T: serde::de::DeserializeOwned>(p: &pb::RaftPayload) -> Result<T, Status> {
    codec::decode(&p.data)
        .map_err(|e| status::invalid(format!("raft payload does not decode: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let data = codec::encode(v)
        .map_err(|e| status::internal(format!("raft reply does not encode: {e}")))?;
    Ok(Response::new(pb::RaftPayload {
        data,
        blob: Vec::new(),
    }))
}

impl RaftApi {
    fn current_term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The vote's sender must be the caller, and its term plausible.
    fn check_vote<T>(&self, req: &Request<T>, vote: &VoteOf<TypeConfig>) -> Result<u64, Status> {
        let term = vote.leader_id.term;
        self.auth.claims(req, vote.leader_id.node_id)?;
        let current = self.current_term();
        if term >= MAX_TERM || term > current.saturating_add(MAX_TERM_STEP) {
            return Err(self.auth.implausible(
                req,
                format!(
                    "term {term} is implausible (this replica is at term {current}; at most {MAX_TERM_STEP} ahead and below {MAX_TERM})"
                ),
            ));
        }
        Ok(term)
    }

    fn check_log_id<T>(
        &self,
        req: &Request<T>,
        what: &str,
        log_id: Option<&LogIdOf<TypeConfig>>,
        term: u64,
    ) -> Result<(), Status> {
        let Some(l) = log_id else { return Ok(()) };
        if l.index >= MAX_INDEX || l.leader_id.term > term {
            return Err(self.auth.implausible(
                req,
                format!(
                    "{what} {}-{} is implausible for a message of term {term}",
                    l.leader_id.term, l.index
                ),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftApi {
    async fn append_entries(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        let term = self.check_vote(&req, &rpc.vote)?;
        self.check_log_id(&req, "prev_log_id", rpc.prev_log_id.as_ref(), term)?;
        self.check_log_id(&req, "leader_commit", rpc.leader_commit.as_ref(), term)?;
        for e in &rpc.entries {
            self.check_log_id(&req, "entry", Some(&e.log_id), term)?;
        }
        let resp = self
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| status::unavailable(format!("append_entries: {e}"), None))?;
        encode(&resp)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(req.get_ref())?;
        crate::health::refuse_vote_while_recovering(&self.api.recovery)?;
        let term = self.check_vote(&req, &rpc.vote)?;
        self.check_log_id(&req, "last_log_id", rpc.last_log_id.as_ref(), term)?;
        let resp = self
            .raft
            .vote(rpc)
            .await
            .map_err(|e| status::unavailable(format!("vote: {e}"), None))?;
        encode(&resp)
    }

    async fn install_snapshot(
        &self,
        req: Request<tonic::Streaming<pb::RaftPayload>>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        // The first message names the vote and the snapshot: checked before
        // a byte of data is accepted.
        let (meta_req, mut chunks) = {
            let (metadata, extensions, mut stream) = req.into_parts();
            let first = stream
                .message()
                .await?
                .ok_or_else(|| status::invalid("snapshot stream is empty".to_string()))?;
            (
                Request::from_parts(metadata, extensions, ()),
                (first, stream),
            )
        };
        let (vote, meta): (VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>) = decode(&chunks.0)?;
        let term = self.check_vote(&meta_req, &vote)?;
        self.check_log_id(
            &meta_req,
            "snapshot last_log_id",
            meta.last_log_id.as_ref(),
            term,
        )?;
        // Received into a file chunk by chunk: memory holds one chunk.
        let mut incoming = self
            .snapshots
            .create()
            .map_err(|e| status::internal(format!("receive snapshot: {e}")))?;
        let mut chunk = std::mem::take(&mut chunks.0.blob);
        loop {
            incoming
                .write(&chunk)
                .map_err(|e| status::internal(format!("receive snapshot: {e}")))?;
            match chunks.1.message().await? {
                Some(next) => chunk = next.blob,
                None => break,
            }
        }
        let head = self
            .api
            .reader
            .head()
            .map_err(status::internal)?
            .map(|h| (h.seq, h.hash));
        let (incoming, checked) = tokio::task::spawn_blocking(move || {
            let checked = incoming
                .finish()
                .map_err(|e| e.to_string())
                .and_then(|path| crate::storage::snapshot::check_snapshot_file(path, &meta, head))
                .map(|()| meta);
            (incoming, checked)
        })
        .await
        .map_err(|e| status::internal(format!("check snapshot: {e}")))?;
        let meta = checked.map_err(|e| status::invalid(format!("snapshot refused: {e}")))?;
        let data = incoming
            .into_data()
            .map_err(|e| status::internal(format!("receive snapshot: {e}")))?;
        let snapshot: SnapshotOf<TypeConfig, SnapshotData> = openraft::Snapshot {
            meta,
            snapshot: data,
        };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| status::unavailable(format!("install_snapshot: {e}"), None))?;
        encode(&resp)
    }

    async fn cosign_checkpoint(
        &self,
        req: Request<pb::CosignRequest>,
    ) -> Result<Response<pb::CosignReply>, Status> {
        self.api.cosign(req.into_inner()).await.map(Response::new)
    }
}
