//! arbor-node: one replica of the arbor ledger.
//!
//! [`start_node`] is the one wiring function: RocksDB storage, openraft, the
//! gRPC services on two listeners — the client port (TLS) and the peer port
//! (mutual TLS, members only) — the membership reconciler and, on the
//! bootstrap replica, cluster initialisation. The binary (`main.rs`), the `dev` cluster and tests all
//! start replicas with it.

pub mod api;
pub mod bootstrap;
pub mod certs;
pub mod config;
pub mod dev;
pub mod error;
pub mod identity;
pub mod limits;
pub mod listener;
pub mod membership;
pub mod net;
pub mod proofs;
pub mod raft;
pub mod storage;
pub mod sweep;
pub mod tls;
pub mod types;

use std::net::SocketAddr;
use std::sync::Arc;

use arbor_proto::pb::arbor_server::ArborServer;
use arbor_proto::pb::raft_server::RaftServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tracing::info;

pub use config::NodeConfig;
pub use error::NodeError;

use crate::api::peer_auth::PeerAuth;
use crate::api::{ArborApi, RaftApi};
use crate::net::Peers;
use crate::raft::network::Network;
use crate::storage::LedgerReader;
use crate::types::Member;
use crate::types::NodeId;

/// The replica's raft handle: openraft over [`types::TypeConfig`] and the
/// RocksDB state machine. Declared here, at the root, so that `types`
/// (what the log carries), `storage` and `raft` (the network) import the
/// type config without importing each other.
pub type Raft = openraft::Raft<types::TypeConfig, storage::StateMachineStore>;

type ServerTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A running replica.
pub struct NodeHandle {
    pub id: NodeId,
    /// The client API address the replica is reachable at (the bound port when `listen` used port 0).
    pub addr: SocketAddr,
    /// The peer address it is bound to.
    pub peer_addr: SocketAddr,
    pub raft: Raft,
    pub reader: LedgerReader,
    /// This replica's checkpoint-signing identity.
    pub identity: identity::ReplicaIdentity,
    stop: Vec<oneshot::Sender<()>>,
    servers: Vec<ServerTask>,
}

impl NodeHandle {
    /// Stops serving and shuts raft down; storage is closed when the last handle drops.
    pub async fn shutdown(mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        let _ = self.raft.shutdown().await;
        for server in self.servers.drain(..) {
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

async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr), NodeError> {
    let listen_err = |source| NodeError::Listen {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(listen_err)?;
    let bound = listener.local_addr().map_err(listen_err)?;
    Ok((listener, bound))
}

fn with_tls<L>(
    server: tonic::transport::Server<L>,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<tonic::transport::Server<L>, NodeError> {
    match tls {
        Some(t) => server
            .tls_config(t)
            .map_err(|e| NodeError::Tls(e.to_string())),
        None => Ok(server),
    }
}

/// Starts one replica as configured and returns once it is serving.
pub async fn start_node(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    listener::raise_fd_limit_logged();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let tls = if config.insecure_plaintext {
        tracing::warn!(
            "insecure-plaintext: both ports serve without TLS and the peer port authenticates nobody"
        );
        None
    } else {
        Some(config.tls.load()?)
    };
    let (listener, bound) = bind(&config.listen).await?;
    let (peer_listener, peer_bound) = bind(&config.peer_listen).await?;
    // With port 0 the advertised address is the bound one.
    let addr = match &config.advertise {
        Some(a) => a.clone(),
        None => bound.to_string(),
    };
    let peer_addr = match &config.peer_advertise {
        Some(a) => a.clone(),
        None => peer_bound.to_string(),
    };
    let me = Member {
        addr: addr.clone(),
        peer_addr: peer_addr.clone(),
    };
    let peers = Peers::new(
        config.parsed_source_ip()?,
        tls.clone(),
        config.limits.max_peer_message_bytes,
    );

    let (log_store, sm) =
        storage::open(&config.data_dir).map_err(|e| NodeError::Storage(e.to_string()))?;
    let reader = sm.reader();
    let applied = sm.applied_head();
    let raft = Raft::new(
        config.id,
        raft_config(&config)?,
        Network::new(peers.clone()),
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
        peer_addr: peer_addr.clone(),
        raft: raft.clone(),
        reader: reader.clone(),
        peers,
        identity: identity.clone(),
        leaves: proofs::LeafCache::new(reader.clone()),
        applied,
        admission: api::admission::Admission::start(config.limits.max_pending_admission),
        limits: limits::ApiLimits::new(&config.limits),
    };
    let auth = PeerAuth::new(raft.clone(), tls.is_some());
    let raft_api = RaftApi {
        raft: raft.clone(),
        auth: auth.clone(),
        api: api.clone(),
    };
    let members_only = move |req: tonic::Request<()>| auth.member(&req).map(|_| req);

    let mut stops = Vec::new();
    let mut servers = Vec::new();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    stops.push(stop_tx);
    let incoming = listener::Incoming::new(listener, &config.limits);
    let client_server = with_tls(incoming.server(), tls.as_ref().map(|t| t.client_server()))?
        .add_service(
            ArborServer::new(api.clone())
                .max_decoding_message_size(config.limits.max_client_message_bytes)
                .max_encoding_message_size(config.limits.max_client_reply_bytes()),
        )
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    servers.push(tokio::spawn(client_server));

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    stops.push(stop_tx);
    let peer_max = config.limits.max_peer_message_bytes;
    let peer_incoming = listener::Incoming::new(peer_listener, &config.limits).for_peers();
    let peer_server = with_tls(
        peer_incoming.server(),
        tls.as_ref().map(|t| t.peer_server()),
    )?
    .add_service(InterceptedService::new(
        RaftServer::new(raft_api)
            .max_decoding_message_size(peer_max)
            .max_encoding_message_size(peer_max),
        members_only.clone(),
    ))
    .add_service(InterceptedService::new(
        ArborServer::new(api)
            .max_decoding_message_size(peer_max)
            .max_encoding_message_size(peer_max),
        members_only,
    ))
    .serve_with_incoming_shutdown(peer_incoming, async {
        let _ = stop_rx.await;
    });
    servers.push(tokio::spawn(peer_server));
    info!(node = config.id, %addr, %peer_addr, tls = tls.is_some(), data_dir = %config.data_dir.display(), "replica serving");

    if config.bootstrap {
        let mut members = config.parsed_members()?;
        members.entry(config.id).or_insert_with(|| me.clone());
        bootstrap::Bootstrap {
            id: config.id,
            me: me.clone(),
            raft: raft.clone(),
            reader: reader.clone(),
            data_dir: config.data_dir.clone(),
            cluster_id: config.cluster_id.clone(),
            lease_grace_ms: config.lease_grace_ms,
            fence_ms: config.fence_ms,
            operators: config.parsed_operators()?,
            members,
        }
        .start()
        .await
        .map_err(NodeError::Bootstrap)?;
    }

    membership::spawn(raft.clone(), reader.clone());

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
        peer_addr: peer_bound,
        raft,
        reader,
        identity,
        stop: stops,
        servers,
    })
}
