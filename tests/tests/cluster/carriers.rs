//! Rules version 3, carriers sign, on a real cluster: a store tenders an
//! order to an enrolled carrier and keeps custody until the carrier signs
//! the tender acceptance (another carrier's acceptance, a second acceptance
//! and a wrong delivery code are rejected); a lost dispute in transit is
//! ruled against the carrier on its signed tender, a delivery on the node's
//! word leaves the carrier liable, and the carrier's scan with the
//! recipient's one-time code ends custody. The dispute bundle and the
//! offline export verifier replay all of it.

use arbor_client::bundle::{unpack, verify_unpacked, CheckpointKeys};
use arbor_client::{delivery_code_hash, pb, Commands};
use arbor_proto::audit::{verify_export, VerifyOptions};
use arbor_proto::ledger::map::MAP_EPOCH;
use arbor_tests::dev::run_cli;
use arbor_tests::fixtures::{sample_order, SAMPLE_TOTAL};
use arbor_tests::{TestCluster, TIMEOUT};

const ORDER: &str = "ord-carried";
const CODE: &str = "K7Q2-M9XD-44AB";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_signed_tender_and_delivery_with_a_dispute_ruled_against_the_carrier() {
    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    c.enroll_replicas().await;
    let shop = c.enroll_channel("shop").await;
    let store = c.enroll_node("store-1").await;
    let sf = c.enroll_party("sf-express", pb::Role::Carrier).await;
    let jd = c.enroll_party("jd-logistics", pb::Role::Carrier).await;
    let auditor = c.enroll_party("aud-1", pb::Role::Auditor).await;
    let s = c.submitter().await;
    let client = c.client().await;
    let time_of =
        async |seq: u64| client.get_entries(seq, 1).await.expect("entry").entries[0].time_ms;

    // The channel registers the hash of the recipient's one-time code.
    let mut order = sample_order(ORDER);
    order.delivery_code_sha256 = delivery_code_hash(ORDER, CODE).to_vec();
    s.submit_accepted("register", shop.register_order(order))
        .await;
    let claim = s
        .submit_accepted("claim", store.claim_order(ORDER, 1, SAMPLE_TOTAL))
        .await;
    // An enrolled carrier is never made custodian by the node's word alone.
    let r = s
        .submit(store.report_shipped(ORDER, "sf-express", "N-1"))
        .await
        .expect("submit");
    assert_eq!(r.outcome.unwrap_or_default().code, "tender_required");
    let tender = s
        .submit_accepted("tender", store.report_tender(ORDER, "sf-express", "N-1", 2))
        .await;
    let o = client.get_order(ORDER).await.expect("order");
    assert_eq!(
        (
            o.status.as_str(),
            o.custodian.as_str(),
            o.tender_carrier.as_str()
        ),
        ("shipped", "store-1", "sf-express")
    );
    assert_eq!((o.tender_seq, o.tender_accepted_seq), (tender.seq, 0));

    // Lost while the tender was pending: the store's, by its claim.
    let pending_ms = time_of(tender.seq).await;
    let lost_pending = s
        .submit_accepted(
            "lost while pending",
            shop.open_dispute(ORDER, pb::IncidentKind::Lost, pending_ms, "never picked up"),
        )
        .await;
    let r = client
        .preview_ruling(ORDER, lost_pending.seq)
        .await
        .expect("preview");
    assert_eq!(
        (r.liable.as_str(), r.rule.as_str(), r.evidence),
        ("store-1", "custodian_at_incident", vec![claim.seq])
    );

    let accept = |carrier: &arbor_client::Signer| {
        carrier.accept_tender(pb::AcceptTender {
            order_id: ORDER.into(),
            tender_seq: tender.seq,
            tracking_id: "SF-9001".into(),
            parcels: 2,
            weight_grams: 1800,
            description: "2 boxes, sealed".into(),
            damaged: false,
            note: String::new(),
        })
    };
    let r = s.submit(accept(&jd)).await.expect("submit");
    assert_eq!(r.outcome.unwrap_or_default().code, "not_tendered_to_signer");
    let signed = s.submit_accepted("accept tender", accept(&sf)).await;
    let r = s.submit(accept(&sf)).await.expect("submit");
    assert_eq!(
        r.outcome.unwrap_or_default().code,
        "tender_already_accepted"
    );
    let o = client.get_order(ORDER).await.expect("order");
    assert_eq!(
        (
            o.custodian.as_str(),
            o.tracking_id.as_str(),
            o.tender_accepted_seq
        ),
        ("sf-express", "SF-9001", signed.seq)
    );

    // Lost in transit: the carrier's, on its signed tender.
    let transit_ms = time_of(signed.seq).await;
    let lost = s
        .submit_accepted(
            "lost in transit",
            shop.open_dispute(ORDER, pb::IncidentKind::Lost, transit_ms, "lost in transit"),
        )
        .await;
    let ruling = client
        .preview_ruling(ORDER, lost.seq)
        .await
        .expect("preview");
    assert_eq!(
        (
            ruling.liable.as_str(),
            ruling.rule.as_str(),
            ruling.evidence.clone()
        ),
        ("sf-express", "carrier_signed_tender", vec![signed.seq]),
        "{}",
        ruling.explanation
    );
    let resolved = s
        .submit_accepted(
            "resolve against the carrier",
            auditor.resolve_dispute(
                ORDER,
                lost.seq,
                &ruling.liable,
                &ruling.rule,
                ruling.evidence.clone(),
            ),
        )
        .await;

    // The store reports the delivery on its own word: the carrier stays liable.
    let word = s
        .submit_accepted(
            "delivered (word)",
            store.report_delivered(ORDER, "pod/photo"),
        )
        .await;
    let o = client.get_order(ORDER).await.expect("order");
    assert_eq!(
        (o.custodian.as_str(), o.delivery_grade.as_str()),
        ("sf-express", "word")
    );
    // A wrong code is rejected; the right one ends custody, once.
    let r = s
        .submit(sf.scan_delivery(ORDER, "SF-9001", "WRONG-CODE-1", ""))
        .await
        .expect("submit");
    assert_eq!(r.outcome.unwrap_or_default().code, "wrong_delivery_code");
    let scan = s
        .submit_accepted(
            "scan with code",
            sf.scan_delivery(ORDER, "SF-9001", CODE, "handed to recipient"),
        )
        .await;
    let r = s
        .submit(sf.scan_delivery(ORDER, "SF-9001", CODE, ""))
        .await
        .expect("submit");
    assert_eq!(r.outcome.unwrap_or_default().code, "delivery_code_used");
    let o = client.get_order(ORDER).await.expect("order");
    assert_eq!(
        (
            o.status.as_str(),
            o.custodian.as_str(),
            o.delivery_grade.as_str()
        ),
        ("delivered", "", "code")
    );
    assert_eq!(o.delivery_code_used_seq, scan.seq);
    let after_ms = time_of(scan.seq).await;
    let later = s
        .submit_accepted(
            "lost after delivery",
            shop.open_dispute(ORDER, pb::IncidentKind::Lost, after_ms, "not received"),
        )
        .await;
    let r = client
        .preview_ruling(ORDER, later.seq)
        .await
        .expect("preview");
    assert_eq!(
        (r.liable.as_str(), r.rule.as_str(), r.evidence),
        ("", "delivered_with_code", vec![scan.seq])
    );
    let _ = word;

    // The same flow through the CLI, on a second order: the pre-check
    // refuses another carrier's acceptance locally (exit 6).
    let tmp = tempfile::tempdir().expect("temp dir");
    let key = |name: &str| tmp.path().join(format!("{name}.key"));
    store.identity().save(&key("store")).expect("store key");
    sf.identity().save(&key("sf")).expect("sf key");
    jd.identity().save(&key("jd")).expect("jd key");
    let (eps, cacert) = (c.endpoints().join(","), c.cacert());
    let cli = async |args: &[&str]| {
        let mut all = vec!["--endpoints", &eps, "--cacert", &cacert];
        all.extend_from_slice(args);
        run_cli(&all).await
    };
    c.register_order(&shop, "ord-cli").await;
    s.submit_accepted("claim", store.claim_order("ord-cli", 1, SAMPLE_TOTAL))
        .await;
    let (store_key, sf_key, jd_key) = (
        key("store").display().to_string(),
        key("sf").display().to_string(),
        key("jd").display().to_string(),
    );
    let out = cli(&[
        "order",
        "milestone",
        "ord-cli",
        "shipped",
        "--tender",
        "--carrier",
        "sf-express",
        "--tracking-id",
        "N-2",
        "--parcels",
        "1",
        "--key",
        &store_key,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    let out = cli(&["--output", "json", "order", "get", "ord-cli"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["custodian"], "store-1", "{v}");
    assert_eq!(v["tender"]["carrier"], "sf-express", "{v}");
    let tender_seq = v["tender"]["tender_seq"]
        .as_u64()
        .expect("tender seq")
        .to_string();
    let accept = |k: &str| {
        [
            "order",
            "accept-tender",
            "ord-cli",
            "--tender-seq",
            &tender_seq,
            "--tracking-id",
            "SF-9002",
            "--parcels",
            "1",
            "--key",
        ]
        .into_iter()
        .map(str::to_string)
        .chain([k.to_string()])
        .collect::<Vec<_>>()
    };
    let args = accept(&jd_key);
    let out = cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(out.code, Some(6), "{out}");
    assert!(out.stderr.contains("not_tendered_to_signer"), "{out}");
    let args = accept(&sf_key);
    let out = cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(out.code, Some(0), "{out}");
    let out = cli(&[
        "order",
        "scan-delivery",
        "ord-cli",
        "--tracking-id",
        "SF-9002",
        "--key",
        &sf_key,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    let out = cli(&["--output", "json", "order", "get", "ord-cli"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        (&v["status"], &v["custodian"], &v["delivery_grade"]),
        (&"delivered".into(), &"".into(), &"scan".into()),
        "{v}"
    );

    // The dispute bundle proves the history and recomputes the ruling.
    loop {
        let size = c.head_seq().await + 1;
        if size > (resolved.seq / MAP_EPOCH + 1) * MAP_EPOCH
            && size > (later.seq / MAP_EPOCH + 1) * MAP_EPOCH
        {
            break;
        }
        c.register_order(&shop, &format!("pad-{size}")).await;
    }
    let b = unpack(&client.dispute_bundle(ORDER).await.expect("bundle")).expect("unpack");
    let report = verify_unpacked(&b, CheckpointKeys::Carried).expect("bundle verifies");
    let d = report
        .disputes
        .iter()
        .find(|d| d.dispute_seq == lost.seq)
        .expect("the transit dispute");
    assert_eq!(d.resolved_seq, Some(resolved.seq));
    assert_eq!(
        (
            d.ruling.liable.as_str(),
            d.ruling.rule.as_str(),
            &d.ruling.evidence
        ),
        ("sf-express", "carrier_signed_tender", &vec![signed.seq])
    );
    let d = report
        .disputes
        .iter()
        .find(|d| d.dispute_seq == later.seq)
        .expect("the later dispute");
    assert_eq!(d.ruling.rule.as_str(), "delivered_with_code");

    // The offline verifier replays the whole ledger.
    let (bytes, exported) = client
        .export(Vec::new(), 0, None, |_, _| {})
        .await
        .expect("export");
    let summary = verify_export(
        bytes.as_slice(),
        VerifyOptions {
            threads: 2,
            batch: 64,
            progress: None,
        },
    )
    .expect("export verifies");
    assert!(summary.complete && summary.replayed, "{summary:?}");
    assert_eq!(summary.entries, exported.checkpoint.size);
    c.check_invariants().await;
}
