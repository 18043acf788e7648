//! The RocksDB storage against openraft's conformance suite, and against its
//! own promises: the same chain as the in-memory reference `MemState`,
//! exactly-once for resent commands, snapshots that carry the whole state,
//! and durability across a reopen.

use std::collections::BTreeSet;

use arbor_node::storage::{self, LedgerReader, LogStore, StateMachineStore};
use arbor_node::types::{Request, Response, TypeConfig};
use arbor_proto::ledger::sign_command;
use arbor_proto::pb::{self, command::Body};
use arbor_proto::rules::{MemState, RefusalKind};
use ed25519_dalek::SigningKey;
use openraft::alias::{EntryOf, LogIdOf};
use openraft::entry::RaftEntry;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{Membership, RaftLogReader, RaftSnapshotBuilder, StorageError, Vote};
use prost::Message;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("create temp dir");
        let (log, sm) = storage::open(dir.path()).expect("open storage");
        Ok((dir, log, sm))
    }
}

#[tokio::test]
async fn openraft_conformance_suite() {
    Suite::test_all(Builder).await.expect("conformance suite");
}

// ---- commands ----

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn public(n: u8) -> Vec<u8> {
    key(n).verifying_key().to_bytes().to_vec()
}

fn genesis(cluster_id: &str) -> Vec<u8> {
    let cmd = pb::Command {
        nonce: 1,
        body: Some(Body::Genesis(pb::Genesis {
            claim_deadlines: None,
            cluster_id: cluster_id.into(),
            operators: vec![pb::GenesisOperator {
                party_id: "ops".into(),
                public_key: public(1),
            }],
            lease_grace_ms: 60_000,
            rules_version: 0,
            fence_ms: 0,
            members: Vec::new(),
        })),
    };
    pb::SignedCommand {
        command: cmd.encode_to_vec(),
        signer: String::new(),
        signature: vec![],
    }
    .encode_to_vec()
}

fn signed(k: u8, signer: &str, nonce: u64, body: Body) -> Vec<u8> {
    let cmd = pb::Command {
        nonce,
        body: Some(body),
    };
    sign_command(&key(k), "test", signer, &cmd).encode_to_vec()
}

fn enroll(party_id: &str, k: u8, role: pb::Role, kind: pb::NodeKind) -> Body {
    Body::EnrollParty(pb::EnrollParty {
        party_id: party_id.into(),
        role: role as i32,
        kind: kind as i32,
        public_key: public(k),
        // The channel "shop" registers the references of its web store.
        channel_names: if role == pb::Role::Channel {
            vec!["web".into()]
        } else {
            Vec::new()
        },
    })
}

fn register(order_id: &str, channel: &str, external_id: &str) -> Body {
    Body::RegisterOrder(pb::RegisterOrder {
        order_id: order_id.into(),
        external_refs: vec![pb::ExternalRef {
            channel: channel.into(),
            external_id: external_id.into(),
        }],
        lines: vec![pb::OrderLine {
            sku: "sku-1".into(),
            quantity: 2,
            unit_price: 500,
        }],
        currency: "EUR".into(),
        total: 1000,
        destination_region: "eu-west".into(),
        ..Default::default()
    })
}

fn profile() -> Body {
    Body::PublishProfile(pb::PublishProfile {
        regions: vec!["eu-west".into()],
        max_open_orders: 10,
        dispatch_time_ms: 3_600_000,
        ..Default::default()
    })
}

fn claim(order_id: &str) -> Body {
    Body::ClaimOrder(pb::ClaimOrder {
        order_id: order_id.into(),
        price_version: 1,
        total: 1000,
    })
}

/// (command, time_ms, genesis): genesis, enrolments, profiles, a registration, two
/// claims (accepted, then already_owned), a refused command, a rejected
/// registration and a stamp earlier than its predecessor.
fn script() -> Vec<(Vec<u8>, u64, bool)> {
    vec![
        (genesis("test"), 1_000, true),
        (
            signed(
                1,
                "ops",
                1,
                enroll("shop", 2, pb::Role::Channel, pb::NodeKind::Unspecified),
            ),
            1_001,
            false,
        ),
        (
            signed(
                1,
                "ops",
                2,
                enroll("store-1", 3, pb::Role::Node, pb::NodeKind::Store),
            ),
            1_002,
            false,
        ),
        (
            signed(
                1,
                "ops",
                3,
                enroll("store-2", 4, pb::Role::Node, pb::NodeKind::Warehouse),
            ),
            1_003,
            false,
        ),
        (signed(3, "store-1", 2, profile()), 1_003, false),
        (signed(4, "store-2", 2, profile()), 1_003, false),
        (
            signed(2, "shop", 1, register("o-1", "web", "1001")),
            1_004,
            false,
        ),
        (signed(3, "store-1", 1, claim("o-1")), 1_005, false),
        (signed(4, "store-2", 1, claim("o-1")), 1_006, false),
        (signed(9, "ghost", 1, claim("o-1")), 1_007, false),
        (
            signed(2, "shop", 2, register("o-2", "web", "1001")),
            900,
            false,
        ),
    ]
}

// ---- raft log entries ----

fn log_id(index: u64) -> LogIdOf<TypeConfig> {
    LogIdOf::<TypeConfig>::new(
        LeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    )
}

fn normal(index: u64, command: Vec<u8>, time_ms: u64, genesis: bool) -> EntryOf<TypeConfig> {
    EntryOf::<TypeConfig>::new_normal(
        log_id(index),
        Request {
            command,
            time_ms,
            genesis,
            verified_key: Vec::new(),
        },
    )
}

fn membership(index: u64) -> EntryOf<TypeConfig> {
    let nodes: BTreeSet<u64> = [1, 2, 3].into();
    EntryOf::<TypeConfig>::new_membership(
        log_id(index),
        Membership::new_with_defaults(vec![nodes], []),
    )
}

/// Applies a blank and a membership entry, then the script; returns the
/// responses of the script's commands and the last log index used.
fn apply_script(sm: &StateMachineStore) -> (Vec<Response>, u64) {
    assert_eq!(
        sm.apply_entry(&EntryOf::<TypeConfig>::new_blank(log_id(1)))
            .unwrap(),
        Response::Noop
    );
    assert_eq!(sm.apply_entry(&membership(2)).unwrap(), Response::Noop);
    let mut index = 2;
    let responses = script()
        .into_iter()
        .map(|(cmd, t, g)| {
            index += 1;
            sm.apply_entry(&normal(index, cmd, t, g)).unwrap()
        })
        .collect();
    (responses, index)
}

fn open(dir: &TempDir) -> (LogStore, StateMachineStore) {
    storage::open(dir.path()).expect("open storage")
}

/// Everything the API can read, for comparing two stores.
fn dump(r: &LedgerReader) -> String {
    let mut out = format!(
        "head {:?}\napplied {:?}\n",
        r.head().unwrap(),
        r.last_applied().unwrap()
    );
    for e in r.entries(0, 1000).unwrap() {
        out += &format!("{e:?}\n");
    }
    for id in ["o-1", "o-2", "o-3"] {
        out += &format!(
            "{:?} {:?}\n",
            r.order(id).unwrap(),
            r.order_history(id).unwrap()
        );
    }
    for p in ["ops", "shop", "store-1", "store-2", "ghost"] {
        out += &format!("{:?}\n", r.party(p).unwrap());
    }
    for k in 1..=9 {
        out += &format!("{:?}\n", r.party_by_key(&public(k)).unwrap());
    }
    out += &format!("{:?}\n", r.order_by_ref("web", "1001").unwrap());
    out += &format!("leased {:?}\n", leased(r));
    out
}

/// The ids of every order under a lease, from the lease index.
fn leased(r: &LedgerReader) -> Vec<String> {
    leased_at(r, u64::MAX)
}

/// The lease index holds exactly the leased orders, by deadline, through
/// claims, releases and reclaims; a database without it (written before it
/// existed) has it built when opened.
#[test]
fn the_lease_index_follows_the_orders() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, sm) = open(&dir);
    let (_, mut index) = apply_script(&sm);
    let r = sm.reader();
    let o = r.order("o-1").unwrap().unwrap();
    let deadline = o.lease.as_ref().expect("o-1 is claimed").deadline_ms;
    assert!(r.lapsed_leases(deadline, 10).unwrap().is_empty(), "not yet");
    assert_eq!(leased_at(&r, deadline + 1), vec!["o-1"]);
    assert_eq!(leased(&r), vec!["o-1"]);

    let mut apply = |cmd: Vec<u8>, t: u64| {
        index += 1;
        sm.apply_entry(&normal(index, cmd, t, false)).unwrap()
    };
    // Released: out of the index. Reclaimed later: back, with the new deadline.
    let release = Body::ReleaseOrder(pb::ReleaseOrder {
        shortage: false,
        order_id: "o-1".into(),
        reason: "out of stock".into(),
    });
    apply(signed(3, "store-1", 3, release), 1_010);
    assert!(leased(&r).is_empty(), "{:?}", leased(&r));
    apply(signed(4, "store-2", 3, claim("o-1")), 5_000);
    let again = r.order("o-1").unwrap().unwrap();
    assert_eq!(again.owner.as_deref(), Some("store-2"));
    let new_deadline = again.lease.unwrap().deadline_ms;
    assert!(new_deadline > deadline);
    assert!(leased_at(&r, deadline + 1).is_empty(), "old deadline gone");
    assert_eq!(leased_at(&r, new_deadline + 1), vec!["o-1"]);
    drop((r, sm, _log));

    // Remove the index (as a database of an older version has none): opening
    // builds it from the orders.
    {
        let opts = rocksdb::Options::default();
        let db =
            rocksdb::DB::open_cf(&opts, dir.path().join("db"), storage::keys::ALL_CFS).unwrap();
        let cf = db.cf_handle(storage::keys::CF_LEASES).unwrap();
        let keys: Vec<_> = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|i| i.unwrap().0)
            .collect();
        assert_eq!(keys.len(), 2, "the marker and o-1");
        for k in keys {
            db.delete_cf(cf, k).unwrap();
        }
    }
    let (_log, sm) = open(&dir);
    assert_eq!(leased_at(&sm.reader(), new_deadline + 1), vec!["o-1"]);
}

fn leased_at(r: &LedgerReader, now_ms: u64) -> Vec<String> {
    r.lapsed_leases(now_ms, 1000)
        .unwrap()
        .into_iter()
        .map(|o| o.order_id)
        .collect()
}

#[test]
fn state_machine_matches_the_in_memory_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, sm) = open(&dir);
    let (responses, last_index) = apply_script(&sm);

    let mut mem = MemState::default();
    for (cmd, t, g) in script() {
        mem.apply(&cmd, t, g);
    }

    let r = sm.reader();
    let entries = r.entries(0, 1000).unwrap();
    assert_eq!(entries.len(), 10, "the refused command is not appended");
    assert_eq!(entries, mem.entries, "byte-identical chain");
    assert_eq!(r.head().unwrap(), mem.head());
    assert_eq!(r.last_applied().unwrap(), Some(last_index));
    for (id, order) in &mem.orders {
        assert_eq!(r.order(id).unwrap().as_ref(), Some(order));
        let expected: Vec<u64> = mem
            .entries
            .iter()
            .filter(|e| &e.order_id == id)
            .map(|e| e.seq)
            .collect();
        assert_eq!(r.order_history(id).unwrap(), expected);
    }
    assert_eq!(r.order_history("o-1").unwrap(), vec![6, 7, 8, 9]);
    for (id, party) in &mem.parties {
        assert_eq!(r.party(id).unwrap().as_ref(), Some(party));
        assert_eq!(
            r.party_by_key(&party.public_key).unwrap().as_deref(),
            Some(id.as_str())
        );
    }
    assert_eq!(
        r.order_by_ref("web", "1001").unwrap().as_deref(),
        Some("o-1")
    );
    assert_eq!(r.order("o-2").unwrap(), None);

    // Responses: appended entries carry their seq and hash; the ghost is refused.
    let appended: Vec<(u64, [u8; 32])> = responses
        .iter()
        .filter_map(|resp| match resp {
            Response::Appended { seq, hash, .. } => Some((*seq, *hash)),
            _ => None,
        })
        .collect();
    let expected: Vec<(u64, [u8; 32])> = mem.entries.iter().map(|e| (e.seq, e.hash)).collect();
    assert_eq!(appended, expected);
    match &responses[8] {
        Response::Appended { outcome, .. } => assert_eq!(
            (outcome.accepted, outcome.code.as_str()),
            (false, "already_owned")
        ),
        other => panic!("second claim: {other:?}"),
    }
    match &responses[9] {
        Response::Refused { code, .. } => assert_eq!(*code, RefusalKind::UnknownSigner),
        other => panic!("ghost claim: {other:?}"),
    }
    assert_eq!(entries[9].time_ms, 1_006, "time never goes backwards");
}

#[tokio::test]
async fn duplicate_resend_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open(&dir);
    let (responses, last_index) = apply_script(&sm);
    let r = sm.reader();
    let before = r.entries(0, 1000).unwrap();

    let first_claim = script()[7].0.clone();
    let again = sm
        .apply_entry(&normal(last_index + 1, first_claim.clone(), 5_000, false))
        .unwrap();
    let Response::Appended { seq, outcome, hash } = &responses[7] else {
        panic!("first claim was not appended: {:?}", responses[7]);
    };
    assert_eq!(
        again,
        Response::Duplicate {
            seq: *seq,
            outcome: outcome.clone(),
            hash: *hash
        }
    );

    // Through the trait too, without a responder.
    let item: Result<_, std::io::Error> =
        Ok((normal(last_index + 2, first_claim, 6_000, false), None));
    sm.apply(futures::stream::iter(vec![item])).await.unwrap();

    assert_eq!(r.entries(0, 1000).unwrap(), before);
    assert_eq!(r.head().unwrap(), before.last().map(|e| e.head()));
    assert_eq!(r.last_applied().unwrap(), Some(last_index + 2));
}

#[tokio::test]
async fn snapshot_carries_the_whole_state() {
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_log, mut a) = open(&a_dir);
    let (_, last_index) = apply_script(&a);
    let mut snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(last_index)));
    assert_eq!(snap.meta.last_membership.log_id(), &Some(log_id(2)));

    // A store with other state: the snapshot replaces all of it.
    let b_dir = tempfile::tempdir().unwrap();
    let (_b_log, mut b) = open(&b_dir);
    b.apply_entry(&normal(1, signed(7, "x", 1, claim("zz")), 1, false))
        .unwrap();
    b.apply_entry(&normal(2, genesis("other"), 7, true))
        .unwrap();
    assert!(b.reader().head().unwrap().is_some());

    // A corrupted snapshot is refused and leaves the state alone.
    let before = dump(&b.reader());
    let mut bad = snap.snapshot.read_all().unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let err = b
        .install_snapshot(&snap.meta, data_of(&b_dir, "bad", &bad))
        .await;
    assert!(err.is_err(), "corrupted snapshot installed");
    assert_eq!(dump(&b.reader()), before);

    b.install_snapshot(&snap.meta, copy_of(&b_dir, &mut snap.snapshot))
        .await
        .unwrap();
    assert_eq!(dump(&b.reader()), dump(&a.reader()));
    assert_eq!(
        b.applied_state().await.unwrap(),
        a.applied_state().await.unwrap()
    );
    let current = b
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("current snapshot");
    assert_eq!(current.meta, snap.meta);

    // Both go on identically: the dedupe index and the head came over too.
    let next = [
        (signed(2, "shop", 3, register("o-3", "web", "1002")), 2_000),
        (script()[7].0.clone(), 2_001),
    ];
    for (i, (cmd, t)) in next.into_iter().enumerate() {
        let entry = normal(last_index + 1 + i as u64, cmd, t, false);
        assert_eq!(
            a.apply_entry(&entry).unwrap(),
            b.apply_entry(&entry).unwrap()
        );
    }
    assert_eq!(dump(&b.reader()), dump(&a.reader()));
}

#[tokio::test]
async fn reopen_keeps_log_vote_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let (expected_state, snapshot_meta) = {
        let (mut log, mut sm) = open(&dir);
        let entries: Vec<_> = (1..=5)
            .map(|i| EntryOf::<TypeConfig>::new_blank(log_id(i)))
            .collect();
        log.append(entries, IOFlushed::noop()).await.unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        log.save_committed(Some(log_id(4))).await.unwrap();
        log.purge(log_id(1)).await.unwrap();
        apply_script(&sm);
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        (dump(&sm.reader()), snap.meta)
    };

    let (mut log, mut sm) = open(&dir);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1)));
    assert_eq!(state.last_log_id, Some(log_id(5)));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(4)));
    let got: Vec<u64> = log
        .try_get_log_entries(0..10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(got, vec![2, 3, 4, 5]);
    assert_eq!(dump(&sm.reader()), expected_state);
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("current snapshot");
    assert_eq!(current.meta, snapshot_meta);
}

/// Every root, inclusion proof and consistency proof the persisted Merkle
/// tree gives equals what the reference functions compute from the leaves.
fn assert_tree_matches_the_ledger(r: &LedgerReader) {
    use arbor_proto::ledger::merkle;
    let leaves: Vec<merkle::Hash> = r
        .entries(0, 10_000)
        .unwrap()
        .iter()
        .map(|e| merkle::leaf_hash(&e.hash))
        .collect();
    let n = leaves.len() as u64;
    assert!(n > 0);
    for size in 0..=n {
        assert_eq!(r.merkle_root(size).unwrap(), merkle::root(&leaves, size));
        for seq in 0..size {
            assert_eq!(
                r.inclusion_proof(seq, size).unwrap(),
                merkle::inclusion_proof(&leaves, seq, size).unwrap()
            );
        }
        for old in 0..=size {
            assert_eq!(
                r.consistency_proof(old, size).unwrap(),
                merkle::consistency_proof(&leaves, old, size).unwrap()
            );
        }
    }
    let err = r.merkle_root(n + 1).unwrap_err();
    assert!(err.contains("fewer than"), "{err}");
    assert!(r.inclusion_proof(n, n + 1).is_err());
    assert!(r.consistency_proof(1, n + 1).is_err());
}

/// Applies the script and `orders` more registrations; returns the last log index.
fn apply_script_and_orders(sm: &StateMachineStore, orders: u64) -> u64 {
    let (_, mut index) = apply_script(sm);
    for i in 0..orders {
        index += 1;
        let cmd = signed(
            2,
            "shop",
            100 + i,
            register(&format!("m-{i}"), "web", &format!("m{i}")),
        );
        sm.apply_entry(&normal(index, cmd, 2_000 + i, false))
            .unwrap();
    }
    index
}

/// The `merkle` column family's records, raw.
type Records = Vec<(Box<[u8]>, Box<[u8]>)>;

fn merkle_records(db: &rocksdb::DB) -> Records {
    let cf = db.cf_handle(storage::keys::CF_MERKLE).unwrap();
    db.iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|i| i.unwrap())
        .collect()
}

/// The persisted tree gives the reference roots and proofs; a database
/// without it (an older format) has it built when opened, and a build that
/// stopped part way (any prefix written) is finished on the next open.
#[test]
fn the_persisted_merkle_tree_gives_the_reference_roots_and_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let (log, sm) = open(&dir);
    apply_script_and_orders(&sm, 40);
    let r = sm.reader();
    let n = r.head().unwrap().unwrap().seq + 1;
    assert!(n > 40);
    assert_tree_matches_the_ledger(&r);
    drop((r, sm, log));

    let opts = rocksdb::Options::default();
    let db_path = dir.path().join("db");
    let full = {
        let db = rocksdb::DB::open_cf(&opts, &db_path, storage::keys::ALL_CFS).unwrap();
        merkle_records(&db)
    };
    // About two nodes per entry, plus the size.
    assert!(full.len() as u64 <= 2 * n + 1, "{} records", full.len());
    let size_key = storage::keys::KEY_MERKLE_SIZE;
    let (_, size) = full.iter().find(|(k, _)| &k[..] == size_key).unwrap();
    assert_eq!(&size[..], &n.to_be_bytes());

    // Older format: no tree at all. Then builds interrupted after `m` leaves:
    // only the nodes of subtrees inside [0, m) and size m.
    for m in [None, Some(0), Some(1), Some(7), Some(32), Some(n - 1)] {
        {
            let db = rocksdb::DB::open_cf(&opts, &db_path, storage::keys::ALL_CFS).unwrap();
            let cf = db.cf_handle(storage::keys::CF_MERKLE).unwrap();
            for (k, _) in merkle_records(&db) {
                db.delete_cf(cf, k).unwrap();
            }
            if let Some(m) = m {
                for (k, v) in &full {
                    if let Some((level, index)) = storage::keys::merkle_node_of_key(k) {
                        if (index + 1) << level <= m {
                            db.put_cf(cf, k, v).unwrap();
                        }
                    }
                }
                db.put_cf(cf, size_key, m.to_be_bytes()).unwrap();
            }
        }
        let (_log, sm) = open(&dir);
        assert_tree_matches_the_ledger(&sm.reader());
        drop((sm, _log));
        let db = rocksdb::DB::open_cf(&opts, &db_path, storage::keys::ALL_CFS).unwrap();
        assert_eq!(merkle_records(&db), full, "rebuilt from {m:?}");
    }

    // The keys are in append order: node keys sort by their last leaf, so
    // every entry's nodes come after the previous entries' (then the size).
    let nodes: Vec<(u32, u64)> = full
        .iter()
        .filter_map(|(k, _)| storage::keys::merkle_node_of_key(k))
        .collect();
    assert_eq!(nodes.len() + 1, full.len());
    let last_leaves: Vec<u64> = nodes.iter().map(|(l, i)| ((i + 1) << l) - 1).collect();
    assert!(
        last_leaves.windows(2).all(|w| w[0] <= w[1]),
        "{last_leaves:?}"
    );
    assert_eq!(&full.last().unwrap().0[..], size_key);

    // The earlier layout (key `level || index`, and `size`): opened, the
    // tree is built again in this one and nothing of the old one is left.
    {
        let db = rocksdb::DB::open_cf(&opts, &db_path, storage::keys::ALL_CFS).unwrap();
        let cf = db.cf_handle(storage::keys::CF_MERKLE).unwrap();
        for (k, v) in &full {
            db.delete_cf(cf, k).unwrap();
            if let Some((level, index)) = storage::keys::merkle_node_of_key(k) {
                let mut old = vec![level as u8];
                old.extend_from_slice(&index.to_be_bytes());
                db.put_cf(cf, old, v).unwrap();
            }
        }
        db.put_cf(cf, b"size", n.to_be_bytes()).unwrap();
    }
    let (_log, sm) = open(&dir);
    assert_tree_matches_the_ledger(&sm.reader());
    drop((sm, _log));
    {
        let db = rocksdb::DB::open_cf(&opts, &db_path, storage::keys::ALL_CFS).unwrap();
        assert_eq!(merkle_records(&db), full, "rebuilt from the earlier layout");
    }

    // A tree that claims more leaves than the ledger has is refused.
    {
        let db = rocksdb::DB::open_cf(&opts, &db_path, storage::keys::ALL_CFS).unwrap();
        let cf = db.cf_handle(storage::keys::CF_MERKLE).unwrap();
        db.put_cf(cf, size_key, (n + 5).to_be_bytes()).unwrap();
    }
    let err = storage::open(dir.path()).err().expect("opened").to_string();
    assert!(err.contains("Merkle tree"), "{err}");
}

/// A snapshot does not carry the tree: the installing replica builds it from
/// the installed ledger, replacing its own, and both go on identically.
#[tokio::test]
async fn an_installed_snapshot_brings_the_same_merkle_tree() {
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_log, mut a) = open(&a_dir);
    let last = apply_script_and_orders(&a, 20);
    let mut snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (_b_log, mut b) = open(&b_dir);
    b.apply_entry(&normal(1, genesis("other"), 7, true))
        .unwrap();
    b.install_snapshot(&snap.meta, copy_of(&b_dir, &mut snap.snapshot))
        .await
        .unwrap();
    let n = a.reader().head().unwrap().unwrap().seq + 1;
    assert_eq!(b.reader().merkle_root(n), a.reader().merkle_root(n));
    assert_tree_matches_the_ledger(&b.reader());
    let entry = normal(
        last + 1,
        signed(2, "shop", 999, register("late", "web", "late")),
        9_000,
        false,
    );
    assert_eq!(
        a.apply_entry(&entry).unwrap(),
        b.apply_entry(&entry).unwrap()
    );
    assert_tree_matches_the_ledger(&b.reader());
    assert_eq!(b.reader().merkle_root(n + 1), a.reader().merkle_root(n + 1));
}

/// A snapshot file holding `bytes`, outside any snapshot directory.
fn data_of(dir: &TempDir, name: &str, bytes: &[u8]) -> storage::SnapshotData {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    storage::SnapshotData::open(&path).unwrap()
}

/// A copy of a snapshot file, as a peer would receive it.
fn copy_of(dir: &TempDir, data: &mut storage::SnapshotData) -> storage::SnapshotData {
    data_of(dir, "copy", &data.read_all().unwrap())
}

/// A crash in the middle of an install (the marker file still there, the
/// state machine half replaced) is finished by the next open, from the
/// current snapshot; a current snapshot that no longer verifies then keeps
/// the storage from opening rather than serving the half state.
#[tokio::test]
async fn an_interrupted_install_is_finished_when_the_storage_opens() {
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_log, mut a) = open(&a_dir);
    apply_script_and_orders(&a, 10);
    let mut snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    {
        let (_b_log, mut b) = open(&b_dir);
        b.install_snapshot(&snap.meta, copy_of(&b_dir, &mut snap.snapshot))
            .await
            .unwrap();
        assert_eq!(dump(&b.reader()), dump(&a.reader()));
    }
    let marker = b_dir.path().join("snapshots/INSTALLING");
    assert!(!marker.exists(), "removed once installed");
    // The crash: the marker written, the column families cleared, part of
    // the records written.
    {
        std::fs::write(&marker, b"").unwrap();
        let db = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            b_dir.path().join("db"),
            storage::keys::ALL_CFS,
        )
        .unwrap();
        for name in [storage::keys::CF_ORDERS, storage::keys::CF_SM_META] {
            let cf = db.cf_handle(name).unwrap();
            let keys: Vec<_> = db
                .iterator_cf(cf, rocksdb::IteratorMode::Start)
                .map(|i| i.unwrap().0)
                .collect();
            for k in keys {
                db.delete_cf(cf, k).unwrap();
            }
        }
    }
    {
        let (_b_log, mut b) = open(&b_dir);
        assert!(!marker.exists());
        assert_eq!(dump(&b.reader()), dump(&a.reader()));
        assert_eq!(
            b.applied_state().await.unwrap(),
            a.applied_state().await.unwrap()
        );
        assert_tree_matches_the_ledger(&b.reader());
    }
    // With the marker and a damaged current snapshot, the open fails.
    std::fs::write(&marker, b"").unwrap();
    let current = b_dir.path().join("snapshots/current");
    let mut bytes = std::fs::read(&current).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&current, bytes).unwrap();
    let err = storage::open(b_dir.path())
        .err()
        .expect("opened")
        .to_string();
    assert!(err.contains("snapshot"), "{err}");
}

/// Not a test: the bytes on disk per ledger entry of a stopped replica's
/// data dir, by column family (docs/performance.md has the command and the
/// figures). `ARBOR_MEASURE_DIR=<data-dir> cargo test --workspace --test
/// storage_conformance bytes_on_disk -- --ignored --nocapture`
#[test]
#[ignore]
fn bytes_on_disk() {
    let Ok(dir) = std::env::var("ARBOR_MEASURE_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let (_log, sm) = storage::open(&dir).expect("open the data dir (is the replica stopped?)");
    drop((_log, sm));
    let opts = rocksdb::Options::default();
    let db = rocksdb::DB::open_cf(&opts, dir.join("db"), storage::keys::ALL_CFS).unwrap();
    for name in storage::keys::ALL_CFS {
        db.compact_range_cf(db.cf_handle(name).unwrap(), None::<&[u8]>, None::<&[u8]>);
    }
    let entries = {
        let cf = db.cf_handle(storage::keys::CF_LEDGER).unwrap();
        db.iterator_cf(cf, rocksdb::IteratorMode::Start).count() as u64
    };
    println!("ledger entries: {entries}");
    println!("| column family | records | key+value bytes | SST bytes (compacted) | per entry |");
    println!("|---|---|---|---|---|");
    let mut total = 0u64;
    for name in storage::keys::ALL_CFS {
        let cf = db.cf_handle(name).unwrap();
        let (mut n, mut raw) = (0u64, 0u64);
        for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.unwrap();
            n += 1;
            raw += (k.len() + v.len()) as u64;
        }
        let sst = db
            .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
            .unwrap()
            .unwrap_or(0);
        total += sst;
        println!(
            "| `{name}` | {n} | {raw} | {sst} | {:.0} |",
            sst as f64 / entries.max(1) as f64
        );
    }
    println!(
        "| all | | | {total} | {:.0} |",
        total as f64 / entries.max(1) as f64
    );
}

/// Rules version 4: a delivery code hash belongs to one order. The index
/// behind it is state: the same decisions as the in-memory reference, and
/// a snapshot carries it, so a replica installed from one refuses a reuse
/// exactly as the one that built it.
#[tokio::test]
async fn the_delivery_code_index_decides_as_the_reference_and_travels_in_snapshots() {
    let genesis_v4 = {
        let cmd = pb::Command::decode(
            pb::SignedCommand::decode(genesis("test").as_slice())
                .unwrap()
                .command
                .as_slice(),
        )
        .unwrap();
        let Some(Body::Genesis(g)) = cmd.body else {
            unreachable!()
        };
        pb::SignedCommand {
            command: pb::Command {
                nonce: 1,
                body: Some(Body::Genesis(pb::Genesis {
                    rules_version: 4,
                    ..g
                })),
            }
            .encode_to_vec(),
            signer: String::new(),
            signature: vec![],
        }
        .encode_to_vec()
    };
    let coded = |id: &str, ext: &str| {
        let Body::RegisterOrder(r) = register(id, "web", ext) else {
            unreachable!()
        };
        Body::RegisterOrder(pb::RegisterOrder {
            delivery_code_sha256: vec![7; 32],
            ..r
        })
    };
    let script = [
        (genesis_v4, 1_000, true),
        (
            signed(
                1,
                "ops",
                2,
                enroll("shop", 2, pb::Role::Channel, pb::NodeKind::Unspecified),
            ),
            1_001,
            false,
        ),
        (signed(2, "shop", 3, coded("o-1", "1001")), 1_002, false),
    ];
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_log, mut a) = open(&a_dir);
    let mut mem = MemState::default();
    for (i, (cmd, t, g)) in script.iter().enumerate() {
        a.apply_entry(&normal(1 + i as u64, cmd.clone(), *t, *g))
            .unwrap();
        mem.apply(cmd, *t, *g);
    }
    assert_eq!(
        a.reader()
            .order_by_delivery_code(&[7; 32])
            .unwrap()
            .as_deref(),
        Some("o-1")
    );
    let mut snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (_b_log, mut b) = open(&b_dir);
    b.install_snapshot(&snap.meta, copy_of(&b_dir, &mut snap.snapshot))
        .await
        .unwrap();
    let reuse = signed(2, "shop", 4, coded("o-2", "1002"));
    let entry = normal(4, reuse.clone(), 1_003, false);
    let from_a = a.apply_entry(&entry).unwrap();
    assert_eq!(from_a, b.apply_entry(&entry).unwrap());
    match &from_a {
        Response::Appended { outcome, .. } => assert_eq!(
            (outcome.accepted, outcome.code.as_str()),
            (false, "delivery_code_reused")
        ),
        other => panic!("reuse: {other:?}"),
    }
    mem.apply(&reuse, 1_003, false);
    assert_eq!(a.reader().entries(0, 100).unwrap(), mem.entries);
    assert_eq!(b.reader().entries(0, 100).unwrap(), mem.entries);
    assert_eq!(b.reader().order("o-2").unwrap(), None);
}

/// A data directory of a build from before binary state records holds JSON
/// orders, parties, profiles and node counters: it is read as it is, and a
/// record is rewritten in the binary form when an entry changes it. The
/// state ends equal to a store that applied the same commands from the
/// start.
#[test]
fn json_state_records_of_an_earlier_build_are_read_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let reference = tempfile::tempdir().unwrap();
    let (all, reference_nodes) = {
        let (_log, sm) = open(&reference);
        apply_script(&sm);
        let r = sm.reader();
        let nodes = ["store-1", "store-2"]
            .map(|n| format!("{:?} {:?}", r.profile(n).unwrap(), r.stats(n).unwrap()));
        (dump(&r), nodes)
    };
    let script = script();
    let (first, rest) = script.split_at(7); // through the registration of o-1
    let mut index = 2;
    {
        let (_log, sm) = open(&dir);
        sm.apply_entry(&EntryOf::<TypeConfig>::new_blank(log_id(1)))
            .unwrap();
        sm.apply_entry(&membership(2)).unwrap();
        for (cmd, t, g) in first {
            index += 1;
            sm.apply_entry(&normal(index, cmd.clone(), *t, *g)).unwrap();
        }
    }
    // Rewrite every record as the JSON an earlier build wrote.
    let cfs = [
        storage::keys::CF_ORDERS,
        storage::keys::CF_PARTIES,
        storage::keys::CF_PROFILES,
        storage::keys::CF_STATS,
    ];
    let first_bytes = |dir: &TempDir| -> Vec<(String, Vec<u8>, u8)> {
        let db = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            dir.path().join("db"),
            storage::keys::ALL_CFS,
        )
        .unwrap();
        let mut out = Vec::new();
        for name in cfs {
            let cf = db.cf_handle(name).unwrap();
            for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
                let (k, v) = item.unwrap();
                out.push((name.to_string(), k.to_vec(), v[0]));
            }
        }
        out
    };
    let before = first_bytes(&dir);
    assert!(before.iter().all(|(_, _, b)| *b == 0x01), "{before:?}");
    {
        let (_log, sm) = open(&dir);
        let r = sm.reader();
        let mut json: Vec<(&str, Vec<u8>, Vec<u8>)> = Vec::new();
        for (cf, k, _) in &before {
            let id = std::str::from_utf8(k).unwrap();
            let v = match cf.as_str() {
                storage::keys::CF_ORDERS => serde_json::to_vec(&r.order(id).unwrap()),
                storage::keys::CF_PARTIES => serde_json::to_vec(&r.party(id).unwrap()),
                storage::keys::CF_PROFILES => serde_json::to_vec(&r.profile(id).unwrap()),
                _ => serde_json::to_vec(&r.stats(id).unwrap()),
            };
            let name = cfs.iter().find(|c| **c == cf.as_str()).unwrap();
            json.push((name, k.clone(), v.unwrap()));
        }
        drop((r, sm, _log));
        let db = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            dir.path().join("db"),
            storage::keys::ALL_CFS,
        )
        .unwrap();
        for (cf, k, v) in json {
            db.put_cf(db.cf_handle(cf).unwrap(), k, v).unwrap();
        }
    }
    let old = first_bytes(&dir);
    assert!(old.iter().all(|(_, _, b)| *b == b'{'), "{old:?}");
    {
        let (_log, sm) = open(&dir);
        for (cmd, t, g) in rest {
            index += 1;
            sm.apply_entry(&normal(index, cmd.clone(), *t, *g)).unwrap();
        }
        assert_eq!(dump(&sm.reader()), all);
        let r = sm.reader();
        let nodes = |r: &LedgerReader| {
            ["store-1", "store-2"]
                .map(|n| format!("{:?} {:?}", r.profile(n).unwrap(), r.stats(n).unwrap()))
        };
        assert_eq!(nodes(&r), reference_nodes);
    }
    // What the claims changed is binary again; what they did not, still JSON.
    let after = first_bytes(&dir);
    let format_of = |cf: &str, key: &str| {
        after
            .iter()
            .find(|(c, k, _)| c == cf && k == key.as_bytes())
            .unwrap_or_else(|| panic!("{cf}/{key} missing"))
            .2
    };
    assert_eq!(format_of(storage::keys::CF_ORDERS, "o-1"), 0x01);
    assert_eq!(format_of(storage::keys::CF_STATS, "store-1"), 0x01);
    assert_eq!(format_of(storage::keys::CF_PARTIES, "shop"), b'{');
    assert_eq!(format_of(storage::keys::CF_PROFILES, "store-2"), b'{');
}
