//! One ledger entry and its hash.

use super::encode::Preimage;
use crate::pb;

pub const HASH_LEN: usize = 32;
pub const ZERO_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

/// Domain tag of the entry hash preimage.
pub const ENTRY_DOMAIN: &[u8] = b"arbor.v1.entry\0";

/// A committed ledger entry (in-memory form of `pb::LedgerEntry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub time_ms: u64,
    /// The exact `SignedCommand` bytes as received.
    pub command: Vec<u8>,
    pub accepted: bool,
    pub code: String,
    pub message: String,
    pub order_id: String,
    pub order_prev_seq: u64,
    pub prev_hash: [u8; HASH_LEN],
    pub hash: [u8; HASH_LEN],
}

/// The time an entry following `head` is stamped with, given the leader's
/// stamp: never earlier than its predecessor's.
pub fn entry_time(head: Option<&Head>, time_ms: u64) -> u64 {
    head.map_or(time_ms, |h| time_ms.max(h.time_ms))
}

impl Entry {
    /// Builds the entry that follows `head` and computes its hash.
    #[allow(clippy::too_many_arguments)]
    pub fn next(
        head: Option<&Head>,
        time_ms: u64,
        command: Vec<u8>,
        accepted: bool,
        code: String,
        message: String,
        order_id: String,
        order_prev_seq: u64,
    ) -> Entry {
        let (seq, prev_hash, time_ms) = match head {
            None => (0, ZERO_HASH, time_ms),
            // Time never goes backwards: an entry is stamped no earlier than its predecessor.
            Some(h) => (h.seq + 1, h.hash, time_ms.max(h.time_ms)),
        };
        let mut e = Entry {
            seq,
            time_ms,
            command,
            accepted,
            code,
            message,
            order_id,
            order_prev_seq,
            prev_hash,
            hash: ZERO_HASH,
        };
        e.hash = e.compute_hash();
        e
    }

    /// SHA-256 over the canonical preimage (docs/ledger-format.md, "Entry hash").
    pub fn compute_hash(&self) -> [u8; HASH_LEN] {
        Preimage::new(ENTRY_DOMAIN)
            .u64(self.seq)
            .u64(self.time_ms)
            .bytes(&self.command)
            .u8(self.accepted as u8)
            .bytes(self.code.as_bytes())
            .bytes(self.message.as_bytes())
            .bytes(self.order_id.as_bytes())
            .u64(self.order_prev_seq)
            .fixed(&self.prev_hash)
            .finish()
    }

    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash,
            time_ms: self.time_ms,
        }
    }

    pub fn outcome(&self) -> pb::Outcome {
        pb::Outcome {
            accepted: self.accepted,
            code: self.code.clone(),
            message: self.message.clone(),
        }
    }

    pub fn to_pb(&self) -> pb::LedgerEntry {
        pb::LedgerEntry {
            seq: self.seq,
            time_ms: self.time_ms,
            command: self.command.clone(),
            outcome: Some(self.outcome()),
            order_id: self.order_id.clone(),
            order_prev_seq: self.order_prev_seq,
            prev_hash: self.prev_hash.to_vec(),
            hash: self.hash.to_vec(),
        }
    }

    /// Converts from the wire form. Fails when a hash field is not 32 bytes.
    pub fn from_pb(p: &pb::LedgerEntry) -> Result<Entry, String> {
        let fixed = |name: &str, b: &[u8]| -> Result<[u8; HASH_LEN], String> {
            b.try_into()
                .map_err(|_| format!("entry {}: {name} is {} bytes, expected 32", p.seq, b.len()))
        };
        let o = p.outcome.clone().unwrap_or_default();
        Ok(Entry {
            seq: p.seq,
            time_ms: p.time_ms,
            command: p.command.clone(),
            accepted: o.accepted,
            code: o.code,
            message: o.message,
            order_id: p.order_id.clone(),
            order_prev_seq: p.order_prev_seq,
            prev_hash: fixed("prev_hash", &p.prev_hash)?,
            hash: fixed("hash", &p.hash)?,
        })
    }

    /// Checks this entry's own hash and its link to `prev` (None for sequence 0).
    pub fn verify_link(&self, prev: Option<&Head>) -> Result<(), String> {
        match prev {
            None if self.seq != 0 => {
                return Err(format!("entry {}: chain must start at 0", self.seq))
            }
            None if self.prev_hash != ZERO_HASH => {
                return Err("entry 0: prev_hash must be zero".into())
            }
            Some(p) if self.seq != p.seq + 1 => {
                return Err(format!(
                    "entry {}: expected sequence {}",
                    self.seq,
                    p.seq + 1
                ))
            }
            Some(p) if self.prev_hash != p.hash => {
                return Err(format!(
                    "entry {}: prev_hash does not match entry {}",
                    self.seq, p.seq
                ))
            }
            Some(p) if self.time_ms < p.time_ms => {
                return Err(format!("entry {}: time goes backwards", self.seq))
            }
            _ => {}
        }
        if self.compute_hash() != self.hash {
            return Err(format!(
                "entry {}: hash does not match its contents",
                self.seq
            ));
        }
        Ok(())
    }
}

/// The chain head: the last entry's sequence, hash and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; HASH_LEN],
    pub time_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chain(cmds: &[(u64, Vec<u8>, bool)]) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for (t, c, ok) in cmds {
            let head = out.last().map(|e| e.head());
            out.push(Entry::next(
                head.as_ref(),
                *t,
                c.clone(),
                *ok,
                "accepted".into(),
                String::new(),
                String::new(),
                0,
            ));
        }
        out
    }

    #[test]
    fn hash_covers_every_field() {
        let e = Entry::next(
            None,
            5,
            vec![1, 2, 3],
            true,
            "accepted".into(),
            "m".into(),
            "o".into(),
            0,
        );
        let mut variants = vec![e.clone(); 8];
        variants[0].seq = 1;
        variants[1].time_ms = 6;
        variants[2].command.push(0);
        variants[3].accepted = false;
        variants[4].code.push('x');
        variants[5].message.push('x');
        variants[6].order_id.push('x');
        variants[7].order_prev_seq = 9;
        for v in variants {
            assert_ne!(v.compute_hash(), e.hash);
        }
        let mut p = e.clone();
        p.prev_hash[0] ^= 1;
        assert_ne!(p.compute_hash(), e.hash);
    }

    #[test]
    fn length_prefix_prevents_field_shifting() {
        let a = Entry::next(
            None,
            1,
            vec![],
            true,
            "ab".into(),
            "c".into(),
            String::new(),
            0,
        );
        let b = Entry::next(
            None,
            1,
            vec![],
            true,
            "a".into(),
            "bc".into(),
            String::new(),
            0,
        );
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn time_never_goes_backwards() {
        let c = chain(&[(100, vec![1], true), (50, vec![2], true)]);
        assert_eq!(c[1].time_ms, 100);
    }

    proptest! {
        #[test]
        fn any_chain_verifies_and_any_flip_is_found(
            cmds in proptest::collection::vec((0u64..1000, proptest::collection::vec(any::<u8>(), 0..20), any::<bool>()), 1..20),
            victim in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let c = chain(&cmds);
            let mut prev: Option<Head> = None;
            for e in &c {
                prop_assert!(e.verify_link(prev.as_ref()).is_ok());
                prev = Some(e.head());
            }
            let i = victim.index(c.len());
            let mut bad = c.clone();
            if bad[i].command.is_empty() { bad[i].time_ms ^= 1 << bit; } else { bad[i].command[0] ^= 1 << bit; }
            let mut prev: Option<Head> = None;
            let mut found = false;
            for e in &bad {
                if e.verify_link(prev.as_ref()).is_err() { found = true; break; }
                prev = Some(e.head());
            }
            prop_assert!(found);
        }
    }
}
