//! Rules version 2 on a real cluster: a damaged dispute whose window spans
//! two custodians (the store that claimed the order and the carrier that
//! signed for it) is ruled `shared_custody` and escalated, a narrower window
//! rules against the carrier alone, and the same incident cannot be
//! disputed again; the offline replay of the invariants agrees. (From
//! rules version 4 custody passes to a carrier only by its signature: an
//! unsigned name would leave the store the one custodian.)

use arbor_client::{pb, Commands};
use arbor_tests::fixtures::SAMPLE_TOTAL;
use arbor_tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_window_spanning_two_custodians_is_escalated() {
    let c = TestCluster::voters(3).await;
    let shop = c.enroll_channel("shop").await;
    let store = c.enroll_node("store-1").await;
    let sf = c.enroll_party("sf-express", pb::Role::Carrier).await;
    let auditor = c.enroll_party("auditor-1", pb::Role::Auditor).await;
    c.register_order(&shop, "o-win").await;
    let s = c.submitter().await;
    let client = c.client().await;
    let claim = s
        .submit_accepted("claim", store.claim_order("o-win", 1, SAMPLE_TOTAL))
        .await;
    let tender = s
        .submit_accepted(
            "tendered",
            store.report_tender("o-win", "sf-express", "SF9", 1),
        )
        .await;
    // Custody passes to the carrier with its signature.
    let ship = s
        .submit_accepted(
            "signed for",
            sf.accept_tender(pb::AcceptTender {
                order_id: "o-win".into(),
                tender_seq: tender.seq,
                tracking_id: "SF9".into(),
                parcels: 1,
                ..Default::default()
            }),
        )
        .await;
    let time_of =
        async |seq: u64| client.get_entries(seq, 1).await.expect("entry").entries[0].time_ms;
    let (claimed_ms, shipped_ms) = (time_of(claim.seq).await, time_of(ship.seq).await);

    // Lost since the carrier took it: a window over the carrier's custody
    // alone rules against the carrier.
    let now = time_of(c.head_seq().await).await;
    let lost = s
        .submit_accepted(
            "a window over the carrier's custody",
            shop.open_dispute_window("o-win", pb::IncidentKind::Lost, shipped_ms, now, "lost"),
        )
        .await;
    let r = client
        .preview_ruling("o-win", lost.seq)
        .await
        .expect("preview");
    assert_eq!(
        (r.liable.as_str(), r.rule.as_str(), r.evidence),
        ("sf-express", "carrier_signed_tender", vec![ship.seq])
    );

    // Delivered (the carrier's scan ends its custody), then found crushed on
    // unboxing: known good before the store claimed it, so the window spans
    // both custodians.
    s.submit_accepted("delivered", sf.scan_delivery("o-win", "SF9", "", ""))
        .await;
    let head = time_of(c.head_seq().await).await;
    let wide = s
        .submit_accepted(
            "a window over both custodians",
            shop.open_dispute_window(
                "o-win",
                pb::IncidentKind::Damaged,
                claimed_ms - 1,
                head,
                "crushed on unboxing",
            ),
        )
        .await;
    let r = client
        .preview_ruling("o-win", wide.seq)
        .await
        .expect("preview");
    assert_eq!(
        (r.liable.as_str(), r.rule.as_str(), r.evidence.clone()),
        ("", "shared_custody", vec![claim.seq, ship.seq]),
        "{}",
        r.explanation
    );
    s.submit_accepted(
        "resolve the escalated ruling",
        auditor.resolve_dispute("o-win", wide.seq, "", "shared_custody", r.evidence),
    )
    .await;

    // The same incident again is not another ruling.
    let again = s
        .submit(shop.open_dispute("o-win", pb::IncidentKind::Damaged, head, "again"))
        .await
        .expect("submit");
    assert_eq!(again.outcome.unwrap_or_default().code, "duplicate_incident");
    c.check_invariants().await;
}
