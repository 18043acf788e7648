//! Deadlines and leader hints under faults (`node/src/api/routing.rs`):
//! every call is answered by its deadline — by the (new) leader, or with
//! `DEADLINE_EXCEEDED` / `UNAVAILABLE` — never left hanging, never
//! `CANCELLED`, and `UNAVAILABLE` never carries openraft's text.
//!
//! No timing assertions beyond "answered before the deadline plus slack".

use std::time::{Duration, Instant};

use arbor_client::Commands;
use arbor_proto::pb;
use arbor_proto::pb::arbor_client::ArborClient;
use arbor_tests::fixtures::sample_order;
use arbor_tests::{Options, TestCluster, TIMEOUT};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Allowed beyond a deadline for the answer to travel on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);

fn raw(c: &TestCluster, id: u64) -> ArborClient<Channel> {
    let ep = c.endpoint(id);
    ArborClient::new(
        arbor_client::channel(&ep, c.transport()).unwrap_or_else(|e| panic!("{ep}: {e}")),
    )
}

fn with_deadline<T>(body: T, deadline: Duration) -> Request<T> {
    let mut r = Request::new(body);
    r.set_timeout(deadline);
    r
}

/// Runs a call and panics if it is not answered within `deadline + SLACK`.
async fn answered<T>(
    what: &str,
    deadline: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    match tokio::time::timeout(deadline + SLACK, call).await {
        Ok(r) => r.map(|r| r.into_inner()),
        Err(_) => panic!(
            "{what}: no answer {} ms after it was sent with a {} ms deadline",
            started.elapsed().as_millis(),
            deadline.as_millis()
        ),
    }
}

/// What every refusal must look like: a timeout is `DEADLINE_EXCEEDED`, and
/// `UNAVAILABLE` names no openraft internals.
fn check_status(what: &str, s: &Status) {
    assert_ne!(s.code(), Code::Cancelled, "{what}: {s:?}");
    assert!(
        !s.message().contains("has to forward request to"),
        "{what}: openraft's text in {s:?}"
    );
    assert!(
        matches!(s.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{what}: {s:?}"
    );
}

fn order_req(id: &str) -> pb::GetOrderRequest {
    pb::GetOrderRequest {
        order_id: id.into(),
        local: false,
    }
}

/// The leader is SIGSTOPped. A `Submit` sent to a follower with a deadline
/// is answered by the new leader or fails `DEADLINE_EXCEEDED` within the
/// deadline; once the followers agree on a new leader, writes and reads sent
/// to it (and through the other follower) succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_leader_submit_to_follower_is_answered_in_time() {
    let c = TestCluster::voters(3).await;
    let shop = c.enroll_channel("shop").await;
    let old = c.wait_leader(TIMEOUT).await;
    let followers: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    c.pause(old);

    let deadline = Duration::from_secs(10);
    let mut to_follower = raw(&c, followers[0]);
    let first = answered(
        "Submit to a follower with the leader frozen",
        deadline,
        to_follower.submit(with_deadline(
            shop.register_order(sample_order("f-1")),
            deadline,
        )),
    )
    .await;
    match &first {
        Ok(r) => assert!(r.outcome.as_ref().is_some_and(|o| o.accepted), "{r:?}"),
        Err(s) => assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}"),
    }

    let new = c.wait_leader(TIMEOUT).await;
    assert_ne!(new, old);
    // Through a follower (forwarded) and to the new leader directly.
    let other = if followers[0] == new {
        followers[1]
    } else {
        followers[0]
    };
    for (i, target) in [other, new].into_iter().enumerate() {
        let id = format!("f-2-{i}");
        let r = answered(
            "Submit after the election",
            deadline,
            raw(&c, target).submit(with_deadline(
                shop.register_order(sample_order(&id)),
                deadline,
            )),
        )
        .await
        .unwrap_or_else(|s| panic!("Submit via {target}: {s:?}"));
        assert!(r.outcome.is_some_and(|o| o.accepted));
        let v = answered(
            "GetOrder on the new leader",
            deadline,
            raw(&c, new).get_order(with_deadline(order_req(&id), deadline)),
        )
        .await
        .unwrap_or_else(|s| panic!("GetOrder {id} on {new}: {s:?}"));
        assert_eq!(v.order_id, id);
    }

    c.resume(old);
    c.wait_converged(TIMEOUT).await;
    c.check_invariants().await;
}

/// Without a quorum (the leader and one follower frozen), `Submit` and
/// `GetOrder` sent to the remaining follower with a short deadline are
/// answered by it — `DEADLINE_EXCEEDED` or `UNAVAILABLE` — not left hanging,
/// and an `UNAVAILABLE` never names the frozen leader once it was found dead.
/// Sent with no deadline at all, the server's cap
/// (`limits.request-timeout-ms`) ends them the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_calls_end_by_their_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, "[limits]\nrequest-timeout-ms = 3000\n").expect("write config");
    let opts = Options {
        extra_args: vec!["--config".into(), path.display().to_string()],
        ..Default::default()
    };
    let c = TestCluster::start(3, opts).await;
    let shop = c.enroll_channel("shop").await;
    let leader = c.wait_leader(TIMEOUT).await;
    let rest: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    c.pause(leader);
    c.pause(rest[0]);
    let lone = rest[1];

    let deadline = Duration::from_secs(2);
    for i in 0..3 {
        let s = answered(
            "Submit without a quorum",
            deadline,
            raw(&c, lone).submit(with_deadline(
                shop.register_order(sample_order(&format!("q-{i}"))),
                deadline,
            )),
        )
        .await
        .expect_err("no quorum: nothing can be accepted");
        check_status("Submit without a quorum", &s);
        let s = answered(
            "GetOrder without a quorum",
            deadline,
            raw(&c, lone).get_order(with_deadline(order_req("q-0"), deadline)),
        )
        .await
        .expect_err("no quorum: no linearizable read");
        check_status("GetOrder without a quorum", &s);
    }

    // No grpc-timeout: the 3 s cap applies.
    let cap = Duration::from_secs(3);
    let s = answered(
        "Submit with no deadline",
        cap,
        raw(&c, lone).submit(Request::new(shop.register_order(sample_order("q-cap")))),
    )
    .await
    .expect_err("no quorum");
    check_status("Submit with no deadline", &s);
    let s = answered(
        "GetOrder with no deadline",
        cap,
        raw(&c, lone).get_order(Request::new(order_req("q-cap"))),
    )
    .await
    .expect_err("no quorum");
    check_status("GetOrder with no deadline", &s);

    c.resume(rest[0]);
    c.resume(leader);
    c.wait_converged(TIMEOUT).await;
    c.check_invariants().await;
}

/// A call that cannot be served before its deadline (the leader and one
/// follower frozen, so no leader can be elected): the answer is
/// `DEADLINE_EXCEEDED` from the replica, sent before the client's own timer,
/// never `CANCELLED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_deadline_exceeded() {
    let c = TestCluster::voters(3).await;
    let shop = c.enroll_channel("shop").await;
    let leader = c.wait_leader(TIMEOUT).await;
    let rest: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    c.pause(leader);
    c.pause(rest[0]);
    for (i, ms) in [1000u64, 2000, 3000].into_iter().enumerate() {
        let deadline = Duration::from_millis(ms);
        let s = answered(
            "Submit with no leader to be had",
            deadline,
            raw(&c, rest[1]).submit(with_deadline(
                shop.register_order(sample_order(&format!("t-{i}"))),
                deadline,
            )),
        )
        .await
        .expect_err("no quorum");
        assert_eq!(s.code(), Code::DeadlineExceeded, "{ms} ms: {s:?}");
        let s = answered(
            "GetOrder with no leader to be had",
            deadline,
            raw(&c, rest[1]).get_order(with_deadline(order_req("t-0"), deadline)),
        )
        .await
        .expect_err("no quorum");
        assert_eq!(s.code(), Code::DeadlineExceeded, "{ms} ms: {s:?}");
    }
    c.resume(rest[0]);
    c.resume(leader);
    c.wait_converged(TIMEOUT).await;
    c.check_invariants().await;
}

/// A leader cut off from both followers (SIGSTOP) stops waiting for a
/// commit that cannot come: `Submit` is answered `UNAVAILABLE` (resend
/// elsewhere) or `DEADLINE_EXCEEDED`, within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_followers_answers_in_time() {
    let c = TestCluster::voters(3).await;
    let shop = c.enroll_channel("shop").await;
    let leader = c.wait_leader(TIMEOUT).await;
    for f in c.ids().into_iter().filter(|id| *id != leader) {
        c.pause(f);
    }
    let deadline = Duration::from_secs(5);
    for i in 0..2 {
        let s = answered(
            "Submit to a leader without followers",
            deadline,
            raw(&c, leader).submit(with_deadline(
                shop.register_order(sample_order(&format!("l-{i}"))),
                deadline,
            )),
        )
        .await
        .expect_err("no quorum");
        check_status("Submit to a leader without followers", &s);
    }
    for f in c.ids().into_iter().filter(|id| *id != leader) {
        c.resume(f);
    }
    c.wait_converged(TIMEOUT).await;
    c.check_invariants().await;
}

/// The leader is SIGKILLed: a follower asked before the election either
/// waits and forwards to the new leader, or answers without naming the dead
/// one; after the election every hint names the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hint_names_a_dead_leader() {
    let c = TestCluster::voters(3).await;
    let shop = c.enroll_channel("shop").await;
    let old = c.wait_leader(TIMEOUT).await;
    let dead_addr = c.addr(old).to_string();
    let follower = c.ids().into_iter().find(|id| *id != old).unwrap();
    c.kill(old);

    let deadline = Duration::from_secs(8);
    for i in 0..3 {
        let r = answered(
            "Submit to a follower after the leader died",
            deadline,
            raw(&c, follower).submit(with_deadline(
                shop.register_order(sample_order(&format!("d-{i}"))),
                deadline,
            )),
        )
        .await;
        match r {
            Ok(r) => assert!(r.outcome.is_some_and(|o| o.accepted)),
            Err(s) => {
                check_status("Submit after the leader died", &s);
                let hint = s
                    .metadata()
                    .get(arbor_client::LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                assert_ne!(hint, dead_addr, "hint names the dead leader: {s:?}");
            }
        }
    }
    c.wait_leader(TIMEOUT).await;
    c.check_invariants().await;
}
