//! Bootstrap, election and where writes may enter the cluster.

use arbor_client::{Client, Commands, Identity};
use arbor_proto::ledger::ZERO_HASH;
use arbor_proto::pb;
use arbor_proto::pb::command::Body;
use arbor_tests::fixtures::{decode_envelope, sample_order};
use arbor_tests::{TestCluster, OPERATOR, TIMEOUT};

/// Three voters elect exactly one leader that all agree on, and every replica
/// starts its chain with the genesis entry (seq 0) naming the operator key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_elects_one_leader_and_writes_genesis() {
    let c = TestCluster::voters(3).await;
    let leader = c.wait_leader(TIMEOUT).await;

    let statuses = c.statuses().await;
    let mut leaders = Vec::new();
    for (id, st) in &statuses {
        let s = st.as_ref().unwrap_or_else(|e| panic!("replica {id}: {e}"));
        assert_eq!(s.node_id, *id);
        assert_eq!(s.leader_id, leader, "replica {id}");
        if s.state == "Leader" {
            leaders.push(*id);
        } else {
            assert_eq!(s.state, "Follower", "replica {id}");
        }
        let mut members: Vec<(u64, String, bool)> = s
            .members
            .iter()
            .map(|m| (m.node_id, m.addr.clone(), m.voter))
            .collect();
        members.sort();
        let expected: Vec<(u64, String, bool)> =
            (1..=3).map(|m| (m, c.addr(m).to_string(), true)).collect();
        assert_eq!(members, expected, "replica {id} members");
    }
    assert_eq!(leaders, vec![leader]);

    let operator_key = c.operator().public_key().to_vec();
    for id in c.ids() {
        let r = Client::local_entries(c.transport(), &c.endpoint(id), 0, 1)
            .await
            .unwrap_or_else(|e| panic!("replica {id}: {e}"));
        assert!(!r.empty, "replica {id} has no entries");
        let e = &r.entries[0];
        assert_eq!(e.seq, 0);
        assert_eq!(e.prev_hash, ZERO_HASH.to_vec());
        assert!(
            e.outcome.as_ref().is_some_and(|o| o.accepted),
            "genesis outcome {:?}",
            e.outcome
        );
        let (env, cmd) = decode_envelope(&e.command);
        assert!(
            env.signer.is_empty() && env.signature.is_empty(),
            "genesis is unsigned"
        );
        let Some(Body::Genesis(g)) = cmd.body else {
            panic!("entry 0 of replica {id} is not genesis: {cmd:?}");
        };
        let ops: Vec<(String, Vec<u8>)> = g
            .operators
            .iter()
            .map(|o| (o.party_id.clone(), o.public_key.clone()))
            .collect();
        assert_eq!(ops, vec![(OPERATOR.to_string(), operator_key.clone())]);
    }

    let op = c
        .client()
        .await
        .get_party(OPERATOR)
        .await
        .expect("operator is a party");
    assert_eq!(op.role, pb::Role::Operator as i32);
    assert_eq!(op.public_key, operator_key);
    assert_eq!(op.enrolled_seq, 0);

    let audit = c.check_invariants().await;
    assert_eq!(audit.chain.len(), 1, "only genesis after bootstrap");
}

/// A client that knows only a follower can write and read: the follower
/// forwards to the leader (or points the client at it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_follower_succeed() {
    let c = TestCluster::voters(3).await;
    let follower = c.followers().await[0];
    let sub = c.submitter_for(&[follower]).await;

    let channel = c.signer(&Identity::generate("shop"));
    let enrolled = sub
        .submit_accepted(
            "enrol through a follower",
            c.operator().enroll_channel(
                "shop",
                &channel.public_key(),
                &[arbor_tests::fixtures::CHANNEL_NAME.to_string()],
            ),
        )
        .await;
    assert_eq!(enrolled.seq, 1);
    assert!(!enrolled.duplicate);

    let registered = sub
        .submit_accepted(
            "register through a follower",
            channel.register_order(sample_order("o-1")),
        )
        .await;
    assert_eq!(registered.seq, 2);

    let view = sub
        .client()
        .get_order("o-1")
        .await
        .expect("read through a follower");
    assert_eq!(view.registered_by, "shop");
    assert_eq!(view.registered_seq, 2);
    assert_eq!(view.status, "open");

    c.wait_applied(registered.seq, TIMEOUT).await;
    for id in c.ids() {
        let local = Client::local_order(c.transport(), &c.endpoint(id), "o-1")
            .await
            .unwrap_or_else(|e| panic!("replica {id} local read: {e}"));
        assert_eq!(local.registered_seq, 2, "replica {id}");
    }

    c.check_invariants().await;
}
