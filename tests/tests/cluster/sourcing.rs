//! Rules version 3 on a real cluster: a brokered order is sourced by the
//! reference broker (`arbor order source`), the selected node declines, the
//! broker sources it again from the decline, and the next node accepts and
//! ships. Both decisions are on the ledger with their triggers, candidates
//! and scores, and the offline verifier replays the export
//! (`arbor audit verify`).

use arbor_client::pb::command::Body;
use arbor_client::{pb, Commands};
use arbor_tests::dev::run_cli;
use arbor_tests::fixtures::{sample_order, sample_profile, SAMPLE_REGION, SAMPLE_TOTAL};
use arbor_tests::TestCluster;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brokered_order_declined_and_sourced_again() {
    let c = TestCluster::voters(3).await;
    // Checkpoints are cosigned by enrolled replica keys: the export needs them.
    c.enroll_replicas().await;
    let shop = c.enroll_channel("shop").await;
    let broker = c.enroll_party("broker-1", pb::Role::Broker).await;
    // store-near serves the region first; store-far lists it second; store-bj not at all.
    let near = c.enroll_node("store-near").await;
    let far = c
        .enroll_node_with(
            "store-far",
            pb::NodeKind::Warehouse,
            pb::PublishProfile {
                regions: vec!["CN-11".into(), SAMPLE_REGION.into()],
                ..sample_profile()
            },
        )
        .await;
    c.enroll_node_with(
        "store-bj",
        pb::NodeKind::Store,
        pb::PublishProfile {
            regions: vec!["CN-11".into()],
            ..sample_profile()
        },
    )
    .await;
    let sub = c.submitter().await;
    let client = c.client().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let broker_key = tmp.path().join("broker-1.key");
    broker.save(&broker_key).expect("save key");
    let broker_key = broker_key.display().to_string();
    let eps = c.endpoints().join(",");
    let cacert = c.cacert();
    let source = |candidates: &str| {
        let args = [
            "--endpoints",
            &eps,
            "--cacert",
            &cacert,
            "--output",
            "json",
            "order",
            "source",
            "o-brokered",
            "--candidates",
            candidates,
            "--expires-in",
            "10m",
            "--key",
            &broker_key,
        ]
        .map(String::from);
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&refs).await
        }
    };

    let mut order = sample_order("o-brokered");
    order.sourcing_mode = pb::SourcingMode::Brokered as i32;
    let reg = sub
        .submit_accepted("register brokered", shop.register_order(order))
        .await;
    // Nobody races for a brokered order.
    let raced = sub
        .submit(far.claim_order("o-brokered", 1, SAMPLE_TOTAL))
        .await
        .expect("submit");
    assert_eq!(raced.outcome.unwrap_or_default().code, "brokered_order");

    // 1. The broker sources it: store-near is nearest.
    let out = source("store-near,store-far,store-bj").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let first: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(first["accepted"], true, "{out:?}");
    let first_seq = first["seq"].as_u64().expect("seq");
    let view = client.get_order("o-brokered").await.expect("order");
    let a = view.assignment.clone().expect("an assignment");
    assert_eq!((a.to.as_str(), a.decision_seq), ("store-near", first_seq));
    // Others are refused while it is offered.
    let raced = sub
        .submit(far.claim_order("o-brokered", 1, SAMPLE_TOTAL))
        .await
        .expect("submit");
    assert_eq!(raced.outcome.unwrap_or_default().code, "assignment_pending");

    // 2. store-near declines: that is the next trigger.
    let no = sub
        .submit_accepted(
            "decline",
            near.decline_assignment("o-brokered", first_seq, "no picker on shift", false),
        )
        .await;
    let view = client.get_order("o-brokered").await.expect("order");
    assert_eq!(
        (view.awaiting_trigger.as_str(), view.awaiting_trigger_seq),
        ("declined", no.seq)
    );

    // 3. Sourced again, among the others.
    let out = source("store-far,store-bj").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let second: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let second_seq = second["seq"].as_u64().expect("seq");
    let took = sub
        .submit_accepted(
            "accept",
            far.accept_assignment("o-brokered", second_seq, 1, SAMPLE_TOTAL),
        )
        .await;
    sub.submit_accepted(
        "shipped",
        far.report_shipped("o-brokered", "sf-express", "SF-B1"),
    )
    .await;
    let view = client.get_order("o-brokered").await.expect("order");
    assert_eq!(
        (view.owner.as_str(), view.status.as_str()),
        ("store-far", "shipped")
    );
    assert_eq!(view.sourcing_decisions, vec![first_seq, second_seq]);
    let st = client.node_stats("store-far").await.expect("stats");
    assert_eq!((st.assignments_accepted, st.claims), (1, 1));
    let st = client.node_stats("store-near").await.expect("stats");
    assert_eq!(st.assignments_declined, 1);

    // Both decisions are on the ledger with their trigger, candidates and result.
    let entries = client
        .get_entries(first_seq, 1000)
        .await
        .expect("entries")
        .entries;
    let decisions: Vec<pb::SourceOrder> = entries
        .iter()
        .filter(|e| e.outcome.as_ref().is_some_and(|o| o.accepted))
        .filter_map(|e| {
            let env = pb::SignedCommand::decode(e.command.as_slice()).ok()?;
            match pb::Command::decode(env.command.as_slice()).ok()?.body? {
                Body::SourceOrder(s) => Some(s),
                _ => None,
            }
        })
        .collect();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    let (d1, d2) = (&decisions[0], &decisions[1]);
    assert_eq!(
        (d1.trigger, d1.trigger_seq, d1.selected.as_str()),
        (
            pb::SourcingTrigger::Registered as i32,
            reg.seq,
            "store-near"
        )
    );
    assert_eq!(
        (d2.trigger, d2.trigger_seq, d2.selected.as_str()),
        (pb::SourcingTrigger::Declined as i32, no.seq, "store-far")
    );
    let listed: Vec<(&str, bool, &str)> = d1
        .candidates
        .iter()
        .map(|c| (c.node.as_str(), c.eligible, c.ineligible.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("store-near", true, ""),
            ("store-far", true, ""),
            ("store-bj", false, "region_not_served"),
        ]
    );
    assert!(d1.candidates[0].score > d1.candidates[1].score, "{d1:?}");
    assert!(took.seq > second_seq);

    // The offline verifier replays all of it.
    let (bytes, exported) = client
        .export(Vec::new(), 0, None, |_, _| {})
        .await
        .expect("export");
    assert_eq!(exported.entries, exported.checkpoint.size);
    let file = tmp.path().join("sourcing.export");
    std::fs::write(&file, &bytes).expect("write export");
    let out = run_cli(&["audit", "verify", &file.display().to_string()]).await;
    // 7: verified for internal consistency (no trust pinned).
    assert_eq!(out.code, Some(7), "{out:?}");
    assert!(
        out.stdout.contains("every entry reproduced by the rules"),
        "{out:?}"
    );
    c.check_invariants().await;
}

/// Rules version 4 on a real cluster, through the CLI: `arbor order
/// source` lists every node with a profile; node A declines through `arbor
/// order decline-assignment` (node B's attempt is refused locally, exit 6);
/// the broker sources the order again to B, listing A as a decliner; B
/// accepts through `arbor order accept-assignment`; the channel takes it
/// back with `arbor order reassign`; B accepts again and gives it back
/// with `arbor order release --shortage`. Both decisions are on the ledger,
/// and A's health (and, after the reassignment, B's) is lower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_4_a_decline_through_the_cli_is_sourced_to_another_node() {
    let c = TestCluster::voters(3).await;
    let shop = c.enroll_channel("shop").await;
    let broker = c.enroll_party("broker-1", pb::Role::Broker).await;
    let a = c.enroll_node("store-a").await;
    let b = c.enroll_node("store-b").await;
    let sub = c.submitter().await;
    let client = c.client().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| tmp.path().join(format!("{name}.key"));
    broker.save(&path("broker-1")).expect("save key");
    shop.save(&path("shop")).expect("save key");
    a.save(&path("store-a")).expect("save key");
    b.save(&path("store-b")).expect("save key");
    let key = |name: &str| path(name).display().to_string();
    let (kbroker, kshop, ka, kb) = (key("broker-1"), key("shop"), key("store-a"), key("store-b"));
    let eps = c.endpoints().join(",");
    let cacert = c.cacert();
    let cli = |args: Vec<String>| {
        let mut all = vec![
            "--endpoints".to_string(),
            eps.clone(),
            "--cacert".to_string(),
            cacert.clone(),
            "--output".to_string(),
            "json".to_string(),
        ];
        all.extend(args);
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run_cli(&refs).await
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let seq_of = |out: &arbor_tests::dev::CliOutput| -> u64 {
        assert_eq!(out.code, Some(0), "{out:?}");
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(v["accepted"], true, "{out:?}");
        v["seq"].as_u64().expect("seq")
    };

    let mut order = sample_order("o-v4");
    order.sourcing_mode = pb::SourcingMode::Brokered as i32;
    sub.submit_accepted("register brokered", shop.register_order(order))
        .await;

    // 1. No --candidates: every profiled node is listed; a tie goes to store-a.
    let first_seq = seq_of(
        &cli(args(&[
            "order",
            "source",
            "o-v4",
            "--expires-in",
            "10m",
            "--key",
            &kbroker,
        ]))
        .await,
    );
    let view = client.get_order("o-v4").await.expect("order");
    assert_eq!(view.assignment.expect("assigned").to, "store-a");

    // 2. store-b may not answer store-a's offer: refused before signing.
    let out = cli(args(&[
        "order",
        "decline-assignment",
        "o-v4",
        "--reason",
        "not mine",
        "--key",
        &kb,
    ]))
    .await;
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(out.stderr.contains("not_assigned_to_signer"), "{out:?}");

    // 3. store-a declines (a shortage) through the CLI.
    let no_seq = seq_of(
        &cli(args(&[
            "order",
            "decline-assignment",
            "o-v4",
            "--reason",
            "out of stock",
            "--shortage",
            "--key",
            &ka,
        ]))
        .await,
    );
    let view = client.get_order("o-v4").await.expect("order");
    assert_eq!(
        (view.awaiting_trigger.as_str(), view.awaiting_trigger_seq),
        ("shortage", no_seq)
    );
    assert_eq!(
        view.sourcing_declines,
        vec![pb::SourcingDecline {
            seq: no_seq,
            node: "store-a".into(),
            shortage: true,
        }]
    );
    let ha = client
        .node_stats("store-a")
        .await
        .expect("stats")
        .health
        .expect("health");
    assert_eq!(ha.declines, 1);
    assert!(ha.score < 1000, "{ha:?}");

    // 4. Sourced again: store-b, with store-a listed as the decliner.
    let out = cli(args(&[
        "order",
        "source",
        "o-v4",
        "--dry-run",
        "--key",
        &kbroker,
    ]))
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("declined this order"), "{out:?}");
    let second_seq = seq_of(&cli(args(&["order", "source", "o-v4", "--key", &kbroker])).await);
    let view = client.get_order("o-v4").await.expect("order");
    assert_eq!(view.assignment.expect("assigned").to, "store-b");

    // 5. store-b accepts through the CLI at the current price.
    seq_of(
        &cli(args(&[
            "order",
            "accept-assignment",
            "o-v4",
            "--at-current-price",
            "--key",
            &kb,
        ]))
        .await,
    );
    let view = client.get_order("o-v4").await.expect("order");
    assert_eq!(
        (view.owner.as_str(), view.status.as_str()),
        ("store-b", "claimed")
    );

    // 6. The channel takes it back (from the owner, read now).
    let re_seq = seq_of(
        &cli(args(&[
            "order", "reassign", "o-v4", "--reason", "stalled", "--key", &kshop,
        ]))
        .await,
    );
    let view = client.get_order("o-v4").await.expect("order");
    assert_eq!(
        (view.awaiting_trigger.as_str(), view.awaiting_trigger_seq),
        ("reassigned", re_seq)
    );
    let hb = client
        .node_stats("store-b")
        .await
        .expect("stats")
        .health
        .expect("health");
    assert_eq!(hb.reassigned, 1, "{hb:?}");
    assert!(hb.score < 1000, "{hb:?}");

    // 7. Sourced to store-b again (store-a declined); a release reporting a
    //    shortage is the next trigger.
    let third_seq = seq_of(&cli(args(&["order", "source", "o-v4", "--key", &kbroker])).await);
    seq_of(
        &cli(args(&[
            "order",
            "accept-assignment",
            "o-v4",
            "--decision-seq",
            &third_seq.to_string(),
            "--at-current-price",
            "--key",
            &kb,
        ]))
        .await,
    );
    let rel_seq = seq_of(
        &cli(args(&[
            "order",
            "release",
            "o-v4",
            "--reason",
            "short",
            "--shortage",
            "--key",
            &kb,
        ]))
        .await,
    );
    let view = client.get_order("o-v4").await.expect("order");
    assert_eq!(
        (view.awaiting_trigger.as_str(), view.awaiting_trigger_seq),
        ("shortage", rel_seq)
    );
    assert_eq!(
        view.sourcing_decisions,
        vec![first_seq, second_seq, third_seq]
    );

    // The decisions are on the ledger: the first selected store-a from the
    // registration, the second store-b from store-a's shortage, listing
    // store-a with its basis.
    let entries = client
        .get_entries(first_seq, 1000)
        .await
        .expect("entries")
        .entries;
    let decisions: Vec<pb::SourceOrder> = entries
        .iter()
        .filter(|e| e.outcome.as_ref().is_some_and(|o| o.accepted))
        .filter_map(|e| {
            let env = pb::SignedCommand::decode(e.command.as_slice()).ok()?;
            match pb::Command::decode(env.command.as_slice()).ok()?.body? {
                Body::SourceOrder(s) => Some(s),
                _ => None,
            }
        })
        .collect();
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert_eq!(decisions[0].selected, "store-a");
    let d2 = &decisions[1];
    assert_eq!(
        (d2.trigger, d2.trigger_seq, d2.selected.as_str()),
        (pb::SourcingTrigger::Shortage as i32, no_seq, "store-b")
    );
    let listed: Vec<(&str, bool)> = d2
        .candidates
        .iter()
        .map(|c| (c.node.as_str(), c.eligible))
        .collect();
    assert_eq!(listed, vec![("store-a", true), ("store-b", true)]);
    assert!(d2.candidates[0].basis.contains("declined"), "{d2:?}");
    c.check_invariants().await;
}
