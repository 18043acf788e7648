//! Merkle tree over the ledger, hashed as RFC 9162 (RFC 6962) §2.1 specifies.
//!
//! The leaves are the entries' 32-byte hashes, in sequence order: leaf `i` is
//! entry `i`. `leaf_hash(d) = SHA-256(0x00 || d)`, `node_hash(l, r) =
//! SHA-256(0x01 || l || r)`; the tree over `n` leaves splits at the largest
//! power of two smaller than `n`. Proof generation works over any
//! [`LeafSource`], so a replica can serve proofs from storage and a verifier
//! needs nothing but the proof, the leaf and the root.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// SHA-256 of the empty string: the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly smaller than `n` (n >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Where proofs read leaf hashes from.
pub trait LeafSource {
    /// `leaf_hash` of leaf `i`.
    fn leaf(&self, i: u64) -> Hash;
}

impl LeafSource for [Hash] {
    fn leaf(&self, i: u64) -> Hash {
        self[i as usize]
    }
}

impl LeafSource for Vec<Hash> {
    fn leaf(&self, i: u64) -> Hash {
        self[i as usize]
    }
}

/// The root over leaves `[start, start + n)`.
pub fn subtree_root(src: &(impl LeafSource + ?Sized), start: u64, n: u64) -> Hash {
    match n {
        0 => empty_root(),
        1 => src.leaf(start),
        _ => {
            let k = split(n);
            node_hash(
                &subtree_root(src, start, k),
                &subtree_root(src, start + k, n - k),
            )
        }
    }
}

/// The root over the first `n` leaves.
pub fn root(src: &(impl LeafSource + ?Sized), n: u64) -> Hash {
    subtree_root(src, 0, n)
}

/// Inclusion proof of leaf `index` in the tree of size `size` (RFC 6962 PATH).
pub fn inclusion_proof(
    src: &(impl LeafSource + ?Sized),
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, String> {
    if index >= size {
        return Err(format!("leaf {index} is not in a tree of size {size}"));
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out);
    Ok(out)
}

fn path(src: &(impl LeafSource + ?Sized), m: u64, start: u64, n: u64, out: &mut Vec<Hash>) {
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(src, m, start, k, out);
        out.push(subtree_root(src, start + k, n - k));
    } else {
        path(src, m - k, start + k, n - k, out);
        out.push(subtree_root(src, start, k));
    }
}

/// Consistency proof between trees of size `old` and `new` (RFC 6962 PROOF).
pub fn consistency_proof(
    src: &(impl LeafSource + ?Sized),
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, String> {
    if old > new {
        return Err(format!("old size {old} is larger than new size {new}"));
    }
    let mut out = Vec::new();
    if old == 0 || old == new {
        return Ok(out);
    }
    subproof(src, old, 0, new, true, &mut out);
    Ok(out)
}

fn subproof(
    src: &(impl LeafSource + ?Sized),
    m: u64,
    start: u64,
    n: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) {
    if m == n {
        if !complete {
            out.push(subtree_root(src, start, n));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, start, k, complete, out);
        out.push(subtree_root(src, start + k, n - k));
    } else {
        subproof(src, m - k, start + k, n - k, false, out);
        out.push(subtree_root(src, start, k));
    }
}

/// Where proofs read the roots of *complete* subtrees from: a store that
/// keeps, for every level `l` and index `i` it has filled, the root over
/// leaves `[i << l, (i + 1) << l)` (level 0: the leaf hashes). In the RFC 6962
/// shape every subtree whose size is a power of two starts at a multiple of
/// its size, so any tree, inclusion path or consistency proof over the first
/// `n` leaves is made of O(log n) such roots: the functions below read that
/// many and hash that many times, whatever `n` is. They return exactly what
/// [`root`], [`inclusion_proof`] and [`consistency_proof`] return over the
/// same leaves.
pub trait SubtreeSource {
    type Error;
    /// The root of the complete subtree at `level` and `index`.
    fn complete(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The root over leaves `[start, start + n)` from complete subtrees.
fn range_root<S: SubtreeSource + ?Sized>(src: &S, start: u64, n: u64) -> Result<Hash, S::Error> {
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() {
        let level = n.trailing_zeros();
        debug_assert_eq!(
            start % n,
            0,
            "a complete subtree starts at a multiple of its size"
        );
        return src.complete(level, start >> level);
    }
    let k = split(n);
    Ok(node_hash(
        &range_root(src, start, k)?,
        &range_root(src, start + k, n - k)?,
    ))
}

/// [`root`] from complete subtrees: at most `log2(n) + 1` reads.
pub fn root_from<S: SubtreeSource + ?Sized>(src: &S, n: u64) -> Result<Hash, S::Error> {
    range_root(src, 0, n)
}

/// [`inclusion_proof`] from complete subtrees. The outer error is a leaf
/// outside the tree; the inner one the source's.
pub fn inclusion_proof_from<S: SubtreeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Result<Vec<Hash>, S::Error>, String> {
    if index >= size {
        return Err(format!("leaf {index} is not in a tree of size {size}"));
    }
    let mut out = Vec::new();
    Ok(path_from(src, index, 0, size, &mut out).map(|()| out))
}

fn path_from<S: SubtreeSource + ?Sized>(
    src: &S,
    m: u64,
    start: u64,
    n: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path_from(src, m, start, k, out)?;
        out.push(range_root(src, start + k, n - k)?);
    } else {
        path_from(src, m - k, start + k, n - k, out)?;
        out.push(range_root(src, start, k)?);
    }
    Ok(())
}

/// [`consistency_proof`] from complete subtrees. The outer error is a bad
/// pair of sizes; the inner one the source's.
pub fn consistency_proof_from<S: SubtreeSource + ?Sized>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Result<Vec<Hash>, S::Error>, String> {
    if old > new {
        return Err(format!("old size {old} is larger than new size {new}"));
    }
    let mut out = Vec::new();
    if old == 0 || old == new {
        return Ok(Ok(out));
    }
    Ok(subproof_from(src, old, 0, new, true, &mut out).map(|()| out))
}

fn subproof_from<S: SubtreeSource + ?Sized>(
    src: &S,
    m: u64,
    start: u64,
    n: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if m == n {
        if !complete {
            out.push(range_root(src, start, n)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof_from(src, m, start, k, complete, out)?;
        out.push(range_root(src, start + k, n - k)?);
    } else {
        subproof_from(src, m - k, start + k, n - k, false, out)?;
        out.push(range_root(src, start, k)?);
    }
    Ok(())
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), String> {
    if index >= size {
        return Err(format!("leaf {index} is not in a tree of size {size}"));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err("inclusion proof is longer than the tree is deep".into());
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err("inclusion proof is too short".into());
    }
    if &r != root {
        return Err("inclusion proof does not lead to the root".into());
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), String> {
    if old > new {
        return Err(format!("old size {old} is larger than new size {new}"));
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err("trees of equal size must have equal roots and an empty proof".into())
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err("a proof from the empty tree must be empty".into())
        };
    }
    if proof.is_empty() {
        return Err("consistency proof is empty".into());
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snode == 0 {
            return Err("consistency proof is too long".into());
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err("consistency proof is too short".into());
    }
    if &fr != old_root {
        return Err("consistency proof does not lead to the old root".into());
    }
    if &sr != new_root {
        return Err("consistency proof does not lead to the new root".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn known_roots() {
        // RFC 6962 reference vectors (certificate-transparency-go merkle tests):
        // the empty tree and a one-leaf tree over the empty string.
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn rfc6962_reference_roots() {
        // The eight-leaf test tree of the certificate-transparency reference tests.
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let l: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(
                hex::encode(root(&l, n as u64 + 1)),
                *want,
                "root of {} leaves",
                n + 1
            );
        }
    }

    #[test]
    fn proof_sizes_grow_as_log2() {
        let l = leaves(1000);
        assert!(inclusion_proof(&l, 500, 1000).unwrap().len() <= 10);
        assert!(consistency_proof(&l, 300, 1000).unwrap().len() <= 2 * 10);
    }

    /// Complete subtrees computed from leaves (once), counting the reads.
    struct Counted {
        leaves: Vec<Hash>,
        nodes: std::collections::HashMap<(u32, u64), Hash>,
        reads: std::cell::Cell<u64>,
    }

    impl SubtreeSource for Counted {
        type Error = String;
        fn complete(&self, level: u32, index: u64) -> Result<Hash, String> {
            self.reads.set(self.reads.get() + 1);
            self.nodes
                .get(&(level, index))
                .copied()
                .ok_or_else(|| format!("no subtree at level {level} index {index}"))
        }
    }

    fn counted(n: u64) -> Counted {
        let leaves = leaves(n);
        let mut nodes = std::collections::HashMap::new();
        for level in 0..64u32 {
            let width = 1u64 << level;
            if width > n {
                break;
            }
            for index in 0..n / width {
                nodes.insert(
                    (level, index),
                    subtree_root(leaves.as_slice(), index * width, width),
                );
            }
        }
        Counted {
            leaves,
            nodes,
            reads: std::cell::Cell::new(0),
        }
    }

    #[test]
    fn subtree_sources_give_the_leaf_results_in_logarithmic_reads() {
        // log2(128) = 7 levels above the leaves.
        let c = counted(100);
        for n in 0..=100u64 {
            c.reads.set(0);
            assert_eq!(root_from(&c, n).unwrap(), root(&c.leaves, n), "root of {n}");
            assert!(
                c.reads.get() <= 7 + 1,
                "root of {n}: {} reads",
                c.reads.get()
            );
            for i in 0..n {
                c.reads.set(0);
                assert_eq!(
                    inclusion_proof_from(&c, i, n).unwrap().unwrap(),
                    inclusion_proof(&c.leaves, i, n).unwrap(),
                    "inclusion of {i} in {n}"
                );
                assert!(
                    c.reads.get() <= 2 * 7 + 2,
                    "inclusion {i}/{n}: {} reads",
                    c.reads.get()
                );
            }
            for old in 0..=n {
                c.reads.set(0);
                assert_eq!(
                    consistency_proof_from(&c, old, n).unwrap().unwrap(),
                    consistency_proof(&c.leaves, old, n).unwrap(),
                    "consistency {old}..{n}"
                );
                assert!(
                    c.reads.get() <= 3 * 7 + 3,
                    "consistency {old}/{n}: {} reads",
                    c.reads.get()
                );
            }
        }
        assert!(inclusion_proof_from(&c, 5, 5).is_err());
        assert!(consistency_proof_from(&c, 6, 5).is_err());
        assert!(
            root_from(&c, 101).is_err(),
            "the source's error is passed on"
        );
    }

    #[test]
    fn a_large_tree_costs_a_few_dozen_reads() {
        // No leaves at all: a source that makes up subtree roots, so the
        // tree can be as large as a ledger after years.
        struct Fake(std::cell::Cell<u64>);
        impl SubtreeSource for Fake {
            type Error = ();
            fn complete(&self, level: u32, index: u64) -> Result<Hash, ()> {
                self.0.set(self.0.get() + 1);
                Ok(leaf_hash(
                    &[&level.to_be_bytes()[..], &index.to_be_bytes()[..]].concat(),
                ))
            }
        }
        let f = Fake(std::cell::Cell::new(0));
        let n = (1u64 << 40) + 12_345_678_901;
        root_from(&f, n).unwrap();
        inclusion_proof_from(&f, n / 3, n).unwrap().unwrap();
        consistency_proof_from(&f, n / 2 + 7, n).unwrap().unwrap();
        assert!(f.0.get() <= 6 * 41, "{} reads", f.0.get());
    }

    proptest! {
        #[test]
        fn inclusion_proofs_verify_and_tampering_fails(n in 1u64..80, i in any::<prop::sample::Index>(), flip in 0usize..32) {
            let l = leaves(n);
            let idx = i.index(n as usize) as u64;
            let r = root(&l, n);
            let p = inclusion_proof(&l, idx, n).unwrap();
            prop_assert!(verify_inclusion(&l[idx as usize], idx, n, &p, &r).is_ok());
            let mut bad = l[idx as usize];
            bad[flip] ^= 1;
            prop_assert!(verify_inclusion(&bad, idx, n, &p, &r).is_err());
            if n > 1 {
                let other = (idx + 1) % n;
                prop_assert!(verify_inclusion(&l[idx as usize], other, n, &p, &r).is_err());
            }
        }

        #[test]
        fn consistency_proofs_verify_and_tampering_fails(new in 1u64..80, o in any::<prop::sample::Index>(), flip in 0usize..32) {
            let l = leaves(new);
            let old = o.index(new as usize + 1) as u64;
            let (ro, rn) = (root(&l, old), root(&l, new));
            let p = consistency_proof(&l, old, new).unwrap();
            prop_assert!(verify_consistency(old, new, &ro, &rn, &p).is_ok());
            if old > 0 && old < new {
                let mut bad = ro;
                bad[flip] ^= 1;
                prop_assert!(verify_consistency(old, new, &bad, &rn, &p).is_err());
                let mut badp = p.clone();
                badp[0][flip] ^= 1;
                prop_assert!(verify_consistency(old, new, &ro, &rn, &badp).is_err());
            }
        }
    }
}
