//! Unambiguous encoding for hashed preimages: fixed-width big-endian integers
//! and length-prefixed byte strings, after a NUL-terminated domain tag.

use sha2::{Digest, Sha256};

/// Builds a domain-separated, length-prefixed SHA-256 preimage.
pub struct Preimage {
    hasher: Sha256,
}

impl Preimage {
    /// Starts a preimage with `domain` (which must end in a NUL byte).
    pub fn new(domain: &[u8]) -> Self {
        debug_assert!(domain.ends_with(&[0]), "domain tags are NUL-terminated");
        let mut hasher = Sha256::new();
        hasher.update(domain);
        Preimage { hasher }
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.hasher.update(v.to_be_bytes());
        self
    }

    pub fn u8(mut self, v: u8) -> Self {
        self.hasher.update([v]);
        self
    }

    /// A variable-length field: big-endian u64 length, then the bytes.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.hasher.update((b.len() as u64).to_be_bytes());
        self.hasher.update(b);
        self
    }

    /// A fixed-width field whose length both sides know (e.g. a 32-byte hash).
    pub fn fixed(mut self, b: &[u8]) -> Self {
        self.hasher.update(b);
        self
    }

    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}
