//! Test vectors: a small export produced by a real three-replica cluster
//! (tests/tests/cluster/audit.rs with ARBOR_WRITE_VECTOR set), committed with its
//! expected Merkle root, a partial export of the same ledger and the trust
//! file pinned from that cluster. An independent verifier can use the same
//! files. Regenerate them (after a change of the ledger format) with
//! `ARBOR_WRITE_VECTOR=$PWD/proto/tests/vectors/cluster-v1.export cargo test
//! --workspace --test cluster audit::`.

use arbor_proto::audit::{
    verify_export, verify_export_trusted, ExportReader, Trust, VerifyOptions,
};
use arbor_proto::pb;
use arbor_proto::pb::command::Body;
use prost::Message;

const EXPORT: &[u8] = include_bytes!("vectors/cluster-v1.export");
const ROOT: &str = include_str!("vectors/cluster-v1.export.root");
const PARTIAL: &[u8] = include_bytes!("vectors/cluster-v1-partial.export");
const TRUST: &str = include_str!("vectors/cluster-v1.trust");

fn opts() -> VerifyOptions<'static> {
    VerifyOptions {
        threads: 2,
        batch: 64,
        progress: None,
    }
}

#[test]
fn the_committed_cluster_export_verifies_with_its_expected_root() {
    let s = verify_export(EXPORT, opts()).expect("vector verifies");
    assert!(s.complete && s.replayed, "{s:?}");
    let root: String = s
        .checkpoint
        .root
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(root, ROOT.trim());
    // Every signature in it covers "arbor.v2.command\0" || "arbor-test" || "\0" || command.
    assert_eq!(s.cluster_id.as_deref(), Some("arbor-test"));
    assert_eq!(s.entries, s.checkpoint.size);
    assert!(s.checkpoint.signed_by.len() >= 2);
}

#[test]
fn every_single_byte_flip_of_the_vector_is_found() {
    // Past the magic line, every byte matters.
    for at in (16..EXPORT.len()).step_by(7) {
        let mut bad = EXPORT.to_vec();
        bad[at] ^= 0x20;
        assert!(
            verify_export(bad.as_slice(), opts()).is_err(),
            "flip at byte {at} went unnoticed"
        );
    }
}

#[test]
fn the_vectors_verify_against_the_committed_trust() {
    let t = Trust::parse(TRUST).expect("trust file parses");
    assert_eq!(t.cluster_id, "arbor-test");
    assert_eq!(t.replicas.len(), 3);
    let saved = t
        .checkpoint
        .as_ref()
        .expect("a saved checkpoint")
        .checkpoint
        .size;
    let full = verify_export_trusted(EXPORT, Some(&t), opts()).expect("full vector");
    let ts = full.trust.expect("judged by the trust");
    assert_eq!(ts.anchored, Some(saved));
    assert_eq!(ts.fingerprint, t.fingerprint());
    // The partial vector: a range after the saved checkpoint and before the
    // end, tied by its prefix, consistency and anchor proofs.
    let mut r = ExportReader::open(PARTIAL).expect("partial opens");
    let h = r.header().clone();
    assert!(
        h.from_seq > saved && h.to_seq + 1 < r.checkpoint().size,
        "{h:?}"
    );
    assert!(!h.prefix.is_empty() && !h.consistency.is_empty() && !h.anchor_proof.is_empty());
    assert_eq!(h.anchor_size, saved);
    while r.next_entry().expect("entry").is_some() {}
    let p = verify_export_trusted(PARTIAL, Some(&t), opts()).expect("partial vector");
    assert!(!p.complete);
    assert_eq!(p.trust.expect("trust").anchored, Some(saved));
    // Without the trust a partial export is only consistent within its range.
    assert!(verify_export(PARTIAL, opts()).unwrap().trust.is_none());
}

#[test]
fn the_vector_holds_a_lapse_a_revocation_and_a_replica_key_change() {
    let mut r = ExportReader::open(EXPORT).unwrap();
    let mut seen = Vec::new();
    while let Some((_, e)) = r.next_entry().unwrap() {
        let env = pb::SignedCommand::decode(e.command.as_slice()).unwrap();
        let cmd = pb::Command::decode(env.command.as_slice()).unwrap();
        let what = match cmd.body {
            Some(Body::RecordLapse(_)) if env.signer.starts_with("arbor-replica-") => "lapse",
            Some(Body::RevokeKey(k)) if k.party_id == "arbor-replica-3" => "revoke replica",
            Some(Body::RevokeKey(_)) => "revoke",
            Some(Body::RotateKey(k)) if k.party_id == "arbor-replica-3" => "rotate replica",
            Some(Body::ResolveDispute(d)) if !d.evidence.is_empty() => "ruling",
            _ => continue,
        };
        assert!(e.accepted, "{what} at entry {}: {}", e.seq, e.message);
        seen.push(what);
    }
    for w in [
        "ruling",
        "lapse",
        "revoke",
        "rotate replica",
        "revoke replica",
    ] {
        assert!(seen.contains(&w), "no {w} in {seen:?}");
    }
}
