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
//! What remains different: a key holder can craft an `R` with a torsion
//! component that `verify_strict` refuses and that a batch equation accepts
//! with probability 1/8 per try (1/2 with a component of order 2). Replicas
//! check commands at admission the same way (batches with these pre-checks,
//! `verify_strict` alone or on failure; see THREAT_MODEL.md), so such a
//! signature can only reach a ledger with that small chance per try, and
//! making one needs the signer's private key.

use std::sync::Arc;

use ed25519_dalek::{Signature, VerifyingKey};

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
        if strict_r {
            let msgs: Vec<&[u8]> = (0..self.len()).map(|i| self.msg(i)).collect();
            if ed25519_dalek::verify_batch(&msgs, &self.sigs, &self.keys).is_ok() {
                return Ok(());
            }
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
}
