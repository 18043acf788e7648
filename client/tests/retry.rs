//! The client's retry loop against scripted in-process servers: leader hints,
//! rotation past dead endpoints, identical resends, and no retry on final answers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_client::pb::arbor_server::{Arbor, ArborServer};
use arbor_client::{pb, Client, ClientError, Commands, Identity, Transport, LEADER_HEADER};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

/// One scripted failure: a code, and maybe a leader hint.
type Failure = (Code, Option<String>);
/// One call received: the method, and the submitted command if any.
type Call = (&'static str, Option<pb::SignedCommand>);

#[derive(Clone, Default)]
struct Mock {
    /// Answered in order, one per call, before calls succeed.
    script: Arc<Mutex<VecDeque<Failure>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Mock {
    fn failing(script: Vec<Failure>) -> Mock {
        Mock {
            script: Arc::new(Mutex::new(script.into())),
            ..Mock::default()
        }
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn next(&self, method: &'static str, cmd: Option<pb::SignedCommand>) -> Result<(), Status> {
        self.calls.lock().unwrap().push((method, cmd));
        match self.script.lock().unwrap().pop_front() {
            None => Ok(()),
            Some((code, hint)) => {
                let mut s = Status::new(code, format!("scripted {code:?}"));
                if let Some(h) = hint {
                    s.metadata_mut().insert(LEADER_HEADER, h.parse().unwrap());
                }
                Err(s)
            }
        }
    }
}

#[tonic::async_trait]
impl Arbor for Mock {
    async fn submit(
        &self,
        r: Request<pb::SignedCommand>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        self.next("submit", Some(r.into_inner()))?;
        Ok(Response::new(pb::SubmitReply {
            seq: 7,
            outcome: Some(pb::Outcome {
                accepted: true,
                code: "accepted".into(),
                message: String::new(),
            }),
            entry_hash: vec![0; 32],
            duplicate: false,
            owner: String::new(),
        }))
    }
    async fn get_order(
        &self,
        r: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::OrderView>, Status> {
        self.next("get_order", None)?;
        let r = r.into_inner();
        if r.order_id == "missing" {
            return Err(Status::not_found("no order \"missing\""));
        }
        Ok(Response::new(pb::OrderView {
            order_id: r.order_id,
            status: if r.local {
                "local".into()
            } else {
                "open".into()
            },
            ..Default::default()
        }))
    }
    async fn resolve_ref(
        &self,
        _: Request<pb::ResolveRefRequest>,
    ) -> Result<Response<pb::OrderView>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_party(
        &self,
        _: Request<pb::GetPartyRequest>,
    ) -> Result<Response<pb::PartyView>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_profile(
        &self,
        _: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::ProfileView>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn list_profiles(
        &self,
        _: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesReply>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn list_orders(
        &self,
        _: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersReply>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn preview_ruling(
        &self,
        _: Request<pb::PreviewRulingRequest>,
    ) -> Result<Response<pb::Ruling>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_node_stats(
        &self,
        _: Request<pb::GetNodeStatsRequest>,
    ) -> Result<Response<pb::NodeStatsView>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_entries(
        &self,
        _: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesReply>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn local_status(
        &self,
        _: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatusReply>, Status> {
        self.next("local_status", None)?;
        Ok(Response::new(pb::LocalStatusReply {
            node_id: 9,
            ..Default::default()
        }))
    }
    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_checkpoint(
        &self,
        _: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::CheckpointReply>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_inclusion_proof(
        &self,
        _: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProofReply>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_consistency_proof(
        &self,
        _: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProofReply>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_order_map_proof(
        &self,
        _: Request<pb::OrderMapProofRequest>,
    ) -> Result<Response<pb::OrderMapProofReply>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_replica_identity(
        &self,
        _: Request<pb::ReplicaIdentityRequest>,
    ) -> Result<Response<pb::ReplicaIdentity>, Status> {
        Err(Status::unimplemented("mock"))
    }

    type WatchEntriesStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::LedgerEntry, Status>> + Send>>;

    async fn watch_entries(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchEntriesStream>, Status> {
        Err(Status::unimplemented("mock"))
    }
}

/// Serves `mock` on a fresh local port; returns "127.0.0.1:PORT".
async fn serve(mock: Mock) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ArborServer::new(mock))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn follows_the_leader_hint_outside_the_endpoint_list() {
    let leader = Mock::default();
    let leader_addr = serve(leader.clone()).await;
    let follower = Mock::failing(vec![(Code::Unavailable, Some(leader_addr.clone()))]);
    let follower_addr = serve(follower.clone()).await;

    let client = Client::connect(&[follower_addr], &Transport::InsecurePlaintext)
        .await
        .unwrap();
    let id = Identity::generate("store-1").for_cluster("arbor");
    let cmd = id.claim_order("o-1", 1, 5);
    let reply = client.submit(cmd.clone()).await.unwrap();
    assert_eq!(reply.seq, 7);
    assert_eq!(follower.calls(), 1);
    assert_eq!(leader.calls(), 1);
    assert_eq!(
        leader.calls.lock().unwrap()[0].1.as_ref(),
        Some(&cmd),
        "resent as is"
    );
}

#[tokio::test]
async fn rotates_past_dead_and_unavailable_replicas_resending_identical_bytes() {
    let busy = Mock::failing(vec![(Code::Unavailable, None), (Code::Unavailable, None)]);
    let busy_addr = serve(busy.clone()).await;
    let client = Client::connect(
        &[format!("{},{busy_addr}", dead_addr())],
        &Transport::InsecurePlaintext,
    )
    .await
    .unwrap()
    .with_timeout(Duration::from_secs(5));
    let cmd = Identity::generate("store-1")
        .for_cluster("arbor")
        .claim_order("o-1", 1, 5);
    client.submit(cmd.clone()).await.unwrap();
    let calls = busy.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|(_, c)| c.as_ref() == Some(&cmd)));
}

#[tokio::test]
async fn final_answers_are_not_retried() {
    let mock = Mock::default();
    let addr = serve(mock.clone()).await;
    let client = Client::connect(&[addr.clone(), addr], &Transport::InsecurePlaintext)
        .await
        .unwrap();
    let err = client.get_order("missing").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound));
    assert!(matches!(err, ClientError::Status { .. }));
    assert_eq!(err.to_string(), "not found: no order \"missing\"");
    assert_eq!(mock.calls(), 1);

    for code in [
        Code::InvalidArgument,
        Code::PermissionDenied,
        Code::Unauthenticated,
        Code::FailedPrecondition,
    ] {
        let mock = Mock::failing(vec![(code, None)]);
        let client = Client::connect(&[serve(mock.clone()).await], &Transport::InsecurePlaintext)
            .await
            .unwrap();
        let err = client
            .submit(
                Identity::generate("x")
                    .for_cluster("arbor")
                    .claim_order("o", 1, 1),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(code));
        assert_eq!(mock.calls(), 1, "{code:?}");
    }
}

#[tokio::test]
async fn gives_up_at_the_deadline_with_the_last_error() {
    let mock = Mock::failing(vec![(Code::Unavailable, None); 1000]);
    let client = Client::connect(&[serve(mock.clone()).await], &Transport::InsecurePlaintext)
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let err = client.get_order("o-1").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, ClientError::Unavailable(ref m) if m.contains("scripted")),
        "{err}"
    );
    assert!(
        mock.calls() >= 3,
        "backed off and retried: {}",
        mock.calls()
    );
}

#[tokio::test]
async fn local_calls_ask_one_replica_once() {
    let mock = Mock::failing(vec![(Code::Unavailable, None)]);
    let addr = serve(mock.clone()).await;
    let err = Client::local_order(&Transport::InsecurePlaintext, &addr, "o-1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable));
    assert_eq!(mock.calls(), 1);
    let o = Client::local_order(&Transport::InsecurePlaintext, &addr, "o-1")
        .await
        .unwrap();
    assert_eq!(o.status, "local");
    assert_eq!(
        Client::local_status(&Transport::InsecurePlaintext, &addr)
            .await
            .unwrap()
            .node_id,
        9
    );
}
