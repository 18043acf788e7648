//! The replica's Prometheus metrics, and the small HTTP server that serves
//! them at `GET /metrics` on `metrics-listen` (its own address: scraping
//! never competes with the client port's connection limits, and needs no
//! TLS client).
//!
//! Why it is shaped so:
//!
//! - **One [`Metrics`] per replica, not a process-wide registry.** `arbor-node
//!   dev` runs three replicas in one process, each with its own endpoint; a
//!   global registry would mix them. The handle is cheap to clone and is
//!   handed to storage (log append, apply, snapshots), the API (proposals,
//!   refusals), admission (batch sizes) and the per-RPC layer ([`GrpcLayer`]).
//! - **Events are counted where they happen; state is sampled at scrape
//!   time.** Counters and histograms are updated on the hot path (an atomic
//!   add). Raft's state (term, leader, indexes, per-follower lag), open
//!   connections, watch streams and RocksDB's compaction state are read from
//!   their owners by [`Metrics::sample`] when Prometheus scrapes, so nothing
//!   polls in between.
//! - **The names are a contract.** docs/monitoring/ (dashboard, alerts)
//!   names them, and a cluster test scrapes a real replica and checks that
//!   every name those files use is exported.
//!
//! Built on `prometheus-client` (text exposition format) and hyper's HTTP/1
//! server, which tonic already brings in.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tonic::codegen::http;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub port: &'static str,
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub port: &'static str,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
    pub outcome: &'static str,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    pub follower: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    pub port: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

type FGauge = Gauge<f64, AtomicU64>;
type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

/// The refusal reason of a call answered RESOURCE_EXHAUSTED (a `[limits]` key).
pub const RESOURCE_LIMIT: &str = "resource_limit";
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

fn sizes() -> Histogram {
    // 1 .. 4096
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Everything a replica exports. Clone freely: every field shares its data.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// The metrics themselves (reached through [`Metrics`]).
pub struct Inner {
    registry: Registry,
    samplers: Mutex<Vec<Sampler>>,

    // --- raft state (sampled) ---
    pub raft_term: Gauge,
    pub raft_leader_id: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_leader_changes: Counter,
    pub raft_last_log_index: Gauge,
    pub raft_committed_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_snapshot_index: Gauge,
    pub raft_purged_index: Gauge,
    pub raft_replication_lag: Family<FollowerLabels, Gauge>,
    pub raft_voters: Gauge,
    pub serving: Gauge,
    pub recovering: Gauge,
    pub storage_fault: Gauge,
    pub up_seconds: FGauge,

    // --- requests ---
    pub grpc_requests: Family<RpcLabels, Counter>,
    pub grpc_duration: HistogramFamily<MethodLabels>,
    pub proposals: Family<ResultLabels, Counter>,
    pub refusals: Family<ReasonLabels, Counter>,
    pub commands_applied: Family<CommandLabels, Counter>,
    pub admission_batch: Histogram,

    // --- storage ---
    pub log_append_seconds: Histogram,
    pub log_append_entries: Histogram,
    pub apply_batch_seconds: Histogram,
    pub apply_batch_entries: Histogram,
    pub snapshots: Family<KindLabels, Counter>,
    pub log_purges: Counter,
    pub rocksdb_compactions_running: Gauge,
    pub rocksdb_compaction_pending: Gauge,

    // --- connections (sampled) ---
    pub open_connections: Family<PortLabels, Gauge>,
    pub watch_streams: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("arbor");
        macro_rules! reg {
            ($name:literal, $help:literal, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let started = Instant::now();
        let up_seconds: FGauge = Gauge::default();
        let inner = Inner {
            raft_term: reg!("raft_term", "Current raft term", Gauge::default()),
            raft_leader_id: reg!(
                "raft_leader_id",
                "Node id of the leader this replica knows (0: none)",
                Gauge::default()
            ),
            raft_is_leader: reg!(
                "raft_is_leader",
                "1 while this replica is the leader",
                Gauge::default()
            ),
            raft_leader_changes: reg!(
                "raft_leader_changes",
                "Times the leader this replica knows changed (including to none)",
                Counter::default()
            ),
            raft_last_log_index: reg!(
                "raft_last_log_index",
                "Index of the last entry in this replica's raft log",
                Gauge::default()
            ),
            raft_committed_index: reg!(
                "raft_committed_index",
                "Highest raft log index this replica knows committed",
                Gauge::default()
            ),
            raft_applied_index: reg!(
                "raft_applied_index",
                "Highest raft log index applied to this replica's state machine",
                Gauge::default()
            ),
            raft_snapshot_index: reg!(
                "raft_snapshot_index",
                "Last raft log index included in this replica's snapshot",
                Gauge::default()
            ),
            raft_purged_index: reg!(
                "raft_purged_index",
                "Last raft log index purged (compacted away) from this replica's log",
                Gauge::default()
            ),
            raft_replication_lag: reg!(
                "raft_replication_lag_entries",
                "On the leader: entries each follower's matched log is behind the leader's log",
                Family::default()
            ),
            raft_voters: reg!(
                "raft_voters",
                "Voters in the raft membership this replica knows",
                Gauge::default()
            ),
            serving: reg!(
                "serving",
                "1 while the replica reports SERVING on grpc.health.v1",
                Gauge::default()
            ),
            recovering: reg!(
                "recovering",
                "1 while the replica catches up after `arbor-node recover` (it neither votes nor serves)",
                Gauge::default()
            ),
            storage_fault: reg!(
                "storage_fault",
                "1 once storage reported corruption (the replica then stops serving and exits)",
                Gauge::default()
            ),
            up_seconds: {
                let g = up_seconds.clone();
                r.register("uptime_seconds", "Seconds since the replica started", g.clone());
                g
            },
            grpc_requests: reg!(
                "grpc_requests",
                "gRPC calls answered, by port, method and status code",
                Family::default()
            ),
            grpc_duration: reg!(
                "grpc_request_duration_seconds",
                "Time from a call's arrival (for Submit: admission) to its reply headers",
                HistogramFamily::<MethodLabels>::new_with_constructor(latency as fn() -> Histogram)
            ),
            proposals: reg!(
                "proposals",
                "Commands proposed to raft by this leader, by result (committed, forwarded, failed)",
                Family::default()
            ),
            refusals: reg!(
                "refusals",
                "Requests refused without appending anything, by reason",
                Family::default()
            ),
            commands_applied: reg!(
                "commands_applied",
                "Commands applied to this replica's state machine, by command, outcome and code",
                Family::default()
            ),
            admission_batch: reg!(
                "admission_batch_size",
                "Signatures checked per admission batch",
                sizes()
            ),
            log_append_seconds: reg!(
                "log_append_seconds",
                "Time of one synced (fsync'd) raft log append",
                latency()
            ),
            log_append_entries: reg!(
                "log_append_entries",
                "Entries per raft log append",
                sizes()
            ),
            apply_batch_seconds: reg!(
                "apply_batch_seconds",
                "Time to decide and write one batch of committed entries",
                latency()
            ),
            apply_batch_entries: reg!(
                "apply_batch_entries",
                "Entries per state machine apply batch",
                sizes()
            ),
            snapshots: reg!(
                "snapshots",
                "Snapshots built or installed on this replica",
                Family::default()
            ),
            log_purges: reg!(
                "log_purges",
                "Raft log compactions (purges of entries a snapshot covers)",
                Counter::default()
            ),
            rocksdb_compactions_running: reg!(
                "rocksdb_compactions_running",
                "RocksDB compactions running now",
                Gauge::default()
            ),
            rocksdb_compaction_pending: reg!(
                "rocksdb_compaction_pending",
                "1 if RocksDB has a compaction pending",
                Gauge::default()
            ),
            open_connections: reg!(
                "open_connections",
                "Open connections per listener",
                Family::default()
            ),
            watch_streams: reg!(
                "watch_streams",
                "Open WatchEntries streams",
                Gauge::default()
            ),
            registry: r,
            samplers: Mutex::new(Vec::new()),
        };
        let m = Metrics {
            inner: Arc::new(inner),
        };
        // Every label value known in advance exists from the start (at 0),
        // so that dashboards and rate() see the series before the first event.
        for kind in arbor_proto::rules::RefusalKind::ALL {
            m.refusals
                .get_or_create(&ReasonLabels {
                    reason: kind.as_str().to_string(),
                })
                .inc_by(0);
        }
        for result in ["committed", "forwarded", "failed"] {
            m.proposals
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        for kind in ["built", "installed"] {
            m.snapshots.get_or_create(&KindLabels { kind }).inc_by(0);
        }
        m.refusals
            .get_or_create(&ReasonLabels {
                reason: RESOURCE_LIMIT.to_string(),
            })
            .inc_by(0);
        m.on_scrape(move |m| {
            m.up_seconds.set(started.elapsed().as_secs_f64());
        });
        m
    }

    /// Runs `f` before every scrape, to sample state owned elsewhere.
    pub fn on_scrape(&self, f: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.samplers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// Samples state and encodes every metric (Prometheus text format).
    pub fn encode(&self) -> String {
        for f in self
            .samplers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f(self);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    // --- one-line calls for the rest of the replica ---

    /// A command refused before anything was appended.
    pub fn refused(&self, reason: impl std::fmt::Display) {
        self.refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A proposal's result: "committed", "forwarded" or "failed".
    pub fn proposed(&self, result: &'static str) {
        self.proposals.get_or_create(&ResultLabels { result }).inc();
    }

    /// A command applied to the state machine.
    pub fn applied(&self, command: &str, accepted: bool, code: &str) {
        self.commands_applied
            .get_or_create(&CommandLabels {
                command: command.to_string(),
                outcome: if accepted { "accepted" } else { "rejected" },
                code: code.to_string(),
            })
            .inc();
    }

    pub fn snapshot(&self, kind: &'static str) {
        self.snapshots.get_or_create(&KindLabels { kind }).inc();
    }

    /// A gauge that can go up and down, for callers outside this module.
    pub fn set(g: &Gauge<i64, AtomicI64>, v: impl TryInto<i64>) {
        g.set(v.try_into().unwrap_or(i64::MAX));
    }
}

/// Serves `GET /metrics` (anything else: 404) on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let mut stop = Box::pin(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&metrics, &req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            // A scraper that stalls is cut off rather than held forever.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

fn respond<B>(metrics: &Metrics, req: &http::Request<B>) -> http::Response<Full<Bytes>> {
    let (status, ctype, body) =
        if req.uri().path() == "/metrics" && req.method() == http::Method::GET {
            (
                http::StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.encode(),
            )
        } else {
            (
                http::StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "arbor-node serves GET /metrics here\n".to_string(),
            )
        };
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Binds the metrics address.
pub async fn bind(addr: &str) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// A tower layer counting every gRPC call by method and status code, with
/// its latency up to the reply headers (for a unary call: the whole call).
#[derive(Clone)]
pub struct GrpcLayer {
    pub metrics: Metrics,
    pub port: &'static str,
}

impl<S> tower_layer::Layer<S> for GrpcLayer {
    type Service = GrpcMetered<S>;
    fn layer(&self, inner: S) -> GrpcMetered<S> {
        GrpcMetered {
            inner,
            metrics: self.metrics.clone(),
            port: self.port,
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetered<S> {
    inner: S,
    metrics: Metrics,
    port: &'static str,
}

impl<S, B, RB> tonic::codegen::Service<http::Request<B>> for GrpcMetered<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // "/arbor.v1.Arbor/Submit" -> "Arbor/Submit"; unknown paths are
        // folded into one label so a scanner cannot grow the label set.
        let path = req.uri().path();
        let method = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((svc, m)) if known_service(svc) && m.len() <= 64 => {
                let svc = svc.rsplit('.').next().unwrap_or(svc);
                format!("{svc}/{m}")
            }
            _ => "other".to_string(),
        };
        let metrics = self.metrics.clone();
        let port = self.port;
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // An error is a "trailers-only" reply: grpc-status in the
            // headers. Without it the call succeeded so far (OK).
            let code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(|c| format!("{:?}", tonic::Code::from(c)))
                .unwrap_or_else(|| "Ok".to_string());
            metrics
                .grpc_duration
                .get_or_create(&MethodLabels {
                    port,
                    method: method.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            if code == "ResourceExhausted" {
                metrics.refused(RESOURCE_LIMIT);
            }
            metrics
                .grpc_requests
                .get_or_create(&RpcLabels { port, method, code })
                .inc();
            Ok(resp)
        })
    }
}

fn known_service(svc: &str) -> bool {
    svc.starts_with("arbor.v1.")
        || svc.starts_with("grpc.health.")
        || svc.starts_with("grpc.reflection.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_the_metrics() {
        let m = Metrics::new();
        m.proposed("committed");
        m.refused("bad_signature");
        m.applied("ClaimOrder", false, "already_owned");
        m.log_append_seconds.observe(0.001);
        let text = m.encode();
        for name in [
            "arbor_raft_term ",
            "arbor_proposals_total{result=\"committed\"} 1",
            "arbor_refusals_total{reason=\"bad_signature\"} 1",
            "arbor_refusals_total{reason=\"unsigned\"} 0",
            "arbor_commands_applied_total{command=\"ClaimOrder\",outcome=\"rejected\",code=\"already_owned\"} 1",
            "arbor_log_append_seconds_bucket",
            "arbor_uptime_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
