//! The verifier against tampered exports: every kind of change must be found
//! and reported at the right entry (or offset) with the right reason.

use std::sync::OnceLock;

use proptest::prelude::*;
use prost::Message;
use sha2::{Digest, Sha256};

use super::export::{ExportHeader, ExportTrailer, EXPORT_MAGIC};
use super::synth::{key, rehash_from, Synth};
use super::*;
use crate::ledger::merkle::{leaf_hash, root};
use crate::ledger::{sign_command, Entry};
use crate::pb;
use crate::rules::Code;

/// 120 entries: genesis, a second operator, a channel, 4 nodes, 3 replicas
/// (entries 7, 8, 9), then orders with accepted and rejected claims.
fn chain() -> &'static Synth {
    static S: OnceLock<Synth> = OnceLock::new();
    S.get_or_init(|| Synth::build(120, 3))
}

const N: u64 = 120;

fn verify(bytes: &[u8]) -> Result<Summary, AuditError> {
    // Small batches so that failures land in the middle of the stream.
    verify_export(
        bytes,
        VerifyOptions {
            threads: 2,
            batch: 16,
            progress: None,
        },
    )
}

fn all_signers() -> Vec<usize> {
    vec![0, 1, 2]
}

/// The export of `entries` (whole), checkpointed at their own root, signed by `signers`.
fn export_of(entries: &[Entry], signers: &[usize]) -> Vec<u8> {
    let s = chain();
    let n = entries.len() as u64;
    let mut cp = s.checkpoint(n);
    let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(&e.hash)).collect();
    cp.root = root(&leaves, n);
    let note = s.note(&cp, signers);
    s.export_with(entries, 0, n - 1, n, &note)
}

/// An export of tampered `entries` against the *original* checkpoint, framed
/// by hand so that the writer's own order checks do not get in the way.
fn raw_export(entries: &[Entry]) -> Vec<u8> {
    let s = chain();
    let note = s.note(&s.checkpoint(N), &all_signers());
    let header = ExportHeader::new(0, N - 1, note, &[], &[]);
    let header_sha256 = Sha256::digest(header.encode_to_vec()).to_vec();
    let mut out = EXPORT_MAGIC.to_vec();
    let mut frame = |m: Vec<u8>| {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
    };
    frame(header.encode_to_vec());
    for e in entries {
        frame(e.to_pb().encode_to_vec());
    }
    frame(
        ExportTrailer {
            entry_count: entries.len() as u64,
            last_hash: entries.last().map(|e| e.hash.to_vec()).unwrap_or_default(),
            header_sha256,
        }
        .encode_to_vec(),
    );
    out
}

/// (offset, length) of every frame after the magic.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = EXPORT_MAGIC.len();
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, len));
        at += 4 + len;
    }
    out
}

fn expect_entry_error(r: Result<Summary, AuditError>, seq: u64, needle: &str) -> AuditError {
    let e = r.expect_err("tampered export verified");
    assert_eq!(e.seq(), Some(seq), "{e}");
    assert!(e.to_string().contains(needle), "{e}");
    assert!(e.to_string().starts_with(&format!("entry {seq}: ")), "{e}");
    e
}

fn entries() -> Vec<Entry> {
    chain().entries.clone()
}

/// The first entry with this outcome code after the setup entries.
fn first_with(code: Code) -> usize {
    first_after(code, 10)
}

/// The first entry after `after` with this outcome code.
fn first_after(code: Code, after: u64) -> usize {
    chain()
        .entries
        .iter()
        .position(|e| e.seq > after && e.code == code.as_str())
        .unwrap()
}

#[test]
fn an_honest_export_verifies() {
    let s = chain();
    let bytes = s.full_export();
    let sum = verify(&bytes).unwrap();
    assert_eq!(sum.entries, N);
    assert_eq!((sum.from_seq, sum.to_seq), (0, N - 1));
    assert_eq!(sum.accepted + sum.rejected, N);
    assert!(sum.rejected >= 20, "{sum:?}");
    for code in [
        Code::AlreadyOwned,
        Code::PriceMismatch,
        Code::ExternalRefTaken,
        Code::UnknownOrder,
    ] {
        assert!(
            s.entries.iter().any(|e| e.code == code.as_str()),
            "workload has no {code}"
        );
    }
    assert_eq!(sum.parties, 10);
    assert_eq!(sum.signatures, N - 1);
    assert!(
        sum.replayed && sum.complete && sum.notes.is_empty(),
        "{sum:?}"
    );
    assert_eq!(sum.cluster_id.as_deref(), Some("synth"));
    assert_eq!(sum.head_hash, s.entries[N as usize - 1].hash);
    assert_eq!(sum.checkpoint.size, N);
    assert_eq!(
        sum.checkpoint.signed_by,
        ["arbor-replica-1", "arbor-replica-2", "arbor-replica-3"]
    );
    assert_eq!((sum.checkpoint.replicas, sum.checkpoint.quorum), (3, 2));
    // The hand-framed writer and ExportWriter agree byte for byte.
    assert_eq!(raw_export(&s.entries), bytes);
    // One thread, one big batch: the same verdict.
    let one = verify_export(
        bytes.as_slice(),
        VerifyOptions {
            threads: 1,
            batch: 4096,
            progress: None,
        },
    )
    .unwrap();
    assert_eq!(one.checkpoint, sum.checkpoint);
}

#[test]
fn progress_is_reported_up_to_the_total() {
    let mut seen = Vec::new();
    let mut cb = |done: u64, total: u64| seen.push((done, total));
    verify_export(
        chain().full_export().as_slice(),
        VerifyOptions {
            progress: Some(&mut cb),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(seen.last(), Some(&(N, N)));
}

#[test]
fn a_flipped_byte_in_a_command_is_found() {
    let mut es = entries();
    es[50].command[20] ^= 0x01;
    expect_entry_error(
        verify(&raw_export(&es)),
        50,
        "hash does not match its contents",
    );
}

#[test]
fn a_flipped_byte_in_an_outcome_code_is_found() {
    let i = first_with(Code::AlreadyOwned);
    let mut es = entries();
    es[i].code = "already_ownee".into();
    expect_entry_error(
        verify(&raw_export(&es)),
        i as u64,
        "hash does not match its contents",
    );
}

#[test]
fn a_flipped_byte_in_a_hash_is_found() {
    let mut es = entries();
    es[61].hash[31] ^= 0x80;
    expect_entry_error(
        verify(&raw_export(&es)),
        61,
        "hash does not match its contents",
    );
    let mut es = entries();
    es[62].prev_hash[0] ^= 0x01;
    expect_entry_error(
        verify(&raw_export(&es)),
        62,
        "prev_hash does not match entry 61",
    );
}

#[test]
fn a_flipped_time_is_found() {
    let mut es = entries();
    es[70].time_ms ^= 0x04;
    expect_entry_error(
        verify(&raw_export(&es)),
        70,
        "hash does not match its contents",
    );
    // Recomputing the hashes does not help when time goes backwards.
    let mut es = entries();
    es[70].time_ms = es[69].time_ms - 1;
    rehash_from(&mut es, 70);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        70,
        "time goes backwards",
    );
}

#[test]
fn a_dropped_entry_is_found() {
    let mut es = entries();
    es.remove(40);
    expect_entry_error(
        verify(&raw_export(&es)),
        40,
        "found entry 41 where entry 40 belongs",
    );
}

#[test]
fn a_duplicated_entry_is_found() {
    let mut es = entries();
    let dup = es[40].clone();
    es.insert(41, dup);
    es.pop();
    expect_entry_error(
        verify(&raw_export(&es)),
        41,
        "found entry 40 where entry 41 belongs",
    );
}

#[test]
fn swapped_entries_are_found() {
    let mut es = entries();
    es.swap(33, 34);
    expect_entry_error(
        verify(&raw_export(&es)),
        33,
        "found entry 34 where entry 33 belongs",
    );
}

#[test]
fn a_flipped_outcome_with_every_later_hash_recomputed_is_caught_by_replay_alone() {
    // A claim that lost to the owner, rewritten as the winner; the forger
    // recomputes every later hash and (holding the replica keys) re-signs the
    // checkpoint. Hashes, links, signatures and the Merkle root all check out.
    let i = first_with(Code::AlreadyOwned);
    let mut es = entries();
    es[i].accepted = true;
    es[i].code = Code::Accepted.as_str().into();
    es[i].message = String::new();
    rehash_from(&mut es, i);
    for (k, e) in es.iter().enumerate().skip(1) {
        e.verify_link(Some(&es[k - 1].head())).unwrap();
    }
    let e = expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        i as u64,
        "replay does not reproduce the entry",
    );
    assert!(
        e.to_string()
            .contains("the rules decide rejected (already_owned: order o-"),
        "{e}"
    );
    assert!(
        e.to_string().contains("but the ledger records accepted"),
        "{e}"
    );

    // And the other way round: a winning claim recorded as rejected.
    let i = chain()
        .entries
        .iter()
        .position(|e| e.seq > 10 && e.accepted && e.order_prev_seq > 0)
        .unwrap();
    let mut es = entries();
    es[i].accepted = false;
    es[i].code = Code::AlreadyOwned.as_str().into();
    rehash_from(&mut es, i);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        i as u64,
        "the rules decide accepted but the ledger records rejected",
    );
}

#[test]
fn a_changed_reason_or_history_link_is_caught_by_replay() {
    let i = first_with(Code::PriceMismatch);
    let mut es = entries();
    es[i].message = es[i].message.replace("total", "tota1");
    rehash_from(&mut es, i);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        i as u64,
        "the rules give the reason",
    );
    let mut es = entries();
    es[i].order_prev_seq += 1;
    rehash_from(&mut es, i);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        i as u64,
        "the order's previous entry is",
    );
}

#[test]
fn a_command_signed_by_the_wrong_key_is_found_even_with_hashes_recomputed() {
    let s = chain();
    for i in [20usize, 31, 119] {
        let mut es = entries();
        let env = pb::SignedCommand::decode(es[i].command.as_slice()).unwrap();
        let cmd = pb::Command::decode(env.command.as_slice()).unwrap();
        // Same signer name and command, another key: the rules still accept it.
        es[i].command = sign_command(&key(99), &env.signer, &cmd).encode_to_vec();
        rehash_from(&mut es, i);
        let e = expect_entry_error(
            verify(&export_of(&es, &all_signers())),
            i as u64,
            "command signature does not verify",
        );
        assert!(
            e.to_string()
                .contains(&format!("key enrolled for {}", env.signer)),
            "{e}"
        );
        assert_eq!(s.entries.len(), es.len());
    }
}

#[test]
fn the_earliest_failure_is_reported() {
    // A bad signature at 25 (found by a worker) and a broken hash at 90 (found by the main thread).
    let mut es = entries();
    let env = pb::SignedCommand::decode(es[25].command.as_slice()).unwrap();
    let mut bad = env.clone();
    bad.signature[5] ^= 1;
    es[25].command = bad.encode_to_vec();
    rehash_from(&mut es, 25);
    es[90].hash[0] ^= 1;
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        25,
        "command signature does not verify",
    );
}

#[test]
fn a_resent_command_appended_twice_is_found() {
    let mut es = entries();
    es[60].command = es[59].command.clone();
    rehash_from(&mut es, 60);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        60,
        "already applied at entry 59",
    );
}

#[test]
fn a_command_the_rules_refuse_is_found() {
    let mut es = entries();
    let cmd = pb::Command {
        nonce: 7,
        body: Some(pb::command::Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o-1".into(),
            price_version: 1,
            total: 202,
        })),
    };
    es[45].command = sign_command(&key(98), "ghost", &cmd).encode_to_vec();
    rehash_from(&mut es, 45);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        45,
        "the rules refuse its command (unknown_signer)",
    );
    // A channel cannot claim.
    let mut es = entries();
    es[45].command = sign_command(&chain().channel, "shop", &cmd).encode_to_vec();
    rehash_from(&mut es, 45);
    expect_entry_error(verify(&export_of(&es, &all_signers())), 45, "(wrong_role)");
}

#[test]
fn a_forged_checkpoint_signature_is_found() {
    let s = chain();
    let cp = s.checkpoint(N);
    // A genuine line with its signature altered: the known key does not verify it.
    let mut line = cp.sign_line(&s.replicas[1].0, &s.replicas[1].1);
    let (head, b64) = line.trim_end().rsplit_once(' ').unwrap();
    let mut b64 = b64.to_string();
    let c = if b64.as_bytes()[20] == b'A' { "B" } else { "A" };
    b64.replace_range(20..21, c);
    line = format!("{head} {b64}\n");
    let note = cp.note(&[cp.sign_line(&s.replicas[0].0, &s.replicas[0].1), line]);
    let err = verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint: checkpoint signature of arbor-replica-2 does not verify"
    );

    // Signed under a replica's name with another key: it does not count.
    let note = cp.note(&[
        cp.sign_line(&s.replicas[0].0, &s.replicas[0].1),
        cp.sign_line("arbor-replica-2", &key(97)),
    ]);
    let err = verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 valid signature(s) from known replicas, 2 needed"),
        "{err}"
    );

    // A note whose text was changed after signing.
    let note = s.note(&cp, &all_signers()).replacen(
        &format!("time {}", cp.time_ms),
        &format!("time {}", cp.time_ms + 1),
        1,
    );
    let err = verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[test]
fn a_checkpoint_signed_by_too_few_replicas_is_refused() {
    let s = chain();
    let note = s.note(&s.checkpoint(N), &[2]);
    let err = verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint: checkpoint has 1 valid signature(s) from known replicas, 2 needed"
    );
    let note = s.note(&s.checkpoint(N), &[0, 2]);
    verify(&s.export_with(&s.entries, 0, N - 1, N, &note)).unwrap();
}

#[test]
fn only_replicas_enrolled_before_the_checkpoint_count() {
    // Replicas are enrolled at entries 11, 12, 13 (after 4 nodes and their
    // profiles). A checkpoint of size 13 knows two.
    let s = chain();
    let cp = s.checkpoint(13);
    let note = s.note(&cp, &[0, 2]);
    let err = verify(&s.export_with(&s.entries[..13], 0, 12, 13, &note)).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 valid signature(s) from known replicas, 2 needed"),
        "{err}"
    );
    let note = s.note(&cp, &[0, 1]);
    let sum = verify(&s.export_with(&s.entries[..13], 0, 12, 13, &note)).unwrap();
    assert_eq!((sum.checkpoint.replicas, sum.checkpoint.quorum), (2, 2));
}

#[test]
fn a_ledger_without_replicas_has_no_verifiable_checkpoint() {
    let s = Synth::build(30, 0);
    let cp = s.checkpoint(30);
    let note = cp.note(&[cp.sign_line("arbor-replica-1", &key(40))]);
    let err = verify(&s.export_with(&s.entries, 0, 29, 30, &note)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("checkpoint: no replica key is enrolled"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_of_another_tree_or_cluster_is_refused() {
    let s = chain();
    let mut cp = s.checkpoint(N);
    cp.root[0] ^= 1;
    let err =
        verify(&s.export_with(&s.entries, 0, N - 1, N, &s.note(&cp, &all_signers()))).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("checkpoint: the Merkle root over entries 0..=119 is"),
        "{err}"
    );
    let mut cp = s.checkpoint(N);
    cp.origin = "arbor/elsewhere".into();
    let err =
        verify(&s.export_with(&s.entries, 0, N - 1, N, &s.note(&cp, &all_signers()))).unwrap_err();
    assert!(
        err.to_string()
            .contains("genesis entry names cluster \"synth\""),
        "{err}"
    );
}

#[test]
fn an_export_that_ends_before_the_checkpoint_is_tied_to_it_by_a_consistency_proof() {
    let s = chain();
    let note = s.note(&s.checkpoint(N), &all_signers());
    let bytes = s.export_with(&s.entries, 0, 99, N, &note);
    let sum = verify(&bytes).unwrap();
    assert_eq!(sum.entries, 100);
    assert!(sum.complete);
    assert_eq!(sum.notes.len(), 1, "{:?}", sum.notes);
    // Entries 0..=99 of another ledger are not consistent with the checkpoint.
    let mut es = entries();
    es[99].message.push('!');
    rehash_from(&mut es, 99);
    let err = verify(&s.export_with(&es, 0, 99, N, &note)).unwrap_err();
    assert!(
        err.to_string()
            .contains("entry 99: replay does not reproduce"),
        "{err}"
    );
}

#[test]
fn an_export_that_does_not_start_at_genesis_checks_links_and_the_root_only() {
    let s = chain();
    let note = s.note(&s.checkpoint(N), &all_signers());
    let sum = verify(&s.export_with(&s.entries, 50, N - 1, N, &note)).unwrap();
    assert_eq!((sum.from_seq, sum.entries), (50, 70));
    assert!(!sum.replayed && !sum.complete && !sum.checkpoint.signatures_verified);
    assert_eq!(sum.signatures, 0);
    assert!(sum.notes[0].contains("not at genesis"), "{:?}", sum.notes);
    // The middle of the ledger, tied to the checkpoint from both sides.
    verify(&s.export_with(&s.entries, 50, 80, N, &note)).unwrap();

    // A forged range is not consistent with the checkpoint's root.
    let mut es = entries();
    let i = first_after(Code::AlreadyOwned, 50);
    es[i].accepted = true;
    rehash_from(&mut es, i);
    let err = verify(&s.export_with(&es, 50, N - 1, N, &note)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("checkpoint: the Merkle root over entries 0..=119"),
        "{err}"
    );
    let err = verify(&s.export_with(&es, 50, 100, N, &note)).unwrap_err();
    assert!(
        err.to_string()
            .contains("is not consistent with the checkpoint of size 120"),
        "{err}"
    );
    // So is one whose first entry lies about its hash.
    let mut es = entries();
    es[50].hash[3] ^= 1;
    expect_entry_error(
        verify(&s.export_with(&es, 50, N - 1, N, &note)),
        50,
        "hash does not match",
    );
}

#[test]
fn a_truncated_file_names_the_offset() {
    let bytes = chain().full_export();
    let f = frames(&bytes);
    assert_eq!(f.len() as u64, N + 2);
    let cut = |n: usize| verify(&bytes[..n]).unwrap_err();

    let e = cut(7);
    assert_eq!(e.offset(), Some(0));
    assert!(e.to_string().contains("not an arbor export"), "{e}");
    let e = cut(f[0].0 + 10);
    assert_eq!(
        e.to_string(),
        format!(
            "offset 16: header: truncated: the file ends after 6 of the frame's {} bytes",
            f[0].1
        )
    );

    // Inside entry 37's frame, and right after entry 36.
    let (at, len) = f[1 + 37];
    let e = cut(at + 4 + len / 2);
    assert_eq!(e.seq(), Some(37));
    assert_eq!(e.offset(), Some(at as u64));
    assert!(e.to_string().contains("truncated"), "{e}");
    assert!(
        e.to_string().ends_with(&format!("(byte offset {at})")),
        "{e}"
    );
    let e = cut(at);
    assert_eq!(e.seq(), Some(37));
    assert!(
        e.to_string()
            .contains("missing: the file ends after 37 of 120 entries"),
        "{e}"
    );
    let e = cut(at + 2);
    assert!(
        e.to_string().contains("after 2 of the 4 length bytes"),
        "{e}"
    );

    // Without the trailer.
    let (at, _) = f[f.len() - 1];
    let e = cut(at);
    assert_eq!(
        e.to_string(),
        format!("offset {at}: trailer: missing: the file ends here")
    );
    let e = cut(bytes.len() - 1);
    assert!(
        e.to_string()
            .starts_with(&format!("offset {at}: trailer: truncated")),
        "{e}"
    );
}

#[test]
fn damaged_framing_is_found() {
    let bytes = chain().full_export();
    let f = frames(&bytes);
    // Data after the trailer.
    let mut b = bytes.clone();
    b.push(0);
    assert_eq!(
        verify(&b).unwrap_err().to_string(),
        format!("offset {}: unexpected data after the trailer", bytes.len())
    );
    // A garbled length.
    let mut b = bytes.clone();
    b[f[5].0] = 0xff;
    let e = verify(&b).unwrap_err();
    assert_eq!(e.seq(), Some(4));
    assert!(
        e.to_string().contains("over the 16777216-byte limit"),
        "{e}"
    );
    // An entry frame that decodes but is not canonical (an unknown field appended).
    let (at, len) = f[1 + 12];
    let mut frame = bytes[at + 4..at + 4 + len].to_vec();
    frame.extend_from_slice(&[0x48, 0x01]); // field 9, varint 1
    let mut b = bytes[..at].to_vec();
    b.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    b.extend_from_slice(&frame);
    b.extend_from_slice(&bytes[at + 4 + len..]);
    expect_entry_error(
        verify(&b),
        12,
        "not the canonical protobuf encoding of a LedgerEntry",
    );
    // Another format version.
    let mut b = bytes.clone();
    b[14] = b'9';
    assert!(verify(&b)
        .unwrap_err()
        .to_string()
        .contains("\"v9\" is not supported"));
}

#[test]
fn the_reader_streams_entries() {
    let s = chain();
    let bytes = s.full_export();
    let r = ExportReader::open(bytes.as_slice()).unwrap();
    assert_eq!(r.header().entry_count, N);
    assert_eq!(r.checkpoint().size, N);
    let got: Vec<Entry> = r.collect::<Result<_, _>>().unwrap();
    assert_eq!(got, s.entries);
    // The writer refuses entries out of order or missing.
    let h = ExportHeader::new(0, 1, String::new(), &[], &[]);
    let mut w = ExportWriter::new(Vec::new(), h.clone()).unwrap();
    assert!(w.write(&s.entries[1]).is_err());
    w.write(&s.entries[0]).unwrap();
    assert!(w.finish().is_err());
}

fn flip_cases() -> &'static (Vec<u8>, usize) {
    static B: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    B.get_or_init(|| {
        let s = Synth::build(40, 3);
        let b = s.full_export();
        let n = b.len();
        (b, n)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_single_byte_change_anywhere_is_found(pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let (bytes, n) = flip_cases();
        let mut b = bytes.clone();
        let i = pos.index(*n);
        b[i] ^= xor;
        prop_assert!(verify(&b).is_err(), "flip at {} verified", i);
    }

    #[test]
    fn any_truncation_is_found(keep in any::<prop::sample::Index>()) {
        let (bytes, n) = flip_cases();
        let k = keep.index(*n);
        prop_assert!(verify(&bytes[..k]).is_err());
    }
}

#[test]
fn damage_to_a_signature_line_no_check_depends_on_is_still_found() {
    // C2SP says to ignore signatures from unknown keys; the trailer's header
    // digest still notices that the line was changed.
    let s = chain();
    let cp = s.checkpoint(N);
    let mut lines: Vec<String> = (0..3)
        .map(|i| cp.sign_line(&s.replicas[i].0, &s.replicas[i].1))
        .collect();
    lines.push(cp.sign_line("arbor-replica-9", &key(49)));
    let bytes = s.export_with(&s.entries, 0, N - 1, N, &cp.note(&lines));
    verify(&bytes).unwrap();
    let at = bytes
        .windows(15)
        .position(|w| w == b"arbor-replica-9")
        .unwrap();
    let mut b = bytes.clone();
    b[at + 14] = b'8';
    let e = verify(&b).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("offset 16: header: its SHA-256 is not the one recorded in the trailer"),
        "{e}"
    );
}

/// A command signed with a key after the ledger revoked it: the replay
/// refuses it (revoked_key), even with every hash and the checkpoint made
/// to match; the same party's entries from before the revocation stay valid.
#[test]
fn a_command_signed_with_a_revoked_key_is_found() {
    use crate::rules::{Applied, MemState};
    let s = chain();
    let mut es: Vec<Entry> = entries()[..40].to_vec();
    let mut state = MemState::default();
    for e in &es {
        state.apply(&e.command, e.time_ms, e.seq == 0);
    }
    let revoke = pb::Command {
        nonce: 9_001,
        body: Some(pb::command::Body::RevokeKey(pb::RevokeKey {
            party_id: "n0".into(),
            reason: "key leaked".into(),
        })),
    };
    let revoke = sign_command(&s.operator, "ops", &revoke).encode_to_vec();
    let t = es.last().unwrap().time_ms + 1;
    let Applied::Appended(revoked) = state.apply(&revoke, t, false) else {
        panic!("revocation not appended");
    };
    assert!(revoked.accepted, "{revoked:?}");
    es.push(revoked.clone());
    // A clean export up to here verifies: n0's earlier signatures are fine.
    verify(&export_of(&es, &all_signers())).expect("valid up to the revocation");

    // The forger appends a claim signed by n0's (revoked) key as accepted.
    let claim = pb::Command {
        nonce: 9_002,
        body: Some(pb::command::Body::ClaimOrder(pb::ClaimOrder {
            order_id: "o-1".into(),
            price_version: 1,
            total: 202,
        })),
    };
    let claim = sign_command(&s.nodes[0], "n0", &claim).encode_to_vec();
    let forged = Entry::next(
        Some(&revoked.head()),
        t + 1,
        claim,
        true,
        Code::Accepted.as_str().into(),
        String::new(),
        "o-1".into(),
        0,
    );
    es.push(forged);
    expect_entry_error(
        verify(&export_of(&es, &all_signers())),
        41,
        "the rules refuse its command (revoked_key)",
    );
}

/// After a rotation, each entry is judged by the key in force at its
/// position: the old key's later signature is found, the new key's passes.
#[test]
fn signatures_are_checked_against_the_key_in_force_after_a_rotation() {
    use crate::rules::{Applied, MemState};
    let s = chain();
    let base: Vec<Entry> = entries()[..40].to_vec();
    let mut state = MemState::default();
    for e in &base {
        state.apply(&e.command, e.time_ms, e.seq == 0);
    }
    let fresh = key(90);
    let rotate = pb::Command {
        nonce: 9_101,
        body: Some(pb::command::Body::RotateKey(pb::RotateKey {
            party_id: "n0".into(),
            public_key: fresh.verifying_key().to_bytes().to_vec(),
        })),
    };
    let rotate = sign_command(&s.operator, "ops", &rotate).encode_to_vec();
    let t = base.last().unwrap().time_ms + 1;
    let Applied::Appended(rotated) = state.apply(&rotate, t, false) else {
        panic!("rotation not appended");
    };
    let claim = |k: &ed25519_dalek::SigningKey| {
        let cmd = pb::Command {
            nonce: 9_102,
            body: Some(pb::command::Body::ClaimOrder(pb::ClaimOrder {
                order_id: "o-1".into(),
                price_version: 1,
                total: 202,
            })),
        };
        sign_command(k, "n0", &cmd).encode_to_vec()
    };
    for (signer, good) in [(&fresh, true), (&s.nodes[0], false)] {
        let mut st = state.clone();
        let Applied::Appended(e) = st.apply(&claim(signer), t + 1, false) else {
            panic!("claim not appended");
        };
        let mut es = base.clone();
        es.push(rotated.clone());
        es.push(e);
        let r = verify(&export_of(&es, &all_signers()));
        if good {
            r.expect("signed with the key in force");
        } else {
            expect_entry_error(r, 41, "signature");
        }
    }
}
