//! `arbor bench`: the claims benchmark, run against a live cluster — an arbor
//! cluster ([`arbor`]) or, with `--etcd`, a three-member etcd ([`etcd`]) given
//! the same workload, so that the two can be compared side by side.
//!
//! Against arbor it runs the production configuration: every replica's
//! checkpoint-signing identity is enrolled (role replica) if it is not yet,
//! as `arbor-node dev` does, so the leader's lease sweep runs; it plays every
//! other party itself: the operator (from `--key`) enrols a fresh channel and
//! `--nodes` fresh fulfilment nodes under a random run id, so runs can repeat
//! on the same cluster. Phases, in order:
//!
//! 1. **preload** (`--preload N`): N orders registered and claimed (with the
//!    same share of duplicates) by real signed commands through the API,
//!    `--preload-in-flight` orders at a time, so the measured phases run on a
//!    ledger that already holds them;
//! 2. **register** `--orders` orders, `--in-flight` at a time (not timed as claims);
//! 3. **idle**: `--settle-secs` of nothing, then an `--idle-secs` window of
//!    nothing in which each watched process's CPU is measured (% of a core);
//! 4. **claims**, timed: the nodes claim the orders with `--in-flight` claims
//!    outstanding, a `--duplicates` share of them racing a second node for an
//!    order already targeted ([`plan`]). Claims are signed before the clock
//!    starts — in production each node signs on its own machine — and every
//!    claim is a separate command with its own nonce and signature;
//! 5. **reads**, timed: every order is read back (linearizable `GetOrder`)
//!    and [`verify`] checks it has exactly one owner, the acknowledged one: a
//!    violation prints the report and exits 1.
//!
//! Claims and reads report ops/s over the phase's wall time, latency (submit
//! → reply) percentiles, and the CPU microseconds per operation of each
//! process under `--pid` and of the bench itself ([`cpu`]).
//!
//! Requests go straight to the leader over `--connections` HTTP/2 connections
//! (claims spread round-robin): a server limits the concurrent streams of one
//! connection, and a follower would add a hop. `--via follower` sends them
//! to a follower instead, to measure that hop.

mod arbor;
mod cpu;
mod etcd;
mod plan;
mod stats;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use arbor_client::pb;
use clap::Args;
use futures::StreamExt;
use rand::RngCore;
use serde_json::{json, Value};

use super::output::{kv, render, Reply};
use super::Ctx;
use stats::Latency;
use verify::Seen;

#[derive(Args)]
pub struct BenchArgs {
    /// Operator key file [default: $ARBOR_OPERATOR_KEY, then $ARBOR_KEY] (arbor only)
    #[arg(long, value_name = "OPKEY", conflicts_with = "etcd")]
    pub key: Option<PathBuf>,
    /// Run the same workload against etcd v3 at these comma-separated client endpoints (host:port, plaintext) instead of arbor: a claim is one transaction (create_revision == 0 ? put owner : read owner)
    #[arg(long, value_name = "ENDPOINTS")]
    pub etcd: Option<String>,
    /// Simulated fulfilment nodes, each with its own key (enrolled as stores)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub nodes: u32,
    /// Orders registered before the claims (one channel registers them all)
    #[arg(long, value_name = "M", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub orders: u32,
    /// Claims outstanding at any time (also the concurrency of registering and reading back)
    #[arg(long, value_name = "C", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub in_flight: u32,
    /// Share of all claims that are duplicates: a second node racing for an order already claimed
    #[arg(long, value_name = "P", default_value_t = 0.2, value_parser = parse_share)]
    pub duplicates: f64,
    /// HTTP/2 connections to the leader, claims spread round-robin over them
    #[arg(long, value_name = "K", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub connections: u32,
    /// Seed of the claim schedule [default: random]
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,
    /// Orders (and their claims, with the --duplicates share) put in the ledger before anything is measured, by real signed commands
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000_000))]
    pub preload: u32,
    /// Preload orders in progress at any time (each registers its order, then claims it)
    #[arg(long, value_name = "C", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub preload_in_flight: u32,
    /// Seconds of nothing after the orders are registered, before the idle window
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = parse_window)]
    pub settle_secs: f64,
    /// Seconds of the idle window: nothing is submitted while each watched process's CPU is measured (0: no idle measure)
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_window)]
    pub idle_secs: f64,
    /// Where requests go: straight to the leader, or to a follower, which forwards claims and linearizable reads to the leader (to measure what the hop costs: e.g. --in-flight 1 both ways) (arbor only)
    #[arg(long, value_name = "WHERE", default_value = "leader", value_parser = ["leader", "follower"], conflicts_with = "etcd")]
    pub via: String,
    /// A process whose CPU to report, as NAME=PID (repeat for each; a bare number as NAME is a replica's node id, reported as replica-N). The bench reports itself as "bench".
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = cpu::parse_watched)]
    pub pids: Vec<cpu::Watched>,
}

fn parse_share(s: &str) -> std::result::Result<f64, String> {
    let p: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=0.9).contains(&p) {
        return Err(format!("{s:?} must be between 0 and 0.9"));
    }
    Ok(p)
}

fn parse_window(s: &str) -> std::result::Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=3600.0).contains(&x) {
        return Err(format!("{s:?} must be between 0 and 3600 seconds"));
    }
    Ok(x)
}

/// What happened to one claim.
pub(crate) enum Answer {
    Accepted,
    Rejected(String),
    Failed(String),
}

/// A system under benchmark: how to register an order, claim it and read its
/// owner back, over connection `conn` (`0..connections`).
pub(crate) trait Target {
    /// A claim ready to send (arbor: signed).
    type Claim;
    fn system(&self) -> &'static str;
    fn connections(&self) -> usize;
    /// The watched process that is the leader, if known.
    fn leader_process(&self) -> Option<String>;
    /// What the report says about the cluster (leader, members, setup).
    fn describe(&self) -> Value;
    /// The owner name of node `node`.
    fn node_name(&self, node: usize) -> &str;
    fn register(&self, conn: usize, order_id: &str, j: usize) -> impl Future<Output = Result<()>>;
    fn prepare(&self, order_id: &str, j: usize, node: usize) -> Self::Claim;
    fn claim(&self, conn: usize, c: Self::Claim) -> impl Future<Output = Answer>;
    /// The order as read back (linearizable): its status and owner.
    fn read(
        &self,
        conn: usize,
        order_id: &str,
    ) -> impl Future<Output = std::result::Result<pb::OrderView, String>>;
}

pub async fn run(ctx: &Ctx, args: BenchArgs) -> Result<Reply> {
    if args.duplicates > 0.0 && args.nodes < 2 {
        bail!("--duplicates needs at least two nodes (--nodes 2)");
    }
    let probe = cpu::Probe::new(args.pids.clone());
    probe.check()?;
    let mut run_bytes = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut run_bytes);
    let run_id = hex::encode(run_bytes);
    match &args.etcd {
        Some(endpoints) => {
            let t = etcd::EtcdTarget::connect(ctx, endpoints, &args, &run_id).await?;
            drive(ctx, &t, &args, &probe, &run_id).await
        }
        None => {
            let t = arbor::ArborTarget::connect(ctx, &args, &run_id).await?;
            drive(ctx, &t, &args, &probe, &run_id).await
        }
    }
}

/// Order `j` of the measured phase, and preload order `j`.
fn order_id(run_id: &str, j: usize) -> String {
    format!("bench-{run_id}-o{j}")
}

fn preload_id(run_id: &str, j: usize) -> String {
    format!("bench-{run_id}-p{j}")
}

/// Runs the phases against `t` and makes the report.
async fn drive<T: Target>(
    ctx: &Ctx,
    t: &T,
    args: &BenchArgs,
    probe: &cpu::Probe,
    run_id: &str,
) -> Result<Reply> {
    let nodes = args.nodes as usize;
    let orders = args.orders as usize;
    let in_flight = args.in_flight as usize;
    let conns = t.connections();
    let seed = args.seed.unwrap_or_else(|| rand::rngs::OsRng.next_u64());
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let leader = t.leader_process();
    let leader = leader.as_deref();

    // 1. Preload.
    let preload = if args.preload > 0 {
        Some(preload_phase(t, args, probe, run_id, leader).await?)
    } else {
        None
    };

    // 2. Orders.
    progress(&format!(
        "registering {orders} orders, {in_flight} in flight"
    ));
    let started = Instant::now();
    let registered: Vec<Result<()>> = futures::stream::iter(0..orders)
        .map(|j| async move { t.register(j % conns, &order_id(run_id, j), j).await })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let register_secs = started.elapsed().as_secs_f64();
    for r in registered {
        r?;
    }

    // 3. Idle.
    let idle = if args.idle_secs > 0.0 {
        progress(&format!(
            "idle: {} s settle, then {} s measured with nothing submitted",
            args.settle_secs, args.idle_secs
        ));
        tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
        let a = probe.sample();
        tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
        let (used, window) = probe.between(&a, &probe.sample());
        let mut v = cpu::idle(&used, window, leader);
        v["settle_seconds"] = json!(args.settle_secs);
        v
    } else {
        Value::Null
    };

    // 4. Claims: prepared (signed) first, then timed.
    let schedule = plan::schedule(orders, nodes, args.duplicates, in_flight, seed);
    let duplicates = schedule.iter().filter(|c| c.duplicate).count();
    let prepared: Vec<(plan::Claim, T::Claim)> = schedule
        .into_iter()
        .map(|c| {
            let p = t.prepare(&order_id(run_id, c.order), c.order, c.node);
            (c, p)
        })
        .collect();
    let claims = prepared.len();
    progress(&format!(
        "claiming: {claims} claims ({duplicates} duplicates), {in_flight} in flight over {conns} connections"
    ));
    let cpu_start = probe.sample();
    let started = Instant::now();
    let answers: Vec<(plan::Claim, Duration, Answer)> = futures::stream::iter(prepared)
        .enumerate()
        .map(|(i, (claim, p))| async move {
            let sent = Instant::now();
            let answer = t.claim(i % conns, p).await;
            (claim, sent.elapsed(), answer)
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let wall = started.elapsed();
    let (claims_used, _) = probe.between(&cpu_start, &probe.sample());

    let mut latencies = Vec::with_capacity(claims);
    let mut accepted = 0u64;
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    let mut seen: HashMap<usize, Seen> = HashMap::new();
    for (claim, latency, answer) in answers {
        let s = seen.entry(claim.order).or_default();
        match answer {
            Answer::Accepted => {
                accepted += 1;
                latencies.push(latency);
                s.accepted_by.push(t.node_name(claim.node).to_string());
            }
            Answer::Rejected(code) => {
                latencies.push(latency);
                *rejected.entry(code).or_default() += 1;
            }
            Answer::Failed(e) => {
                s.unanswered = true;
                errors.push(e);
            }
        }
    }
    let latency = Latency::of(&mut latencies);

    // 5. Read every order back.
    progress(&format!("verifying {orders} orders (reads)"));
    let cpu_start = probe.sample();
    let started = Instant::now();
    let views: Vec<(usize, Duration, std::result::Result<pb::OrderView, String>)> =
        futures::stream::iter(0..orders)
            .map(|j| async move {
                let sent = Instant::now();
                let v = t.read(j % conns, &order_id(run_id, j)).await;
                (j, sent.elapsed(), v)
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
    let verify_secs = started.elapsed().as_secs_f64();
    let (reads_used, _) = probe.between(&cpu_start, &probe.sample());
    let mut violations = Vec::new();
    let mut read_latencies = Vec::with_capacity(orders);
    let mut read_errors = 0usize;
    for (j, took, view) in views {
        let id = order_id(run_id, j);
        let found = match view {
            Ok(v) => {
                read_latencies.push(took);
                verify::check_order(&id, &v, seen.get(&j).unwrap_or(&Seen::default()))
            }
            Err(e) => {
                read_errors += 1;
                Some(format!("order {id}: cannot read it back: {e}"))
            }
        };
        violations.extend(found);
    }

    let claims_per_sec = claims as f64 / wall.as_secs_f64();
    let rejected_total: u64 = rejected.values().sum();
    let report = json!({
        "system": t.system(),
        "command": command,
        "run_id": run_id,
        "seed": seed,
        "cluster": t.describe(),
        "leader": t.describe()["leader"],
        "nodes": nodes,
        "orders": orders,
        "in_flight": in_flight,
        "duplicates": args.duplicates,
        "connections": conns,
        "preload": preload,
        "claims": claims,
        "duplicate_claims": duplicates,
        "register_seconds": round3(register_secs),
        "registers_per_sec": round1(orders as f64 / register_secs),
        "idle": idle,
        "wall_seconds": round3(wall.as_secs_f64()),
        "claims_per_sec": round1(claims_per_sec),
        "latency_ms": latency,
        "claims_cpu": cpu::per_op(&claims_used, claims, leader),
        "accepted": accepted,
        "rejected": rejected_total,
        "rejected_by_code": rejected,
        "errors": errors.len(),
        "error_samples": errors.iter().take(5).collect::<Vec<_>>(),
        "reads": {
            "count": orders,
            "errors": read_errors,
            "wall_seconds": round3(verify_secs),
            "per_sec": round1(orders as f64 / verify_secs),
            "latency_ms": Latency::of(&mut read_latencies),
            "cpu": cpu::per_op(&reads_used, orders, leader),
        },
        "verify_seconds": round3(verify_secs),
        "orders_verified": orders,
        "violations": violations.len(),
        "violation_samples": violations.iter().take(10).collect::<Vec<_>>(),
        "ok": violations.is_empty(),
    });
    let text = render(ctx.format, report.clone(), || table(&report));
    if violations.is_empty() {
        return Ok(Reply::new(text));
    }
    // The report first, then the error line and exit code 1.
    print!("{text}");
    bail!(
        "{} ownership violations, e.g. {}",
        violations.len(),
        violations[0]
    )
}

/// Phase 1: `--preload` orders registered then claimed (primary and
/// duplicates), `--preload-in-flight` orders at a time. Registrations must
/// be accepted; claim answers are counted.
async fn preload_phase<T: Target>(
    t: &T,
    args: &BenchArgs,
    probe: &cpu::Probe,
    run_id: &str,
    leader: Option<&str>,
) -> Result<Value> {
    let n = args.preload as usize;
    let nodes = args.nodes as usize;
    let conns = t.connections();
    let dups = plan::duplicate_count(n, args.duplicates);
    progress(&format!(
        "preloading {n} orders and {} claims ({dups} duplicates), {} orders in flight",
        n + dups,
        args.preload_in_flight
    ));
    let cpu_start = probe.sample();
    let started = Instant::now();
    let mut results = futures::stream::iter(0..n)
        .map(|j| async move {
            let id = preload_id(run_id, j);
            // A registration that failed (a timeout on a loaded machine, say)
            // is counted, and its order's claims are not sent.
            t.register(j % conns, &id, j).await?;
            let mut answers = Vec::new();
            for node in plan::preload_claimants(j, n, nodes, dups) {
                let c = t.prepare(&id, j, node);
                answers.push(t.claim(j % conns, c).await);
            }
            Ok::<_, anyhow::Error>(answers)
        })
        .buffer_unordered(args.preload_in_flight as usize);
    let (mut claims, mut accepted, mut rejected, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut register_errors: Vec<String> = Vec::new();
    let mut done = 0usize;
    let mut last = Instant::now();
    while let Some(r) = results.next().await {
        let answers = match r {
            Ok(a) => a,
            Err(e) => {
                register_errors.push(format!("{e:#}"));
                Vec::new()
            }
        };
        for a in answers {
            claims += 1;
            match a {
                Answer::Accepted => accepted += 1,
                Answer::Rejected(_) => rejected += 1,
                Answer::Failed(_) => errors += 1,
            }
        }
        done += 1;
        if last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            progress(&format!(
                "preloaded {done}/{n} orders ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            ));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (used, _) = probe.between(&cpu_start, &probe.sample());
    Ok(json!({
        "orders": n,
        "claims": claims,
        "accepted": accepted,
        "rejected": rejected,
        "errors": errors,
        "register_errors": register_errors.len(),
        "register_error_samples": register_errors.iter().take(5).collect::<Vec<_>>(),
        "in_flight": args.preload_in_flight,
        "seconds": round3(secs),
        "orders_per_sec": round1(n as f64 / secs),
        "cpu_per_order": cpu::per_op(&used, n, leader),
    }))
}

/// The human form of the report.
fn table(r: &Value) -> String {
    let n = |k: &str| r[k].to_string();
    let lat = |l: &Value| {
        format!(
            "p50 {}  p90 {}  p99 {}  p999 {}  max {}  mean {}",
            l["p50"], l["p90"], l["p99"], l["p999"], l["max"], l["mean"]
        )
    };
    let codes: Vec<String> = r["rejected_by_code"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let mut rows = vec![
        (
            "command",
            r["command"].as_str().unwrap_or_default().to_string(),
        ),
        (
            "setup",
            format!(
                "{}: {} nodes, {} orders registered in {} s ({}/s), leader {}",
                r["system"].as_str().unwrap_or("?"),
                n("nodes"),
                n("orders"),
                n("register_seconds"),
                n("registers_per_sec"),
                r["leader"].as_str().unwrap_or("?")
            ),
        ),
    ];
    let p = &r["preload"];
    if !p.is_null() {
        rows.push((
            "preload",
            format!(
                "{} orders, {} claims in {} s ({} orders/s), {} errors, {} registrations failed",
                p["orders"],
                p["claims"],
                p["seconds"],
                p["orders_per_sec"],
                p["errors"],
                p["register_errors"]
            ),
        ));
    }
    let i = &r["idle"];
    if !i.is_null() {
        rows.push((
            "idle (% core)",
            format!(
                "cluster {} over {} s: {}",
                i["cluster_pct_core"],
                i["window_seconds"],
                cpu::brief(i, "pct_core")
            ),
        ));
    }
    rows.extend([
        (
            "claims",
            format!(
                "{} ({} duplicates), {} in flight over {} connections",
                n("claims"),
                n("duplicate_claims"),
                n("in_flight"),
                n("connections")
            ),
        ),
        (
            "throughput",
            format!(
                "{} claims/s ({} s wall)",
                n("claims_per_sec"),
                n("wall_seconds")
            ),
        ),
        ("latency (ms)", lat(&r["latency_ms"])),
        (
            "cpu (µs/claim)",
            format!(
                "total {}: {}",
                r["claims_cpu"]["total_us_per_op"],
                cpu::brief(&r["claims_cpu"], "us_per_op")
            ),
        ),
        ("accepted", n("accepted")),
        (
            "rejected",
            if codes.is_empty() {
                n("rejected")
            } else {
                format!("{} ({})", n("rejected"), codes.join(", "))
            },
        ),
        ("errors", n("errors")),
    ]);
    let rd = &r["reads"];
    rows.extend([
        (
            "reads",
            format!(
                "{} in {} s ({}/s), {} errors",
                rd["count"], rd["wall_seconds"], rd["per_sec"], rd["errors"]
            ),
        ),
        ("read latency (ms)", lat(&rd["latency_ms"])),
        (
            "cpu (µs/read)",
            format!(
                "total {}: {}",
                rd["cpu"]["total_us_per_op"],
                cpu::brief(&rd["cpu"], "us_per_op")
            ),
        ),
        (
            "verified",
            format!(
                "{} orders, {} violations",
                n("orders_verified"),
                n("violations")
            ),
        ),
    ]);
    for (i, e) in r["error_samples"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        rows.push(if i == 0 {
            ("error", e.to_string())
        } else {
            ("", e.to_string())
        });
    }
    for v in r["violation_samples"].as_array().into_iter().flatten() {
        rows.push(("violation", v.as_str().unwrap_or_default().to_string()));
    }
    kv(&rows)
}

/// Order `j`: one line, `1 + j % 3` units at `1000 + j % 500` minor units.
fn order_line(j: usize) -> (u32, i64) {
    (1 + (j % 3) as u32, 1000 + (j % 500) as i64)
}

fn order_total(j: usize) -> i64 {
    let (q, p) = order_line(j);
    i64::from(q) * p
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A phase line on stderr (stdout carries only the report).
fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_share_is_checked() {
        assert_eq!(parse_share("0.2"), Ok(0.2));
        assert!(parse_share("0.95").is_err());
        assert!(parse_share("-0.1").is_err());
        assert!(parse_share("x").is_err());
        assert_eq!(parse_window("2.5"), Ok(2.5));
        assert!(parse_window("-1").is_err());
        assert!(parse_window("4000").is_err());
    }

    fn sample_report() -> Value {
        json!({
            "system": "arbor", "command": "arbor bench", "nodes": 8, "orders": 100,
            "register_seconds": 1.0, "registers_per_sec": 100.0, "leader": "127.0.0.1:1",
            "preload": {"orders": 50, "claims": 62, "seconds": 1.5, "orders_per_sec": 33.3, "errors": 0, "register_errors": 1},
            "idle": {"cluster_pct_core": 1.5, "window_seconds": 5.0,
                     "processes": [{"name": "replica-1", "pct_core": 1.0, "leader": true},
                                   {"name": "bench", "pct_core": 0.0}]},
            "claims": 125, "duplicate_claims": 25, "in_flight": 16, "connections": 4,
            "claims_per_sec": 1000.0, "wall_seconds": 0.125,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0, "mean": 1.5},
            "claims_cpu": {"total_us_per_op": 150.0,
                           "processes": [{"name": "replica-1", "us_per_op": 90.0, "leader": true},
                                         {"name": "replica-2", "us_per_op": null}]},
            "accepted": 100, "rejected": 25, "rejected_by_code": {"already_owned": 25},
            "errors": 0, "error_samples": [],
            "reads": {"count": 100, "wall_seconds": 0.5, "per_sec": 200.0, "errors": 0,
                      "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.5, "max": 5.0, "mean": 1.5},
                      "cpu": {"total_us_per_op": 40.0, "processes": [{"name": "bench", "us_per_op": 40.0}]}},
            "orders_verified": 100, "violations": 0, "violation_samples": [],
        })
    }

    #[test]
    fn the_text_report_names_every_phase() {
        let t = table(&sample_report());
        for want in [
            "preload   ",
            "50 orders, 62 claims",
            "1 registrations failed",
            "cluster 1.5 over 5.0 s: replica-1* 1, bench 0",
            "1000.0 claims/s",
            "p999 4.0",
            "total 150.0: replica-1* 90, replica-2 ?",
            "100 in 0.5 s (200.0/s)",
            "p999 4.5",
            "total 40.0: bench 40",
            "already_owned 25",
        ] {
            assert!(t.contains(want), "{want:?} missing in\n{t}");
        }
        // Without preload or idle window, those rows are left out.
        let mut r = sample_report();
        r["preload"] = Value::Null;
        r["idle"] = Value::Null;
        let t = table(&r);
        assert!(!t.contains("preload") && !t.contains("idle"), "{t}");
    }
}
