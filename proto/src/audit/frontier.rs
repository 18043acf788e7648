//! An RFC 6962 Merkle tree built one leaf at a time, keeping only the roots
//! of its perfect subtrees (the "compact range" of `[0, size)`).
//!
//! A tree of `size` leaves is the concatenation of perfect subtrees whose
//! sizes are the set bits of `size`, largest (leftmost) first; its RFC 6962
//! root folds them from the right: `node(S1, node(S2, ... Sk))`. Appending a
//! leaf merges equal-height subtrees like a binary counter. So the verifier
//! computes a root over millions of entries in O(log n) memory, and an export
//! that starts at entry `m` can carry the compact range of `[0, m)` (which is
//! exactly the inclusion path of leaf `m` in the tree of size `m + 1`) and
//! still be tied to a checkpoint root.

use crate::ledger::merkle::{empty_root, node_hash, Hash};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Perfect subtree roots, leftmost (largest) first; one per set bit of `size`.
    stack: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The tree over leaves `[0, size)` given by its compact range in the
    /// order an inclusion path lists it: smallest (rightmost) subtree first.
    /// That is the RFC 6962 inclusion path of leaf `size` in a tree of
    /// `size + 1` leaves.
    pub fn from_path(size: u64, path: &[Hash]) -> Result<Frontier, String> {
        if path.len() != size.count_ones() as usize {
            return Err(format!(
                "the compact range of {size} leaves has {} hashes, not {}",
                size.count_ones(),
                path.len()
            ));
        }
        Ok(Frontier {
            size,
            stack: path.iter().rev().copied().collect(),
        })
    }

    /// The compact range, smallest subtree first (see [`Frontier::from_path`]).
    pub fn path(&self) -> Vec<Hash> {
        self.stack.iter().rev().copied().collect()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf given by its leaf hash (`merkle::leaf_hash(data)`).
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            let left = self.stack.pop().expect("one subtree per set bit");
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.stack.push(h);
        self.size += 1;
    }

    /// The RFC 6962 root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::merkle::{inclusion_proof, leaf_hash, root};
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(Frontier::new().root(), empty_root());
        let mut f = Frontier::new();
        f.push([9; 32]);
        assert_eq!(f.root(), [9; 32]);
        assert_eq!(f.size(), 1);
    }

    proptest! {
        #[test]
        fn matches_the_reference_root_at_every_size(n in 0u64..300) {
            let l = leaves(n);
            let mut f = Frontier::new();
            prop_assert_eq!(f.root(), root(&l, 0));
            for i in 0..n {
                f.push(l[i as usize]);
                prop_assert_eq!(f.root(), root(&l, i + 1));
                prop_assert_eq!(f.stack.len() as u32, (i + 1).count_ones());
            }
        }

        #[test]
        fn resumes_from_an_inclusion_path(m in 0u64..200, more in 1u64..100) {
            let l = leaves(m + more);
            let path = inclusion_proof(&l, m, m + 1).unwrap();
            let mut f = Frontier::from_path(m, &path).unwrap();
            prop_assert_eq!(f.path(), path);
            for i in m..m + more {
                f.push(l[i as usize]);
            }
            prop_assert_eq!(f.root(), root(&l, m + more));
        }
    }

    #[test]
    fn a_path_of_the_wrong_length_is_refused() {
        assert!(Frontier::from_path(5, &[[0; 32]]).is_err());
        assert!(Frontier::from_path(0, &[[0; 32]]).is_err());
    }
}
