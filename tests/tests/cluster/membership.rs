//! Membership changes are operator-signed ledger commands: recorded,
//! replayed by the verifier, deduplicated by command id, refused to
//! anyone but an operator, and acted on by the leader.

use std::time::Duration;

use arbor_client::{pb, ClientError, Commands, Identity};
use arbor_proto::audit::{verify_export, VerifyOptions};
use arbor_tests::{TestCluster, TIMEOUT};
use prost::Message;
use tonic::Code;

fn body_of(e: &pb::LedgerEntry) -> Option<pb::command::Body> {
    let env = pb::SignedCommand::decode(e.command.as_slice()).ok()?;
    pb::Command::decode(env.command.as_slice()).ok()?.body
}

/// Raft's membership as replica `id` sees it: (node id, voter).
async fn raft_members(c: &TestCluster, id: u64) -> Vec<(u64, bool)> {
    let s = c.status(id).await.expect("replica answers");
    let mut m: Vec<(u64, bool)> = s.members.iter().map(|m| (m.node_id, m.voter)).collect();
    m.sort();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_are_ledger_commands() {
    let mut c = TestCluster::voters(3).await;
    let op = c.operator().clone();

    // Genesis records the three members the cluster started with.
    let audit = c.check_invariants().await;
    let desired = audit.state.membership.as_ref().expect("genesis members");
    assert_eq!(
        desired.replicas.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3]
    );

    // Add replica 4: an accepted AddReplica entry; raft follows.
    let id = c.start_replica().await;
    let (addr, peer) = (c.addr(id).to_string(), c.peer_addr(id).to_string());
    let client = c
        .client_for(&[1, 2, 3])
        .await
        .with_timeout(Duration::from_secs(150));
    let add = op.add_replica(id, &addr, &peer);
    let added = client
        .change_membership(add.clone(), TIMEOUT)
        .await
        .unwrap();
    let outcome = added.reply.outcome.clone().unwrap();
    assert!(outcome.accepted, "{outcome:?}");
    assert!(!added.reply.duplicate);
    assert!(added.in_effect, "not a voter yet: {:?}", added.members);
    assert!(added.members.iter().any(|m| m.node_id == id && m.voter));

    // The same bytes again: the original outcome, nothing appended.
    let head = c.head_seq().await;
    let again = client
        .change_membership(add.clone(), TIMEOUT)
        .await
        .unwrap();
    assert!(again.reply.duplicate);
    assert_eq!(again.reply.seq, added.reply.seq);
    assert_eq!(again.reply.entry_hash, added.reply.entry_hash);
    assert_eq!(c.head_seq().await, head);

    // Adding an existing member: rejected, recorded.
    let dup = client
        .change_membership(op.add_replica(2, "127.0.0.1:1", "127.0.0.1:2"), TIMEOUT)
        .await
        .unwrap();
    let o = dup.reply.outcome.clone().unwrap();
    assert!(!o.accepted);
    assert_eq!(o.code, "replica_exists");
    assert!(!dup.in_effect);

    // Not an operator: refused, nothing appended.
    let shop = c.enroll_channel("shop").await;
    let head = c.head_seq().await;
    for cmd in [
        shop.remove_replica(1),
        shop.add_replica(9, "127.0.0.1:9", "127.0.0.1:10"),
    ] {
        match client.change_membership(cmd, TIMEOUT).await {
            Err(ClientError::Status { code, message }) => {
                assert_eq!(code, Code::PermissionDenied, "{message}");
                assert!(message.contains("wrong_role"), "{message}");
            }
            other => panic!("a channel changed the membership: {other:?}"),
        }
    }
    let ghost = Identity::generate("ghost").for_cluster(op.cluster_id());
    match client
        .change_membership(ghost.remove_replica(1), TIMEOUT)
        .await
    {
        Err(ClientError::Status { code, .. }) => assert_eq!(code, Code::Unauthenticated),
        other => panic!("an unknown signer changed the membership: {other:?}"),
    }
    // The operator's own command, signed for another cluster: refused.
    let foreign = op
        .identity()
        .for_cluster("another-cluster")
        .remove_replica(1);
    match client.change_membership(foreign, TIMEOUT).await {
        Err(ClientError::Status { code, message }) => {
            assert_eq!(code, Code::Unauthenticated, "{message}")
        }
        other => panic!("a command for another cluster was taken: {other:?}"),
    }
    assert_eq!(c.head_seq().await, head);

    // Remove replica 4, keeping the signed bytes.
    let rm = op.remove_replica(id);
    let removed = client.change_membership(rm.clone(), TIMEOUT).await.unwrap();
    assert!(removed.reply.outcome.as_ref().unwrap().accepted);
    assert!(removed.in_effect, "still a member: {:?}", removed.members);
    assert!(!removed.members.iter().any(|m| m.node_id == id));
    for r in [1, 2, 3] {
        c.wait_until(
            &format!("replica {r} to drop replica {id}"),
            TIMEOUT,
            async || {
                let m = raft_members(&c, r).await;
                if m.iter().any(|(n, _)| *n == id) {
                    Err(format!("{m:?}"))
                } else {
                    Ok(())
                }
            },
        )
        .await;
    }

    // Re-added (a new command), then the captured RemoveReplica replayed:
    // a duplicate of the first, and replica 4 stays.
    let readd = client
        .change_membership(op.add_replica(id, &addr, &peer), TIMEOUT)
        .await
        .unwrap();
    assert!(readd.reply.outcome.as_ref().unwrap().accepted);
    assert!(readd.in_effect, "not a voter again: {:?}", readd.members);
    let replay = client.change_membership(rm, TIMEOUT).await.unwrap();
    assert!(replay.reply.duplicate);
    assert_eq!(replay.reply.seq, removed.reply.seq);
    assert!(replay.members.iter().any(|m| m.node_id == id && m.voter));

    // The ledger says who changed the membership, when and to what, and the
    // verifier's replay agrees.
    let audit = c.check_invariants().await;
    let changes: Vec<(u64, String, String)> = audit
        .chain
        .iter()
        .filter_map(|e| {
            let what = match body_of(e)? {
                pb::command::Body::AddReplica(a) => format!("add {}", a.node_id),
                pb::command::Body::RemoveReplica(r) => format!("remove {}", r.node_id),
                _ => return None,
            };
            Some((e.seq, what, e.outcome.clone()?.code))
        })
        .collect();
    assert_eq!(
        changes,
        [
            (added.reply.seq, format!("add {id}"), "accepted".into()),
            (dup.reply.seq, "add 2".into(), "replica_exists".into()),
            (removed.reply.seq, format!("remove {id}"), "accepted".into()),
            (readd.reply.seq, format!("add {id}"), "accepted".into()),
        ]
    );
    for e in &audit.chain {
        if body_of(e).is_some_and(|b| matches!(b, pb::command::Body::AddReplica(_))) {
            let env = pb::SignedCommand::decode(e.command.as_slice()).unwrap();
            assert_eq!(env.signer, op.party_id);
        }
    }
    let desired = audit.state.membership.as_ref().unwrap();
    assert_eq!(
        desired.replicas.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, id]
    );
    assert_eq!(desired.replicas[&id].added_seq, readd.reply.seq);
    for r in c.running() {
        let m = raft_members(&c, r).await;
        assert_eq!(
            m,
            [(1, true), (2, true), (3, true), (id, true)],
            "replica {r}"
        );
    }

    // Exported under a cosigned checkpoint, the ledger verifies offline: the
    // verifier replays the membership commands with the other rules.
    c.enroll_replicas().await;
    let (bytes, exported) = client
        .export(Vec::new(), 0, None, |_, _| {})
        .await
        .expect("export");
    let summary = verify_export(
        bytes.as_slice(),
        VerifyOptions {
            threads: 2,
            batch: 64,
            progress: None,
        },
    )
    .expect("export verifies");
    assert!(summary.complete && summary.replayed, "{summary:?}");
    assert_eq!(summary.entries, exported.checkpoint.size);
    assert_eq!(summary.rejected, 1, "the replica_exists entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_voter_cannot_be_removed() {
    let c = TestCluster::voters(1).await;
    let client = c.client().await;
    let r = client
        .change_membership(c.operator().remove_replica(1), TIMEOUT)
        .await
        .unwrap();
    let o = r.reply.outcome.unwrap();
    assert!(!o.accepted);
    assert_eq!(o.code, "last_replica");
    assert!(r.members.iter().any(|m| m.node_id == 1 && m.voter));
    let audit = c.check_invariants().await;
    assert_eq!(audit.chain.len(), 2, "genesis + the rejected RemoveReplica");
    assert_eq!(raft_members(&c, 1).await, [(1, true)]);
}

/// The change outlives the leader that started it: replica 4 is added
/// while it cannot catch up (paused), the leader is killed, and the next
/// leader promotes it from the ledger's desired membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_finishes_a_membership_change() {
    let mut c = TestCluster::voters(3).await;
    let op = c.operator().clone();
    let id = c.start_replica().await;
    let (addr, peer) = (c.addr(id).to_string(), c.peer_addr(id).to_string());
    c.pause(id);
    let client = c.client_for(&[1, 2, 3]).await;
    let r = client
        .change_membership(op.add_replica(id, &addr, &peer), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(r.reply.outcome.as_ref().unwrap().accepted);
    assert!(
        !r.in_effect,
        "a paused replica was promoted: {:?}",
        r.members
    );

    let leader = c.wait_leader(TIMEOUT).await;
    c.kill(leader);
    c.resume(id);
    for r in c.running() {
        c.wait_until(
            &format!("replica {r} to see replica {id} as a voter"),
            TIMEOUT,
            async || {
                let m = raft_members(&c, r).await;
                if m.contains(&(id, true)) {
                    Ok(())
                } else {
                    Err(format!("{m:?}"))
                }
            },
        )
        .await;
    }
    let audit = c.check_invariants().await;
    let desired = audit.state.membership.as_ref().unwrap();
    assert_eq!(desired.replicas[&id].added_seq, r.reply.seq);
}
