//! The fulfillment-node example (`client/examples/fulfillment_node.rs`), run
//! as the compiled binary against a real cluster: it follows the ledger,
//! claims what it may and ships it.

use std::time::Duration;

use arbor_client::Commands;
use arbor_tests::bins::example_bin;
use arbor_tests::{TestCluster, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_node_claims_and_ships_new_orders() {
    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    let channel = c.enroll_channel("shop").await;
    let node = c.enroll_node("store-example").await;
    let rival = c.enroll_node("store-rival").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("store-example.key");
    node.save(&key).expect("save key");

    // One order before the node starts (found by reading from entry 0), one
    // taken by another node first (skipped), and one after it started.
    c.register_order(&channel, "o-ex-1").await;
    c.register_order(&channel, "o-ex-taken").await;
    c.submitter()
        .await
        .submit_accepted(
            "rival claim",
            rival.claim_order("o-ex-taken", 1, arbor_tests::fixtures::SAMPLE_TOTAL),
        )
        .await;

    let mut cmd = tokio::process::Command::new(example_bin("fulfillment_node"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ARBOR_") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "--endpoints",
        &c.endpoints().join(","),
        "--cacert",
        &c.cacert(),
        "--key",
        &key.display().to_string(),
        "--max",
        "2",
        "--from",
        "0",
        "--carrier",
        "sf-express",
    ])
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("start the example");

    c.register_order(&channel, "o-ex-2").await;

    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the example exits after --max 2 orders")
        .expect("example output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "example failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("done: shipped 2 order(s)"), "{stdout}");
    assert!(stdout.contains("o-ex-taken: skipped"), "{stdout}");

    let client = c.client().await;
    for id in ["o-ex-1", "o-ex-2"] {
        let o = client.get_order(id).await.expect("order");
        assert_eq!(o.owner, "store-example", "{id}: {o:?}\n{stdout}");
        assert_eq!(o.status, "shipped", "{id}: {o:?}\n{stdout}");
        assert_eq!(o.carrier, "sf-express");
        assert_eq!(o.tracking_id, format!("TRK-{id}"));
    }
    let taken = client.get_order("o-ex-taken").await.expect("order");
    assert_eq!(taken.owner, "store-rival");
    c.check_invariants().await;
}

/// Rules version 3: the example node notices an order that comes back
/// (released by another node) and answers the assignment offer of a
/// sourcing decision that selected it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_node_takes_released_orders_and_assignment_offers() {
    use arbor_client::broker::{Candidates, ReferenceBroker};
    use arbor_client::pb;

    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    let channel = c.enroll_channel("shop").await;
    let broker = c.enroll_party("broker-1", pb::Role::Broker).await;
    let node = c.enroll_node("store-example").await;
    let rival = c.enroll_node("store-rival").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("store-example.key");
    node.save(&key).expect("save key");
    let sub = c.submitter().await;
    let client = c.client().await;

    // Taken by the rival, then given back.
    c.register_order(&channel, "o-ex-back").await;
    sub.submit_accepted(
        "rival claim",
        rival.claim_order("o-ex-back", 1, arbor_tests::fixtures::SAMPLE_TOTAL),
    )
    .await;
    sub.submit_accepted(
        "rival release",
        rival.release_order("o-ex-back", "no stock"),
    )
    .await;
    // The rival stops serving the region: a decision (which lists every
    // eligible node under rules version 4) has the example node only.
    sub.submit_accepted(
        "rival profile",
        rival.publish_profile(pb::PublishProfile {
            regions: vec!["CN-11".into()],
            ..arbor_tests::fixtures::sample_profile()
        }),
    )
    .await;

    let mut cmd = tokio::process::Command::new(example_bin("fulfillment_node"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ARBOR_") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "--endpoints",
        &c.endpoints().join(","),
        "--cacert",
        &c.cacert(),
        "--key",
        &key.display().to_string(),
        "--max",
        "2",
        "--from",
        "0",
    ])
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("start the example");

    // A brokered order, sourced to the example node by the reference broker.
    let mut order = arbor_tests::fixtures::sample_order("o-ex-brokered");
    order.sourcing_mode = pb::SourcingMode::Brokered as i32;
    sub.submit_accepted("register brokered", channel.register_order(order))
        .await;
    // The example node may take the released order between the broker's
    // reads and its decision: the rules then refuse the stale headroom
    // (`score_mismatch`) and the broker decides again from fresh reads.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let view = client.get_order("o-ex-brokered").await.expect("order");
        let candidates = Candidates::read_all(&client, &[])
            .await
            .expect("candidates");
        let decision = ReferenceBroker::default()
            .decide(&view, &candidates)
            .expect("a decision");
        let reply = sub
            .submit(broker.source_order(decision))
            .await
            .expect("submit the decision");
        let o = reply.outcome.unwrap_or_default();
        if o.accepted {
            break;
        }
        assert!(
            matches!(o.code.as_str(), "score_mismatch" | "eligibility_mismatch")
                && std::time::Instant::now() < deadline,
            "decision: {} ({})",
            o.code,
            o.message
        );
    }

    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the example exits after --max 2 orders")
        .expect("example output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "example failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("done: shipped 2 order(s)"), "{stdout}");
    assert!(
        stdout.contains("o-ex-brokered: accepted decision"),
        "{stdout}"
    );
    for id in ["o-ex-back", "o-ex-brokered"] {
        let o = client.get_order(id).await.expect("order");
        assert_eq!(
            (o.owner.as_str(), o.status.as_str()),
            ("store-example", "shipped"),
            "{id}: {o:?}\n{stdout}"
        );
    }
    let st = client.node_stats("store-example").await.expect("stats");
    assert_eq!(st.assignments_accepted, 1);
    c.check_invariants().await;
}

/// With `--tender` the example node tenders each order to the enrolled
/// carrier: it stays the custodian until the carrier signs, and then the
/// carrier holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_node_tenders_to_an_enrolled_carrier() {
    use arbor_client::pb;

    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    let channel = c.enroll_channel("shop").await;
    let node = c.enroll_node("store-example").await;
    let sf = c.enroll_party("sf-express", pb::Role::Carrier).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("store-example.key");
    node.save(&key).expect("save key");
    c.register_order(&channel, "o-ex-tender").await;

    let mut cmd = tokio::process::Command::new(example_bin("fulfillment_node"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ARBOR_") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "--endpoints",
        &c.endpoints().join(","),
        "--cacert",
        &c.cacert(),
        "--key",
        &key.display().to_string(),
        "--max",
        "1",
        "--from",
        "0",
        "--carrier",
        "sf-express",
        "--tender",
    ])
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("start the example");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the example exits after --max 1 order")
        .expect("example output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "example failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("o-ex-tender: tendered to sf-express, tracking TRK-o-ex-tender"),
        "{stdout}"
    );

    let client = c.client().await;
    let o = client.get_order("o-ex-tender").await.expect("order");
    assert_eq!(
        (
            o.status.as_str(),
            o.custodian.as_str(),
            o.tender_carrier.as_str(),
            o.tender_parcels
        ),
        ("shipped", "store-example", "sf-express", 1),
        "{stdout}"
    );
    c.submitter()
        .await
        .submit_accepted(
            "the carrier signs",
            sf.accept_tender(pb::AcceptTender {
                order_id: "o-ex-tender".into(),
                tender_seq: o.tender_seq,
                tracking_id: "SF-1".into(),
                parcels: 1,
                ..Default::default()
            }),
        )
        .await;
    let o = client.get_order("o-ex-tender").await.expect("order");
    assert_eq!(o.custodian, "sf-express");
    c.check_invariants().await;
}
