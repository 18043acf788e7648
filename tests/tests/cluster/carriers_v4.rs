//! Rules version 4, carriers, on a real cluster (new clusters start at it).
//!
//! 1. The combined fulfilment flow: a brokered order is sourced by the
//!    reference broker, the selected node accepts the assignment and
//!    tenders it to an enrolled carrier, which signs for it; the carrier
//!    delivers after the promised delivery, and the late dispute rules
//!    against the carrier (`late_delivery`) while a lost dispute before its
//!    signature rules against the node. The offline verifier replays it all.
//! 2. The unsigned hand-off: a node shipping to a carrier that is not
//!    enrolled stays the custodian, and a lost dispute names it
//!    (`unsigned_carrier_is_shippers_agent`); a tender not signed in time
//!    expires (`tender_expired`) and the node tenders again; a delivery code
//!    hash is not registered twice (`delivery_code_reused`).

use arbor_client::broker::{Candidates, ReferenceBroker};
use arbor_client::{delivery_code_hash, pb, Commands};
use arbor_proto::audit::{verify_export, VerifyOptions};
use arbor_tests::fixtures::{sample_order, SAMPLE_TOTAL};
use arbor_tests::{TestCluster, TIMEOUT};

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// How far ahead of the registration the promised delivery lies: room for
/// the sourcing, the assignment and the tender on a busy machine.
const PROMISE_AHEAD_MS: u64 = 20_000;

/// The offline verifier replays the whole ledger under its own rules.
async fn export_replays(client: &arbor_client::Client) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brokered_order_tendered_signed_and_delivered_late_is_the_carriers() {
    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    c.enroll_replicas().await;
    let shop = c.enroll_channel("shop").await;
    let broker = c.enroll_party("broker-1", pb::Role::Broker).await;
    let store = c.enroll_node("store-1").await;
    let sf = c.enroll_party("sf-express", pb::Role::Carrier).await;
    let auditor = c.enroll_party("aud-1", pb::Role::Auditor).await;
    let s = c.submitter().await;
    let client = c.client().await;
    let time_of =
        async |seq: u64| client.get_entries(seq, 1).await.expect("entry").entries[0].time_ms;
    const ORDER: &str = "o-v4-brokered";

    // A brokered order with a promised delivery ahead.
    let promised = wall_ms() + PROMISE_AHEAD_MS;
    let mut order = sample_order(ORDER);
    order.sourcing_mode = pb::SourcingMode::Brokered as i32;
    order.promised_delivery_ms = promised;
    s.submit_accepted("register brokered", shop.register_order(order))
        .await;

    // The reference broker sources it to store-1, which accepts.
    let view = client.get_order(ORDER).await.expect("order");
    let candidates = Candidates::read(&client, &["store-1".to_string()])
        .await
        .expect("candidates");
    let decision = ReferenceBroker::default()
        .decide(&view, &candidates)
        .expect("a decision");
    let sourced = s
        .submit_accepted("source", broker.source_order(decision))
        .await;
    let taken = s
        .submit_accepted(
            "accept assignment",
            store.accept_assignment(ORDER, sourced.seq, 1, SAMPLE_TOTAL),
        )
        .await;

    // Tendered to the enrolled carrier, with a deadline to sign by.
    let tender = s
        .submit_accepted(
            "tender",
            store.report_tender_with_timeout(ORDER, "sf-express", "N-1", 2, 600_000),
        )
        .await;
    let tender_ms = time_of(tender.seq).await;
    assert!(
        tender_ms <= promised,
        "the machine took over {PROMISE_AHEAD_MS} ms to tender: the test cannot show a late delivery"
    );
    let o = client.get_order(ORDER).await.expect("order");
    assert_eq!(
        (o.custodian.as_str(), o.tender_expires_ms),
        ("store-1", tender_ms + 600_000)
    );
    let pending = s
        .submit_accepted(
            "lost while pending",
            shop.open_dispute(ORDER, pb::IncidentKind::Lost, tender_ms, "not picked up"),
        )
        .await;
    let r = client
        .preview_ruling(ORDER, pending.seq)
        .await
        .expect("preview");
    assert_eq!(
        (r.liable.as_str(), r.rule.as_str(), r.evidence),
        ("store-1", "custodian_at_incident", vec![taken.seq]),
        "{}",
        r.explanation
    );

    let signed = s
        .submit_accepted(
            "accept tender",
            sf.accept_tender(pb::AcceptTender {
                order_id: ORDER.into(),
                tender_seq: tender.seq,
                tracking_id: "SF-1".into(),
                parcels: 2,
                weight_grams: 1_800,
                description: "2 boxes, sealed".into(),
                damaged: false,
                note: String::new(),
            }),
        )
        .await;
    let o = client.get_order(ORDER).await.expect("order");
    assert_eq!(o.custodian, "sf-express");

    // The carrier delivers after the promised delivery.
    c.wait_until("past the promised delivery", TIMEOUT, async || {
        (wall_ms() > promised + 50)
            .then_some(())
            .ok_or_else(|| format!("{} ms to go", promised + 51 - wall_ms().min(promised)))
    })
    .await;
    let scan = s
        .submit_accepted(
            "delivery scan",
            sf.scan_delivery(ORDER, "SF-1", "", "front desk"),
        )
        .await;
    assert!(time_of(scan.seq).await > promised);
    let late = s
        .submit_accepted(
            "late dispute",
            shop.open_dispute(ORDER, pb::IncidentKind::Late, wall_ms(), "late"),
        )
        .await;
    let r = client
        .preview_ruling(ORDER, late.seq)
        .await
        .expect("preview");
    assert_eq!(
        (r.liable.as_str(), r.rule.as_str(), r.evidence.clone()),
        ("sf-express", "late_delivery", vec![tender.seq, scan.seq]),
        "{}",
        r.explanation
    );
    s.submit_accepted(
        "resolve late",
        auditor.resolve_dispute(ORDER, late.seq, &r.liable, &r.rule, r.evidence),
    )
    .await;
    let _ = signed;
    export_replays(&client).await;
    c.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_hand_off_stays_the_nodes_and_tenders_expire() {
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

    // 1. Shipped with a courier that is not enrolled: the node stays liable.
    c.register_order(&shop, "o-van").await;
    s.submit_accepted("claim", store.claim_order("o-van", 1, SAMPLE_TOTAL))
        .await;
    let ship = s
        .submit_accepted(
            "unsigned hand-off",
            store.report_shipped("o-van", "city-van", "VAN-7"),
        )
        .await;
    let note = ship.outcome.clone().unwrap_or_default().message;
    assert_eq!(
        note,
        "unsigned hand-off: city-van is not an enrolled carrier, so store-1 stays the custodian until delivery"
    );
    let o = client.get_order("o-van").await.expect("order");
    assert_eq!(
        (o.status.as_str(), o.custodian.as_str(), o.carrier.as_str()),
        ("shipped", "store-1", "city-van")
    );
    let lost = s
        .submit_accepted(
            "lost with the van",
            shop.open_dispute(
                "o-van",
                pb::IncidentKind::Lost,
                time_of(ship.seq).await,
                "never arrived",
            ),
        )
        .await;
    let r = client
        .preview_ruling("o-van", lost.seq)
        .await
        .expect("preview");
    assert_eq!(
        (r.liable.as_str(), r.rule.as_str(), r.evidence.clone()),
        (
            "store-1",
            "unsigned_carrier_is_shippers_agent",
            vec![ship.seq]
        ),
        "{}",
        r.explanation
    );
    s.submit_accepted(
        "resolve against the shipper",
        auditor.resolve_dispute("o-van", lost.seq, &r.liable, &r.rule, r.evidence),
    )
    .await;

    // 2. A tender nobody signs in time expires; the node tenders again.
    c.register_order(&shop, "o-tender").await;
    s.submit_accepted("claim", store.claim_order("o-tender", 1, SAMPLE_TOTAL))
        .await;
    let first = s
        .submit_accepted(
            "tender with 1 s to sign",
            store.report_tender_with_timeout("o-tender", "sf-express", "N-1", 1, 1_000),
        )
        .await;
    let expires = time_of(first.seq).await + 1_000;
    c.wait_until("past the tender's deadline", TIMEOUT, async || {
        (wall_ms() > expires + 50)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let accept = |carrier: &arbor_client::Signer, tender_seq: u64| {
        carrier.accept_tender(pb::AcceptTender {
            order_id: "o-tender".into(),
            tender_seq,
            tracking_id: "T-1".into(),
            parcels: 1,
            ..Default::default()
        })
    };
    let late = s.submit(accept(&sf, first.seq)).await.expect("submit");
    let out = late.outcome.unwrap_or_default();
    assert_eq!(out.code, "tender_expired", "{}", out.message);
    assert!(
        out.message.contains(&format!(
            "(entry {}) expired at {expires} unsigned",
            first.seq
        )),
        "{}",
        out.message
    );
    let again = s
        .submit_accepted(
            "tender again",
            store.report_tender("o-tender", "jd-logistics", "N-2", 1),
        )
        .await;
    s.submit_accepted("jd signs", accept(&jd, again.seq)).await;
    let o = client.get_order("o-tender").await.expect("order");
    assert_eq!(o.custodian, "jd-logistics");

    // 3. A delivery code hash belongs to one order.
    let hash = delivery_code_hash("o-coded", "K7Q2-M9XD-44AB").to_vec();
    let mut coded = sample_order("o-coded");
    coded.delivery_code_sha256 = hash.clone();
    s.submit_accepted("register coded", shop.register_order(coded))
        .await;
    let mut copy = sample_order("o-copied");
    copy.delivery_code_sha256 = hash;
    let r = s.submit(shop.register_order(copy)).await.expect("submit");
    let out = r.outcome.unwrap_or_default();
    assert_eq!(out.code, "delivery_code_reused", "{}", out.message);
    assert!(out.message.contains("order o-coded"), "{}", out.message);

    export_replays(&client).await;
    c.check_invariants().await;
}
