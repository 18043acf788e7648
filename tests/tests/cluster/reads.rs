//! Linearizable reads, confirmed in batched ReadIndex rounds
//! (node/src/api/read_index.rs): a read that starts after a write was
//! acknowledged sees it, even when it arrives while a round is running, on
//! any replica; and a leader cut off from the others serves no stale read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arbor_client::{Client, Commands};
use arbor_tests::fixtures::{sample_order, SAMPLE_TOTAL};
use arbor_tests::{Options, TestCluster, TIMEOUT};
use tonic::Code;

/// Background load: `n` readers on `clients` reading orders in a loop, so
/// that read rounds run all the time and the reads a test checks arrive
/// while one is in progress. Returns the stop flag and the count of reads.
fn hammer(
    clients: &[Client],
    order_id: &str,
    n: usize,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (c, stop, reads, id) = (
            clients[i % clients.len()].clone(),
            stop.clone(),
            reads.clone(),
            order_id.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if c.get_order(&id).await.is_ok() {
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    (stop, reads, tasks)
}

/// Every acknowledged claim is seen by every read started after the
/// acknowledgement, sent to the leader or to a follower (which forwards
/// it), while other reads keep rounds running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_an_acknowledged_write_sees_it_under_concurrent_reads() {
    const ORDERS: usize = 12;
    const READS_PER_WRITE: usize = 12;
    let c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let node = c.enroll_node("store-1").await;
    c.register_order(&channel, "busy").await;
    let clients: Vec<Client> = {
        let mut v = Vec::new();
        for id in c.ids() {
            v.push(c.client_for(&[id]).await);
        }
        v
    };
    let (stop, background, tasks) = hammer(&clients, "busy", 12);
    let sub = c.submitter().await;

    for k in 0..ORDERS {
        let id = format!("o-{k}");
        sub.submit_accepted(
            &format!("register {id}"),
            channel.register_order(sample_order(&id)),
        )
        .await;
        // A read right after the registration's acknowledgement sees it.
        let fresh = clients[k % clients.len()]
            .get_order(&id)
            .await
            .unwrap_or_else(|e| panic!("{id} read right after its registration: {e}"));
        assert_eq!(fresh.owner, "", "{id}");
        sub.submit_accepted(
            &format!("claim {id}"),
            node.claim_order(&id, 1, SAMPLE_TOTAL),
        )
        .await;
        let reads: Vec<_> = (0..READS_PER_WRITE)
            .map(|r| {
                let (c, id) = (clients[r % clients.len()].clone(), id.clone());
                tokio::spawn(async move { c.get_order(&id).await })
            })
            .collect();
        for (r, t) in reads.into_iter().enumerate() {
            let view = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("read {r} of {id}: {e}"));
            assert_eq!(
                view.owner, "store-1",
                "read {r} of {id}, started after the claim was acknowledged, \
                 does not show it: {view:?}"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        background.load(Ordering::SeqCst) > 0,
        "the background readers got no answer"
    );
}

fn partitionable() -> Options {
    Options {
        partitionable: true,
        ..Default::default()
    }
}

/// A leader cut off from both followers keeps believing it leads for a
/// while; reads sent to it meanwhile — many at once, so that they share
/// rounds — must not answer from its stale state: once the majority has
/// acknowledged a new order, a read on the deposed leader either fails or
/// finds that order, never `NOT_FOUND`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_serves_no_stale_read() {
    let c = TestCluster::start(3, partitionable()).await;
    let channel = c.enroll_channel("shop").await;
    c.register_order(&channel, "before").await;
    let old = c.wait_leader(TIMEOUT).await;
    let old_term = c.status(old).await.expect("status").term;
    let majority: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    let lonely = c
        .client_for(&[old])
        .await
        .with_timeout(Duration::from_secs(2));
    // Reads keep arriving at the old leader from before the cut to after it.
    let (stop, _, tasks) = hammer(std::slice::from_ref(&lonely), "before", 8);

    c.partition(&[old]);
    c.wait_until("the majority to elect a new leader", TIMEOUT, async || {
        for id in &majority {
            let s = c.status(*id).await?;
            if s.state == "Leader" && s.term > old_term {
                return Ok(());
            }
        }
        Err("no new leader among the majority yet".into())
    })
    .await;
    let sub = c.submitter_for(&majority).await;
    sub.submit_accepted(
        "register after",
        channel.register_order(sample_order("after")),
    )
    .await;

    let reads: Vec<_> = (0..16)
        .map(|_| {
            let lonely = lonely.clone();
            tokio::spawn(async move { lonely.get_order("after").await })
        })
        .collect();
    let mut failed = 0;
    for t in reads {
        match t.await.unwrap() {
            Ok(view) => assert_eq!(view.order_id, "after"),
            Err(e) => {
                assert_ne!(
                    e.code(),
                    Some(Code::NotFound),
                    "the deposed leader answered from its stale state: {e}"
                );
                failed += 1;
            }
        }
    }
    // Cut off from the others, it cannot confirm a read at all.
    assert_eq!(failed, 16, "reads on the isolated replica were answered");
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    c.heal();
    c.wait_converged(TIMEOUT).await;
    let view = lonely.get_order("after").await.expect("read after healing");
    assert_eq!(view.order_id, "after");
    c.check_invariants().await;
}
