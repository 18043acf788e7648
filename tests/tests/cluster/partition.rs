//! Network partitions: links between replicas cut by the harness's proxies
//! (`TestCluster::partition`), then restored (`heal`).

use std::time::Duration;

use arbor_client::Commands;
use arbor_tests::fixtures::sample_order;
use arbor_tests::{Options, TestCluster, TIMEOUT};

fn partitionable() -> Options {
    Options {
        partitionable: true,
        ..Default::default()
    }
}

/// The leader is cut off from both followers: they elect a new leader in a
/// higher term and keep accepting writes; whatever the old leader was asked
/// meanwhile is never acknowledged unless it reached the majority. After
/// healing, the old leader follows, and every replica has the same chain
/// with every acknowledged entry in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_is_replaced_and_rejoins_as_a_follower() {
    let c = TestCluster::start(3, partitionable()).await;
    let channel = c.enroll_channel("shop").await;
    for i in 0..5 {
        c.register_order(&channel, &format!("before-{i}")).await;
    }
    let old = c.wait_leader(TIMEOUT).await;
    let old_term = c.status(old).await.expect("status").term;
    let majority: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();

    c.partition(&[old]);
    let new = c
        .wait_until("the majority to elect a new leader", TIMEOUT, async || {
            for id in &majority {
                let s = c.status(*id).await?;
                if s.state == "Leader" && s.term > old_term {
                    return Ok(*id);
                }
            }
            Err("no new leader among the majority yet".into())
        })
        .await;
    assert_ne!(new, old);

    // The majority keeps working.
    let sub = c.submitter_for(&majority).await;
    for i in 0..10 {
        sub.submit_accepted(
            &format!("during-{i}"),
            channel.register_order(sample_order(&format!("during-{i}"))),
        )
        .await;
    }
    // The isolated replica cannot commit on its own. Its answer, if any,
    // must come from the majority (an acknowledgement is checked below).
    let lonely = c
        .submitter_for(&[old])
        .await
        .with_timeout(Duration::from_secs(3));
    let _ = lonely
        .submit(channel.register_order(sample_order("sent-to-the-isolated")))
        .await;
    let isolated = c.status(old).await.expect("isolated status");
    let majority_head = c.status(new).await.expect("leader status").head_seq;
    assert!(
        isolated.head_seq < majority_head,
        "the isolated replica applied {} while the majority is at {majority_head}",
        isolated.head_seq
    );

    c.heal();
    c.wait_leader(TIMEOUT).await;
    c.wait_converged(TIMEOUT).await;
    let audit = c.check_invariants().await;
    for i in 0..10 {
        assert!(audit.state.orders.contains_key(&format!("during-{i}")));
    }
}

/// A follower cut off from the others falls behind while the majority
/// commits, and catches up once the links are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_follower_catches_up_after_healing() {
    let c = TestCluster::start(3, partitionable()).await;
    let channel = c.enroll_channel("shop").await;
    let leader = c.wait_leader(TIMEOUT).await;
    let follower = c
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let before = c.status(follower).await.expect("status").head_seq;

    c.partition(&[follower]);
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != follower).collect();
    let sub = c.submitter_for(&others).await;
    for i in 0..20 {
        sub.submit_accepted(
            &format!("o-{i}"),
            channel.register_order(sample_order(&format!("o-{i}"))),
        )
        .await;
    }
    let head = c.status(leader).await.expect("leader").head_seq;
    assert!(head >= before + 20);
    assert!(
        c.status(follower).await.expect("follower").head_seq < head,
        "a partitioned follower applied entries it cannot have received"
    );

    c.heal();
    c.wait_applied(head, TIMEOUT).await;
    c.wait_converged(TIMEOUT).await;
    c.check_invariants().await;
}
