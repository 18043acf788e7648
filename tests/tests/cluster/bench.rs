//! `arbor bench` end to end: the real CLI against a three-replica cluster of
//! real processes. Small figures (a debug build on 2 cores); what matters is
//! that the report adds up and the benchmark's own ownership check passes —
//! and that the chain it leaves behind passes every cluster invariant.

use arbor_tests::dev::run_cli;
use arbor_tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_claims_every_order_once_and_reports_json() {
    let cluster = TestCluster::voters(3).await;
    let key = cluster.dir().join("operator.key");
    cluster.operator().save(&key).expect("write operator key");
    let key = key.display().to_string();
    let endpoints = cluster.endpoints().join(",");

    let cacert = cluster.cacert();
    let out = run_cli(&[
        "--endpoints",
        &endpoints,
        "--cacert",
        &cacert,
        "--output",
        "json",
        "bench",
        "--key",
        &key,
        "--orders",
        "200",
        "--nodes",
        "4",
        "--in-flight",
        "32",
        "--seed",
        "42",
    ])
    .await
    .ok();
    let r = out.json();
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is not a number in {r}"))
    };

    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(n("violations"), 0, "{r}");
    assert_eq!(n("errors"), 0, "{r}");
    assert_eq!(n("orders"), 200, "{r}");
    assert_eq!(n("orders_verified"), 200, "{r}");
    assert_eq!(n("accepted"), 200, "one accepted claim per order: {r}");
    // 20% of all claims are duplicates: 200 * 0.2 / 0.8 = 50, each rejected already_owned.
    assert_eq!(n("duplicate_claims"), 50, "{r}");
    assert_eq!(n("claims"), 250, "{r}");
    assert_eq!(n("rejected"), 50, "{r}");
    assert_eq!(r["rejected_by_code"]["already_owned"], 50, "{r}");
    assert!(r["claims_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    let lat = &r["latency_ms"];
    for k in ["p50", "p90", "p99", "max"] {
        assert!(lat[k].as_f64().unwrap_or(0.0) > 0.0, "latency {k}: {r}");
    }
    assert!(lat["p50"].as_f64() <= lat["p99"].as_f64(), "{r}");
    assert!(lat["p99"].as_f64() <= lat["max"].as_f64(), "{r}");
    let command = r["command"].as_str().unwrap_or_default();
    assert!(
        command.contains("bench") && command.contains("--orders 200"),
        "command {command:?}"
    );
    assert!(
        out.stderr.contains("bench: verifying 200 orders"),
        "progress on stderr:\n{out}"
    );

    let audit = cluster.check_invariants().await;
    // Genesis, 5 enrolments, 200 orders, 250 claims (plus any replica enrolments).
    assert!(
        audit.chain.len() >= 1 + 5 + 200 + 250,
        "{}",
        audit.chain.len()
    );
}

/// The production configuration with a preload: the bench enrols every
/// replica's identity (so the leader's lease sweep can run), preloads orders
/// and their claims through the API, measures an idle window, and reports
/// the CPU per claim and per read of each replica (`--pid`) and of itself.
/// Only the report's shape and sums are checked, never a timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_production_config_with_preload_reports_cpu_per_process() {
    let cluster = TestCluster::voters(3).await;
    let key = cluster.dir().join("operator.key");
    cluster.operator().save(&key).expect("write operator key");
    let key = key.display().to_string();
    let endpoints = cluster.endpoints().join(",");
    let cacert = cluster.cacert();
    let pids: Vec<String> = cluster
        .ids()
        .into_iter()
        .map(|id| format!("{id}={}", cluster.pid(id).expect("replica running")))
        .collect();
    let mut args = vec![
        "--endpoints",
        &endpoints,
        "--cacert",
        &cacert,
        "--output",
        "json",
        "bench",
        "--key",
        &key,
        "--orders",
        "80",
        "--nodes",
        "3",
        "--in-flight",
        "16",
        "--preload",
        "120",
        "--preload-in-flight",
        "32",
        "--settle-secs",
        "0",
        "--idle-secs",
        "0.5",
        "--seed",
        "7",
    ];
    for p in &pids {
        args.extend(["--pid", p.as_str()]);
    }
    let out = run_cli(&args).await.ok();
    let r = out.json();
    let n = |v: &serde_json::Value, k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
    };
    let f = |v: &serde_json::Value, k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
    };
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["system"], "arbor", "{r}");
    assert_eq!((n(&r, "errors"), n(&r, "violations")), (0, 0), "{r}");
    assert_eq!((n(&r, "claims"), n(&r, "accepted")), (100, 80), "{r}");

    // Production configuration: each replica's identity enrolled by the bench
    // (a fresh harness cluster has none), and now in the ledger, role replica.
    let c = &r["cluster"];
    assert_eq!(c["production_config"], true, "{r}");
    let replicas = c["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 3, "{r}");
    assert!(
        replicas.iter().all(|x| x["identity"] == "enrolled_now"),
        "{r}"
    );
    let client = cluster.client().await;
    for id in cluster.ids() {
        let p = client
            .get_party(&format!("arbor-replica-{id}"))
            .await
            .expect("replica identity enrolled");
        assert_eq!(p.role, arbor_client::pb::Role::Replica as i32);
    }

    // Preload: 120 orders, each claimed, 30 duplicates (20 % of 150), all answered.
    let p = &r["preload"];
    assert_eq!(n(p, "orders"), 120, "{r}");
    assert_eq!(n(p, "claims"), 150, "{r}");
    assert_eq!((n(p, "accepted"), n(p, "rejected")), (120, 30), "{r}");
    assert_eq!((n(p, "errors"), n(p, "register_errors")), (0, 0), "{r}");
    assert!(f(p, "orders_per_sec") > 0.0, "{r}");

    // Every phase names the same four processes, the leader marked once.
    let leader = format!("replica-{}", n(c, "leader_id"));
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["processes"]
            .as_array()
            .unwrap_or_else(|| panic!("no processes in {v}"))
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let want = ["replica-1", "replica-2", "replica-3", "bench"];
    for (phase, v, field) in [
        ("idle", &r["idle"], "pct_core"),
        ("claims", &r["claims_cpu"], "us_per_op"),
        ("reads", &r["reads"]["cpu"], "us_per_op"),
        ("preload", &p["cpu_per_order"], "us_per_op"),
    ] {
        assert_eq!(names(v), want, "{phase}: {v}");
        assert_eq!(n(v, "unreadable"), 0, "{phase}: {v}");
        let procs = v["processes"].as_array().unwrap();
        for proc in procs {
            assert!(f(proc, field) >= 0.0, "{phase}: {v}");
            assert!(f(proc, "cpu_seconds") >= 0.0, "{phase}: {v}");
            assert!(proc["pid"].as_u64().unwrap_or(0) > 0, "{phase}: {v}");
        }
        let leaders: Vec<&str> = procs
            .iter()
            .filter(|p| p["leader"] == true)
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(leaders, [leader.as_str()], "{phase}: {v}");
    }
    // Sums: the total is the processes' sum, per claim.
    let cpu = &r["claims_cpu"];
    let sum: f64 = cpu["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cpu_seconds"].as_f64().unwrap())
        .sum();
    assert!((f(cpu, "total_cpu_seconds") - sum).abs() < 0.01, "{cpu}");
    assert!(
        f(cpu, "total_cpu_seconds") > 0.0,
        "three replicas did work: {cpu}"
    );
    let per = f(cpu, "total_cpu_seconds") * 1e6 / 100.0;
    assert!((f(cpu, "total_us_per_op") - per).abs() <= 1.0, "{cpu}");
    assert!(f(&r["idle"], "window_seconds") > 0.0, "{r}");
    assert!(f(&r["idle"], "cluster_pct_core") >= 0.0, "{r}");

    // Claims and reads: rates and ordered percentiles.
    let rd = &r["reads"];
    assert_eq!((n(rd, "count"), n(rd, "errors")), (80, 0), "{r}");
    assert!(
        f(rd, "per_sec") > 0.0 && f(&r, "claims_per_sec") > 0.0,
        "{r}"
    );
    for lat in [&r["latency_ms"], &rd["latency_ms"]] {
        let ks = ["p50", "p90", "p99", "p999", "max"].map(|k| f(lat, k));
        assert!(ks[0] > 0.0, "{lat}");
        assert!(ks.windows(2).all(|w| w[0] <= w[1]), "{lat}");
    }
    assert!(
        out.stderr.contains("bench: preloading 120 orders"),
        "progress on stderr:\n{out}"
    );

    let audit = cluster.check_invariants().await;
    // Genesis, 3 replica + 4 party enrolments, 3 profiles, 200 orders, 250 claims.
    assert!(
        audit.chain.len() >= 1 + 7 + 3 + 200 + 250,
        "{}",
        audit.chain.len()
    );
}
