//! The order map and dispute bundles on a real cluster: a bundle for an
//! order with a dozen entries, one of whose signers rotated its key twice
//! during it, verifies offline (against the keys it carries, exit 7, and
//! against pinned trust, exit 0), and dropping any one of its entries,
//! swapping in another order's entry, using an older map, leaving out a key
//! rotation or a later profile of a party, carrying another party's profile
//! or a stale party history fails, each named. With ARBOR_WRITE_BUNDLE_VECTOR=FILE the bundle and its trust
//! file (FILE.trust) are written there (how proto/tests/vectors/
//! cluster-v1.bundle was made).

use arbor_client::bundle::{
    bundle_bytes, pack, read_bundle, unpack, verify_bundle, verify_unpacked, CheckpointKeys,
    PartyUnpacked, Unpacked,
};
use arbor_client::Commands;
use arbor_proto::audit::trust::Trust;
use arbor_proto::ledger::checkpoint::NoteKey;
use arbor_proto::ledger::map::MAP_EPOCH;
use arbor_proto::pb;
use arbor_tests::dev::run_cli;
use arbor_tests::fixtures::{sample_profile, SAMPLE_TOTAL};
use arbor_tests::{TestCluster, TIMEOUT};

const ORDER: &str = "ord-disputed";

/// Registers filler orders until the ledger has at least `size` entries.
async fn pad_to(c: &TestCluster, channel: &arbor_client::Signer, size: u64, tag: &str) {
    let mut i = 0;
    while c.head_seq().await + 1 < size {
        c.register_order(channel, &format!("pad-{tag}-{i}")).await;
        i += 1;
    }
}

/// The next map epoch boundary strictly after the current head, plus one
/// more entry so the checkpoint's size is past it.
async fn pad_past_next_epoch(c: &TestCluster, channel: &arbor_client::Signer, tag: &str) {
    let size = c.head_seq().await + 1;
    let next = (size / MAP_EPOCH + 1) * MAP_EPOCH;
    pad_to(c, channel, next + 1, tag).await;
}

fn verify_err(b: &Unpacked) -> String {
    let e = verify_unpacked(b, CheckpointKeys::Carried)
        .expect_err("a tampered bundle must fail")
        .to_string();
    // Packed into a file and read back, it fails the same way.
    let again = read_bundle(&bundle_bytes(&pack(b)))
        .and_then(|p| verify_bundle(&p, CheckpointKeys::Carried))
        .expect_err("a tampered bundle file must fail")
        .to_string();
    assert_eq!(e, again);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_bundle_proves_an_orders_whole_history_and_tampering_is_named() {
    let c = TestCluster::voters(3).await;
    c.wait_leader(TIMEOUT).await;
    let replicas = c.enroll_replicas().await;
    let shop = c.enroll_channel("shop").await;
    let store = c.enroll_node("store-a").await;
    let wh = c.enroll_node("wh-b").await;
    let auditor = c.enroll_party("aud-1", pb::Role::Auditor).await;
    let s = c.submitter().await;
    let client = c.client().await;

    // The order's history, interleaved with another order's.
    c.register_order(&shop, ORDER).await;
    c.register_order(&shop, "ord-other").await;
    s.submit_accepted("claim", store.claim_order(ORDER, 1, SAMPLE_TOTAL))
        .await;
    s.submit_accepted("claim other", wh.claim_order("ord-other", 1, SAMPLE_TOTAL))
        .await;
    let r = s
        .submit(wh.claim_order(ORDER, 1, SAMPLE_TOTAL))
        .await
        .expect("second claim");
    assert!(!r.outcome.unwrap_or_default().accepted, "already owned");
    let r = s
        .submit(store.claim_order(ORDER, 7, SAMPLE_TOTAL))
        .await
        .expect("claim with a wrong price version");
    assert!(!r.outcome.unwrap_or_default().accepted);
    // store-a's key is rotated twice while it holds the order: each of
    // its entries verifies only with the key in force at that entry.
    let rotate = |name: &'static str| {
        let fresh = c.signer(&arbor_client::Identity::generate(name));
        let cmd = c.operator().rotate_key(name, &fresh.public_key());
        (fresh, cmd)
    };
    let (store, cmd) = rotate("store-a");
    s.submit_accepted("rotate store-a", cmd).await;
    s.submit_accepted(
        "picked",
        store.report_milestone(ORDER, pb::Milestone::Picked),
    )
    .await;
    let (store, cmd) = rotate("store-a");
    s.submit_accepted("rotate store-a again", cmd).await;
    let offer = s
        .submit_accepted("offer", store.offer_handoff(ORDER, "wh-b", 600_000))
        .await;
    // wh-b's profile in force when it takes the order over is a newer one.
    let profile = |dispatch_time_ms| pb::PublishProfile {
        dispatch_time_ms,
        ..sample_profile()
    };
    s.submit_accepted("wh-b profile 2", wh.publish_profile(profile(7_200_000)))
        .await;
    s.submit_accepted("accept", wh.accept_handoff(ORDER, offer.seq, false, ""))
        .await;
    s.submit_accepted("packed", wh.report_milestone(ORDER, pb::Milestone::Packed))
        .await;
    let shipped = s
        .submit_accepted("shipped", wh.report_shipped(ORDER, "sf-express", "SF9"))
        .await;
    s.submit_accepted("delivered", wh.report_delivered(ORDER, ""))
        .await;
    let shipped_ms = client
        .get_entries(shipped.seq, 1)
        .await
        .expect("shipped entry")
        .entries[0]
        .time_ms;
    let opened = s
        .submit_accepted(
            "open dispute",
            shop.open_dispute(ORDER, pb::IncidentKind::Lost, shipped_ms, "never arrived"),
        )
        .await;
    pad_past_next_epoch(&c, &shop, "a").await;
    let old = unpack(&client.dispute_bundle(ORDER).await.expect("older bundle")).expect("unpack");
    // wh-b publishes again after the older bundle's map: the older bundle's
    // history of wh-b is stale for the newer map.
    s.submit_accepted("wh-b profile 3", wh.publish_profile(profile(5_400_000)))
        .await;

    // The ruling recorded, then another epoch: the newer bundle covers it.
    let ruling = client
        .preview_ruling(ORDER, opened.seq)
        .await
        .expect("preview");
    let resolved = s
        .submit_accepted(
            "resolve",
            auditor.resolve_dispute(
                ORDER,
                opened.seq,
                &ruling.liable,
                &ruling.rule,
                ruling.evidence.clone(),
            ),
        )
        .await;
    pad_past_next_epoch(&c, &shop, "b").await;
    let packed = client.dispute_bundle(ORDER).await.expect("bundle");
    let b = unpack(&packed).expect("unpack");
    assert_eq!(pack(&b), packed);

    // It verifies against the keys it carries (internal consistency only).
    let report = verify_unpacked(&b, CheckpointKeys::Carried).expect("bundle verifies");
    assert!(!report.pinned);
    assert_eq!(report.history.len(), 12, "{:#?}", report.history);
    assert_eq!(report.history.last().map(|h| h.seq), Some(resolved.seq));
    assert!(report.signed_by.len() >= 2, "{:?}", report.signed_by);
    assert_eq!(report.disputes.len(), 1);
    let d = &report.disputes[0];
    assert_eq!(d.resolved_seq, Some(resolved.seq));
    assert_eq!(
        (
            d.ruling.liable.as_str(),
            d.ruling.rule.as_str(),
            &d.ruling.evidence
        ),
        (
            ruling.liable.as_str(),
            ruling.rule.as_str(),
            &ruling.evidence
        )
    );
    let bytes = bundle_bytes(&packed);
    assert!(bytes.len() < 16 * 1024, "bundle is {} bytes", bytes.len());
    assert_eq!(read_bundle(&bytes).expect("reads back"), packed);

    // ... and against trust pinned from the cluster's own replicas.
    let genesis = client.get_entries(0, 1).await.expect("genesis").entries[0].clone();
    let mut keys = Vec::new();
    for id in c.ids() {
        let ident = arbor_client::Client::get_replica_identity(c.transport(), &c.endpoint(id))
            .await
            .expect("identity");
        keys.push(NoteKey {
            name: ident.name,
            public_key: ident.public_key.as_slice().try_into().expect("32 bytes"),
        });
    }
    assert_eq!(keys.len(), replicas.len());
    let trust = Trust::new(
        c.cluster_id(),
        genesis.hash.as_slice().try_into().expect("32 bytes"),
        keys,
    );
    let report = verify_unpacked(&b, CheckpointKeys::Pinned(&trust)).expect("pinned");
    assert!(report.pinned);
    // A trust for another ledger (another genesis) refuses it.
    let other = Trust::new(c.cluster_id(), [9; 32], trust.replicas.clone());
    let e = verify_unpacked(&b, CheckpointKeys::Pinned(&other)).expect_err("another genesis");
    assert!(e.to_string().contains("not the one the trust pins"), "{e}");

    // Every party the history needs comes with its whole key and profile
    // history below the map size: store-a's enrolment, profile and both
    // rotations; wh-b's enrolment and three profiles.
    let party = |b: &Unpacked, name: &str| -> usize {
        b.parties
            .iter()
            .position(|p| p.party_id == name)
            .unwrap_or_else(|| panic!("the bundle carries no history of {name}"))
    };
    let commands = |p: &PartyUnpacked| -> Vec<String> {
        p.entries
            .iter()
            .map(|(e, _)| {
                let env = <pb::SignedCommand as prost::Message>::decode(e.command.as_slice())
                    .expect("envelope");
                let cmd = <pb::Command as prost::Message>::decode(env.command.as_slice())
                    .expect("command");
                format!("{:?}", cmd.body.expect("body"))
                    .split('(')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let (sa, wb) = (party(&b, "store-a"), party(&b, "wh-b"));
    assert_eq!(
        commands(&b.parties[sa]),
        ["EnrollParty", "PublishProfile", "RotateKey", "RotateKey"]
    );
    assert_eq!(
        commands(&b.parties[wb]),
        [
            "EnrollParty",
            "PublishProfile",
            "PublishProfile",
            "PublishProfile"
        ]
    );
    // Leaving out a key rotation (the first: then the picked milestone has
    // no key; the last: the map's chain names it).
    for i in [2, 3] {
        let mut t = b.clone();
        t.parties[sa].entries.remove(i);
        let e = verify_err(&t);
        assert!(
            e.contains("party store-a") && e.contains("missing"),
            "rotation {i} left out: {e}"
        );
    }
    // Leaving out the later profile in force when wh-b took the order over
    // (which would steer the lease's dispatch time).
    let mut t = b.clone();
    t.parties[wb].entries.remove(2);
    let e = verify_err(&t);
    assert!(
        e.contains("party wh-b") && e.contains("missing"),
        "profile left out: {e}"
    );
    // Its newest profile left out: the chain ends before the map's head.
    let mut t = b.clone();
    t.parties[wb].entries.pop();
    let e = verify_err(&t);
    assert!(
        e.contains("party wh-b") && e.contains("latest party entry"),
        "{e}"
    );
    // A profile of another party (wh-b's, genuinely in the tree) carried as
    // store-a's.
    let mut t = b.clone();
    let foreign = t.parties[wb].entries[2].clone();
    let at = t.parties[sa]
        .entries
        .partition_point(|(e, _)| e.seq < foreign.0.seq);
    t.parties[sa].entries.insert(at, foreign);
    let e = verify_err(&t);
    assert!(e.contains("not a party entry of store-a"), "{e}");
    // A stale party head: wh-b's history and map proof as of the older
    // bundle's map, which predates wh-b's third profile (its entries with
    // their paths in the newer tree).
    let stale = &old.parties[party(&old, "wh-b")];
    let stale_seqs: Vec<u64> = stale.entries.iter().map(|(e, _)| e.seq).collect();
    assert_eq!(stale_seqs.len(), 3);
    let stale_entries: Vec<_> = b.parties[wb]
        .entries
        .iter()
        .filter(|(e, _)| stale_seqs.contains(&e.seq))
        .cloned()
        .collect();
    let mut t = b.clone();
    t.parties[wb].map_proof = stale.map_proof.clone();
    t.parties[wb].entries = stale_entries.clone();
    let e = verify_err(&t);
    assert!(
        e.contains("party wh-b") && e.contains("map proof does not lead to the map root"),
        "{e}"
    );
    // ... and the older history with the newer map proof.
    let mut t = b.clone();
    t.parties[wb].entries = stale_entries;
    let e = verify_err(&t);
    assert!(e.contains("party wh-b"), "{e}");
    // A signer's history left out altogether.
    let mut t = b.clone();
    t.parties.remove(sa);
    let e = verify_err(&t);
    assert!(e.contains("no proven key history of store-a"), "{e}");

    // Dropping any one entry fails, naming why.
    let n = b.entries.len();
    for i in 0..n {
        let mut t = b.clone();
        t.entries.remove(i);
        let e = verify_err(&t);
        let why = if i == n - 1 {
            "entries are missing"
        } else if i == 0 {
            "does not reach the registration"
        } else {
            "which is missing from the bundle"
        };
        assert!(e.contains(why), "dropping entry {i}: {e}");
    }
    // An entry of another order (with its genuine inclusion proof) swapped in.
    let other_head = client
        .get_order("ord-other")
        .await
        .expect("other order")
        .history
        .last()
        .copied()
        .expect("other order's history");
    let p = client
        .get_inclusion_proof(other_head, client_size(&b))
        .await
        .expect("proof");
    let mut t = b.clone();
    t.entries[3] = (p.entry.expect("entry"), p.path);
    let e = verify_err(&t);
    assert!(e.contains("belongs to order \"ord-other\""), "{e}");
    // The older map (its proof from the earlier epoch) against the newer checkpoint.
    let mut t = b.clone();
    t.map_proof = old.map_proof.clone();
    let e = verify_err(&t);
    assert!(e.contains("map proof does not lead to the map root"), "{e}");
    // The older bundle itself verifies, and ends before the ruling.
    let r_old = verify_unpacked(&old, CheckpointKeys::Carried).expect("older bundle verifies");
    assert_eq!(r_old.history.len(), 11);
    assert_eq!(r_old.disputes[0].resolved_seq, None);
    // The older checkpoint with the newer history: not in its tree.
    let mut t = b.clone();
    t.checkpoint = old.checkpoint.clone();
    t.map_proof = old.map_proof.clone();
    let e = verify_err(&t);
    assert!(e.contains("not in the checkpoint's tree"), "{e}");
    // A changed byte of an entry, a checkpoint without its map line.
    let mut t = b.clone();
    t.entries[2].0.time_ms += 1;
    assert!(verify_err(&t).contains("hash does not match"));
    let mut t = b.clone();
    let line_start = t.checkpoint.find("\nmap2 ").expect("map line") + 1;
    let line_end = line_start + t.checkpoint[line_start..].find('\n').expect("eol") + 1;
    t.checkpoint.replace_range(line_start..line_end, "");
    assert!(verify_err(&t).contains("no map line"));
    // A version 1 map line (orders only) proves no party history.
    let mut t = b.clone();
    t.checkpoint = t.checkpoint.replacen("\nmap2 ", "\nmap ", 1);
    assert!(verify_err(&t).contains("map version 1"));

    // The commands: `arbor audit bundle` writes it; `verify-bundle` exits 7
    // without trust, 0 with it, 1 on a tampered file.
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("order.bundle");
    let trust_file = tmp.path().join("arbor.trust");
    trust.save(&trust_file).expect("save trust");
    let (file_s, trust_s) = (file.display().to_string(), trust_file.display().to_string());
    let eps = c.endpoints().join(",");
    let cacert = c.cacert();
    let out = run_cli(&[
        "--endpoints",
        &eps,
        "--cacert",
        &cacert,
        "audit",
        "bundle",
        ORDER,
        "--out",
        &file_s,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    let out = run_cli(&["audit", "verify-bundle", &file_s]).await;
    assert_eq!(out.code, Some(7), "{out}");
    assert!(out.stderr.contains("UNVERIFIED"), "{out}");
    assert!(out.stdout.contains("liable under"), "{out}");
    let out = run_cli(&[
        "--output",
        "json",
        "audit",
        "verify-bundle",
        &file_s,
        "--trust",
        &trust_s,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    let j = out.json();
    assert_eq!(j["pinned"], true);
    assert_eq!(j["history"].as_array().map(Vec::len), Some(12));
    assert_eq!(j["disputes"][0]["rule"], ruling.rule.as_str());
    let mut bad = unpack(&read_bundle(&std::fs::read(&file).expect("read")).expect("decode"))
        .expect("unpack");
    bad.entries.remove(5);
    std::fs::write(&file, bundle_bytes(&pack(&bad))).expect("write");
    let out = run_cli(&["audit", "verify-bundle", &file_s, "--trust", &trust_s]).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("missing from the bundle"), "{out}");

    if let Ok(path) = std::env::var("ARBOR_WRITE_BUNDLE_VECTOR") {
        std::fs::write(&path, &bytes).expect("write vector");
        trust
            .save(format!("{path}.trust").as_ref())
            .expect("write trust");
    }
}

/// The tree size of a bundle's checkpoint.
fn client_size(b: &Unpacked) -> u64 {
    b.checkpoint
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("checkpoint size line")
}
