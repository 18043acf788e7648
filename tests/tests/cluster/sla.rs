//! Rules version 3 on a real cluster (the harness starts at the newest
//! version): a release and reclaim does not restart a node's clock, time
//! nobody owned an order with a ship-by is the channel's, the health of each
//! node is folded from the facts and shown by `arbor node stats` exactly as
//! an auditor's replay folds it, and an operator's `arbor cluster
//! set-rules` records claim deadlines that reject a late dispute (opened
//! with `arbor order dispute --known-good-ms`); the offline replay agrees.

use arbor_client::{Commands, Identity};
use arbor_proto::pb;
use arbor_proto::rules::{health_at, health_score, HealthCounters, CURRENT_RULES_VERSION};
use arbor_tests::dev::run_cli;
use arbor_tests::fixtures::{sample_order, sample_profile, SAMPLE_TOTAL};
use arbor_tests::{Options, TestCluster, TIMEOUT};

fn key_file(dir: &std::path::Path, id: &Identity) -> String {
    let p = dir.join(format!("{}.key", id.party_id));
    id.save(&p).expect("save key");
    p.display().to_string()
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_clocks_health_and_claim_deadlines() {
    // A grace long enough that no lease lapses while the test runs.
    let c = TestCluster::start(
        3,
        Options {
            lease_grace_ms: Some(600_000),
            ..Default::default()
        },
    )
    .await;
    c.wait_leader(TIMEOUT).await;
    let shop = c.enroll_channel("shop").await;
    let quick = c
        .enroll_node_with(
            "store-quick",
            pb::NodeKind::Store,
            pb::PublishProfile {
                dispatch_time_ms: 200,
                ..sample_profile()
            },
        )
        .await;
    let slow = c.enroll_node("store-slow").await;
    let auditor = c.enroll_party("auditor-1", pb::Role::Auditor).await;
    let s = c.submitter().await;
    let client = c.client().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let eps = c.endpoints().join(",");
    let cacert = c.cacert();
    let cli = |args: Vec<String>| {
        let eps = eps.clone();
        let cacert = cacert.clone();
        async move {
            let mut all = vec!["--endpoints".to_string(), eps, "--cacert".into(), cacert];
            all.extend(args);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run_cli(&refs).await
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let time_of =
        async |seq: u64| client.get_entries(seq, 1).await.expect("entry").entries[0].time_ms;

    // The status RPC names the rules in force; the CLI shows them.
    let rules = cli(args(&["cluster", "rules", "--output", "json"]))
        .await
        .ok()
        .json();
    assert_eq!(rules["rules_version"], CURRENT_RULES_VERSION, "{rules}");
    assert_eq!(
        rules["claim_deadlines"]["damaged_ms"],
        30 * 24 * 3_600_000u64,
        "{rules}"
    );

    // 1. store-quick claims, releases and claims again, then ships after
    //    200 ms from its first claim: late against its first claim.
    c.register_order(&shop, "o-reclaim").await;
    let first = s
        .submit_accepted("claim", quick.claim_order("o-reclaim", 1, SAMPLE_TOTAL))
        .await;
    s.submit_accepted("release", quick.release_order("o-reclaim", "no stock"))
        .await;
    let first_ms = time_of(first.seq).await;
    c.wait_until("200 ms past the first claim", TIMEOUT, async || {
        (wall_ms() > first_ms + 250)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    s.submit_accepted(
        "claim again",
        quick.claim_order("o-reclaim", 1, SAMPLE_TOTAL),
    )
    .await;
    let ship = s
        .submit_accepted(
            "shipped",
            quick.report_shipped("o-reclaim", "sf-express", "SF1"),
        )
        .await;
    let t = time_of(ship.seq).await;
    let late = s
        .submit_accepted(
            "late dispute",
            shop.open_dispute("o-reclaim", pb::IncidentKind::Late, t, "late"),
        )
        .await;
    let r = client
        .preview_ruling("o-reclaim", late.seq)
        .await
        .expect("preview");
    assert_eq!(
        (r.liable.as_str(), r.rule.as_str(), r.evidence.clone()),
        ("store-quick", "late_dispatch", vec![first.seq, ship.seq]),
        "{}",
        r.explanation
    );
    s.submit_accepted(
        "resolve",
        auditor.resolve_dispute("o-reclaim", late.seq, &r.liable, &r.rule, r.evidence),
    )
    .await;

    // 2. An order whose ship-by had passed before anyone claimed it: the
    //    unowned time is the channel's.
    let ship_by = time_of(c.head_seq().await).await;
    let mut o = sample_order("o-shipby");
    o.ship_by_ms = ship_by;
    let reg = s
        .submit_accepted("register with a ship-by", shop.register_order(o))
        .await;
    let view = client.get_order("o-shipby").await.expect("order");
    assert_eq!(view.ship_by_ms, ship_by);
    assert_eq!(view.sourceable_ms, time_of(reg.seq).await);
    c.wait_until("past the ship-by", TIMEOUT, async || {
        (wall_ms() > ship_by + 5)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    s.submit_accepted("claim", slow.claim_order("o-shipby", 1, SAMPLE_TOTAL))
        .await;
    let ship2 = s
        .submit_accepted(
            "shipped",
            slow.report_shipped("o-shipby", "sf-express", "SF2"),
        )
        .await;
    let t = time_of(ship2.seq).await;
    let late2 = s
        .submit_accepted(
            "late dispute",
            shop.open_dispute("o-shipby", pb::IncidentKind::Late, t, "late"),
        )
        .await;
    let r = client
        .preview_ruling("o-shipby", late2.seq)
        .await
        .expect("preview");
    assert_eq!(
        (r.liable.as_str(), r.rule.as_str(), r.evidence),
        ("shop", "sourced_late", vec![reg.seq, ship2.seq]),
        "{}",
        r.explanation
    );

    // 3. Health, as `arbor node stats` shows it, is the library's score of
    //    the served counters.
    let stats = cli(args(&["node", "stats", "store-quick", "--output", "json"]))
        .await
        .ok()
        .json();
    let h = &stats["health"];
    assert_eq!(
        (
            &h["taken_on"],
            &h["shipped"],
            &h["on_time"],
            &h["releases"],
            &h["rulings_against"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(0),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{stats}"
    );
    let served = client.node_stats("store-quick").await.expect("stats");
    let counters = HealthCounters::from_pb(served.health.as_ref().expect("health"));
    // 1 late shipment, 1 release, 1 ruling (weight 2): 1000 × 2 / 6.
    assert_eq!(health_score(&counters), 333);
    assert_eq!(h["score"], 333, "{stats}");

    // 4. The operator shortens the damaged claim deadline to 1 ms.
    let op_key = key_file(tmp.path(), c.operator());
    // At the version in force: a rules version is never lowered.
    let current = CURRENT_RULES_VERSION.to_string();
    let set = cli(args(&[
        "cluster",
        "set-rules",
        &current,
        "--claim-deadline",
        "damaged=1ms",
        "--key",
        &op_key,
        "--output",
        "json",
    ]))
    .await
    .ok()
    .json();
    assert_eq!(set["accepted"], true, "{set}");
    let rules = cli(args(&["cluster", "rules", "--output", "json"]))
        .await
        .ok()
        .json();
    assert_eq!(rules["claim_deadlines"]["damaged_ms"], 1, "{rules}");
    c.wait_until("past the damaged deadline", TIMEOUT, async || {
        (wall_ms() > t + 5)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    // A damaged window on o-shipby, opened with the CLI: too late. The
    // pre-check, deciding by the cluster's rules, refuses it unsigned; with
    // --force the cluster records the rejection.
    let shop_key = key_file(tmp.path(), &shop);
    let now = wall_ms().to_string();
    let good = (t - 1).to_string();
    let damaged = |force: bool| {
        let mut a = args(&[
            "order",
            "dispute",
            "o-shipby",
            "--kind",
            "damaged",
            "--known-good-ms",
            &good,
            "--incident-ms",
            &now,
            "--key",
            &shop_key,
            "--output",
            "json",
        ]);
        if force {
            a.push("--force".into());
        }
        cli(a)
    };
    let refused = damaged(false).await;
    assert_eq!(refused.code, Some(6), "{refused}");
    assert!(
        refused.stderr.contains("claim_deadline_passed"),
        "{refused}"
    );
    let too_late = damaged(true).await;
    assert_eq!(too_late.code, Some(2), "{too_late}");
    let j = too_late.json();
    assert_eq!(j["code"], "claim_deadline_passed", "{j}");
    assert!(
        j["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1 ms after its hand-off to the carrier"),
        "{j}"
    );
    // A lost window (60 days) is accepted, and the view names its start.
    let lost = cli(args(&[
        "order",
        "dispute",
        "o-shipby",
        "--kind",
        "lost",
        "--known-good-ms",
        &good,
        "--incident-ms",
        &now,
        "--key",
        &shop_key,
        "--output",
        "json",
    ]))
    .await
    .ok()
    .json();
    assert_eq!(lost["accepted"], true, "{lost}");
    let view = client.get_order("o-shipby").await.expect("order");
    let d = view.disputes.last().expect("dispute");
    assert_eq!((d.kind.as_str(), d.known_good_ms), ("lost", t - 1));

    // 5. The auditor's replay folds the same health from the facts.
    let audit = c.check_invariants().await;
    let head = audit.chain.last().expect("entries").seq;
    let folded = health_at(audit.state.orders.values(), head);
    for node in ["store-quick", "store-slow"] {
        let served = client.node_stats(node).await.expect("stats");
        assert_eq!(
            HealthCounters::from_pb(served.health.as_ref().expect("health")),
            folded.get(node).copied().unwrap_or_default(),
            "{node}"
        );
    }
}
