//! A replica that joins after the log was purged catches up by snapshot,
//! one large enough to travel in several chunks.

use arbor_client::Client;
use arbor_tests::{Options, TestCluster, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replica_catches_up_by_snapshot() {
    let mut c = TestCluster::start(
        3,
        Options {
            snapshot_every: Some(20),
            keep_logs: Some(0),
            ..Default::default()
        },
    )
    .await;
    let channel = c.enroll_channel("shop").await;
    // Enough orders for a snapshot of more than one 1 MiB chunk.
    // (Snapshots are LZ4-compressed, and the order map is stored in tiles:
    // 3,000 orders made just under 1 MiB, 3,600 make over it.)
    const ORDERS: u64 = 3_600;
    let ids: Vec<String> = (0..ORDERS).map(|i| format!("o-{i}")).collect();
    c.register_orders(&channel, &ids, 32).await;

    // The log the newcomer would need is gone: only a snapshot can bring it up.
    let leader = c.wait_leader(TIMEOUT).await;
    c.wait_until(
        "the leader to snapshot and purge its log",
        TIMEOUT,
        async || {
            let s = c.status(leader).await?;
            if s.snapshot_index > 0 && s.purged_index > 0 {
                Ok(())
            } else {
                Err(format!(
                    "snapshot_index {} purged_index {}",
                    s.snapshot_index, s.purged_index
                ))
            }
        },
    )
    .await;

    // The bytes a send of the leader's current snapshot carries (produced
    // from its checkpoint: a build writes no snapshot file).
    let dir = c.dir().join(format!("n{leader}/data/snapshots"));
    let size = c
        .wait_until(
            "the leader's snapshot to be readable",
            TIMEOUT,
            async || {
                arbor_node::storage::snapshot::export_current(&dir, &mut std::io::sink())
                    .map_err(|e| format!("{}: {e}", dir.display()))?
                    .map(|(_, n)| n)
                    .ok_or_else(|| format!("{}: no snapshot", dir.display()))
            },
        )
        .await;
    assert!(
        size > arbor_node::storage::snapshot::CHUNK_BYTES as u64,
        "the snapshot is {size} bytes: too small to be sent in several chunks"
    );

    let newcomer = c.add_replica().await;
    assert_eq!(newcomer, 4);
    let audit = c.check_invariants().await;
    assert_eq!(
        audit.chain.len() as u64,
        ORDERS + 3,
        "genesis + enrolment + the orders + the AddReplica"
    );
    let desired = audit
        .state
        .membership
        .as_ref()
        .expect("membership recorded");
    assert_eq!(desired.replicas[&newcomer].added_seq, ORDERS + 2);

    let s = c.status(newcomer).await.expect("newcomer answers");
    assert!(
        s.snapshot_index > 0,
        "replica {newcomer} caught up without installing a snapshot: {s:?}"
    );
    assert!(
        s.members.iter().any(|m| m.node_id == newcomer && m.voter),
        "replica {newcomer} is not a voter: {:?}",
        s.members
    );
    let o = Client::local_order(c.transport(), &c.endpoint(newcomer), "o-42")
        .await
        .expect("newcomer serves state from the snapshot");
    assert_eq!(o.registered_by, "shop");

    // And it follows new writes by log.
    let more: Vec<String> = (ORDERS..ORDERS + 10).map(|i| format!("o-{i}")).collect();
    c.register_orders(&channel, &more, 4).await;
    let audit = c.check_invariants().await;
    assert_eq!(audit.chain.len() as u64, ORDERS + 13);
}
