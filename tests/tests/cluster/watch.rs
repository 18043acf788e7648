//! The live entry feed (`Arbor.WatchEntries`, `Client::watch`, `arbor watch`)
//! against real replicas: every entry exactly once and in order, across a
//! leader kill and a clean replica stop; a watch from the future waits; an
//! absurd start is refused; the CLI prints one line per entry until Ctrl-C.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_client::{pb, Commands, WatchStream};
use arbor_tests::bins::cli_bin;
use arbor_tests::fixtures::sample_order;
use arbor_tests::invariants::check_links;
use arbor_tests::{TestCluster, TIMEOUT};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

/// What a background watcher has received so far.
#[derive(Default)]
struct Seen {
    entries: Vec<pb::LedgerEntry>,
    resumes: u64,
    serving: Option<String>,
    error: Option<String>,
}

/// Reads `feed` into `seen` until it ends.
fn collect(mut feed: WatchStream) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(item) = feed.next().await {
            let mut s = out.lock().unwrap();
            match item {
                Ok(e) => s.entries.push(e),
                Err(e) => s.error = Some(e.to_string()),
            }
            s.resumes = feed.resumes();
            s.serving = feed.serving();
        }
    });
    seen
}

/// Waits until the watcher holds as many entries as `chain` and checks they
/// are exactly `chain`: the same entries, in order, none repeated or missing.
async fn assert_saw(c: &TestCluster, seen: &Mutex<Seen>, chain: &[pb::LedgerEntry]) {
    c.wait_until(
        &format!("the watcher to receive {} entries", chain.len()),
        TIMEOUT,
        async || {
            let s = seen.lock().unwrap();
            if let Some(e) = &s.error {
                panic!("the watch ended with an error: {e}");
            }
            if s.entries.len() >= chain.len() {
                Ok(())
            } else {
                Err(format!("{} received", s.entries.len()))
            }
        },
    )
    .await;
    let s = seen.lock().unwrap();
    let seqs: Vec<u64> = s.entries.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (0..chain.len() as u64).collect();
    assert_eq!(seqs, expected, "the watcher's sequence numbers");
    assert!(
        s.entries == chain,
        "the watcher's entries differ from the replicas' chain"
    );
    check_links(&s.entries).unwrap_or_else(|e| panic!("watched chain: {e}"));
}

/// A watcher started before any write, reading from the leader, sees every
/// entry once; then the leader is SIGKILLed while eight writers go on, and
/// the resumed stream still yields exactly the survivors' chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_every_entry_once_across_a_leader_kill() {
    const WRITERS: usize = 8;
    const BEFORE_KILL: u64 = 30;
    const AFTER_KILL: u64 = 30;

    let c = TestCluster::voters(3).await;
    let leader = c.wait_leader(TIMEOUT).await;
    // The leader first: the watch reads from it until it dies.
    let mut order = vec![leader];
    order.extend(c.running().into_iter().filter(|id| *id != leader));
    let watcher = c
        .client_for(&order)
        .await
        .with_timeout(Duration::from_secs(30));
    let seen = collect(watcher.watch(0));

    // Before the kill: enrolments and orders, all seen once, from the leader.
    let channel = Arc::new(c.enroll_channel("shop").await);
    c.enroll_node("store-1").await;
    let ids: Vec<String> = (0..20).map(|i| format!("o-{i}")).collect();
    c.register_orders(&channel, &ids, 4).await;
    let chain = c.check_identical_chains().await;
    assert_eq!(
        chain.len(),
        24,
        "genesis, two enrolments, a profile, 20 orders"
    );
    assert_saw(&c, &seen, &chain).await;
    assert_eq!(
        seen.lock().unwrap().serving.as_deref(),
        Some(c.endpoint(leader).as_str()),
        "the watch should read from the first endpoint, the leader"
    );

    // Writers keep registering orders while the leader is killed.
    let sub = c.submitter().await.with_timeout(Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (channel, sub, stop, acked) =
            (channel.clone(), sub.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("w{w}-{i}");
                i += 1;
                // A write in flight on the killed leader may fail; what was
                // committed is compared below whatever its client saw.
                if let Ok(r) = sub.submit(channel.register_order(sample_order(&id))).await {
                    let o = r.outcome.unwrap_or_default();
                    assert!(o.accepted, "{id}: {} {}", o.code, o.message);
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    let acked_at_least = async |n: u64, what: &str| {
        c.wait_until(what, TIMEOUT, async || {
            let a = acked.load(Ordering::SeqCst);
            if a >= n {
                Ok(a)
            } else {
                Err(format!("{a} acknowledged"))
            }
        })
        .await
    };
    acked_at_least(BEFORE_KILL, "writes before the kill").await;
    c.kill(leader);
    let at_kill = acked.load(Ordering::SeqCst);
    let new_leader = c.wait_leader(TIMEOUT).await;
    assert_ne!(new_leader, leader);
    acked_at_least(at_kill + AFTER_KILL, "writes under the new leader").await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer task");
    }

    // The survivors' chain (every invariant checked) is exactly what the watcher saw.
    let audit = c.check_invariants().await;
    assert!(audit.chain.len() as u64 >= 24 + at_kill + AFTER_KILL);
    assert_saw(&c, &seen, &audit.chain).await;
    let s = seen.lock().unwrap();
    assert!(s.resumes >= 1, "the watch never resumed");
    assert_ne!(
        s.serving.as_deref(),
        Some(c.endpoint(leader).as_str()),
        "still reading from the killed leader"
    );
    eprintln!(
        "watcher received {} entries, resumed {} time(s), now reading from {:?}",
        s.entries.len(),
        s.resumes,
        s.serving
    );
}

/// A watch on a follower from three entries past the head delivers nothing
/// until that entry is committed, then delivers it at once; when that
/// follower is stopped cleanly (which the open stream must not hold up),
/// the watch resumes on another replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_future_seq_waits_then_delivers() {
    let c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let head = c.head_seq().await;
    let follower = c.followers().await[0];
    let mut order = vec![follower];
    order.extend(c.running().into_iter().filter(|id| *id != follower));
    let mut feed = c.client_for(&order).await.watch(head + 3);

    // Entries head+1 and head+2 are not wanted; nothing arrives for them.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), feed.next())
            .await
            .is_err(),
        "a watch from a future seq yielded before that entry existed"
    );
    c.register_order(&channel, "o-1").await;
    c.register_order(&channel, "o-2").await;
    c.wait_applied(head + 2, TIMEOUT).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), feed.next())
            .await
            .is_err(),
        "the watch yielded an entry before its from_seq"
    );

    let acked = c.register_order(&channel, "o-3").await;
    let acked_at = Instant::now();
    let e = tokio::time::timeout(TIMEOUT, feed.next())
        .await
        .expect("the watched entry arrives")
        .expect("the watch goes on")
        .expect("an entry, not an error");
    let latency = acked_at.elapsed();
    assert_eq!(e.seq, head + 3);
    assert_eq!(e.seq, acked.seq);
    assert_eq!(e.hash, acked.entry_hash);
    assert_eq!(e.order_id, "o-3");
    assert_eq!(feed.serving(), Some(c.endpoint(follower)));
    eprintln!(
        "entry {} reached the follower's watcher {latency:?} after its ack",
        e.seq
    );
    assert!(
        latency < Duration::from_secs(2),
        "pushed {latency:?} after the ack"
    );

    // A clean stop of the replica being read: it exits (the stream does not
    // hold up shutdown) and the watch resumes elsewhere from head+4.
    c.stop(follower).await;
    c.register_order(&channel, "o-4").await;
    let e = tokio::time::timeout(TIMEOUT, feed.next())
        .await
        .expect("the next entry arrives after the stop")
        .expect("the watch goes on")
        .expect("an entry, not an error");
    assert_eq!(e.seq, head + 4);
    assert_eq!(e.order_id, "o-4");
    assert_eq!(feed.resumes(), 1);
    assert_ne!(feed.serving(), Some(c.endpoint(follower)));
    let chain = c.check_identical_chains().await;
    assert_eq!(chain.len() as u64, head + 5);
    assert_eq!(chain[(head + 4) as usize], e);
}

/// A start absurdly far past the head is refused `OUT_OF_RANGE` with a
/// message saying why; the client library gives up after asking each replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_watch_is_refused_with_a_clear_error() {
    let c = TestCluster::voters(1).await;
    let head = c.head_seq().await;

    let mut raw = pb::arbor_client::ArborClient::new(
        arbor_client::channel(c.addr(1), c.transport()).expect("channel"),
    );
    let Err(err) = raw
        .watch_entries(pb::WatchRequest { from_seq: u64::MAX })
        .await
    else {
        panic!("a watch from u64::MAX was accepted");
    };
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains(&format!(
            "more than 1000000 past this replica's next entry ({})",
            head + 1
        )),
        "{}",
        err.message()
    );

    // Within the bound is fine: the stream opens and waits.
    let ok = raw
        .watch_entries(pb::WatchRequest {
            from_seq: head + 1 + 1_000_000,
        })
        .await;
    assert!(ok.is_ok(), "{:?}", ok.err());

    let started = Instant::now();
    let mut feed = c.client().await.watch(u64::MAX - 1);
    let err = tokio::time::timeout(TIMEOUT, feed.next())
        .await
        .expect("the refusal is reported")
        .expect("the stream yields the error")
        .expect_err("an error, not an entry");
    assert_eq!(err.code(), Some(tonic::Code::OutOfRange), "{err}");
    assert!(
        err.to_string().contains("past this replica's next entry"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        feed.next().await.is_none(),
        "the stream ends after the error"
    );
}

/// `arbor watch --from 0 --output json` prints the backlog and then live
/// entries, one JSON object per line, and exits 0 on Ctrl-C (SIGINT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_watch_prints_one_line_per_entry_until_ctrl_c() {
    let c = TestCluster::voters(1).await;
    let channel = c.enroll_channel("shop").await;
    c.register_order(&channel, "o-1").await;

    let mut cmd = tokio::process::Command::new(cli_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ARBOR_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["watch", "--from", "0", "--output", "json", "--endpoints"])
        .arg(c.endpoint(1))
        .arg("--cacert")
        .arg(c.cacert())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start arbor watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next_line = async || -> serde_json::Value {
        let line = tokio::time::timeout(TIMEOUT, lines.next_line())
            .await
            .expect("arbor watch printed a line in time")
            .expect("read stdout")
            .expect("arbor watch exited early");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object: {line:?}: {e}"))
    };

    let expected = [
        (0, "genesis", "-", ""),
        (1, "enroll_party", "operator", ""),
        (2, "register_order", "shop", "o-1"),
    ];
    for (seq, kind, signer, order) in expected {
        let j = next_line().await;
        assert_eq!(j["seq"], seq, "{j}");
        assert_eq!(j["command_kind"], kind, "{j}");
        assert_eq!(j["signer"], signer, "{j}");
        assert_eq!(j["order_id"], order, "{j}");
        assert_eq!(j["code"], "accepted", "{j}");
    }
    // A live entry.
    let r = c.register_order(&channel, "o-2").await;
    let j = next_line().await;
    assert_eq!(j["seq"], r.seq, "{j}");
    assert_eq!(j["order_id"], "o-2", "{j}");
    assert_eq!(j["hash"], hex::encode(&r.entry_hash), "{j}");

    let pid = child.id().expect("arbor watch is running") as libc::pid_t;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("arbor watch exits on Ctrl-C")
        .expect("wait for arbor watch");
    assert!(status.success(), "arbor watch exited with {status}");
}
