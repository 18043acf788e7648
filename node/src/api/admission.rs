//! Signature checks at admission, in batches.
//!
//! Every command proposed on the leader has its ed25519 signature checked
//! before it is proposed (nothing refused is ever appended). Checking them
//! one by one with `verify_strict` was the largest single cost of the
//! leader, so the submit handlers hand their (decoded, authorized) command to
//! [`Admission`], which checks whatever has queued up together:
//!
//! - one queue, one collector task: it takes the first waiting command, waits
//!   for a free verifier (at most one per core), then takes everything else
//!   that queued meanwhile, up to [`MAX_BATCH`]. Nothing waits on a timer: a
//!   lone command is checked at once, and batches grow with the load;
//! - each batch is checked on the blocking pool. A batch of one is checked
//!   with `verify_strict` (`rules::check_signature`), exactly as before.
//!   Larger ones go through `ed25519_dalek::verify_batch` when every command
//!   passes the cheap pre-checks that make the batch equation agree with
//!   `verify_strict` (64-byte signature, canonical and not small-order `R`
//!   per [`r_is_strict`], a valid key that is not weak); a command failing
//!   them is checked alone with `verify_strict`;
//! - when the batch equation fails, every command of it is checked alone
//!   with `verify_strict`, so a bad signature gets exactly the refusal (code
//!   and message) it always got, and the good ones around it pass.
//!
//! `verify_batch` draws its random coefficients from a transcript of its
//! inputs; each batch also carries one signature by a key made at start-up
//! over fresh random bytes, so a client cannot predict the coefficients of
//! the batch its command lands in. What remains different from
//! `verify_strict` (see `arbor_proto::audit`'s `sigs.rs`): a signer who
//! crafts `R` with a small-order component — which needs the signer's own
//! private key — gets it past a batch with probability at most 1/2 per try,
//! and refused `bad_signature` otherwise. THREAT_MODEL.md says what that
//! means for audits.
//!
//! Parsed public keys are cached by their bytes (decompressing a key costs
//! about a fifth of a verification).
//!
//! The queue is bounded: a submit takes one of `limits.max-pending-admission`
//! slots ([`Admission::reserve`]) before its command is decoded and holds it
//! until its signature is checked; with every slot taken, submits are
//! refused `RESOURCE_EXHAUSTED` naming the limit (nothing is appended, and a
//! resend later is safe).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arbor_proto::audit::r_is_strict;
use arbor_proto::ledger::push_command_message;
use arbor_proto::rules::{self, Admitted, Party, Refusal};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::limits::exhausted;

/// Most commands checked in one batch.
pub const MAX_BATCH: usize = 128;
/// Parsed keys cached before the cache is emptied.
const MAX_CACHED_KEYS: usize = 100_000;

struct Job {
    admitted: Admitted,
    party: Party,
    cluster_id: Arc<str>,
    reply: oneshot::Sender<Result<(), Refusal>>,
}

/// The admission signature checker. Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct Admission {
    tx: mpsc::UnboundedSender<Job>,
    /// The cluster id genesis fixed, once read (it never changes).
    cluster_id: Arc<std::sync::OnceLock<Arc<str>>>,
    pending: Arc<Semaphore>,
    max_pending: usize,
}

/// One submit's slot in the admission queue; given back when dropped.
pub struct Pending {
    _slot: OwnedSemaphorePermit,
}

impl Admission {
    /// Starts the collector task on the current tokio runtime; at most
    /// `max_pending` submits are admitted at a time.
    pub fn start(max_pending: usize) -> Admission {
        let (tx, rx) = mpsc::unbounded_channel();
        let verifiers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let shared = Arc::new(Verifier::new());
        tokio::spawn(collect(rx, Arc::new(Semaphore::new(verifiers)), shared));
        Admission {
            tx,
            cluster_id: Arc::default(),
            pending: Arc::new(Semaphore::new(max_pending)),
            max_pending,
        }
    }

    /// A slot in the admission queue, or `RESOURCE_EXHAUSTED` naming
    /// `limits.max-pending-admission` when every one is taken.
    pub fn reserve(&self) -> Result<Pending, Status> {
        self.pending
            .clone()
            .try_acquire_owned()
            .map(|_slot| Pending { _slot })
            .map_err(|_| {
                exhausted(
                    "max-pending-admission",
                    self.max_pending,
                    "the leader has as many commands waiting for admission as it may queue; \
                     nothing was appended, resend later",
                )
            })
    }

    /// The cluster id signatures are checked for: `load` (the id genesis
    /// fixed, `None` before genesis) is asked until it answers, then kept.
    pub fn cluster_id(&self, load: impl FnOnce() -> Option<String>) -> Option<Arc<str>> {
        if let Some(id) = self.cluster_id.get() {
            return Some(id.clone());
        }
        let id: Arc<str> = load()?.into();
        Some(self.cluster_id.get_or_init(|| id).clone())
    }

    /// Checks the signature of `admitted` (authorized as `party`) for the
    /// cluster `cluster_id`, with the verdict of `rules::check_signature`.
    pub async fn check_signature(
        &self,
        admitted: Admitted,
        party: Party,
        cluster_id: Arc<str>,
    ) -> Result<(), Refusal> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            admitted,
            party,
            cluster_id,
            reply,
        };
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            // The collector is gone (runtime shutting down): check here.
            return rules::check_signature(&job.admitted, &job.party, &job.cluster_id);
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(Refusal::Malformed(
                "admission stopped before checking the signature".into(),
            )),
        }
    }
}

async fn collect(
    mut rx: mpsc::UnboundedReceiver<Job>,
    slots: Arc<Semaphore>,
    verifier: Arc<Verifier>,
) {
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let verifier = verifier.clone();
        tokio::task::spawn_blocking(move || {
            let verdicts = verifier.verify(&jobs);
            drop(permit);
            for (job, verdict) in jobs.into_iter().zip(verdicts) {
                let _ = job.reply.send(verdict);
            }
        });
    }
}

/// Key cache and the per-process blinding key.
struct Verifier {
    keys: Mutex<HashMap<Vec<u8>, Option<VerifyingKey>>>,
    blinding: SigningKey,
}

impl Verifier {
    fn new() -> Self {
        Verifier {
            keys: Mutex::new(HashMap::new()),
            blinding: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The parsed key, if it is a valid ed25519 key that is not weak.
    fn key(&self, bytes: &[u8]) -> Option<VerifyingKey> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = keys.get(bytes) {
            return *k;
        }
        let k = <[u8; 32]>::try_from(bytes)
            .ok()
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .filter(|k| !k.is_weak());
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(bytes.to_vec(), k);
        k
    }

    /// The verdict of `rules::check_signature` for every job, in order.
    fn verify(&self, jobs: &[Job]) -> Vec<Result<(), Refusal>> {
        self.verify_pairs(jobs.iter().map(|j| (&j.admitted, &j.party, &*j.cluster_id)))
    }

    fn verify_pairs<'a>(
        &self,
        jobs: impl ExactSizeIterator<Item = (&'a Admitted, &'a Party, &'a str)> + Clone,
    ) -> Vec<Result<(), Refusal>> {
        let jobs: Vec<(&Admitted, &Party, &str)> = jobs.collect();
        let strict = |(a, p, c): (&Admitted, &Party, &str)| rules::check_signature(a, p, c);
        if jobs.len() == 1 {
            return vec![strict(jobs[0])];
        }
        let mut verdicts: Vec<Option<Result<(), Refusal>>> = vec![None; jobs.len()];
        let mut batched = Vec::with_capacity(jobs.len());
        let mut msgs = Vec::with_capacity(jobs.len() + 1);
        let mut sigs = Vec::with_capacity(jobs.len() + 1);
        let mut keys = Vec::with_capacity(jobs.len() + 1);
        for (i, &job) in jobs.iter().enumerate() {
            let env = &job.0.envelope;
            let candidate = <[u8; 64]>::try_from(env.signature.as_slice())
                .ok()
                .filter(|s| r_is_strict(s[..32].try_into().expect("32 bytes")))
                .and_then(|s| Some((s, self.key(&job.1.public_key)?)));
            match candidate {
                Some((sig, key)) => {
                    batched.push(i);
                    let mut m = Vec::with_capacity(64 + env.command.len());
                    push_command_message(&mut m, job.2, &env.command);
                    msgs.push(m);
                    sigs.push(Signature::from_bytes(&sig));
                    keys.push(key);
                }
                None => verdicts[i] = Some(strict(job)),
            }
        }
        if batched.len() >= 2 {
            let mut nonce = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut nonce);
            msgs.push(nonce.to_vec());
            sigs.push(self.blinding.sign(&nonce));
            keys.push(self.blinding.verifying_key());
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            if ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok() {
                for &i in &batched {
                    verdicts[i] = Some(Ok(()));
                }
            }
        }
        for i in batched {
            if verdicts[i].is_none() {
                verdicts[i] = Some(strict(jobs[i]));
            }
        }
        verdicts
            .into_iter()
            .map(|v| v.expect("every command has a verdict"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_proto::ledger::sign_command;
    use arbor_proto::pb;

    const CLUSTER: &str = "c1";

    fn party(id: &str, key: &SigningKey) -> Party {
        Party {
            party_id: id.into(),
            role: pb::Role::Node as i32,
            kind: 0,
            public_key: key.verifying_key().to_bytes().to_vec(),
            enrolled_seq: 1,
            key_seq: 1,
            revoked: false,
            channel_names: Vec::new(),
        }
    }

    fn admitted(key: &SigningKey, signer: &str, nonce: u64) -> Admitted {
        let cmd = pb::Command { nonce, body: None };
        let envelope = sign_command(key, CLUSTER, signer, &cmd);
        Admitted {
            envelope,
            command: cmd,
        }
    }

    #[test]
    fn batches_give_the_one_by_one_verdicts() {
        let v = Verifier::new();
        let keys: Vec<SigningKey> = (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let mut jobs: Vec<(Admitted, Party)> = (0..40u64)
            .map(|i| {
                let k = &keys[i as usize % 4];
                let id = format!("n{}", i % 4);
                (admitted(k, &id, i), party(&id, k))
            })
            .collect();
        let all_good = v.verify_pairs(jobs.iter().map(|(a, p)| (a, p, CLUSTER)));
        assert!(all_good.iter().all(Result::is_ok));

        // A flipped bit, a short signature, a signature by another key, a weak key.
        jobs[3].0.envelope.signature[40] ^= 1;
        jobs[7].0.envelope.signature.truncate(10);
        jobs[11].1 = party("n3", &keys[0]);
        jobs[15].1.public_key = vec![0; 32];
        jobs[19].1.public_key = vec![1; 31];
        let got = v.verify_pairs(jobs.iter().map(|(a, p)| (a, p, CLUSTER)));
        for (i, (a, p)) in jobs.iter().enumerate() {
            assert_eq!(got[i], rules::check_signature(a, p, CLUSTER), "command {i}");
            assert_eq!(
                got[i].is_ok(),
                ![3, 7, 11, 15, 19].contains(&i),
                "command {i}"
            );
        }
        let bad = got[3].clone().unwrap_err();
        assert_eq!(bad.code(), "bad_signature");
        assert!(bad.to_string().contains("n3"), "{bad}");
    }

    #[tokio::test]
    async fn concurrent_checks_are_answered_each() {
        let admission = Admission::start(1024);
        let key = SigningKey::from_bytes(&[9; 32]);
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let admission = admission.clone();
            let mut a = admitted(&key, "n", i);
            if i % 50 == 7 {
                a.envelope.signature[5] ^= 0x20;
            }
            let p = party("n", &key);
            tasks.push(tokio::spawn(async move {
                (i, admission.check_signature(a, p, CLUSTER.into()).await)
            }));
        }
        for t in tasks {
            let (i, r) = t.await.unwrap();
            assert_eq!(r.is_ok(), i % 50 != 7, "command {i}: {r:?}");
        }
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let admission = Admission::start(2);
        let a = admission.reserve().unwrap();
        let _b = admission.reserve().unwrap();
        let e = admission.reserve().err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().contains("limits.max-pending-admission = 2"),
            "{}",
            e.message()
        );
        drop(a);
        admission.reserve().unwrap();
    }
}
