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
    let broker = c
        .enroll("broker-1", pb::Role::Broker, pb::NodeKind::Unspecified)
        .await;
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
