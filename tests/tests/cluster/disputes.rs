//! Disputes on a real cluster: a handoff chain store -> warehouse (damage
//! noted at acceptance) -> 3PL -> carrier, two disputes, the rulings the
//! responsibility rules compute (docs/disputes.md), a wrong ruling refused,
//! `arbor audit trace` proving every entry of the order, and an offline
//! export whose replay re-checks the rulings.

use arbor_client::audit::{verify_export, VerifyOptions};
use arbor_client::Commands;
use arbor_client::Identity;
use arbor_proto::pb;
use arbor_tests::dev::run_cli;
use arbor_tests::fixtures::{sample_profile, SAMPLE_TOTAL};
use arbor_tests::{TestCluster, TIMEOUT};
use serde_json::Value;

const ORDER: &str = "o-dispute-1";

fn key_file(dir: &std::path::Path, id: &Identity) -> String {
    let p = dir.join(format!("{}.key", id.party_id));
    id.save(&p).expect("save key");
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_chain_disputes_rulings_trace_and_export() {
    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    c.enroll_replicas().await;
    let shop = c.enroll_channel("shop").await;
    let store = c.enroll_node("store-sh").await;
    let wh = c
        .enroll_node_with("wh-east", pb::NodeKind::Warehouse, sample_profile())
        .await;
    let tpl = c
        .enroll_node_with("3pl-fast", pb::NodeKind::ThreePl, sample_profile())
        .await;
    c.enroll("sf-express", pb::Role::Node, pb::NodeKind::Carrier)
        .await;
    let auditor = c.enroll_party("auditor-1", pb::Role::Auditor).await;
    let sub = c.submitter().await;
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

    // The chain: store claims, hands to the warehouse (which notes damage),
    // the warehouse hands to the 3PL (clean), the 3PL ships with the carrier.
    c.register_order(&shop, ORDER).await;
    let claim = sub
        .submit_accepted("claim", store.claim_order(ORDER, 1, SAMPLE_TOTAL))
        .await;
    let offer1 = sub
        .submit_accepted("offer 1", store.offer_handoff(ORDER, "wh-east", 600_000))
        .await;
    let accept1 = sub
        .submit_accepted(
            "accept 1",
            wh.accept_handoff(ORDER, offer1.seq, true, "box crushed"),
        )
        .await;
    let offer2 = sub
        .submit_accepted("offer 2", wh.offer_handoff(ORDER, "3pl-fast", 600_000))
        .await;
    let accept2 = sub
        .submit_accepted("accept 2", tpl.accept_handoff(ORDER, offer2.seq, false, ""))
        .await;
    for m in [pb::Milestone::Picked, pb::Milestone::Packed] {
        sub.submit_accepted("milestone", tpl.report_milestone(ORDER, m))
            .await;
    }
    let ship = sub
        .submit_accepted(
            "shipped",
            tpl.report_shipped(ORDER, "sf-express", "SF1234567890"),
        )
        .await;
    let ship_ms = client
        .get_entries(ship.seq, 1)
        .await
        .expect("entry")
        .entries[0]
        .time_ms;

    // The channel opens a damaged dispute with the CLI and a lost one with the library.
    let shop_key = key_file(tmp.path(), &shop);
    let opened = cli(args(&[
        "order",
        "dispute",
        ORDER,
        "--kind",
        "damaged",
        "--incident-ms",
        &ship_ms.to_string(),
        "--statement",
        "arrived crushed",
        "--key",
        &shop_key,
        "--output",
        "json",
    ]))
    .await
    .ok()
    .json();
    assert_eq!(opened["accepted"], true, "{opened}");
    let damaged_seq = opened["seq"].as_u64().expect("seq");
    let lost = sub
        .submit_accepted(
            "lost dispute",
            shop.open_dispute(ORDER, pb::IncidentKind::Lost, ship_ms, "never arrived"),
        )
        .await;

    // The previews name what docs/disputes.md promises.
    let damaged = client
        .preview_ruling(ORDER, damaged_seq)
        .await
        .expect("preview");
    assert_eq!(
        (damaged.liable.as_str(), damaged.rule.as_str()),
        ("store-sh", "damage_noted_at_acceptance"),
        "{damaged:?}"
    );
    assert_eq!(damaged.evidence, vec![accept1.seq]);
    assert_eq!(damaged.resolved_seq, 0);
    let in_transit = client
        .preview_ruling(ORDER, lost.seq)
        .await
        .expect("preview");
    // Rules version 4: sf-express signed nothing (a node of kind carrier,
    // no tender): the shipper stays the custodian, its carrier its agent.
    assert_eq!(
        (in_transit.liable.as_str(), in_transit.rule.as_str()),
        ("3pl-fast", "unsigned_carrier_is_shippers_agent"),
        "{in_transit:?}"
    );
    assert_eq!(in_transit.evidence, vec![ship.seq]);

    // With two open disputes the CLI asks which one (a usage error, 64).
    let both = cli(args(&["audit", "dispute", ORDER])).await;
    assert_eq!(both.code, Some(64), "{both}");
    assert!(
        both.stderr.contains(&format!("seq {damaged_seq}"))
            && both.stderr.contains(&format!("seq {}", lost.seq)),
        "{both}"
    );

    // A ruling other than the computed one is rejected, naming the computed one.
    let wrong = sub
        .submit(auditor.resolve_dispute(
            ORDER,
            damaged_seq,
            "wh-east",
            "custodian_at_incident",
            vec![accept1.seq],
        ))
        .await
        .expect("submit");
    let o = wrong.outcome.clone().unwrap_or_default();
    assert!(!o.accepted, "{wrong:?}");
    assert_eq!(o.code, "ruling_mismatch", "{o:?}");
    assert!(o.message.contains("store-sh"), "{o:?}");
    let ok = sub
        .submit_accepted(
            "the computed ruling",
            auditor.resolve_dispute(
                ORDER,
                damaged_seq,
                &damaged.liable,
                &damaged.rule,
                damaged.evidence.clone(),
            ),
        )
        .await;

    // The CLI previews the only open dispute left (lost) and resolves it.
    let aud_key = key_file(tmp.path(), &auditor);
    let preview = cli(args(&["audit", "dispute", ORDER, "--output", "json"]))
        .await
        .ok()
        .json();
    assert_eq!(preview["dispute"]["seq"], lost.seq, "{preview}");
    assert_eq!(preview["ruling"]["liable"], "3pl-fast", "{preview}");
    assert_eq!(preview["evidence"][0]["command_kind"], "report_milestone");
    assert!(preview["submitted"].is_null());
    let resolved = cli(args(&[
        "audit",
        "dispute",
        ORDER,
        "--resolve",
        "--key",
        &aud_key,
        "--output",
        "json",
    ]))
    .await
    .ok()
    .json();
    assert_eq!(resolved["submitted"]["accepted"], true, "{resolved}");
    let lost_ruling_seq = resolved["submitted"]["seq"].as_u64().expect("seq");
    // A second --resolve is refused before anything is signed.
    let again = cli(args(&[
        "audit",
        "dispute",
        ORDER,
        "--dispute",
        &lost.seq.to_string(),
        "--resolve",
        "--key",
        &aud_key,
    ]))
    .await;
    assert_eq!(again.code, Some(6), "{again}");
    assert!(again.stderr.contains("already resolved"), "{again}");
    // Once every dispute is resolved, `audit dispute ORDER` shows the latest
    // one with its recorded ruling (exit 0).
    let shown = cli(args(&["audit", "dispute", ORDER, "--output", "json"]))
        .await
        .ok()
        .json();
    assert_eq!(shown["dispute"]["seq"], lost.seq, "{shown}");
    assert_eq!(shown["dispute"]["resolved"], true, "{shown}");
    assert_eq!(shown["recorded_ruling"]["liable"], "3pl-fast", "{shown}");
    assert_eq!(
        shown["recorded_ruling"]["resolved_seq"], lost_ruling_seq,
        "{shown}"
    );

    let order = client.get_order(ORDER).await.expect("order");
    let rulings: Vec<(u64, String, u64)> = order
        .disputes
        .iter()
        .map(|d| {
            let r = d.ruling.clone().unwrap_or_default();
            (d.seq, r.liable, r.resolved_seq)
        })
        .collect();
    assert_eq!(
        rulings,
        vec![
            (damaged_seq, "store-sh".to_string(), ok.seq),
            (lost.seq, "3pl-fast".to_string(), lost_ruling_seq),
        ]
    );

    // The trace: every entry of the history, proven and signed; custody
    // store -> warehouse -> 3PL -> carrier. Judged by a pinned trust file.
    let trust = tmp.path().join("arbor.trust").display().to_string();
    cli(args(&["audit", "trust", "init", "--out", &trust]))
        .await
        .ok();
    let trace = cli(args(&[
        "audit", "trace", ORDER, "--trust", &trust, "--output", "json",
    ]))
    .await
    .ok()
    .json();
    assert_eq!(trace["all_proofs_ok"], true, "{trace:#}");
    assert_eq!(trace["all_signatures_ok"], true, "{trace:#}");
    let entries = trace["entries"].as_array().expect("entries");
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, order.history, "{trace:#}");
    for e in entries {
        assert_eq!(e["proof"]["ok"], true, "{e}");
        assert_eq!(e["signature"]["status"], "verified", "{e}");
    }
    let entry = |seq: u64| -> &Value { entries.iter().find(|e| e["seq"] == seq).unwrap() };
    assert_eq!(entry(claim.seq)["details"]["price_version"], 1);
    let acc = &entry(accept1.seq)["details"];
    assert_eq!(acc["damaged"], true, "{acc}");
    assert_eq!(acc["offer"]["signer"], "store-sh", "{acc}");
    assert_eq!(acc["offer"]["signature"]["status"], "verified", "{acc}");
    assert_eq!(entry(accept1.seq)["signer"], "wh-east");
    assert_eq!(entry(ship.seq)["details"]["tracking_id"], "SF1234567890");
    assert_eq!(entry(wrong.seq)["code"], "ruling_mismatch");
    let custody: Vec<(String, u64, Option<u64>)> = trace["custody"]
        .as_array()
        .expect("custody")
        .iter()
        .map(|i| {
            assert_eq!(i["proofs_ok"], true, "{i}");
            (
                i["holder"].as_str().unwrap().to_string(),
                i["from_seq"].as_u64().unwrap(),
                i["to_seq"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        custody,
        vec![
            ("store-sh".to_string(), claim.seq, Some(accept1.seq)),
            ("wh-east".to_string(), accept1.seq, Some(accept2.seq)),
            ("3pl-fast".to_string(), accept2.seq, Some(ship.seq)),
            // Rules version 4: the shipper holds it, as its carrier's principal.
            ("3pl-fast".to_string(), ship.seq, None),
        ],
        "{trace:#}"
    );
    let text = cli(args(&["audit", "trace", ORDER, "--trust", &trust]))
        .await
        .ok()
        .stdout;
    assert!(!text.contains("FAILED"), "{text}");
    assert!(text.contains("[proof ok] held by wh-east from"), "{text}");

    // Once a party's key is rotated, the entries it signed before are left
    // to the offline verifier (the export below checks them).
    let new_key = c.signer(&Identity::generate("store-sh"));
    sub.submit_accepted(
        "rotate store-sh",
        c.operator().rotate_key("store-sh", &new_key.public_key()),
    )
    .await;
    let trace = cli(args(&[
        "audit", "trace", ORDER, "--trust", &trust, "--output", "json",
    ]))
    .await
    .ok()
    .json();
    let entries = trace["entries"].as_array().expect("entries");
    let claim_entry = entries.iter().find(|e| e["seq"] == claim.seq).unwrap();
    assert_eq!(
        claim_entry["signature"]["status"], "key_rotated",
        "{claim_entry}"
    );
    assert_eq!(trace["all_proofs_ok"], true);
    let text = cli(args(&["audit", "trace", ORDER, "--trust", &trust]))
        .await
        .ok()
        .stdout;
    assert!(
        text.contains("claimed by store-sh at price version 1, total 3000 — accepted; key rotated since; verified offline by `arbor audit verify`"),
        "{text}"
    );

    // The export verifies offline; its replay re-checks both rulings.
    let (bytes, exported) = client
        .export(Vec::new(), 0, None, |_, _| {})
        .await
        .expect("export");
    assert!(exported.to_seq >= lost_ruling_seq);
    let summary =
        verify_export(bytes.as_slice(), VerifyOptions::default()).expect("export verifies");
    assert!(summary.complete && summary.replayed, "{summary:?}");

    c.check_invariants().await;
}
