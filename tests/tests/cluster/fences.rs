//! Rules version 2 on a real cluster: the lease of a packed order lapses
//! and the order is fenced for its old owner. Another node's claim is
//! rejected while the fence holds; the old owner either ships (counted
//! late) or confirms it did not ship (the order opens and another node
//! claims it); a fence that runs out is recorded by the leader's sweep and
//! counted against the old owner.

use arbor_client::{pb, Commands, Signer};
use arbor_tests::fixtures::{sample_profile, SAMPLE_TOTAL};
use arbor_tests::{Options, Submitter, TestCluster, TIMEOUT};

/// A node that promises dispatch within 2 s (grace 200 ms: long enough for
/// a loaded machine to pick and pack before the lease lapses) claims and
/// packs `order`; waits until its lease has lapsed, seen as a fenced claim
/// rejection of `other`'s claim. Returns the rejection's message.
async fn pack_and_lapse(
    c: &TestCluster,
    s: &Submitter,
    slow: &Signer,
    other: &Signer,
    order: &str,
) -> String {
    s.submit_accepted("claim", slow.claim_order(order, 1, SAMPLE_TOTAL))
        .await;
    s.submit_accepted(
        "picked",
        slow.report_milestone(order, pb::Milestone::Picked),
    )
    .await;
    s.submit_accepted(
        "packed",
        slow.report_milestone(order, pb::Milestone::Packed),
    )
    .await;
    c.wait_until("the lease to lapse into a fence", TIMEOUT, async || {
        let r = s
            .submit(other.claim_order(order, 1, SAMPLE_TOTAL))
            .await
            .map_err(|e| e.to_string())?;
        let o = r.outcome.clone().unwrap_or_default();
        assert!(!o.accepted, "a claim of a packed order was accepted: {o:?}");
        match o.code.as_str() {
            "fenced" => Ok(o.message),
            "already_owned" => Err(o.message),
            other => panic!("unexpected rejection {other}: {}", o.message),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_order_that_lapses_is_fenced_for_its_old_owner() {
    let c = TestCluster::start(
        3,
        Options {
            lease_grace_ms: Some(200),
            ..Default::default()
        },
    )
    .await;
    c.enroll_replicas().await;
    let channel = c.enroll_channel("shop").await;
    let slow = c
        .enroll_node_with(
            "store-slow",
            pb::NodeKind::Store,
            pb::PublishProfile {
                dispatch_time_ms: 2_000,
                ..sample_profile()
            },
        )
        .await;
    let other = c.enroll_node("store-other").await;
    let s = c.submitter().await;
    let client = c.client().await;

    // 1. The old owner ships from the fence: accepted, counted late.
    c.register_order(&channel, "o-ship").await;
    let why = pack_and_lapse(&c, &s, &slow, &other, "o-ship").await;
    assert!(why.contains("fenced for store-slow"), "{why}");
    assert!(why.contains("while it was packed"), "{why}");
    // The sweep records the fence (with the default fence of 2 h it holds).
    let view = c
        .wait_until("the sweep to record the fence", TIMEOUT, async || {
            let v = client
                .get_order("o-ship")
                .await
                .map_err(|e| e.to_string())?;
            if v.status == "fenced" {
                Ok(v)
            } else {
                Err(v.status)
            }
        })
        .await;
    assert_eq!(
        (
            view.owner.as_str(),
            view.custodian.as_str(),
            view.fenced_node.as_str()
        ),
        ("", "store-slow", "store-slow")
    );
    assert!(view.fence_until_ms > 0 && !view.fence_expired);
    // Not listed as open, nor as claimable by the other node, while fenced.
    for filter in [
        pb::ListOrdersRequest {
            status: "open".into(),
            ..Default::default()
        },
        pb::ListOrdersRequest {
            claimable_by: "store-other".into(),
            ..Default::default()
        },
    ] {
        let page = client.list_orders(filter).await.expect("list");
        assert!(
            page.orders.iter().all(|o| o.order_id != "o-ship"),
            "a fenced order is listed as open: {:?}",
            page.orders
        );
    }
    let fenced = client
        .list_orders(pb::ListOrdersRequest {
            status: "fenced".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(fenced.orders.len(), 1, "{:?}", fenced.orders);
    let shipped = s
        .submit_accepted(
            "shipped from the fence",
            slow.report_shipped("o-ship", "sf-express", "SF1"),
        )
        .await;
    assert!(shipped.seq > 0);
    let view = client.get_order("o-ship").await.expect("order");
    assert_eq!(
        (
            view.status.as_str(),
            view.owner.as_str(),
            view.custodian.as_str()
        ),
        // Rules version 4: an unsigned hand-off leaves the node the custodian.
        ("shipped", "store-slow", "store-slow")
    );
    let st = client.node_stats("store-slow").await.expect("stats");
    assert_eq!(
        (
            st.lapses,
            st.shipped,
            st.late_shipments,
            st.open_orders,
            st.fence_expiries
        ),
        (1, 1, 1, 0, 0)
    );

    // 2. The old owner confirms it did not ship: the order opens.
    c.register_order(&channel, "o-back").await;
    pack_and_lapse(&c, &s, &slow, &other, "o-back").await;
    s.submit_accepted(
        "confirm not shipped",
        slow.release_order("o-back", "not shipped"),
    )
    .await;
    assert_eq!(
        client.get_order("o-back").await.expect("order").status,
        "open"
    );
    s.submit_accepted(
        "claim after the confirmation",
        other.claim_order("o-back", 1, SAMPLE_TOTAL),
    )
    .await;
    let view = client.get_order("o-back").await.expect("order");
    assert_eq!(view.owner, "store-other");
    // Its later ship report is a milestone without ownership.
    let late = s
        .submit(slow.report_shipped("o-back", "sf-express", "SF2"))
        .await
        .expect("submit");
    assert_eq!(late.outcome.unwrap_or_default().code, "not_owner");

    // The cluster started at the newest rules version: it is never lowered,
    // but an operator may change the fence.
    let lower = s
        .submit(c.operator().set_rules_version(1, 0))
        .await
        .expect("submit");
    let o = lower.outcome.unwrap_or_default();
    assert_eq!(o.code, "rules_version_lowered", "{}", o.message);
    let set = s
        .submit_accepted(
            "a shorter fence",
            c.operator()
                .set_rules_version(arbor_proto::rules::CURRENT_RULES_VERSION, 60_000),
        )
        .await;
    assert_eq!(
        set.outcome.unwrap_or_default().message,
        format!(
            "rules version {v} from entry {} (was {v})",
            set.seq,
            v = arbor_proto::rules::CURRENT_RULES_VERSION
        )
    );
    c.check_invariants().await;
}

/// With a fence of 1.5 s the leader's sweep records the fence and its expiry
/// by itself (through the lease index, which keys a fenced order by its
/// fence's end): the order opens and the expiry is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_records_a_fence_that_runs_out() {
    let c = TestCluster::start(
        1,
        Options {
            lease_grace_ms: Some(100),
            fence_ms: Some(1_500),
            ..Default::default()
        },
    )
    .await;
    c.enroll_replicas().await;
    let channel = c.enroll_channel("shop").await;
    let slow = c
        .enroll_node_with(
            "store-slow",
            pb::NodeKind::Store,
            pb::PublishProfile {
                dispatch_time_ms: 1_000,
                ..sample_profile()
            },
        )
        .await;
    c.register_order(&channel, "o-expire").await;
    let s = c.submitter().await;
    s.submit_accepted("claim", slow.claim_order("o-expire", 1, SAMPLE_TOTAL))
        .await;
    s.submit_accepted(
        "packed",
        slow.report_milestone("o-expire", pb::Milestone::Packed),
    )
    .await;
    let client = c.client().await;
    let st = c
        .wait_until("the sweep to record the expiry", TIMEOUT, async || {
            let st = client
                .node_stats("store-slow")
                .await
                .map_err(|e| e.to_string())?;
            if st.fence_expiries == 1 {
                Ok(st)
            } else {
                Err(format!("fence expiries {}", st.fence_expiries))
            }
        })
        .await;
    assert_eq!((st.lapses, st.open_orders), (1, 0));
    let view = client.get_order("o-expire").await.expect("order");
    assert_eq!(
        (view.status.as_str(), view.custodian.as_str()),
        ("open", "")
    );
    let last = *view.history.last().expect("history");
    let entry = client.get_entries(last, 1).await.expect("entry").entries[0].clone();
    let outcome = entry.outcome.unwrap_or_default();
    // The sweep may record the fence and its expiry in one entry or two.
    assert!(
        outcome.message.contains("fence of store-slow expired at"),
        "{}",
        outcome.message
    );
    c.check_invariants().await;
}
