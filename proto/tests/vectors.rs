//! Test vectors: a small export produced by a real three-replica cluster
//! (tests/tests/cluster/audit.rs with ARBOR_WRITE_VECTOR set), committed with its
//! expected Merkle root. An independent verifier can use the same files.
//! Regenerate them (after a change of the ledger format) with
//! `ARBOR_WRITE_VECTOR=$PWD/proto/tests/vectors/cluster-v1.export cargo test
//! --workspace --test audit a_cluster_export_verifies_offline`.

use arbor_proto::audit::{verify_export, VerifyOptions};

const EXPORT: &[u8] = include_bytes!("vectors/cluster-v1.export");
const ROOT: &str = include_str!("vectors/cluster-v1.export.root");

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
