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
