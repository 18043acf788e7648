//! The offline verifier: everything an auditor can check from an export file
//! alone (docs/ledger-format.md §9 lists the checks in order).
//!
//! One pass over the file, entry by entry, in constant memory apart from the
//! replayed state:
//!
//! 1. framing (the reader), sequence continuity, each entry's hash and its
//!    link to the previous one;
//! 2. a replay of the arbitration rules ([`MemState::apply`], the same code a
//!    replica runs) with the recorded time: the entry it produces must equal
//!    the recorded one byte for byte — this is what catches an outcome flipped
//!    with every later hash recomputed;
//! 3. the command's signature against the key its signer was enrolled with
//!    before that entry, in batches on worker threads (see `sigs`);
//! 4. after the last entry, the Merkle root against the checkpoint, and the
//!    checkpoint's signatures against a quorum of the replica keys enrolled in
//!    the ledger before the checkpoint's size.
//!
//! Three stages overlap, joined by bounded channels so memory stays bounded:
//! the calling thread reads, frames and hashes the chain and keeps the Merkle
//! frontier (check 1, `walk::Chain`), handing checked entries in chunks to a
//! replay thread (check 2, `walk::Walk`), which queues signature batches for
//! one worker per core (check 3). The replay sees only entries the chain
//! stage passed, in order, and every stage stops at its first failure, so
//! the failure reported is the first (lowest entry) in the order the checks
//! are listed above, exactly as a single pass would find it. An export that
//! does not start at genesis is checked by the calling thread alone.
//!
//! An export that does not start at genesis cannot be replayed (the keys and
//! the state it needs are in the entries before it): links and hashes are
//! checked within the range, the range is tied to the checkpoint's root by the
//! header's compact range and consistency proof, and [`Summary::notes`] says
//! what was skipped. [`Summary::complete`] is true only for a full check.
//!
//! The only clock read is for [`Summary::elapsed`]; it never affects a verdict.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::export::{hashes, ExportReader};
use super::sigs::{BadSignature, SigBatch};
pub use super::summary::{CheckpointSummary, Summary, TrustSummary};
use super::trust::Trust;
use super::walk::{Chain, Chunk, Walk};
use super::{AuditError, Frontier};
#[cfg(doc)]
use crate::rules::MemState;

/// At most this many signature workers.
const MAX_THREADS: usize = 64;
/// Chunks of checked entries queued between the chain and the replay stage.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How to verify.
pub struct VerifyOptions<'a> {
    /// Signature worker threads; 0 means one per available core.
    pub threads: usize,
    /// Signatures per batch. 2048 is ~6% cheaper per signature than 1024
    /// (Pippenger's fixed cost per batch, ~8,400 point additions, is spread
    /// over more signatures) and 1024 ~15% cheaper than 256; a batch that
    /// fails costs ~80 ms of one-by-one checks.
    pub batch: usize,
    /// Called every few thousand entries with (entries checked, entries in the file).
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
}

impl Default for VerifyOptions<'_> {
    fn default() -> Self {
        VerifyOptions {
            threads: 0,
            batch: 2048,
            progress: None,
        }
    }
}

/// Verifies an export read from `r` for internal consistency only: the
/// replica keys are the ones the ledger itself enrols, so a forger who wrote
/// the whole file controls them. See [`verify_export_trusted`].
pub fn verify_export<R: Read>(r: R, opts: VerifyOptions<'_>) -> Result<Summary, AuditError> {
    verify_export_trusted(r, None, opts)
}

/// Verifies an export read from `r`; with `trust`, the genesis hash and
/// cluster id must be the pinned ones and the checkpoint must count under
/// the pinned keys (docs/ledger-format.md §10), and [`Summary::trust`] says so.
/// See the module documentation.
pub fn verify_export_trusted<'a, R: Read>(
    r: R,
    trust: Option<&Trust>,
    mut opts: VerifyOptions<'a>,
) -> Result<Summary, AuditError> {
    let started = Instant::now();
    let mut reader = ExportReader::open(r)?;
    let header = reader.header().clone();
    let cp = reader.checkpoint().clone();
    let replay = header.from_seq == 0;
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n.min(MAX_THREADS),
    };
    let batch = opts.batch.max(1);
    let progress = opts.progress.take();
    let frontier = Frontier::from_path(header.from_seq, &hashes(&header.prefix))
        .map_err(|e| AuditError::Checkpoint(format!("export header prefix: {e}")))?;
    let stop = AtomicBool::new(false);
    let replayed = AtomicU64::new(0);
    let (tx, rx) = sync_channel::<SigBatch>(threads * 2);
    // Only the workers hold the receiver: should they all die, a send fails
    // instead of blocking forever.
    let rx = Arc::new(Mutex::new(rx));
    let mut chain = Chain::new(&header, frontier, trust);
    let mut walk = Walk::new(replay, header.entry_count, batch, tx, trust);
    let mut progress = progress;

    let (result, walk, bad_sig) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..if replay { threads } else { 0 })
            .map(|_| {
                let rx = Arc::clone(&rx);
                let stop = &stop;
                s.spawn(move || sig_worker(&rx, stop))
            })
            .collect();
        drop(rx);
        let (result, walk) = if replay {
            let (to, from) = sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
            let (stop, replayed) = (&stop, &replayed);
            let replayer = s.spawn(move || {
                let result = walk.run(from, stop, replayed);
                walk.close();
                (result, walk)
            });
            let chained = chain.run(&mut reader, Some(to), stop, &mut progress, replayed);
            let (replayed, walk) = replayer.join().expect("replay thread panicked");
            // The replay sees only entries the chain stage passed: its
            // failure is the earlier one.
            (replayed.and(chained), walk)
        } else {
            let result = chain.run(&mut reader, None, &stop, &mut progress, &replayed);
            walk.close();
            (result, walk)
        };
        let bad_sig = workers
            .into_iter()
            .filter_map(|w| w.join().expect("signature worker panicked"))
            .min_by_key(|b| b.seq);
        (result, walk, bad_sig)
    });

    // The earliest failure wins: a bad signature before the entry the walk stopped at.
    match (result, bad_sig) {
        (Err(e), Some(b)) if e.seq().is_none_or(|s| b.seq < s) => return Err(bad_signature(b)),
        (Err(e), _) => return Err(e),
        (Ok(()), Some(b)) => return Err(bad_signature(b)),
        (Ok(()), None) => {}
    }
    if let Some(p) = progress.as_mut() {
        p(chain.done(), chain.total());
    }
    walk.finish(chain, &header, cp, started)
}

fn bad_signature(b: BadSignature) -> AuditError {
    AuditError::entry(
        b.seq,
        format!(
            "command signature does not verify against the key enrolled for {}",
            b.signer
        ),
    )
}

/// Checks batches until the channel closes; returns the earliest bad signature.
fn sig_worker(rx: &Mutex<Receiver<SigBatch>>, stop: &AtomicBool) -> Option<BadSignature> {
    let mut first: Option<BadSignature> = None;
    loop {
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(b) = next else { return first };
        if let Err(bad) = b.verify() {
            stop.store(true, Ordering::Relaxed);
            if first.as_ref().is_none_or(|f| bad.seq < f.seq) {
                first = Some(bad);
            }
        }
    }
}
