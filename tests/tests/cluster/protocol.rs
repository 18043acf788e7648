//! The arbitration protocol on a real three-replica cluster: leases that
//! lapse by leader time, a handoff chain store -> warehouse -> 3PL, key
//! rotation and revocation, and the reads (order list, node stats).

use arbor_client::{pb, ClientError, Commands, Identity};
use arbor_tests::fixtures::{sample_profile, SAMPLE_REGION, SAMPLE_TOTAL};
use arbor_tests::{Options, TestCluster, TIMEOUT};
use tonic::Code;

/// A node that promises dispatch within 300 ms, on a cluster with 200 ms of
/// grace, loses the order 500 ms after its claim (by the leader's stamps);
/// another node's claim is then accepted and names the lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unshipped_order_lapses_and_another_node_claims_it() {
    let c = TestCluster::start(
        3,
        Options {
            lease_grace_ms: Some(200),
            ..Default::default()
        },
    )
    .await;
    let channel = c.enroll_channel("shop").await;
    let slow = c
        .enroll_node_with(
            "store-slow",
            pb::NodeKind::Store,
            pb::PublishProfile {
                dispatch_time_ms: 300,
                ..sample_profile()
            },
        )
        .await;
    let other = c.enroll_node("store-other").await;
    c.register_order(&channel, "o-lease").await;
    let s = c.submitter().await;
    let claim = s
        .submit_accepted("slow claim", slow.claim_order("o-lease", 1, SAMPLE_TOTAL))
        .await;
    let client = c.client().await;
    let view = client.get_order("o-lease").await.expect("order");
    let claimed_at = client
        .get_entries(claim.seq, 1)
        .await
        .expect("entry")
        .entries[0]
        .time_ms;
    assert_eq!(view.owner, "store-slow");
    assert_eq!(view.lease_deadline_ms, claimed_at + 500);
    assert_eq!(view.claim_profile_version, 1);

    // Retry fresh claims until the leader's clock passes the deadline.
    let won = c
        .wait_until("the lease to lapse", TIMEOUT, async || {
            let r = s
                .submit(other.claim_order("o-lease", 1, SAMPLE_TOTAL))
                .await
                .map_err(|e| e.to_string())?;
            let o = r.outcome.clone().unwrap_or_default();
            if o.accepted {
                Ok((r.seq, o.message))
            } else {
                assert_eq!(o.code, "already_owned", "{}", o.message);
                Err(o.message)
            }
        })
        .await;
    assert!(
        won.1.contains("lease of store-slow lapsed"),
        "the accepted claim names the lapse: {}",
        won.1
    );
    let entry = client.get_entries(won.0, 1).await.expect("entry").entries[0].clone();
    assert!(
        entry.time_ms > claimed_at + 500,
        "{} <= deadline",
        entry.time_ms
    );
    let view = client.get_order("o-lease").await.expect("order");
    assert_eq!(view.owner, "store-other");
    assert_eq!(view.last_lapsed_owner, "store-slow");
    let stats = client.node_stats("store-slow").await.expect("stats");
    assert_eq!((stats.lapses, stats.open_orders), (1, 0));
    // The lapsed owner can no longer report progress.
    let late = s
        .submit(slow.report_milestone("o-lease", pb::Milestone::Picked))
        .await
        .expect("submit");
    assert_eq!(late.outcome.unwrap_or_default().code, "not_owner");
    c.check_invariants().await;
}

/// Custody moves store -> warehouse -> 3PL only on countersigned
/// acceptance; a decline and a wrong receiver leave it where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_chain_store_warehouse_3pl() {
    let c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let store = c.enroll_node("store-1").await;
    let wh = c
        .enroll_node_with("wh-1", pb::NodeKind::Warehouse, sample_profile())
        .await;
    let tpl = c
        .enroll_node_with("3pl-1", pb::NodeKind::ThreePl, sample_profile())
        .await;
    c.register_order(&channel, "o-chain").await;
    let s = c.submitter().await;
    let client = c.client().await;
    let owner = async || {
        let o = client.get_order("o-chain").await.expect("order");
        (o.owner, o.custodian)
    };
    s.submit_accepted("claim", store.claim_order("o-chain", 1, SAMPLE_TOTAL))
        .await;
    s.submit_accepted(
        "picked",
        store.report_milestone("o-chain", pb::Milestone::Picked),
    )
    .await;

    // store -> warehouse, first declined, then accepted.
    let offer = s
        .submit_accepted(
            "offer to wh",
            store.offer_handoff("o-chain", "wh-1", 60_000),
        )
        .await;
    let wrong = s
        .submit(tpl.accept_handoff("o-chain", offer.seq, false, ""))
        .await
        .expect("submit");
    assert_eq!(
        wrong.outcome.unwrap_or_default().code,
        "not_offered_to_signer"
    );
    s.submit_accepted(
        "decline",
        wh.decline_handoff("o-chain", offer.seq, "dock full"),
    )
    .await;
    assert_eq!(owner().await, ("store-1".into(), "store-1".into()));
    let offer = s
        .submit_accepted(
            "offer to wh again",
            store.offer_handoff("o-chain", "wh-1", 60_000),
        )
        .await;
    s.submit_accepted(
        "wh accepts",
        wh.accept_handoff("o-chain", offer.seq, false, ""),
    )
    .await;
    assert_eq!(owner().await, ("wh-1".into(), "wh-1".into()));
    s.submit_accepted(
        "packed",
        wh.report_milestone("o-chain", pb::Milestone::Packed),
    )
    .await;

    // warehouse -> 3PL, which notes damage at acceptance and ships.
    let offer = s
        .submit_accepted("offer to 3pl", wh.offer_handoff("o-chain", "3pl-1", 60_000))
        .await;
    s.submit_accepted(
        "3pl accepts",
        tpl.accept_handoff("o-chain", offer.seq, true, "corner crushed"),
    )
    .await;
    // The store no longer owns it.
    let old = s
        .submit(store.report_shipped("o-chain", "sf", "SF9"))
        .await
        .expect("submit");
    assert_eq!(old.outcome.unwrap_or_default().code, "not_owner");
    s.submit_accepted(
        "shipped",
        tpl.report_shipped("o-chain", "sf-express", "SF42"),
    )
    .await;
    // Rules version 4: sf-express signed nothing, so 3pl-1 stays the custodian.
    assert_eq!(owner().await, ("3pl-1".into(), "3pl-1".into()));
    s.submit_accepted("delivered", tpl.report_delivered("o-chain", "pod/42"))
        .await;

    let o = client.get_order("o-chain").await.expect("order");
    assert_eq!(o.status, "delivered");
    assert_eq!(o.custodian, "", "delivered with proof: nobody holds it");
    assert!(
        o.exceptions
            .iter()
            .any(|e| e.starts_with("damage_noted_at_handoff by 3pl-1")),
        "{:?}",
        o.exceptions
    );
    // Every command on the order is in its history, oldest first.
    assert!(o.history.len() >= 12, "{:?}", o.history);
    assert!(o.history.windows(2).all(|w| w[0] < w[1]));
    let stats = |id: &'static str| {
        let client = client.clone();
        async move { client.node_stats(id).await.expect("stats") }
    };
    let st = stats("store-1").await;
    assert_eq!((st.claims, st.handoffs_out, st.open_orders), (1, 1, 0));
    let st = stats("wh-1").await;
    assert_eq!((st.handoffs_in, st.handoffs_out, st.open_orders), (1, 1, 0));
    let st = stats("3pl-1").await;
    assert_eq!((st.handoffs_in, st.shipped, st.delivered), (1, 1, 1));
    c.check_invariants().await;
}

/// A rotated key signs nothing; a resend of what the old key signed before
/// still gets its original outcome; a revoked party is refused outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_and_revoked_keys_on_a_cluster() {
    let c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let old = c.enroll_node("store-1").await;
    c.register_order(&channel, "o-1").await;
    c.register_order(&channel, "o-2").await;
    let s = c.submitter().await;
    let first = old.claim_order("o-1", 1, SAMPLE_TOTAL);
    let applied = s.submit_accepted("claim o-1", first.clone()).await;

    let new = c.signer(&Identity::generate("store-1"));
    s.submit_accepted(
        "rotate",
        c.operator().rotate_key("store-1", &new.public_key()),
    )
    .await;
    let head = c.head_seq().await;
    let err = s
        .submit(old.claim_order("o-2", 1, SAMPLE_TOTAL))
        .await
        .expect_err("old key refused");
    assert_refused(&err, Code::Unauthenticated, "bad_signature");
    // Exactly once still holds for what the old key signed before.
    let again = s.submit(first).await.expect("resend");
    assert!(again.duplicate);
    assert_eq!(again.seq, applied.seq);
    assert_eq!(c.head_seq().await, head, "nothing appended");
    s.submit_accepted("new key claims", new.claim_order("o-2", 1, SAMPLE_TOTAL))
        .await;
    let party = c.client().await.get_party("store-1").await.expect("party");
    assert_eq!(party.public_key, new.public_key().to_vec());

    s.submit_accepted("revoke", c.operator().revoke_key("store-1", "device lost"))
        .await;
    let head = c.head_seq().await;
    let err = s
        .submit(new.report_milestone("o-2", pb::Milestone::Picked))
        .await
        .expect_err("revoked key refused");
    assert_refused(&err, Code::PermissionDenied, "revoked_key");
    assert_eq!(c.head_seq().await, head, "nothing appended");
    assert!(c.client().await.get_party("store-1").await.unwrap().revoked);
    // The checker replays signatures with the key in force at each entry.
    c.check_invariants().await;
}

/// `ListOrders` filters, `claimable_by` follows profiles and capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_list_filters_and_claimable_by() {
    let c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let small = c
        .enroll_node_with(
            "store-small",
            pb::NodeKind::Store,
            pb::PublishProfile {
                max_open_orders: 1,
                ..sample_profile()
            },
        )
        .await;
    c.enroll_node_with(
        "store-far",
        pb::NodeKind::Store,
        pb::PublishProfile {
            regions: vec!["somewhere-else".into()],
            ..sample_profile()
        },
    )
    .await;
    for i in 0..3 {
        c.register_order(&channel, &format!("o-{i}")).await;
    }
    let client = c.client().await;
    let list = async |f: pb::ListOrdersRequest| -> Vec<String> {
        client
            .list_orders(f)
            .await
            .expect("list")
            .orders
            .into_iter()
            .map(|o| o.order_id)
            .collect()
    };
    let claimable = |node: &str| pb::ListOrdersRequest {
        claimable_by: node.into(),
        ..Default::default()
    };
    assert_eq!(list(claimable("store-small")).await, ["o-0", "o-1", "o-2"]);
    assert!(list(claimable("store-far")).await.is_empty());
    c.submitter()
        .await
        .submit_accepted("claim", small.claim_order("o-1", 1, SAMPLE_TOTAL))
        .await;
    // At capacity: nothing is claimable by it any more.
    assert!(list(claimable("store-small")).await.is_empty());
    let by_owner = pb::ListOrdersRequest {
        owner: "store-small".into(),
        ..Default::default()
    };
    assert_eq!(list(by_owner).await, ["o-1"]);
    let open = pb::ListOrdersRequest {
        status: "open".into(),
        region: SAMPLE_REGION.into(),
        limit: 1,
        ..Default::default()
    };
    let page = client.list_orders(open.clone()).await.expect("page");
    assert_eq!(page.orders[0].order_id, "o-0");
    assert_eq!(page.next, "o-0");
    let page = client
        .list_orders(pb::ListOrdersRequest {
            after: page.next,
            ..open
        })
        .await
        .expect("page 2");
    assert_eq!(page.orders[0].order_id, "o-2");
    let err = client
        .list_orders(pb::ListOrdersRequest {
            status: "lost-in-space".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown status");
    assert!(err.to_string().contains("unknown status"), "{err}");
    let stats = client.node_stats("store-small").await.expect("stats");
    assert_eq!((stats.open_orders, stats.capacity, stats.claims), (1, 1, 1));
    c.check_invariants().await;
}

fn assert_refused(err: &ClientError, code: Code, name: &str) {
    let text = err.to_string();
    assert!(text.contains(name), "{text}");
    match err {
        ClientError::Status { code: got, .. } => assert_eq!(*got, code, "{text}"),
        other => panic!("expected a {code:?} status, got {other}"),
    }
}

/// With the replica identities enrolled, the leader's lease sweep records a
/// lapse on its own (a `RecordLapse` entry signed by the leader's replica
/// key): the old owner's counters and capacity reflect it without any other
/// command on the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_sweep_records_a_lapse_by_itself() {
    let c = TestCluster::start(
        3,
        Options {
            lease_grace_ms: Some(100),
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
                dispatch_time_ms: 200,
                max_open_orders: 1,
                ..sample_profile()
            },
        )
        .await;
    c.register_order(&channel, "o-swept").await;
    let s = c.submitter().await;
    s.submit_accepted("claim", slow.claim_order("o-swept", 1, SAMPLE_TOTAL))
        .await;
    let client = c.client().await;
    let stats = c
        .wait_until("the sweep to record the lapse", TIMEOUT, async || {
            let st = client
                .node_stats("store-slow")
                .await
                .map_err(|e| e.to_string())?;
            if st.lapses == 1 {
                Ok(st)
            } else {
                Err(format!("lapses {}", st.lapses))
            }
        })
        .await;
    assert_eq!(stats.open_orders, 0, "capacity freed");
    let order = client.get_order("o-swept").await.expect("order");
    assert_eq!((order.status.as_str(), order.owner.as_str()), ("open", ""));
    assert_eq!(order.last_lapsed_owner, "store-slow");
    // The entry that recorded it: a RecordLapse signed by a replica key.
    let last = *order.history.last().expect("history");
    let entry = client.get_entries(last, 1).await.expect("entry").entries[0].clone();
    let env =
        <pb::SignedCommand as prost::Message>::decode(entry.command.as_slice()).expect("envelope");
    assert!(env.signer.starts_with("arbor-replica-"), "{}", env.signer);
    let outcome = entry.outcome.unwrap_or_default();
    assert!(outcome.accepted, "{outcome:?}");
    assert!(
        outcome.message.contains("lease of store-slow lapsed"),
        "{}",
        outcome.message
    );
    // Its capacity is free again: it may claim another order.
    c.register_order(&channel, "o-next").await;
    s.submit_accepted("claim next", slow.claim_order("o-next", 1, SAMPLE_TOTAL))
        .await;
    c.check_invariants().await;
}
