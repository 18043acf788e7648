//! `arbor bench`: the claims benchmark, run against a live cluster.
//!
//! It plays every party itself: the operator (from `--key`) enrols a fresh
//! channel and `--nodes` fresh fulfilment nodes under a random run id, so runs
//! can repeat on the same cluster. The channel registers `--orders` orders
//! (concurrently, not timed), then the nodes claim them with `--in-flight`
//! claims outstanding, a `--duplicates` share of them racing a second node for
//! an order already targeted ([`plan`]). Claims are signed before the clock
//! starts — in production each node signs on its own machine — and every claim
//! is a separate command with its own nonce and signature. Each claim's latency
//! is submit → reply; throughput is claims over the wall time of the whole
//! claims phase. Afterwards every order is read back and [`verify`] checks it
//! has exactly one owner, the acknowledged one: a violation prints the report
//! and exits 1.
//!
//! Requests go straight to the leader over `--connections` HTTP/2 connections
//! (one `Client` each, claims spread round-robin): a server limits the
//! concurrent streams of one connection, and a follower would add a hop.

mod plan;
mod stats;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arbor_client::{pb, Client, ClientError, Commands, Identity, Signer};
use clap::Args;
use futures::StreamExt;
use rand::RngCore;
use serde_json::{json, Value};

use super::output::{kv, render, Reply};
use super::{operator_key, Ctx};
use stats::Latency;
use verify::Seen;

#[derive(Args)]
pub struct BenchArgs {
    /// Operator key file [default: $ARBOR_OPERATOR_KEY, then $ARBOR_KEY]
    #[arg(long, value_name = "OPKEY")]
    pub key: Option<PathBuf>,
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

/// What happened to one claim.
enum Answer {
    Accepted,
    Rejected(String),
    Failed(String),
}

pub async fn run(ctx: &Ctx, args: BenchArgs) -> Result<Reply> {
    let nodes = args.nodes as usize;
    let orders = args.orders as usize;
    let in_flight = args.in_flight as usize;
    if args.duplicates > 0.0 && nodes < 2 {
        bail!("--duplicates needs at least two nodes (--nodes 2)");
    }
    let operator_id = operator_key(args.key.clone())?;
    let seed = args.seed.unwrap_or_else(|| rand::rngs::OsRng.next_u64());
    let command = std::env::args().collect::<Vec<_>>().join(" ");

    // Straight to the leader, over several connections.
    let probe = ctx.client().await?;
    let status = probe
        .cluster_status()
        .await
        .context("reading the cluster status")?;
    let leader = status
        .members
        .iter()
        .find(|m| m.node_id == status.leader_id)
        .map(|m| m.addr.clone())
        .unwrap_or_default();
    let endpoints = leader_first(probe.endpoints(), &leader);
    let cluster_id = match &ctx.cluster_id {
        Some(id) => id.clone(),
        None => status
            .replicas
            .iter()
            .map(|r| r.cluster_id.clone())
            .find(|id| !id.is_empty())
            .context("the cluster has no genesis entry yet")?,
    };
    let operator = operator_id.for_cluster(&cluster_id);
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        clients.push(
            Client::connect(&endpoints, &ctx.transport()?)
                .await?
                .with_timeout(ctx.timeout),
        );
    }
    let client = clients[0].clone();

    // Parties.
    let mut run_bytes = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut run_bytes);
    let run_id = hex::encode(run_bytes);
    let channel = Identity::generate(&format!("bench-{run_id}-channel")).for_cluster(&cluster_id);
    let node_ids: Vec<Signer> = (0..nodes)
        .map(|i| Identity::generate(&format!("bench-{run_id}-node-{i}")).for_cluster(&cluster_id))
        .collect();
    progress(&format!(
        "run {run_id}: enrolling 1 channel and {nodes} nodes (with profiles)"
    ));
    let mut enrolments = vec![operator.enroll_party(
        &channel.party_id,
        pb::Role::Channel,
        pb::NodeKind::Unspecified,
        &channel.public_key(),
    )];
    for n in &node_ids {
        enrolments.push(operator.enroll_party(
            &n.party_id,
            pb::Role::Node,
            pb::NodeKind::Store,
            &n.public_key(),
        ));
    }
    let replies =
        futures::future::try_join_all(enrolments.into_iter().map(|c| client.submit(c))).await?;
    for r in replies {
        let o = r.outcome.unwrap_or_default();
        if !o.accepted {
            bail!("enrolment rejected ({}): {}", o.code, o.message);
        }
    }
    // Each node publishes a profile serving the orders' region with room
    // for every order, so claims are decided on ownership and price alone.
    let profiles = node_ids.iter().map(|n| {
        client.submit(n.publish_profile(pb::PublishProfile {
            regions: vec![REGION.into()],
            max_open_orders: u32::MAX,
            dispatch_time_ms: 24 * 3_600_000,
            ..Default::default()
        }))
    });
    for r in futures::future::try_join_all(profiles).await? {
        let o = r.outcome.unwrap_or_default();
        if !o.accepted {
            bail!("profile rejected ({}): {}", o.code, o.message);
        }
    }

    // Orders.
    progress(&format!(
        "registering {orders} orders, {in_flight} in flight"
    ));
    let order_id = |j: usize| format!("bench-{run_id}-o{j}");
    let totals: Vec<i64> = (0..orders).map(order_total).collect();
    let started = Instant::now();
    let registered: Vec<Result<pb::SubmitReply, ClientError>> = futures::stream::iter(0..orders)
        .map(|j| {
            let c = clients[j % clients.len()].clone();
            let cmd = channel.register_order(sample_order(&order_id(j), &channel.party_id, j));
            async move { c.submit(cmd).await }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let register_secs = started.elapsed().as_secs_f64();
    for r in registered {
        let o = r
            .context("registering an order")?
            .outcome
            .unwrap_or_default();
        if !o.accepted {
            bail!("order registration rejected ({}): {}", o.code, o.message);
        }
    }

    // Claims: signed first, then timed.
    let schedule = plan::schedule(orders, nodes, args.duplicates, in_flight, seed);
    let duplicates = schedule.iter().filter(|c| c.duplicate).count();
    let signed: Vec<(plan::Claim, pb::SignedCommand)> = schedule
        .into_iter()
        .map(|c| {
            let cmd = node_ids[c.node].claim_order(&order_id(c.order), 1, totals[c.order]);
            (c, cmd)
        })
        .collect();
    let claims = signed.len();
    progress(&format!(
        "claiming: {claims} claims ({duplicates} duplicates), {in_flight} in flight over {} connections",
        clients.len()
    ));
    let started = Instant::now();
    let answers: Vec<(plan::Claim, Duration, Answer)> = futures::stream::iter(signed)
        .enumerate()
        .map(|(i, (claim, cmd))| {
            let c = clients[i % clients.len()].clone();
            async move {
                let sent = Instant::now();
                let reply = c.submit(cmd).await;
                let latency = sent.elapsed();
                let answer = match reply {
                    Ok(r) => {
                        let o = r.outcome.unwrap_or_default();
                        if o.accepted {
                            Answer::Accepted
                        } else {
                            Answer::Rejected(o.code)
                        }
                    }
                    Err(e) => Answer::Failed(e.to_string()),
                };
                (claim, latency, answer)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let wall = started.elapsed();

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
                s.accepted_by.push(node_ids[claim.node].party_id.clone());
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

    // Read every order back.
    progress(&format!("verifying {orders} orders"));
    let started = Instant::now();
    let views: Vec<(usize, Result<pb::OrderView, ClientError>)> = futures::stream::iter(0..orders)
        .map(|j| {
            let c = clients[j % clients.len()].clone();
            let id = order_id(j);
            async move { (j, c.get_order(&id).await) }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let verify_secs = started.elapsed().as_secs_f64();
    let mut violations = Vec::new();
    for (j, view) in views {
        let id = order_id(j);
        let found = match view {
            Ok(v) => verify::check_order(&id, &v, seen.get(&j).unwrap_or(&Seen::default())),
            Err(e) => Some(format!("order {id}: cannot read it back: {e}")),
        };
        violations.extend(found);
    }

    let claims_per_sec = claims as f64 / wall.as_secs_f64();
    let rejected_total: u64 = rejected.values().sum();
    let report = json!({
        "command": command,
        "run_id": run_id,
        "seed": seed,
        "leader": leader,
        "nodes": nodes,
        "orders": orders,
        "in_flight": in_flight,
        "duplicates": args.duplicates,
        "connections": clients.len(),
        "claims": claims,
        "duplicate_claims": duplicates,
        "register_seconds": round3(register_secs),
        "registers_per_sec": round1(orders as f64 / register_secs),
        "wall_seconds": round3(wall.as_secs_f64()),
        "claims_per_sec": round1(claims_per_sec),
        "latency_ms": latency,
        "accepted": accepted,
        "rejected": rejected_total,
        "rejected_by_code": rejected,
        "errors": errors.len(),
        "error_samples": errors.iter().take(5).collect::<Vec<_>>(),
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

/// The human form of the report.
fn table(r: &Value) -> String {
    let n = |k: &str| r[k].to_string();
    let lat = &r["latency_ms"];
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
                "{} nodes, {} orders registered in {} s ({}/s), leader {}",
                n("nodes"),
                n("orders"),
                n("register_seconds"),
                n("registers_per_sec"),
                r["leader"].as_str().unwrap_or("?")
            ),
        ),
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
        (
            "latency (ms)",
            format!(
                "p50 {}  p90 {}  p99 {}  max {}  mean {}",
                lat["p50"], lat["p90"], lat["p99"], lat["max"], lat["mean"]
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
        (
            "verified",
            format!(
                "{} orders in {} s, {} violations",
                n("orders_verified"),
                n("verify_seconds"),
                n("violations")
            ),
        ),
    ];
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

/// The configured endpoints with the leader's address moved to the front.
fn leader_first(endpoints: &[String], leader: &str) -> Vec<String> {
    let bare = |s: &str| {
        s.trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    };
    let mut out: Vec<String> = endpoints.to_vec();
    if let Some(i) = out.iter().position(|e| bare(e) == bare(leader)) {
        let l = out.remove(i);
        out.insert(0, l);
    } else if !leader.is_empty() {
        out.insert(0, leader.to_string());
    }
    out
}

/// Order `j`: one line, `1 + j % 3` units at `1000 + j % 500` minor units.
fn sample_order(order_id: &str, channel: &str, j: usize) -> pb::RegisterOrder {
    let (quantity, unit_price) = order_line(j);
    pb::RegisterOrder {
        order_id: order_id.to_string(),
        external_refs: vec![pb::ExternalRef {
            channel: channel.to_string(),
            external_id: order_id.to_string(),
        }],
        lines: vec![pb::OrderLine {
            sku: format!("sku-{}", j % 97),
            quantity,
            unit_price,
        }],
        currency: "CNY".into(),
        total: order_total(j),
        destination_region: REGION.into(),
        ..Default::default()
    }
}

/// The destination region of every bench order, served by every bench node.
const REGION: &str = "cn-sh";

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
    fn leader_goes_first() {
        let eps: Vec<String> = ["a:1", "http://b:2", "c:3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(leader_first(&eps, "b:2"), ["http://b:2", "a:1", "c:3"]);
        assert_eq!(
            leader_first(&eps, "d:4"),
            ["d:4", "a:1", "http://b:2", "c:3"]
        );
        assert_eq!(leader_first(&eps, ""), eps);
    }

    #[test]
    fn sample_orders_are_valid() {
        for j in [0, 1, 2, 499, 500, 19_999] {
            let o = sample_order("bench-x-o1", "bench-x-channel", j);
            let cmd = pb::Command {
                nonce: 1,
                body: Some(pb::command::Body::RegisterOrder(o.clone())),
            };
            arbor_proto::rules::validate_command(&cmd).unwrap();
            assert_eq!(o.total, order_total(j));
        }
    }

    #[test]
    fn duplicate_share_is_checked() {
        assert_eq!(parse_share("0.2"), Ok(0.2));
        assert!(parse_share("0.95").is_err());
        assert!(parse_share("-0.1").is_err());
        assert!(parse_share("x").is_err());
    }
}
