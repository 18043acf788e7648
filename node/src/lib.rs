//! arbor-node: one replica of the arbor ledger.
//!
//! [`start_node`] is the one wiring function: RocksDB storage, openraft, the
//! gRPC services and, on the bootstrap replica, cluster initialisation. The
//! binary (`main.rs`), the `dev` cluster and tests all start replicas with it.

pub mod api;
pub mod bootstrap;
pub mod config;
pub mod dev;
pub mod error;
pub mod identity;
pub mod limits;
pub mod listener;
pub mod net;
pub mod proofs;
pub mod raft;
pub mod storage;
pub mod sweep;

use std::net::SocketAddr;
use std::sync::Arc;

use arbor_proto::pb::arbor_server::ArborServer;
use arbor_proto::pb::raft_server::RaftServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

pub use config::NodeConfig;
pub use error::NodeError;

use crate::api::routing::Peers;
use crate::api::{ArborApi, RaftApi};
use crate::raft::network::{Network, MAX_RAFT_MESSAGE};
use crate::raft::{NodeId, Raft};
use crate::storage::LedgerReader;

/// A running replica.
pub struct NodeHandle {
    pub id: NodeId,
    /// The address the replica is reachable at (the bound port when `listen` used port 0).
    pub addr: SocketAddr,
    pub raft: Raft,
    pub reader: LedgerReader,
    /// This replica's checkpoint-signing identity.
    pub identity: identity::ReplicaIdentity,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl NodeHandle {
    /// Stops serving and shuts raft down; storage is closed when the last handle drops.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.raft.shutdown().await;
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        info!(node = self.id, "replica stopped");
    }
}

fn raft_config(c: &NodeConfig) -> Result<Arc<openraft::Config>, NodeError> {
    let cfg = openraft::Config {
        cluster_name: c.cluster_id.clone(),
        heartbeat_interval: c.heartbeat_ms,
        election_timeout_min: c.election_timeout_min_ms,
        election_timeout_max: c.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(c.snapshot_every),
        max_in_snapshot_log_to_keep: c.keep_logs,
        install_snapshot_timeout: 60_000,
        ..Default::default()
    };
    cfg.validate()
        .map(Arc::new)
        .map_err(|e| NodeError::Raft(e.to_string()))
}

/// Starts one replica as configured and returns once it is serving.
pub async fn start_node(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    listener::raise_fd_limit_logged();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| NodeError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    // With port 0 the advertised address is the bound one.
    let addr = match &config.advertise {
        Some(a) => a.clone(),
        None => bound.to_string(),
    };

    let (log_store, sm) =
        storage::open(&config.data_dir).map_err(|e| NodeError::Storage(e.to_string()))?;
    let reader = sm.reader();
    let applied = sm.applied_head();
    let raft = Raft::new(
        config.id,
        raft_config(&config)?,
        Network::new(config.parsed_source_ip()?),
        log_store,
        sm,
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;

    let identity =
        identity::ReplicaIdentity::load_or_create(&config.data_dir.join("identity.key"), config.id)
            .map_err(NodeError::Identity)?;
    let api = ArborApi {
        id: config.id,
        addr: addr.clone(),
        raft: raft.clone(),
        reader: reader.clone(),
        peers: Peers::new(config.parsed_source_ip()?)
            .with_max_reply(config.limits.max_client_reply_bytes()),
        identity: identity.clone(),
        leaves: proofs::LeafCache::new(reader.clone()),
        applied,
        admission: api::admission::Admission::start(config.limits.max_pending_admission),
        limits: limits::ApiLimits::new(&config.limits),
    };
    let raft_api = RaftApi { raft: raft.clone() };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let incoming = listener::Incoming::new(listener, &config.limits);
    let server = incoming
        .server()
        .add_service(
            ArborServer::new(api)
                .max_decoding_message_size(config.limits.max_client_message_bytes)
                .max_encoding_message_size(config.limits.max_client_reply_bytes()),
        )
        .add_service(
            RaftServer::new(raft_api)
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    let server = tokio::spawn(server);
    info!(node = config.id, %addr, data_dir = %config.data_dir.display(), "replica serving");

    if config.bootstrap {
        let mut members = config.parsed_members()?;
        members.entry(config.id).or_insert_with(|| addr.clone());
        bootstrap::Bootstrap {
            id: config.id,
            addr: addr.clone(),
            raft: raft.clone(),
            reader: reader.clone(),
            data_dir: config.data_dir.clone(),
            cluster_id: config.cluster_id.clone(),
            lease_grace_ms: config.lease_grace_ms,
            operators: config.parsed_operators()?,
            members,
        }
        .start()
        .await
        .map_err(NodeError::Bootstrap)?;
    }

    if config.lapse_sweep_ms > 0 {
        sweep::spawn(
            raft.clone(),
            reader.clone(),
            identity.clone(),
            std::time::Duration::from_millis(config.lapse_sweep_ms),
        );
    }

    Ok(NodeHandle {
        id: config.id,
        addr: bound,
        raft,
        reader,
        identity,
        stop: Some(stop_tx),
        server: Some(server),
    })
}
