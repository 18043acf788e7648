//! Command signatures checked in batches, with `verify_strict`'s verdict.
//!
//! `ed25519_dalek::verify_batch` is ~2.5x faster per signature than
//! `verify_strict`, but it is a different check: it decompresses `R` (so it
//! accepts a non-canonical encoding of `R`) and it does not refuse small-order
//! `R`. A batch is therefore only trusted for signatures whose `R` bytes pass
//! [`r_is_strict`] (canonical, not one of the 8 small-order points; a byte
//! comparison, no curve arithmetic), and signer keys are refused when weak.
//! When a pre-check or the batch fails, every signature of the batch is
//! checked one by one with `verify_strict`, which names the first bad entry and
//! decides alone.
//!
//! The batch equation is `ed25519_dalek::verify_batch`'s, with the same
//! random coefficients (the same transcript), computed with the terms of
//! one signer's key gathered into one: `sum z_i h_i A_i` is the same point as
//! `sum_A (sum_{i: A_i = A} z_i h_i) A`, so the multiscalar multiplication
//! has `n + keys + 1` terms instead of `2n + 1` and its verdict is exactly
//! `verify_batch`'s (a test checks that on good and bad batches). A ledger
//! has far fewer signers than entries, which roughly halves the cost of the
//! multiplication.
//!
//! What remains different: a key holder can craft an `R` with a torsion
//! component that `verify_strict` refuses and that a batch equation accepts
//! with probability 1/8 per try (1/2 with a component of order 2). Replicas
//! check commands at admission the same way (batches with these pre-checks,
//! `verify_strict` alone or on failure; see THREAT_MODEL.md), so such a
//! signature can only reach a ledger with that small chance per try, and
//! making one needs the signer's private key.

use std::collections::HashMap;
use std::sync::Arc;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use merlin::Transcript;
use sha2::{Digest, Sha512};

use crate::ledger::push_command_message;

/// The y coordinates (little-endian, sign bit clear) of the 8 points of small
/// order: 0 (order 4, both signs), 1 (identity), p-1 (order 2), and the two
/// y values of the four points of order 8.
const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [0; 32],
    {
        let mut y = [0; 32];
        y[0] = 1;
        y
    },
    {
        let mut y = [0xff; 32];
        y[0] = 0xec;
        y[31] = 0x7f;
        y
    },
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
];

/// Whether `R` is canonically encoded (y < p) and not a small-order point,
/// as `verify_strict` requires.
pub fn r_is_strict(r: &[u8; 32]) -> bool {
    let mut y = *r;
    y[31] &= 0x7f;
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|b| *b == 0xff) && y[0] >= 0xed;
    !at_least_p && !SMALL_ORDER_Y.contains(&y)
}

/// Signatures to check together. Messages are kept in one buffer.
#[derive(Default)]
pub(crate) struct SigBatch {
    msgs: Vec<u8>,
    ends: Vec<usize>,
    sigs: Vec<Signature>,
    keys: Vec<VerifyingKey>,
    seqs: Vec<u64>,
    signers: Vec<Arc<str>>,
}

/// The first entry of a batch whose signature does not verify.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadSignature {
    pub seq: u64,
    pub signer: Arc<str>,
}

impl SigBatch {
    pub fn with_capacity(n: usize) -> SigBatch {
        SigBatch {
            msgs: Vec::with_capacity(n * 200),
            ends: Vec::with_capacity(n),
            sigs: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
            signers: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Adds the signature of entry `seq`: `signature` over
    /// `ledger::command_message(cluster_id, command)`.
    pub fn push(
        &mut self,
        seq: u64,
        signer: Arc<str>,
        key: VerifyingKey,
        signature: &[u8; 64],
        cluster_id: &str,
        command: &[u8],
    ) {
        push_command_message(&mut self.msgs, cluster_id, command);
        self.ends.push(self.msgs.len());
        self.sigs.push(Signature::from_bytes(signature));
        self.keys.push(key);
        self.seqs.push(seq);
        self.signers.push(signer);
    }

    fn msg(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.msgs[start..self.ends[i]]
    }

    /// Checks every signature; on failure names the first bad one.
    pub fn verify(&self) -> Result<(), BadSignature> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        let strict_r = self.sigs.iter().all(|s| r_is_strict(s.r_bytes()));
        if strict_r && self.batch_equation_holds() {
            return Ok(());
        }
        for i in 0..self.len() {
            if self.keys[i]
                .verify_strict(self.msg(i), &self.sigs[i])
                .is_err()
            {
                return Err(BadSignature {
                    seq: self.seqs[i],
                    signer: self.signers[i].clone(),
                });
            }
        }
        Ok(())
    }
}

impl SigBatch {
    /// `ed25519_dalek::verify_batch(msgs, sigs, keys).is_ok()`, computed with
    /// each key's terms gathered (see the module documentation): the same
    /// transcript, the same coefficients `z_i`, the same point compared with
    /// the identity.
    #[allow(non_snake_case)]
    fn batch_equation_holds(&self) -> bool {
        let n = self.len();
        let hrams: Vec<[u8; 64]> = (0..n)
            .map(|i| {
                let mut h = Sha512::new();
                h.update(self.sigs[i].r_bytes());
                h.update(self.keys[i].as_bytes());
                h.update(self.msg(i));
                h.finalize().into()
            })
            .collect();
        let mut transcript = Transcript::new(b"ed25519 batch verification");
        for hram in &hrams {
            transcript.append_message(b"hram", hram);
        }
        for sig in &self.sigs {
            transcript.append_message(b"sig.s", sig.s_bytes());
        }
        let mut rng = transcript.build_rng().finalize(&mut ZeroRng);
        let mut s_all = Vec::with_capacity(n);
        for sig in &self.sigs {
            match Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())) {
                Some(s) => s_all.push(s),
                None => return false,
            }
        }
        // Terms: B, then every R, then every distinct key A.
        let mut scalars: Vec<Scalar> = Vec::with_capacity(n + 17);
        let mut points: Vec<Option<EdwardsPoint>> = Vec::with_capacity(n + 17);
        scalars.push(Scalar::ZERO);
        points.push(Some(ED25519_BASEPOINT_POINT));
        let mut key_terms: Vec<(Scalar, EdwardsPoint)> = Vec::new();
        let mut key_index: HashMap<[u8; 32], usize> = HashMap::new();
        let mut B_coefficient = Scalar::ZERO;
        for i in 0..n {
            let mut z = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rng, &mut z);
            let z = Scalar::from(u128::from_le_bytes(z));
            B_coefficient += z * s_all[i];
            let zh = z * Scalar::from_bytes_mod_order_wide(&hrams[i]);
            let key = &self.keys[i];
            match key_index.get(key.as_bytes()) {
                Some(&j) => key_terms[j].0 += zh,
                None => {
                    key_index.insert(*key.as_bytes(), key_terms.len());
                    key_terms.push((zh, key.to_edwards()));
                }
            }
            scalars.push(z);
            points.push(CompressedEdwardsY(*self.sigs[i].r_bytes()).decompress());
        }
        scalars[0] = -B_coefficient;
        for (c, a) in key_terms {
            scalars.push(c);
            points.push(Some(a));
        }
        EdwardsPoint::optional_multiscalar_mul(scalars, points).is_some_and(|p| p.is_identity())
    }
}

/// The transcript's extra randomness: none, as in `verify_batch`, so the
/// coefficients depend only on the batch and a verdict is reproducible.
struct ZeroRng;

impl rand::RngCore for ZeroRng {
    fn next_u32(&mut self) -> u32 {
        0
    }

    fn next_u64(&mut self) -> u64 {
        0
    }

    fn fill_bytes(&mut self, _dest: &mut [u8]) {}

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand::CryptoRng for ZeroRng {}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn small_order_encodings_are_the_weak_points() {
        for y in SMALL_ORDER_Y {
            for sign in [0u8, 0x80] {
                let mut b = y;
                b[31] |= sign;
                assert!(!r_is_strict(&b));
                if let Ok(k) = VerifyingKey::from_bytes(&b) {
                    assert!(k.is_weak(), "{}", hex::encode(b));
                }
            }
        }
        // Non-canonical y (>= p) is refused; p - 1 is small order, p - 2 is fine.
        let mut p = [0xff; 32];
        p[31] = 0x7f;
        for low in [0xed, 0xee, 0xff] {
            p[0] = low;
            assert!(!r_is_strict(&p));
        }
        p[0] = 0xeb;
        assert!(r_is_strict(&p));
    }

    #[test]
    fn real_signatures_pass_and_a_bad_one_is_named() {
        let keys: Vec<SigningKey> = (1..=5u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let mut b = SigBatch::with_capacity(40);
        for i in 0..40u64 {
            let k = &keys[i as usize % 5];
            let cmd = format!("command {i}").into_bytes();
            let m = crate::ledger::command_message("c1", &cmd);
            let mut sig = k.sign(&m).to_bytes();
            assert!(r_is_strict(sig[..32].try_into().unwrap()));
            if i == 23 {
                sig[40] ^= 1;
            }
            b.push(
                i + 100,
                format!("p{}", i % 5).into(),
                k.verifying_key(),
                &sig,
                "c1",
                &cmd,
            );
        }
        let bad = b.verify().unwrap_err();
        assert_eq!(bad.seq, 123);
        assert_eq!(&*bad.signer, "p3");
    }

    /// Changes entry `i`'s signature, command or key index before it is pushed.
    type Tamper = dyn Fn(u64, &mut [u8; 64], &mut Vec<u8>, &mut usize);

    /// The gathered batch equation gives `verify_batch`'s verdict, on good
    /// batches and on every kind of bad one.
    #[test]
    fn the_gathered_equation_agrees_with_verify_batch() {
        let keys: Vec<SigningKey> = (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let build = |n: u64, tamper: &Tamper| {
            let mut b = SigBatch::with_capacity(n as usize);
            for i in 0..n {
                let mut k = i as usize % keys.len();
                let cmd = format!("command {i}").into_bytes();
                let mut sig = keys[k]
                    .sign(&crate::ledger::command_message("c1", &cmd))
                    .to_bytes();
                let mut cmd = cmd;
                tamper(i, &mut sig, &mut cmd, &mut k);
                b.push(i, "p".into(), keys[k].verifying_key(), &sig, "c1", &cmd);
            }
            b
        };
        let dalek = |b: &SigBatch| {
            let msgs: Vec<&[u8]> = (0..b.len()).map(|i| b.msg(i)).collect();
            ed25519_dalek::verify_batch(&msgs, &b.sigs, &b.keys).is_ok()
        };
        let cases: Vec<(&str, Box<Tamper>)> = vec![
            ("untouched", Box::new(|_, _, _, _| {})),
            (
                "s changed",
                Box::new(|i, s, _, _| {
                    if i == 37 {
                        s[40] ^= 1
                    }
                }),
            ),
            (
                "R changed",
                Box::new(|i, s, _, _| {
                    if i == 5 {
                        s[3] ^= 4
                    }
                }),
            ),
            (
                "s not canonical",
                Box::new(|i, s, _, _| {
                    if i == 11 {
                        s[63] |= 0xf0
                    }
                }),
            ),
            (
                "message changed",
                Box::new(|i, _, m, _| {
                    if i == 60 {
                        m.push(b'!')
                    }
                }),
            ),
            (
                "another key",
                Box::new(|i, _, _, k| {
                    if i == 2 {
                        *k = (*k + 1) % 4
                    }
                }),
            ),
            (
                "two swapped",
                Box::new(|i, s, _, _| {
                    if i == 8 || i == 9 {
                        s[33] ^= 0x80
                    }
                }),
            ),
        ];
        for (what, tamper) in &cases {
            for n in [1u64, 3, 64, 300] {
                let b = build(n, tamper.as_ref());
                assert_eq!(
                    b.batch_equation_holds(),
                    dalek(&b),
                    "{what}, {n} signatures"
                );
                if *what == "untouched" {
                    assert!(b.batch_equation_holds(), "{n}");
                }
            }
        }
        // Every signer distinct: nothing to gather, still the same verdict.
        let mut b = SigBatch::with_capacity(50);
        for i in 0..50u8 {
            let k = SigningKey::from_bytes(&[i + 100; 32]);
            let cmd = vec![i; 20];
            let mut sig = k
                .sign(&crate::ledger::command_message("c1", &cmd))
                .to_bytes();
            if i == 49 {
                sig[50] ^= 2;
            }
            b.push(i as u64, "p".into(), k.verifying_key(), &sig, "c1", &cmd);
        }
        assert!(!b.batch_equation_holds());
        assert_eq!(b.batch_equation_holds(), dalek(&b));
    }
}
