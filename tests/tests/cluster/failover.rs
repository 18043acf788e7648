//! Crashes, restarts and catching up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_client::Client;
use arbor_client::Commands;
use arbor_tests::fixtures::{sample_order, SAMPLE_TOTAL};
use arbor_tests::{TestCluster, TIMEOUT};

/// The leader is SIGKILLed while eight writers keep submitting. A new leader
/// is elected, writes continue, every acknowledged entry is on the survivors,
/// and the killed replica, restarted, catches up to an identical chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_with_writes_in_flight_loses_nothing() {
    const WRITERS: usize = 8;
    const BEFORE_KILL: u64 = 40;
    const AFTER_KILL: u64 = 40;

    let mut c = TestCluster::voters(3).await;
    let channel = Arc::new(c.enroll_channel("shop").await);
    let old_leader = c.wait_leader(TIMEOUT).await;
    let sub = c.submitter().await.with_timeout(Duration::from_secs(10));

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (channel, sub, stop, acked, failures) = (
            channel.clone(),
            sub.clone(),
            stop.clone(),
            acked.clone(),
            failures.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("w{w}-{i}");
                i += 1;
                match sub.submit(channel.register_order(sample_order(&id))).await {
                    Ok(r) => {
                        let o = r.outcome.clone().unwrap_or_default();
                        assert!(
                            o.accepted,
                            "{id}: {} {} at seq {}",
                            o.code, o.message, r.seq
                        );
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    // Outcome unknown (e.g. in flight on the killed leader): allowed,
                    // but it must not have been acknowledged.
                    Err(e) => failures.lock().unwrap().push(format!("{id}: {e}")),
                }
            }
        }));
    }

    c.wait_until(
        &format!("{BEFORE_KILL} acknowledged writes"),
        TIMEOUT,
        async || {
            let n = acked.load(Ordering::SeqCst);
            if n >= BEFORE_KILL {
                Ok(())
            } else {
                Err(format!("{n} acknowledged"))
            }
        },
    )
    .await;
    c.kill(old_leader);
    let at_kill = acked.load(Ordering::SeqCst);

    let new_leader = c.wait_leader(TIMEOUT).await;
    assert_ne!(new_leader, old_leader);
    c.wait_until(
        "writes to continue under the new leader",
        TIMEOUT,
        async || {
            let n = acked.load(Ordering::SeqCst);
            if n >= at_kill + AFTER_KILL {
                Ok(())
            } else {
                Err(format!("{} acknowledged since the kill", n - at_kill))
            }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer task");
    }
    let failures = failures.lock().unwrap().clone();
    eprintln!(
        "{} writes acknowledged, {} failed around the kill; first failures: {:?}",
        acked.load(Ordering::SeqCst),
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Survivors hold every acknowledged entry.
    let audit = c.check_invariants().await;
    assert!(audit.chain.len() as u64 > at_kill + AFTER_KILL);
    assert_eq!(c.running().len(), 2);

    // The crashed leader comes back and catches up to an identical chain.
    c.restart(old_leader).await;
    let audit = c.check_invariants().await;
    assert_eq!(c.running().len(), 3);
    let s = c
        .status(old_leader)
        .await
        .expect("restarted replica answers");
    assert_eq!(s.head_seq as usize, audit.chain.len() - 1);
}

/// A follower killed while writes go on restarts and catches up by log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_follower_restarts_and_catches_up() {
    let mut c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let follower = c.followers().await[0];
    c.kill(follower);

    let ids: Vec<String> = (0..30).map(|i| format!("o-{i}")).collect();
    c.register_orders(&channel, &ids, 8).await;
    let head = c.head_seq().await;
    let behind = c.status(follower).await;
    assert!(behind.is_err(), "killed replica still answers");

    c.restart(follower).await;
    c.wait_applied(head, TIMEOUT).await;
    let audit = c.check_invariants().await;
    assert_eq!(audit.chain.len() as u64, head + 1);
    let o = Client::local_order(c.transport(), &c.endpoint(follower), "o-29")
        .await
        .expect("restarted follower serves the order locally");
    assert_eq!(o.registered_by, "shop");
}

/// Every replica stopped with SIGTERM (clean exit) and started again: the
/// chain is intact, the order is still owned, and the cluster takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_stop_and_restart_keeps_the_chain() {
    let mut c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let store = c.enroll_node("store-1").await;
    let rival = c.enroll_node("store-2").await;
    c.register_order(&channel, "o-1").await;
    c.submitter()
        .await
        .submit_accepted("claim", store.claim_order("o-1", 1, SAMPLE_TOTAL))
        .await;
    let before = c.check_invariants().await.chain;

    for id in c.ids() {
        c.stop(id).await;
    }
    assert!(c.running().is_empty());
    for id in c.ids() {
        c.restart(id).await;
    }
    c.wait_leader(TIMEOUT).await;

    let after = c.check_invariants().await.chain;
    assert_eq!(after, before, "the chain changed across a full restart");

    let client = c.client().await;
    let view = client
        .get_order("o-1")
        .await
        .expect("order survives the restart");
    assert_eq!(view.owner, "store-1");
    assert_eq!(view.status, "claimed");

    // The cluster still arbitrates with the state it recovered.
    let r = c
        .submitter()
        .await
        .submit(rival.claim_order("o-1", 1, SAMPLE_TOTAL))
        .await
        .expect("claim after restart");
    let o = r.outcome.unwrap_or_default();
    assert_eq!(o.code, "already_owned");
    assert!(o.message.contains("store-1"), "{}", o.message);
    assert_eq!(r.seq, before.len() as u64);
    c.check_invariants().await;
}

/// A leader that hangs (SIGSTOP, as if cut off) is replaced; writes go on;
/// when it wakes up it follows the new leader and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_leader_is_replaced_and_rejoins() {
    let c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let old_leader = c.wait_leader(TIMEOUT).await;
    c.pause(old_leader);

    let new_leader = c.wait_leader(TIMEOUT).await;
    assert_ne!(new_leader, old_leader);
    let ids: Vec<String> = (0..20).map(|i| format!("o-{i}")).collect();
    c.register_orders(&channel, &ids, 4).await;

    c.resume(old_leader);
    c.wait_leader(TIMEOUT).await;
    let audit = c.check_invariants().await;
    assert_eq!(audit.chain.len(), 22, "genesis + enrolment + 20 orders");
}

/// With two of three replicas down nothing commits: the write fails
/// `UNAVAILABLE`. Once they are back, resending the very same bytes applies
/// the command exactly once, whether or not the first attempt got in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_fail_and_a_resend_applies_once() {
    let mut c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let head = c.head_seq().await;
    let followers = c.followers().await;
    for f in &followers {
        c.kill(*f);
    }

    let cmd = channel.register_order(sample_order("o-1"));
    let short = c.submitter().await.with_timeout(Duration::from_secs(3));
    let err = short
        .submit(cmd.clone())
        .await
        .expect_err("a write without a quorum was acknowledged");
    assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{err}");

    for f in &followers {
        c.restart(*f).await;
    }
    c.wait_leader(TIMEOUT).await;
    let sub = c.submitter().await;
    let first = sub
        .submit_accepted("resend after quorum is back", cmd.clone())
        .await;
    assert_eq!(first.seq, head + 1);
    let again = sub.submit(cmd).await.expect("second resend");
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    let audit = c.check_invariants().await;
    assert_eq!(audit.chain.len() as u64, head + 2);
}
