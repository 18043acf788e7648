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
pub mod health;
pub mod identity;
pub mod limits;
pub mod listener;
pub mod membership;
pub mod metrics;
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
    /// The `/metrics` address it is bound to, if `metrics-listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: metrics::Metrics,
    monitor: health::Monitor,
    stop: Vec<oneshot::Sender<()>>,
    servers: Vec<ServerTask>,
}

impl NodeHandle {
    /// Resolves, with the reason, once this replica can never serve again
    /// (raft's core stopped, or storage found corruption): see `health.rs`.
    pub fn stopped(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        self.monitor.stopped()
    }

    /// Stops serving and shuts raft down; storage is closed when the last handle drops.
    pub async fn shutdown(mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        let _ = self.raft.shutdown().await;
        for server in self.servers.drain(..) {
            let _ = server.await;
        }
        // Memtables to SST files: the next start replays little WAL.
        if self.reader.fault().get().is_none() {
            if let Err(e) = self.reader.flush() {
                tracing::warn!(node = self.id, error = %e, "cannot flush storage at shutdown");
            }
        }
        info!(node = self.id, "replica stopped");
    }
}

fn raft_config(c: &NodeConfig, recovering: bool) -> Result<Arc<openraft::Config>, NodeError> {
    let cfg = openraft::Config {
        cluster_name: c.cluster_id.clone(),
        heartbeat_interval: c.heartbeat_ms,
        election_timeout_min: c.election_timeout_min_ms,
        election_timeout_max: c.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(c.snapshot_every),
        max_in_snapshot_log_to_keep: c.keep_logs,
        install_snapshot_timeout: 60_000,
        // A follower rebuilt by `arbor-node recover` comes back with an empty
        // log: the leader resends instead of panicking (see health::Recovery
        // for why that replica does not vote until it has caught up).
        allow_log_reversion: Some(true),
        // A recovering replica starts no election (health::Recovery).
        enable_elect: !recovering,
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

    let metrics = metrics::Metrics::new();
    let recovery = health::Recovery::load(&config.data_dir);
    let (log_store, sm, wal_damage) = storage::open_checked(&config.data_dir, metrics.clone(), true, &config.storage)
        .map_err(|e| NodeError::Storage(format!("{e} (docs/operations.md \"Disk faults\": `arbor-node recover` rebuilds this replica from its peers)")))?;
    let reader = sm.reader();
    let applied = sm.applied_head();
    let snapshot_inbox = sm.snapshot_inbox();
    {
        let r = reader.clone();
        let scrubbed = tokio::task::spawn_blocking(move || r.scrub())
            .await
            .map_err(|e| NodeError::Storage(e.to_string()))?
            .map_err(|e| NodeError::Storage(format!("{e} (docs/operations.md \"Disk faults\": `arbor-node recover` rebuilds this replica from its peers)")))?;
        info!(
            node = config.id,
            records = scrubbed,
            "storage checked: every record read, checksums verified"
        );
    }
    if wal_damage.is_some() {
        recovery
            .begin()
            .map_err(|e| NodeError::Storage(format!("cannot write the recovery marker: {e}")))?;
    }
    if recovery.active() {
        tracing::warn!(node = config.id, "recovering: this replica neither votes nor serves until it has caught up with the cluster");
    }
    let raft = Raft::new(
        config.id,
        raft_config(&config, recovery.active())?,
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
        leaves: proofs::MerkleProofs::new(reader.clone()),
        applied,
        admission: api::admission::Admission::start(config.limits.max_pending_admission)
            .with_metrics(metrics.clone()),
        reads: api::read_index::ReadIndex::new(raft.clone()),
        limits: limits::ApiLimits::new(&config.limits),
        metrics: metrics.clone(),
        recovery: recovery.clone(),
    };
    let watch_limits = api.limits.clone();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    for s in health::SERVICES {
        health_reporter
            .set_service_status(s, tonic_health::ServingStatus::NotServing)
            .await;
    }
    // Reflection v1, and v1alpha for older tools (grpcurl, grpcui).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(arbor_proto::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_err =
        |e: tonic_reflection::server::Error| NodeError::Raft(format!("reflection: {e}"));
    let reflection = reflection_builder().build_v1().map_err(reflection_err)?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(reflection_err)?;
    let auth = PeerAuth::new(raft.clone(), tls.is_some());
    let raft_api = RaftApi {
        raft: raft.clone(),
        auth: auth.clone(),
        api: api.clone(),
        snapshots: snapshot_inbox,
    };
    let members_only = move |req: tonic::Request<()>| auth.member(&req).map(|_| req);

    let mut stops = Vec::new();
    let mut servers = Vec::new();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    stops.push(stop_tx);
    let incoming = listener::Incoming::new(listener, &config.limits);
    let client_open = incoming.open_counter();
    let client_server = with_tls(incoming.server(), tls.as_ref().map(|t| t.client_server()))?
        .layer(metrics::GrpcLayer {
            metrics: metrics.clone(),
            port: "client",
        })
        .layer(health::RecoveryGate {
            recovery: recovery.clone(),
        })
        .add_service(health_service.clone())
        .add_service(reflection)
        .add_service(reflection_alpha)
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
    let peer_open = peer_incoming.open_counter();
    let peer_server = with_tls(
        peer_incoming.server(),
        tls.as_ref().map(|t| t.peer_server()),
    )?
    .layer(metrics::GrpcLayer {
        metrics: metrics.clone(),
        port: "peer",
    })
    .add_service(health_service)
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

    sample_on_scrape(
        &metrics,
        &raft,
        &reader,
        &watch_limits,
        client_open,
        peer_open,
    );
    let metrics_addr = match &config.metrics_listen {
        None => None,
        Some(a) => {
            let (l, bound) = metrics::bind(a).await.map_err(|source| NodeError::Listen {
                addr: a.clone(),
                source,
            })?;
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stops.push(stop_tx);
            tokio::spawn(metrics::serve(l, metrics.clone(), async {
                let _ = stop_rx.await;
            }));
            Some(bound)
        }
    };
    let monitor = health::Watch {
        id: config.id,
        raft: raft.clone(),
        reporter: health_reporter,
        fault: reader.fault().clone(),
        recovery,
        metrics: metrics.clone(),
        quorum_timeout: std::time::Duration::from_millis(2 * config.election_timeout_max_ms),
    }
    .spawn();
    info!(node = config.id, %addr, %peer_addr, metrics = ?metrics_addr, tls = tls.is_some(), data_dir = %config.data_dir.display(), "replica serving");

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
            claim_deadlines: config.parsed_claim_deadlines()?,
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
        metrics_addr,
        metrics,
        monitor,
        stop: stops,
        servers,
    })
}

/// State owned elsewhere, read into the metrics when Prometheus scrapes.
fn sample_on_scrape(
    m: &metrics::Metrics,
    raft: &Raft,
    reader: &LedgerReader,
    limits: &limits::ApiLimits,
    client_open: listener::OpenCount,
    peer_open: listener::OpenCount,
) {
    use openraft::async_runtime::WatchReceiver;
    let raft = raft.clone();
    let reader = reader.clone();
    let limits = limits.clone();
    m.on_scrape(move |m| {
        let r = raft.metrics().borrow_watched().clone();
        let set = metrics::Metrics::set;
        set(&m.raft_term, r.current_term);
        set(&m.raft_leader_id, r.current_leader.unwrap_or(0));
        set(
            &m.raft_is_leader,
            u64::from(r.state == openraft::ServerState::Leader),
        );
        set(&m.raft_last_log_index, r.last_log_index.unwrap_or(0));
        set(
            &m.raft_committed_index,
            r.local_committed.map(|l| l.index).unwrap_or(0),
        );
        set(
            &m.raft_applied_index,
            r.last_applied.map(|l| l.index).unwrap_or(0),
        );
        set(
            &m.raft_snapshot_index,
            r.snapshot.map(|l| l.index).unwrap_or(0),
        );
        set(&m.raft_purged_index, r.purged.map(|l| l.index).unwrap_or(0));
        set(
            &m.raft_voters,
            r.membership_config.membership().voter_ids().count() as u64,
        );
        m.raft_replication_lag.clear();
        if let Some(repl) = &r.replication {
            let last = r.last_log_index.unwrap_or(0);
            for (id, matched) in repl.iter() {
                let matched = matched.as_ref().map(|l| l.index).unwrap_or(0);
                if *id != r.id {
                    set(
                        &m.raft_replication_lag
                            .get_or_create(&metrics::FollowerLabels {
                                follower: id.to_string(),
                            }),
                        last.saturating_sub(matched),
                    );
                }
            }
        }
        for (port, open) in [("client", &client_open), ("peer", &peer_open)] {
            set(
                &m.open_connections
                    .get_or_create(&metrics::PortLabels { port }),
                open.get() as u64,
            );
        }
        set(&m.watch_streams, limits.watch_streams_open() as u64);
        let (running, pending) = reader.compaction_state();
        set(&m.rocksdb_compactions_running, running);
        set(&m.rocksdb_compaction_pending, pending);
    });
}
