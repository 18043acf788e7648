//! Checkpoints and proofs served by a real cluster, verified without trusting
//! the replica that answered.

use arbor_client::Commands;
use arbor_proto::ledger::checkpoint::{verify_note, NoteKey};
use arbor_proto::ledger::merkle::{self, Hash};
use arbor_proto::pb;
use arbor_proto::pb::arbor_client::ArborClient;
use arbor_tests::fixtures::{sample_profile, SAMPLE_TOTAL};
use arbor_tests::{Options, TestCluster, TIMEOUT};

fn hash(b: &[u8]) -> Hash {
    b.try_into().expect("32-byte hash")
}

/// Each replica's identity, fetched from the replica itself, then enrolled by
/// the operator with role replica (as an operator would after checking it).
async fn enroll_replicas(c: &TestCluster) -> Vec<NoteKey> {
    let mut keys = Vec::new();
    for id in c.ids() {
        let mut rc = ArborClient::new(
            arbor_client::channel(&c.endpoint(id), c.transport()).expect("channel"),
        );
        let ident = rc
            .get_replica_identity(pb::ReplicaIdentityRequest {})
            .await
            .expect("identity")
            .into_inner();
        assert_eq!(ident.node_id, id);
        assert_eq!(ident.name, format!("arbor-replica-{id}"));
        let submitter = c.submitter().await;
        submitter
            .submit_accepted(
                "enrol replica",
                c.operator().enroll_party(
                    &ident.name,
                    pb::Role::Replica,
                    pb::NodeKind::Unspecified,
                    &ident.public_key,
                ),
            )
            .await;
        keys.push(NoteKey {
            name: ident.name,
            public_key: hash(&ident.public_key),
        });
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_quorum_cosigned_and_proofs_verify() {
    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    let keys = enroll_replicas(&c).await;
    let channel = c.enroll_channel("shop").await;
    for i in 0..10 {
        c.register_order(&channel, &format!("ord-{i}")).await;
    }

    let mut client = ArborClient::new(
        arbor_client::channel(&c.endpoint(c.ids()[1]), c.transport()).expect("channel"),
    );
    let old = client
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner();
    // All three replicas cosign; a quorum (2 of 3) is what verification needs.
    let v = verify_note(&old.note, &keys, 2).expect("checkpoint verifies");
    assert_eq!(v.signed_by.len(), 3, "signers {:?}", v.signed_by);
    assert_eq!(v.checkpoint.size, old.size);
    assert!(v.checkpoint.origin.starts_with("arbor/"));

    // The root is the RFC 6962 root over the entry hashes of the chain itself.
    let chain = c.chain_of(1).await.expect("chain");
    let leaves: Vec<Hash> = chain.iter().map(|e| merkle::leaf_hash(&e.hash)).collect();
    assert_eq!(merkle::root(&leaves, old.size), v.checkpoint.root);

    // Inclusion of every entry against the checkpoint root.
    for seq in 0..old.size {
        let p = client
            .get_inclusion_proof(pb::InclusionProofRequest {
                seq,
                tree_size: old.size,
            })
            .await
            .expect("inclusion proof")
            .into_inner();
        let e = p.entry.expect("entry");
        let path: Vec<Hash> = p.path.iter().map(|h| hash(h)).collect();
        assert!(path.len() <= 64 - (old.size.leading_zeros() as usize) + 1);
        merkle::verify_inclusion(
            &merkle::leaf_hash(&e.hash),
            seq,
            old.size,
            &path,
            &v.checkpoint.root,
        )
        .unwrap_or_else(|err| panic!("entry {seq}: {err}"));
        // A proof for one entry does not prove another.
        if seq > 0 {
            let other = merkle::leaf_hash(&chain[seq as usize - 1].hash);
            assert!(
                merkle::verify_inclusion(&other, seq, old.size, &path, &v.checkpoint.root).is_err()
            );
        }
    }

    // More writes, a new checkpoint, and a consistency proof between the two.
    for i in 10..15 {
        c.register_order(&channel, &format!("ord-{i}")).await;
    }
    let new = client
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner();
    let nv = verify_note(&new.note, &keys, 2).expect("new checkpoint verifies");
    assert!(nv.checkpoint.size > v.checkpoint.size);
    let p = client
        .get_consistency_proof(pb::ConsistencyProofRequest {
            old_size: old.size,
            new_size: new.size,
        })
        .await
        .expect("consistency proof")
        .into_inner();
    let path: Vec<Hash> = p.path.iter().map(|h| hash(h)).collect();
    merkle::verify_consistency(
        old.size,
        new.size,
        &v.checkpoint.root,
        &nv.checkpoint.root,
        &path,
    )
    .expect("consistency verifies");

    // A forged note fails: a size the replicas never signed.
    let forged = old.note.replacen(
        &format!("\n{}\n", old.size),
        &format!("\n{}\n", old.size + 1),
        1,
    );
    assert!(verify_note(&forged, &keys, 2).is_err());

    // Bad requests are refused with a clear error.
    let err = client
        .get_inclusion_proof(pb::InclusionProofRequest {
            seq: new.size + 5,
            tree_size: 0,
        })
        .await
        .expect_err("out of range");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // With one replica down, the other two still make a quorum.
    let down = c.ids()[2];
    c.kill(down);
    let live = ArborClient::new(
        arbor_client::channel(&c.endpoint(c.ids()[0]), c.transport()).expect("channel"),
    );
    let cp = c
        .wait_until("checkpoint with one replica down", TIMEOUT, async || {
            let mut live = live.clone();
            live.get_checkpoint(pb::GetCheckpointRequest {})
                .await
                .map(|r| r.into_inner())
                .map_err(|e| e.message().to_string())
        })
        .await;
    let v = verify_note(&cp.note, &keys, 2).expect("quorum of two");
    assert_eq!(v.signed_by.len(), 2);
}

/// A real cluster's ledger, exported through the client library, verifies
/// offline (hashes, signatures, replay, quorum checkpoint) and against the
/// trust pinned from the cluster, and one flipped byte is found. With
/// ARBOR_WRITE_VECTOR=FILE the export is also written there, with a partial
/// export (prefix, consistency and anchor proofs) and the trust file beside
/// it (how proto/tests/vectors/cluster-v1.* were made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_export_verifies_offline_and_tampering_is_found() {
    use arbor_proto::audit::{verify_export, verify_export_trusted, VerifyOptions};

    // A short lease grace, so that a slow node's lease lapses during the test.
    let c = TestCluster::start(
        3,
        Options {
            lease_grace_ms: Some(100),
            ..Default::default()
        },
    )
    .await;
    c.wait_leader(TIMEOUT).await;
    enroll_replicas(&c).await;
    // The auditor pins the ledger now: its keys and this first checkpoint.
    let trust = c.client().await.trust_init().await.expect("trust");
    let channel = c.enroll_channel("shop").await;
    let node_a = c.enroll_node("store-a").await;
    let node_b = c.enroll_node("wh-b").await;
    let s = c.submitter().await;
    for i in 0..4 {
        let id = format!("ord-{i}");
        c.register_order(&channel, &id).await;
        let order = c.client().await.get_order(&id).await.expect("order");
        s.submit(node_a.claim_order(&id, 1, order.total))
            .await
            .expect("claim a");
        // Rejected: already owned (recorded, and replayed by the verifier).
        s.submit(node_b.claim_order(&id, 1, order.total))
            .await
            .expect("claim b");
    }

    // The rest of the protocol, so the export (and the committed test vector)
    // exercises it: wh-b's key is rotated and the new key signs a claim, a
    // handoff to store-a and the milestones.
    let node_b = {
        let fresh = c.signer(&arbor_client::Identity::generate("wh-b"));
        s.submit_accepted(
            "rotate wh-b",
            c.operator().rotate_key("wh-b", &fresh.public_key()),
        )
        .await;
        fresh
    };
    c.register_order(&channel, "ord-4").await;
    s.submit_accepted("claim ord-4", node_b.claim_order("ord-4", 1, SAMPLE_TOTAL))
        .await;
    let offer = s
        .submit_accepted(
            "offer ord-4",
            node_b.offer_handoff("ord-4", "store-a", 600_000),
        )
        .await;
    s.submit_accepted(
        "accept ord-4",
        node_a.accept_handoff("ord-4", offer.seq, false, ""),
    )
    .await;
    s.submit_accepted(
        "ship ord-4",
        node_a.report_shipped("ord-4", "sf-express", "SF1"),
    )
    .await;
    s.submit_accepted("deliver ord-4", node_a.report_delivered("ord-4", "pod-1"))
        .await;
    // A dispute and its ruling, so the export carries one for the replay to
    // re-check: ord-4 reported lost while store-a held it.
    let auditor = c.enroll_party("aud-1", pb::Role::Auditor).await;
    let client = c.client().await;
    let held = client
        .get_entries(offer.seq + 1, 1)
        .await
        .expect("acceptance entry")
        .entries[0]
        .time_ms;
    let opened = s
        .submit_accepted(
            "open dispute",
            channel.open_dispute("ord-4", pb::IncidentKind::Lost, held, "never arrived"),
        )
        .await;
    let ruling = client
        .preview_ruling("ord-4", opened.seq)
        .await
        .expect("preview");
    // Entries are stamped in ms: if the shipment shares the acceptance's
    // millisecond, the carrier already held it at that time.
    let shipped_at = client
        .get_entries(offer.seq + 2, 1)
        .await
        .expect("shipped entry")
        .entries[0]
        .time_ms;
    let expected = if shipped_at > held {
        ("store-a", "clean_acceptance")
    } else {
        ("sf-express", "custodian_at_incident")
    };
    assert_eq!(
        (ruling.liable.as_str(), ruling.rule.as_str()),
        expected,
        "{}",
        ruling.explanation
    );
    s.submit_accepted(
        "resolve dispute",
        auditor.resolve_dispute(
            "ord-4",
            opened.seq,
            &ruling.liable,
            &ruling.rule,
            ruling.evidence.clone(),
        ),
    )
    .await;

    // A lease that lapses: the leader's sweep records it (RecordLapse,
    // signed by a replica key). Then a party's key revoked, and a replica
    // identity rotated in the ledger and revoked.
    let slow = c
        .enroll_node_with(
            "store-slow",
            pb::NodeKind::Store,
            pb::PublishProfile {
                dispatch_time_ms: 200,
                max_open_orders: 1,
                ..sample_profile()
            },
        )
        .await;
    c.register_order(&channel, "ord-5").await;
    s.submit_accepted("claim ord-5", slow.claim_order("ord-5", 1, SAMPLE_TOTAL))
        .await;
    c.wait_until("the sweep to record the lapse", TIMEOUT, async || {
        let st = client
            .node_stats("store-slow")
            .await
            .map_err(|e| e.to_string())?;
        if st.lapses == 1 {
            Ok(())
        } else {
            Err(format!("lapses {}", st.lapses))
        }
    })
    .await;
    s.submit_accepted(
        "revoke store-slow",
        c.operator().revoke_key("store-slow", "retired"),
    )
    .await;
    let retired = arbor_client::Identity::generate("arbor-replica-3");
    s.submit_accepted(
        "rotate arbor-replica-3",
        c.operator()
            .rotate_key("arbor-replica-3", &c.signer(&retired).public_key()),
    )
    .await;
    s.submit_accepted(
        "revoke arbor-replica-3",
        c.operator().revoke_key("arbor-replica-3", "retired"),
    )
    .await;

    let (bytes, exported) = client
        .export(Vec::new(), 0, None, |_, _| {})
        .await
        .expect("export");
    assert_eq!(exported.entries, exported.checkpoint.size);
    // Against the pinned trust: the first checkpoint is anchored, and the
    // keys in force at the end (replica-3 revoked) are what to pin next.
    let saved = trust.checkpoint.as_ref().expect("saved").checkpoint.size;
    let opts = || VerifyOptions {
        threads: 2,
        batch: 64,
        progress: None,
    };
    let ts = verify_export_trusted(bytes.as_slice(), Some(&trust), opts())
        .expect("verifies against the trust")
        .trust
        .expect("trust");
    assert_eq!(ts.anchored, Some(saved));
    let next = ts.replicas_at_checkpoint.expect("keys at the checkpoint");
    let names: Vec<&str> = next.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["arbor-replica-1", "arbor-replica-2"]);
    // A partial range: prefix, consistency proof to the checkpoint, and the
    // anchor proof from the trust's saved checkpoint.
    let (partial, px) = client
        .export_for(
            Vec::new(),
            saved + 5,
            Some(exported.to_seq - 2),
            Some(&trust),
            |_, _| {},
        )
        .await
        .expect("partial export");
    let ps = verify_export_trusted(partial.as_slice(), Some(&trust), opts())
        .expect("partial verifies against the trust");
    assert!(!ps.complete && ps.trust.expect("trust").anchored == Some(saved));
    assert!(px.checkpoint.size > px.to_seq + 1);
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
    assert_eq!(summary.rejected, 4);
    assert!(
        summary.checkpoint.signed_by.len() >= 2,
        "{:?}",
        summary.checkpoint
    );
    if let Ok(path) = std::env::var("ARBOR_WRITE_VECTOR") {
        std::fs::write(&path, &bytes).expect("write vector");
        std::fs::write(
            format!("{path}.root"),
            format!("{}\n", hex_root(&exported.checkpoint.root)),
        )
        .expect("write root");
        let stem = path.strip_suffix(".export").expect("a .export path");
        std::fs::write(format!("{stem}-partial.export"), &partial).expect("write partial");
        trust
            .save(std::path::Path::new(&format!("{stem}.trust")))
            .expect("write trust");
    }

    // Flip one byte well inside the entries: the verifier names an entry.
    let mut bad = bytes.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    let err = verify_export(
        bad.as_slice(),
        VerifyOptions {
            threads: 2,
            batch: 64,
            progress: None,
        },
    )
    .expect_err("tampered export must fail");
    assert!(
        err.to_string().contains("entry") || err.to_string().contains("offset"),
        "{err}"
    );
}

fn hex_root(root: &Hash) -> String {
    root.iter().map(|b| format!("{b:02x}")).collect()
}

/// A checkpoint is only served when a quorum of its cosignatures come from
/// replica keys the ledger enrols (what an auditor can check); before the
/// replica identities are enrolled the answer says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_need_replica_keys_enrolled_in_the_ledger() {
    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    let client = c.client().await;
    let err = client
        .get_checkpoint()
        .await
        .expect_err("no replica key is enrolled yet");
    assert!(err.to_string().contains("enrol each replica"), "{err}");
    enroll_replicas(&c).await;
    let cp = client.get_checkpoint().await.expect("checkpoint");
    assert!(cp.signed_by.len() >= 2, "{:?}", cp.signed_by);
}

/// Pinned trust against a real cluster: a trust file made from one replica
/// is the one made from another (same fingerprint); an export verifies
/// against it; a checkpoint saved in it makes later checks prove the ledger
/// only grew, including a partial export that starts after it (the anchor
/// proof); a partial export without that proof is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_trust_made_from_a_cluster_verifies_full_and_partial_exports() {
    use arbor_proto::audit::{verify_export_trusted, VerifyOptions};
    let opts = || VerifyOptions {
        threads: 2,
        batch: 64,
        progress: None,
    };

    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    c.enroll_replicas().await;
    let channel = c.enroll_channel("shop").await;
    for i in 0..5 {
        c.register_order(&channel, &format!("ord-{i}")).await;
    }
    let ids = c.ids();
    let trust = c
        .client_for(&ids[..1])
        .await
        .trust_init()
        .await
        .expect("trust");
    let other = c
        .client_for(&ids[1..2])
        .await
        .trust_init()
        .await
        .expect("trust");
    assert_eq!(trust.fingerprint(), other.fingerprint());
    assert_eq!(trust.cluster_id, "arbor-test");
    assert_eq!(trust.replicas.len(), 3);
    let saved = trust.checkpoint.clone().expect("saved").checkpoint.size;

    for i in 5..12 {
        c.register_order(&channel, &format!("ord-{i}")).await;
    }
    let client = c.client().await;
    // The cluster's current checkpoint, judged by the trust alone.
    let tc = client.checkpoint_against(&trust).await.expect("trusted");
    assert_eq!(tc.anchored, Some(saved));
    assert!(tc.checkpoint.size > saved);

    let (bytes, _) = client
        .export(Vec::new(), 0, None, |_, _| {})
        .await
        .expect("export");
    let s = verify_export_trusted(bytes.as_slice(), Some(&trust), opts()).expect("verifies");
    let ts = s.trust.expect("judged by the trust");
    assert_eq!(ts.anchored, Some(saved));
    assert!(ts.signed_by.len() >= 2, "{ts:?}");

    // A range after the saved checkpoint: only with the anchor proof.
    let from = saved + 2;
    let (with, _) = client
        .export_for(Vec::new(), from, None, Some(&trust), |_, _| {})
        .await
        .expect("export");
    let s = verify_export_trusted(with.as_slice(), Some(&trust), opts()).expect("anchored");
    assert!(!s.complete && s.trust.expect("trust").anchored == Some(saved));
    let (without, _) = client
        .export(Vec::new(), from, None, |_, _| {})
        .await
        .expect("export");
    let err = verify_export_trusted(without.as_slice(), Some(&trust), opts())
        .expect_err("nothing ties it to the saved checkpoint");
    assert!(err.to_string().contains("nothing proves"), "{err}");
}
