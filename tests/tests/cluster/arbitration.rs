//! The arbitration rules through a real cluster: one owner per order under a
//! claim race, recorded rejections, exactly-once, and refused input.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbor_client::{ClientError, Commands, Identity, Signer};
use arbor_proto::pb;
use arbor_proto::pb::command::Body;
use arbor_tests::fixtures::{
    command_of, random_key, sample_order, sample_order_with_ref, sign_bytes, sign_with,
    with_unknown_field, CHANNEL_NAME, SAMPLE_TOTAL,
};
use arbor_tests::{TestCluster, TIMEOUT};
use futures::StreamExt;
use prost::Message;
use rand::seq::SliceRandom;
use tonic::Code;

fn outcome(r: &pb::SubmitReply) -> pb::Outcome {
    r.outcome.clone().unwrap_or_default()
}

/// Asserts `r` is an appended rejection with `code` whose message names every one of `names`.
fn assert_rejected(what: &str, r: &pb::SubmitReply, code: &str, names: &[&str]) {
    let o = outcome(r);
    assert!(!o.accepted, "{what}: accepted at seq {}", r.seq);
    assert_eq!(o.code, code, "{what}: {}", o.message);
    for n in names {
        assert!(
            o.message.contains(n),
            "{what}: message {:?} does not name {n:?}",
            o.message
        );
    }
    assert!(!r.duplicate, "{what}: answered as a duplicate");
}

/// 8 nodes race to claim the same 500 orders (each order's 8 claims are
/// submitted back to back, ~48 in flight). Exactly one claim per order is
/// accepted; every other is rejected `already_owned` naming the owner that
/// `GetOrder` reports, and comes later in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_racing_for_the_same_orders_get_one_owner_each() {
    const ORDERS: usize = 500;
    const NODES: usize = 8;
    const IN_FLIGHT: usize = 48;

    let c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let mut nodes: Vec<(String, Signer)> = Vec::new();
    for i in 0..NODES {
        let name = format!("store-{i}");
        let id = c.enroll_node(&name).await;
        nodes.push((name, id));
    }
    let orders: Vec<String> = (0..ORDERS).map(|i| format!("race-{i:03}")).collect();
    c.register_orders(&channel, &orders, IN_FLIGHT).await;

    let mut jobs = Vec::new();
    {
        let mut rng = rand::thread_rng();
        for o in &orders {
            let mut who: Vec<usize> = (0..NODES).collect();
            who.shuffle(&mut rng);
            jobs.extend(who.into_iter().map(|n| (o.clone(), n)));
        }
    }
    let sub = c.submitter().await.with_timeout(Duration::from_secs(60));
    let results: Vec<(String, usize, Result<pb::SubmitReply, String>)> =
        futures::stream::iter(jobs)
            .map(|(o, n)| {
                let cmd = nodes[n].1.claim_order(&o, 1, SAMPLE_TOTAL);
                let sub = sub.clone();
                async move { (o, n, sub.submit(cmd).await.map_err(|e| e.to_string())) }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
    assert_eq!(results.len(), ORDERS * NODES);

    let mut by_order: BTreeMap<String, Vec<(usize, pb::SubmitReply)>> = BTreeMap::new();
    let mut unanswered = Vec::new();
    for (o, n, r) in results {
        match r {
            Ok(r) => by_order.entry(o).or_default().push((n, r)),
            Err(e) => unanswered.push(format!("{o} by store-{n}: {e}")),
        }
    }
    assert!(
        unanswered.is_empty(),
        "{} claims got no answer, e.g. {:?}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(5)]
    );
    let seqs: BTreeSet<u64> = by_order.values().flatten().map(|(_, r)| r.seq).collect();
    assert_eq!(seqs.len(), ORDERS * NODES, "every claim is its own entry");

    let client = c.client().await;
    let views: BTreeMap<String, pb::OrderView> = futures::stream::iter(orders.clone())
        .map(|o| {
            let client = client.clone();
            async move {
                let v = client
                    .get_order(&o)
                    .await
                    .unwrap_or_else(|e| panic!("get {o}: {e}"));
                (o, v)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;

    let mut wins = vec![0usize; NODES];
    for (o, replies) in &by_order {
        let accepted: Vec<&(usize, pb::SubmitReply)> = replies
            .iter()
            .filter(|(_, r)| outcome(r).accepted)
            .collect();
        assert_eq!(
            accepted.len(),
            1,
            "order {o}: accepted claims by {:?}",
            accepted
                .iter()
                .map(|(n, r)| (*n, r.seq))
                .collect::<Vec<_>>()
        );
        let (winner, won) = accepted[0];
        wins[*winner] += 1;
        let view = &views[o];
        assert_eq!(view.owner, nodes[*winner].0, "order {o}: GetOrder owner");
        assert_eq!(view.claimed_seq, won.seq, "order {o}: claimed_seq");
        assert_eq!(view.status, "claimed");
        for (n, r) in replies.iter().filter(|(_, r)| !outcome(r).accepted) {
            let what = format!("order {o}, claim by store-{n}");
            assert_rejected(&what, r, "already_owned", &[&view.owner]);
            assert_eq!(r.owner, view.owner, "{what}: the reply's owner field");
            assert!(
                r.seq > won.seq,
                "{what}: rejected at {} before the winning claim at {}",
                r.seq,
                won.seq
            );
        }
    }
    assert_eq!(by_order.len(), ORDERS);
    eprintln!("orders won per node: {wins:?}");

    let audit = c.check_invariants().await;
    let owned = audit
        .state
        .orders
        .values()
        .filter(|o| o.owner.is_some())
        .count();
    assert_eq!(owned, ORDERS);
}

/// Commands the rules reject are still appended, with the reason: duplicate
/// registration, a taken external reference, a wrong price or version, an
/// unknown order, a second claim. The order's history links them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_commands_are_recorded_with_their_reason() {
    let c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let a = c.enroll_node("store-a").await;
    let b = c.enroll_node("store-b").await;
    let sub = c.submitter().await;
    let submit = async |cmd: pb::SignedCommand| sub.submit(cmd).await.expect("submit");

    let registered = sub
        .submit_accepted("register o-1", channel.register_order(sample_order("o-1")))
        .await;
    let mut history = vec![registered.seq];
    let mut rejected = Vec::new();

    let r =
        submit(channel.register_order(sample_order_with_ref("o-1", CHANNEL_NAME, "another"))).await;
    assert_rejected("second registration", &r, "duplicate_order", &["o-1"]);
    assert_eq!(r.seq, registered.seq + 1, "a rejection is appended");
    history.push(r.seq);
    rejected.push((r.seq, "duplicate_order"));

    let r =
        submit(channel.register_order(sample_order_with_ref("o-2", CHANNEL_NAME, "ext-o-1"))).await;
    assert_rejected(
        "reused external ref",
        &r,
        "external_ref_taken",
        &["ext-o-1", "o-1"],
    );
    history.push(r.seq);
    rejected.push((r.seq, "external_ref_taken"));

    let r = submit(a.claim_order("o-1", 1, SAMPLE_TOTAL - 1)).await;
    assert_rejected("wrong total", &r, "price_mismatch", &["3000", "2999"]);
    history.push(r.seq);
    rejected.push((r.seq, "price_mismatch"));

    let r = submit(a.claim_order("o-1", 2, SAMPLE_TOTAL)).await;
    assert_rejected("wrong price version", &r, "price_mismatch", &["version 1"]);
    history.push(r.seq);
    rejected.push((r.seq, "price_mismatch"));

    let r = submit(a.claim_order("o-404", 1, SAMPLE_TOTAL)).await;
    assert_rejected("unknown order", &r, "unknown_order", &["o-404"]);
    rejected.push((r.seq, "unknown_order"));

    let won = sub
        .submit_accepted("first claim", a.claim_order("o-1", 1, SAMPLE_TOTAL))
        .await;
    history.push(won.seq);

    let r = submit(b.claim_order("o-1", 1, SAMPLE_TOTAL)).await;
    assert_rejected("second claim", &r, "already_owned", &["store-a", "o-1"]);
    history.push(r.seq);
    rejected.push((r.seq, "already_owned"));

    let client = c.client().await;
    let view = client.get_order("o-1").await.expect("get o-1");
    assert_eq!(view.owner, "store-a");
    assert_eq!(view.claimed_seq, won.seq);
    assert_eq!(view.history, history, "o-1's entries, oldest first");
    let by_ref = client
        .resolve_ref(CHANNEL_NAME, "ext-o-1")
        .await
        .expect("resolve ref");
    assert_eq!(by_ref.order_id, "o-1");
    let err = client
        .get_order("o-2")
        .await
        .expect_err("o-2 was never registered");
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    let audit = c.check_invariants().await;
    for (seq, code) in rejected {
        let o = audit.chain[seq as usize]
            .outcome
            .clone()
            .unwrap_or_default();
        assert!(
            !o.accepted && o.code == code,
            "entry {seq}: {o:?}, expected {code}"
        );
    }
}

/// Resending the identical signed bytes (to the leader, through a follower,
/// after a leader change) returns the original seq and outcome marked
/// duplicate, and appends nothing. Rejections are deduplicated too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_command_is_applied_once() {
    let mut c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let sub = c.submitter().await;

    let cmd = channel.register_order(sample_order("o-1"));
    let first = sub.submit_accepted("register", cmd.clone()).await;
    assert!(!first.duplicate);
    let dup_reg = channel.register_order(sample_order_with_ref("o-1", CHANNEL_NAME, "other"));
    let rejected = sub
        .submit(dup_reg.clone())
        .await
        .expect("duplicate registration");
    assert_rejected(
        "duplicate registration",
        &rejected,
        "duplicate_order",
        &["o-1"],
    );
    let head = c.head_seq().await;
    assert_eq!(head, rejected.seq);

    let same = |what: &str, orig: &pb::SubmitReply, again: &pb::SubmitReply| {
        assert_eq!(again.seq, orig.seq, "{what}: seq");
        assert_eq!(again.entry_hash, orig.entry_hash, "{what}: entry hash");
        assert_eq!(again.outcome, orig.outcome, "{what}: outcome");
        assert!(again.duplicate, "{what}: not marked duplicate");
    };

    let again = sub.submit(cmd.clone()).await.expect("resend");
    same("resend", &first, &again);
    let again = sub.submit(dup_reg.clone()).await.expect("resend rejected");
    same("resend of a rejected command", &rejected, &again);

    let follower = c.followers().await[0];
    let via = c.submitter_for(&[follower]).await;
    let again = via
        .submit(cmd.clone())
        .await
        .expect("resend through a follower");
    same("resend through a follower", &first, &again);
    assert_eq!(c.head_seq().await, head, "a resend appended an entry");

    // The new leader knows the command too.
    let leader = c.wait_leader(TIMEOUT).await;
    c.kill(leader);
    c.wait_leader(TIMEOUT).await;
    let again = c
        .submitter()
        .await
        .submit(cmd.clone())
        .await
        .expect("resend after failover");
    same("resend after a leader change", &first, &again);
    assert_eq!(c.head_seq().await, head, "a resend appended an entry");

    c.restart(leader).await;
    let audit = c.check_invariants().await;
    assert_eq!(audit.chain.len() as u64, head + 1);
}

/// Every kind of bad input is refused with the right gRPC code and a message
/// naming the problem, and nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_appended() {
    let c = TestCluster::voters(3).await;
    let channel = c.enroll_channel("shop").await;
    let node = c.enroll_node("store-1").await;
    c.register_order(&channel, "o-1").await;
    let head = c.wait_converged(TIMEOUT).await;

    let valid = channel.register_order(sample_order("o-new"));
    let valid_cmd = command_of(&valid);
    let order_with = |f: &dyn Fn(&mut pb::RegisterOrder)| {
        let mut o = sample_order("o-bad");
        f(&mut o);
        channel.register_order(o)
    };
    let genesis = Body::Genesis(pb::Genesis {
        claim_deadlines: None,
        cluster_id: "evil".into(),
        operators: vec![pb::GenesisOperator {
            party_id: "mallory".into(),
            public_key: random_key().verifying_key().to_bytes().to_vec(),
        }],
        lease_grace_ms: 0,
        rules_version: 0,
        fence_ms: 0,
        members: Vec::new(),
    });

    let mut cases: Vec<(&str, pb::SignedCommand, Code, Vec<&str>)> = Vec::new();
    cases.push((
        "garbage command bytes",
        pb::SignedCommand {
            command: vec![0xff; 16],
            signer: "shop".into(),
            signature: vec![7; 64],
        },
        Code::InvalidArgument,
        vec!["decode"],
    ));
    cases.push((
        "empty command",
        pb::SignedCommand {
            command: Vec::new(),
            signer: "shop".into(),
            signature: vec![7; 64],
        },
        Code::InvalidArgument,
        vec!["no body"],
    ));
    let mut unsigned = valid.clone();
    unsigned.signature.clear();
    cases.push((
        "unsigned",
        unsigned,
        Code::Unauthenticated,
        vec!["not signed"],
    ));
    let mut anonymous = valid.clone();
    anonymous.signer.clear();
    cases.push((
        "no signer",
        anonymous,
        Code::Unauthenticated,
        vec!["not signed"],
    ));
    let mut short = valid.clone();
    short.signature.truncate(10);
    cases.push((
        "truncated signature",
        short,
        Code::Unauthenticated,
        vec!["signature", "10 bytes"],
    ));
    let mut flipped = valid.clone();
    flipped.signature[5] ^= 0x10;
    cases.push((
        "flipped signature bit",
        flipped,
        Code::Unauthenticated,
        vec!["signature", "shop"],
    ));
    let mut tampered = valid.clone();
    let mut cmd = valid_cmd.clone();
    if let Some(Body::RegisterOrder(o)) = cmd.body.as_mut() {
        o.destination_region = "CN-11".into();
    }
    tampered.command = cmd.encode_to_vec();
    cases.push((
        "command changed after signing",
        tampered,
        Code::Unauthenticated,
        vec!["signature", "shop"],
    ));
    cases.push((
        "signed by another key",
        sign_with(&random_key(), c.cluster_id(), "shop", &valid_cmd),
        Code::Unauthenticated,
        vec!["signature", "shop"],
    ));
    cases.push((
        "unknown signer",
        c.signer(&Identity::generate("ghost"))
            .register_order(sample_order("o-ghost")),
        Code::Unauthenticated,
        vec!["ghost"],
    ));
    cases.push((
        "wrong role: a node registers an order",
        node.register_order(sample_order("o-node")),
        Code::PermissionDenied,
        vec!["store-1", "channel"],
    ));
    cases.push((
        "wrong role: a channel claims",
        channel.claim_order("o-1", 1, SAMPLE_TOTAL),
        Code::PermissionDenied,
        vec!["shop", "node"],
    ));
    cases.push((
        "wrong role: a channel enrols a party",
        channel.enroll_party(
            "eve",
            pb::Role::Channel,
            pb::NodeKind::Unspecified,
            &random_key().verifying_key().to_bytes(),
        ),
        Code::PermissionDenied,
        vec!["shop", "operator"],
    ));
    cases.push((
        "malformed order: total is not the sum of the lines",
        order_with(&|o| o.total = SAMPLE_TOTAL - 1),
        Code::InvalidArgument,
        vec!["2999", "3000"],
    ));
    cases.push((
        "malformed order: no external reference",
        order_with(&|o| o.external_refs.clear()),
        Code::InvalidArgument,
        vec!["external reference"],
    ));
    cases.push((
        "foreign reference: the channel registers another channel's reference",
        order_with(&|o| {
            o.external_refs = vec![pb::ExternalRef {
                channel: "jd".into(),
                external_id: "x-2011".into(),
            }]
        }),
        Code::PermissionDenied,
        vec!["shop", "\"jd\"", "foreign_reference"],
    ));
    cases.push((
        "malformed enrolment: a second, non-canonical encoding of a key",
        c.operator().enroll_party(
            "twin",
            pb::Role::Auditor,
            pb::NodeKind::Unspecified,
            &arbor_proto::audit::synth::non_canonical_twin().1,
        ),
        Code::InvalidArgument,
        vec!["canonically encoded"],
    ));
    cases.push((
        "malformed order: currency",
        order_with(&|o| o.currency = "yuan".into()),
        Code::InvalidArgument,
        vec!["currency", "yuan"],
    ));
    cases.push((
        "malformed claim: price version 0",
        node.claim_order("o-1", 0, SAMPLE_TOTAL),
        Code::InvalidArgument,
        vec!["price version"],
    ));
    cases.push((
        "malformed enrolment: a node without a kind",
        c.operator().enroll_party(
            "store-x",
            pb::Role::Node,
            pb::NodeKind::Unspecified,
            &random_key().verifying_key().to_bytes(),
        ),
        Code::InvalidArgument,
        vec!["kind"],
    ));
    cases.push((
        "genesis submitted by a client (operator-signed)",
        c.operator().sign(genesis.clone()),
        Code::InvalidArgument,
        vec!["genesis"],
    ));
    cases.push((
        "genesis submitted by a client (unsigned)",
        pb::SignedCommand {
            command: pb::Command {
                nonce: 0,
                body: Some(genesis),
            }
            .encode_to_vec(),
            signer: String::new(),
            signature: Vec::new(),
        },
        Code::InvalidArgument,
        vec!["genesis"],
    ));

    // Encodings that are not canonical, validly signed: refused, never stored.
    let mut claim = command_of(&node.claim_order("o-1", 1, SAMPLE_TOTAL));
    claim.nonce = 5; // one varint byte, so that it can be stretched below
    let as_node = |bytes: Vec<u8>| sign_bytes(&node.key, c.cluster_id(), "store-1", bytes);
    cases.push((
        "unknown fields inside the signed command",
        as_node(with_unknown_field(&claim, 1000)),
        Code::InvalidArgument,
        vec![
            "command payload is not in canonical encoding",
            "unknown fields",
        ],
    ));
    cases.push((
        "3.9 MB of unknown fields inside a signed claim",
        as_node(with_unknown_field(&claim, 3_900_000)),
        Code::InvalidArgument,
        vec!["command size limit", "MAX_COMMAND_BYTES = 262144"],
    ));
    let mut overlong = claim.encode_to_vec();
    // The nonce (field 1, first) rewritten as a 10-byte varint of the same value.
    let mut nonce = Vec::new();
    prost::encoding::encode_varint(claim.nonce, &mut nonce);
    let mut padded: Vec<u8> = nonce.iter().map(|b| b | 0x80).collect();
    padded.resize(9, 0x80);
    padded.push(0x00);
    overlong.splice(1..1 + nonce.len(), padded);
    cases.push((
        "an overlong varint in the signed command",
        as_node(overlong),
        Code::InvalidArgument,
        vec!["not in canonical encoding"],
    ));
    let mut reordered = claim.encode_to_vec();
    let nonce_field: Vec<u8> = reordered.drain(..1 + nonce.len()).collect();
    reordered.extend(nonce_field);
    cases.push((
        "the signed command's fields out of order",
        as_node(reordered),
        Code::InvalidArgument,
        vec!["fields out of order"],
    ));
    cases.push((
        "a claim signed for another cluster",
        sign_with(&node.key, "another-cluster", "store-1", &claim),
        Code::Unauthenticated,
        vec!["signature", "store-1"],
    ));

    let client = c.client().await;
    let mut problems = Vec::new();
    for (what, cmd, code, names) in cases {
        let err: ClientError = match client.submit(cmd).await {
            Ok(r) => {
                problems.push(format!(
                    "{what}: appended at seq {} with {:?}",
                    r.seq, r.outcome
                ));
                continue;
            }
            Err(e) => e,
        };
        if err.code() != Some(code) {
            problems.push(format!(
                "{what}: code {:?}, expected {code:?}: {err}",
                err.code()
            ));
        }
        let msg = err.to_string();
        for n in names {
            if !msg.contains(n) {
                problems.push(format!("{what}: message {msg:?} does not name {n:?}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "bad input handled wrongly:\n{}",
        problems.join("\n")
    );

    // Nothing was appended: every head is unchanged and the next write is head + 1.
    assert_eq!(c.wait_converged(TIMEOUT).await, head);
    let next = c.register_order(&channel, "o-2").await;
    assert_eq!(next.seq, head + 1);
    c.check_invariants().await;
}

/// Two clusters whose genesis names the same operator key: an enrolment
/// signed for cluster A is refused by cluster B (nothing appended there), and
/// the same enrolment signed for B is accepted. Replays across clusters of a
/// party command fail the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_signed_for_another_cluster_is_refused() {
    let operator = Identity::generate(arbor_tests::OPERATOR);
    let opts = |id: &str| arbor_tests::Options {
        cluster_id: Some(id.into()),
        operator: Some(operator.clone()),
        ..Default::default()
    };
    let a = TestCluster::start(1, opts("cluster-a")).await;
    let b = TestCluster::start(1, opts("cluster-b")).await;
    assert_eq!(
        a.status(1).await.unwrap().cluster_id,
        "cluster-a",
        "the status names the cluster id"
    );
    assert_eq!(b.client().await.cluster_id().await.unwrap(), "cluster-b");

    let mallory = random_key();
    let enrol_for = |c: &TestCluster| {
        c.operator().enroll_party(
            "mallory",
            pb::Role::Operator,
            pb::NodeKind::Unspecified,
            &mallory.verifying_key().to_bytes(),
        )
    };
    let for_a = enrol_for(&a);
    let on_a = a
        .submitter()
        .await
        .submit_accepted("enrol on A", for_a.clone())
        .await;

    let head_b = b.wait_converged(TIMEOUT).await;
    let err = b.client().await.submit(for_a.clone()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert!(err.to_string().contains("signature"), "{err}");
    assert_eq!(
        b.wait_converged(TIMEOUT).await,
        head_b,
        "nothing appended on B"
    );
    let party = b.client().await.get_party("mallory").await;
    assert!(party.is_err(), "mallory is not enrolled on B: {party:?}");

    // The same bytes sent to A again are a duplicate there, not a new entry.
    let again = a.client().await.submit(for_a).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, on_a.seq);

    // Signed for B, the same enrolment is accepted by B.
    let on_b = b
        .submitter()
        .await
        .submit_accepted("enrol on B", enrol_for(&b))
        .await;
    assert_eq!(on_b.seq, head_b + 1);

    // A party command: a claim signed for A is refused by B as well.
    let node = a.enroll_node("store-1").await;
    let node_on_b = b.signer(node.identity());
    b.submitter()
        .await
        .submit_accepted(
            "enrol store-1 on B with the same key",
            b.operator().enroll_party(
                "store-1",
                pb::Role::Node,
                pb::NodeKind::Store,
                &node.public_key(),
            ),
        )
        .await;
    let head_b = b.wait_converged(TIMEOUT).await;
    let err = b
        .client()
        .await
        .submit(node.publish_profile(arbor_tests::fixtures::sample_profile()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert_eq!(b.wait_converged(TIMEOUT).await, head_b);
    b.submitter()
        .await
        .submit_accepted(
            "profile signed for B",
            node_on_b.publish_profile(arbor_tests::fixtures::sample_profile()),
        )
        .await;

    a.check_invariants().await;
    b.check_invariants().await;
}
