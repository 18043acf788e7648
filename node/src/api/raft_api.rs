//! The replica-to-replica service: hands raft RPCs to the local openraft.

use std::io::Cursor;

use arbor_proto::pb;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use tonic::{Request, Response, Status};

use crate::raft::codec;
use crate::types::TypeConfig;
use crate::Raft;

pub struct RaftApi {
    pub raft: Raft,
}

fn decode<T: serde::de::DeserializeOwned>(p: &pb::RaftPayload) -> Result<T, Status> {
    codec::decode(&p.data)
        .map_err(|e| Status::invalid_argument(format!("raft payload does not decode: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let data = codec::encode(v)
        .map_err(|e| Status::internal(format!("raft reply does not encode: {e}")))?;
    Ok(Response::new(pb::RaftPayload {
        data,
        blob: Vec::new(),
    }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftApi {
    async fn append_entries(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        let resp = self
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| Status::unavailable(format!("append_entries: {e}")))?;
        encode(&resp)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(req.get_ref())?;
        let resp = self
            .raft
            .vote(rpc)
            .await
            .map_err(|e| Status::unavailable(format!("vote: {e}")))?;
        encode(&resp)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let payload = req.into_inner();
        let (vote, meta): (VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>) = decode(&payload)?;
        let snapshot: SnapshotOf<TypeConfig, Cursor<Vec<u8>>> = openraft::Snapshot {
            meta,
            snapshot: Cursor::new(payload.blob),
        };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| Status::unavailable(format!("install_snapshot: {e}")))?;
        encode(&resp)
    }
}
