//! The order map: an authenticated map from order id to the order's latest
//! ledger entry (its *head*: sequence number and entry hash), committed by
//! every checkpoint (docs/ledger-format.md §11).
//!
//! A path-compressed binary sparse Merkle tree over 256-bit keys
//! `SHA-256(order_id)`, read from the most significant bit of the first
//! byte down. A subtree holding no order hashes to 32 zero bytes
//! ([`EMPTY`]); a subtree holding exactly one order hashes to that order's
//! leaf hash, whatever its depth; any other subtree is an inner node over
//! its two halves:
//!
//! ```text
//! leaf(key, seq, hash) = SHA-256(0x00 || key || u64be(seq) || hash)
//! inner(left, right)   = SHA-256(0x01 || left || right)
//! ```
//!
//! The map is updated at fixed *map epochs*, every [`MAP_EPOCH`] entries:
//! when entry `M - 1` is applied and `M` is a multiple of `MAP_EPOCH`, the
//! heads of the orders that entries `M - MAP_EPOCH .. M - 1` concern are
//! written, and the root is the *map root at size M*. Each update costs
//! O(changed orders × depth) node reads and writes through a [`NodeStore`];
//! nothing here is O(orders). The same function runs on every replica and in
//! the tests, so the root is deterministic.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::merkle::Hash;

/// Entries per map epoch: the map reflects entries `0 .. M - 1` for
/// `M = MAP_EPOCH * k`, and a checkpoint of size `N` names `epoch_at(N)`.
pub const MAP_EPOCH: u64 = 32;

/// Key length in bits, and so the deepest a node can be.
pub const KEY_BITS: usize = 256;

/// The hash of an empty subtree.
pub const EMPTY: Hash = [0; 32];

/// The newest map epoch at or below tree size `size` (0: none yet).
pub fn epoch_at(size: u64) -> u64 {
    size - size % MAP_EPOCH
}

/// The map key of an order: `SHA-256(order_id as UTF-8)`.
pub fn order_key(order_id: &str) -> Hash {
    Sha256::digest(order_id.as_bytes()).into()
}

/// The version of the map this code computes: version 2 also holds one
/// leaf per party, at [`party_key`], whose value is the party's chain
/// ([`PartyChain`]) over its party entries ([`party_entry_parties`]).
/// Version 1 (the `map` checkpoint line) held orders only.
pub const MAP_VERSION: u32 = 2;

/// The prefix of a party's map key; order ids hold no NUL byte, so no
/// order's key is a party's.
pub const PARTY_KEY_PREFIX: &[u8] = b"arbor.party\0";

/// The map key of a party: `SHA-256("arbor.party\0" || party_id)`.
pub fn party_key(party_id: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(PARTY_KEY_PREFIX);
    h.update(party_id.as_bytes());
    h.finalize().into()
}

/// A party's chain: the value of its leaf. `seq` is its latest party
/// entry, `hash` the fold over all of them, oldest first, of
/// [`PartyChain::then`] from 32 zero bytes.
pub type PartyChain = OrderHead;

impl OrderHead {
    /// The party chain after one more party entry `(seq, entry_hash)`:
    /// `SHA-256(0x02 || chain || u64be(seq) || entry_hash)`.
    pub fn then(prev: Option<&PartyChain>, seq: u64, entry_hash: &Hash) -> PartyChain {
        let mut h = Sha256::new();
        h.update([2u8]);
        h.update(prev.map_or(EMPTY, |p| p.hash));
        h.update(seq.to_be_bytes());
        h.update(entry_hash);
        OrderHead {
            seq,
            hash: h.finalize().into(),
        }
    }
}

/// The parties an accepted entry is a *party entry* of (docs/ledger-format.md
/// §11): every operator of the genesis; the `party_id` of an `EnrollParty`,
/// `RotateKey` or `RevokeKey`; the signer of a `PublishProfile`. Rejected
/// entries and all other commands: none. `command` is the entry's
/// `SignedCommand` bytes; one that does not decode is no party entry.
pub fn party_entry_parties(accepted: bool, command: &[u8]) -> Vec<String> {
    use crate::pb::command::Body;
    use prost::Message;
    if !accepted {
        return Vec::new();
    }
    let Ok(env) = crate::pb::SignedCommand::decode(command) else {
        return Vec::new();
    };
    let Ok(cmd) = crate::pb::Command::decode(env.command.as_slice()) else {
        return Vec::new();
    };
    match cmd.body {
        Some(Body::Genesis(g)) => g.operators.into_iter().map(|o| o.party_id).collect(),
        Some(Body::EnrollParty(p)) => vec![p.party_id],
        Some(Body::RotateKey(r)) => vec![r.party_id],
        Some(Body::RevokeKey(r)) => vec![r.party_id],
        Some(Body::PublishProfile(_)) => vec![env.signer],
        _ => Vec::new(),
    }
}

/// The value the map holds at `key`, if any (a walk down its path).
pub fn get(store: &mut impl NodeStore, key: &Hash) -> Result<Option<OrderHead>, String> {
    Ok(match prove(store, key)?.leaf {
        Some((k, head)) if k == *key => Some(head),
        _ => None,
    })
}

/// An order's latest entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderHead {
    pub seq: u64,
    pub hash: Hash,
}

pub fn leaf_hash(key: &Hash, head: &OrderHead) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(key);
    h.update(head.seq.to_be_bytes());
    h.update(head.hash);
    h.finalize().into()
}

pub fn inner_hash(left: &Hash, right: &Hash) -> Hash {
    super::merkle::node_hash(left, right)
}

/// Bit `i` of `key`, 0 being the most significant bit of `key[0]`.
pub fn bit(key: &Hash, i: usize) -> bool {
    key[i / 8] & (0x80 >> (i % 8)) != 0
}

/// Whether `a` and `b` agree on their first `depth` bits.
pub fn same_prefix(a: &Hash, b: &Hash, depth: usize) -> bool {
    (0..depth).all(|i| bit(a, i) == bit(b, i))
}

/// A stored node. Its encoding is also its hash preimage, so
/// `SHA-256(node.encode())` is the subtree's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Leaf { key: Hash, head: OrderHead },
    Inner { left: Hash, right: Hash },
}

impl Node {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(73);
        match self {
            Node::Leaf { key, head } => {
                v.push(0);
                v.extend_from_slice(key);
                v.extend_from_slice(&head.seq.to_be_bytes());
                v.extend_from_slice(&head.hash);
            }
            Node::Inner { left, right } => {
                v.push(1);
                v.extend_from_slice(left);
                v.extend_from_slice(right);
            }
        }
        v
    }

    pub fn decode(b: &[u8]) -> Result<Node, String> {
        let h = |r: &[u8]| -> Hash { r.try_into().expect("32-byte slice") };
        match (b.first(), b.len()) {
            (Some(0), 73) => Ok(Node::Leaf {
                key: h(&b[1..33]),
                head: OrderHead {
                    seq: u64::from_be_bytes(b[33..41].try_into().expect("8 bytes")),
                    hash: h(&b[41..73]),
                },
            }),
            (Some(1), 65) => Ok(Node::Inner {
                left: h(&b[1..33]),
                right: h(&b[33..65]),
            }),
            _ => Err(format!("not an order map node ({} bytes)", b.len())),
        }
    }

    pub fn hash(&self) -> Hash {
        match self {
            Node::Leaf { key, head } => leaf_hash(key, head),
            Node::Inner { left, right } => inner_hash(left, right),
        }
    }
}

/// Where a node sits: `u16be(depth)` and the key's first `depth` bits,
/// padded with zero bits to whole bytes. The root is at depth 0.
pub fn position(key: &Hash, depth: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(2 + depth.div_ceil(8));
    p.extend_from_slice(&(depth as u16).to_be_bytes());
    p.extend_from_slice(&key[..depth.div_ceil(8)]);
    if !depth.is_multiple_of(8) {
        let last = p.len() - 1;
        p[last] &= 0xffu8 << (8 - depth % 8);
    }
    p
}

/// The persisted nodes (RocksDB on a replica, a map in tests).
pub trait NodeStore {
    fn get_node(&mut self, position: &[u8]) -> Result<Option<Node>, String>;
    fn put_node(&mut self, position: &[u8], node: &Node);
}

impl NodeStore for BTreeMap<Vec<u8>, Node> {
    fn get_node(&mut self, position: &[u8]) -> Result<Option<Node>, String> {
        Ok(self.get(position).copied())
    }
    fn put_node(&mut self, position: &[u8], node: &Node) {
        self.insert(position.to_vec(), *node);
    }
}

/// The root of the map `store` holds.
pub fn root(store: &mut impl NodeStore) -> Result<Hash, String> {
    Ok(store
        .get_node(&position(&EMPTY, 0))?
        .map_or(EMPTY, |n| n.hash()))
}

/// Sets the heads in `changes` (inserting orders not yet in the map) and
/// returns the new root. Orders never leave the map.
pub fn update(
    store: &mut impl NodeStore,
    changes: &BTreeMap<Hash, OrderHead>,
) -> Result<Hash, String> {
    let ups: Vec<(Hash, OrderHead)> = changes.iter().map(|(k, v)| (*k, *v)).collect();
    if ups.is_empty() {
        return root(store);
    }
    update_at(store, 0, &ups)
}

/// Applies one map epoch: `entries` are entries `M - MAP_EPOCH .. M - 1`
/// in order. Sets each order's head to its latest entry among them and
/// extends each party's chain by its party entries among them, oldest
/// first; returns the new root and the `(party, seq)` of every party
/// entry (for the party index a replica keeps to serve proofs).
pub fn apply_epoch<'a>(
    store: &mut impl NodeStore,
    entries: impl IntoIterator<Item = &'a crate::ledger::Entry>,
) -> Result<(Hash, Vec<(String, u64)>), String> {
    let mut changes: BTreeMap<Hash, OrderHead> = BTreeMap::new();
    let mut party_entries = Vec::new();
    for e in entries {
        if !e.order_id.is_empty() {
            // An order command is never a party entry (its entry names
            // the order; party commands name none).
            changes.insert(
                order_key(&e.order_id),
                OrderHead {
                    seq: e.seq,
                    hash: e.hash,
                },
            );
            continue;
        }
        for party in party_entry_parties(e.accepted, &e.command) {
            let k = party_key(&party);
            let prev = match changes.get(&k) {
                Some(c) => Some(*c),
                None => get(store, &k)?,
            };
            changes.insert(k, OrderHead::then(prev.as_ref(), e.seq, &e.hash));
            party_entries.push((party, e.seq));
        }
    }
    Ok((update(store, &changes)?, party_entries))
}

/// Changes to write, sorted by key.
type Ups = [(Hash, OrderHead)];

/// Splits `ups` (sorted by key, all sharing the first `depth` bits) at bit `depth`.
fn split_at(ups: &Ups, depth: usize) -> (&Ups, &Ups) {
    let i = ups.partition_point(|(k, _)| !bit(k, depth));
    ups.split_at(i)
}

fn update_at(
    store: &mut impl NodeStore,
    depth: usize,
    ups: &[(Hash, OrderHead)],
) -> Result<Hash, String> {
    let pos = position(&ups[0].0, depth);
    match store.get_node(&pos)? {
        None => build(store, depth, ups),
        Some(Node::Leaf { key, head }) => {
            if ups.iter().any(|(k, _)| *k == key) {
                build(store, depth, ups)
            } else {
                // The order already here moves down next to the new ones.
                let mut merged = ups.to_vec();
                let at = merged.partition_point(|(k, _)| *k < key);
                merged.insert(at, (key, head));
                build(store, depth, &merged)
            }
        }
        Some(Node::Inner { left, right }) => {
            if depth >= KEY_BITS {
                return Err("order map node below the deepest level".into());
            }
            let (l_ups, r_ups) = split_at(ups, depth);
            let left = if l_ups.is_empty() {
                left
            } else {
                update_at(store, depth + 1, l_ups)?
            };
            let right = if r_ups.is_empty() {
                right
            } else {
                update_at(store, depth + 1, r_ups)?
            };
            let n = Node::Inner { left, right };
            store.put_node(&pos, &n);
            Ok(n.hash())
        }
    }
}

/// Writes the subtree at (`depth`, the keys' prefix) holding exactly `ups`;
/// everything below that position is empty.
fn build(
    store: &mut impl NodeStore,
    depth: usize,
    ups: &[(Hash, OrderHead)],
) -> Result<Hash, String> {
    let pos = position(&ups[0].0, depth);
    let n = if let [(key, head)] = ups {
        Node::Leaf {
            key: *key,
            head: *head,
        }
    } else {
        if depth >= KEY_BITS {
            return Err("two orders share all 256 bits of their key".into());
        }
        let (l_ups, r_ups) = split_at(ups, depth);
        let left = if l_ups.is_empty() {
            EMPTY
        } else {
            build(store, depth + 1, l_ups)?
        };
        let right = if r_ups.is_empty() {
            EMPTY
        } else {
            build(store, depth + 1, r_ups)?
        };
        Node::Inner { left, right }
    };
    store.put_node(&pos, &n);
    Ok(n.hash())
}

/// A proof of an order's head in the map, or of its absence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapProof {
    /// The siblings of the path to the terminal, root first: `siblings[i]`
    /// is the hash of the child at depth `i + 1` not on the key's path.
    pub siblings: Vec<Hash>,
    /// What the path ends at: a leaf (the key's own, or another key's that
    /// shares the path, proving absence) or `None`, an empty subtree.
    pub leaf: Option<(Hash, OrderHead)>,
}

impl MapProof {
    /// The wire form: empty siblings stand for [`EMPTY`].
    pub fn to_pb(&self) -> crate::pb::OrderMapProof {
        let (leaf_key, leaf_seq, leaf_hash) = match &self.leaf {
            Some((k, h)) => (k.to_vec(), h.seq, h.hash.to_vec()),
            None => (Vec::new(), 0, Vec::new()),
        };
        crate::pb::OrderMapProof {
            siblings: self
                .siblings
                .iter()
                .map(|s| if *s == EMPTY { Vec::new() } else { s.to_vec() })
                .collect(),
            leaf_key,
            leaf_seq,
            leaf_hash,
        }
    }

    /// Reads the wire form; refuses hashes that are not 32 bytes (or, for
    /// a sibling, empty) and a sibling sent as 32 zero bytes.
    pub fn from_pb(p: &crate::pb::OrderMapProof) -> Result<MapProof, String> {
        let hash = |b: &[u8], what: &str| -> Result<Hash, String> {
            b.try_into()
                .map_err(|_| format!("map proof {what} is {} bytes, expected 32", b.len()))
        };
        let mut siblings = Vec::with_capacity(p.siblings.len());
        for s in &p.siblings {
            if s.is_empty() {
                siblings.push(EMPTY);
            } else {
                let h = hash(s, "sibling")?;
                if h == EMPTY {
                    return Err("map proof sends an empty sibling as 32 zero bytes".into());
                }
                siblings.push(h);
            }
        }
        let leaf = if p.leaf_key.is_empty() && p.leaf_hash.is_empty() && p.leaf_seq == 0 {
            None
        } else {
            Some((
                hash(&p.leaf_key, "leaf key")?,
                OrderHead {
                    seq: p.leaf_seq,
                    hash: hash(&p.leaf_hash, "leaf hash")?,
                },
            ))
        };
        Ok(MapProof { siblings, leaf })
    }
}

/// The proof for `key` from the map `store` holds.
pub fn prove(store: &mut impl NodeStore, key: &Hash) -> Result<MapProof, String> {
    let mut siblings = Vec::new();
    for depth in 0..=KEY_BITS {
        match store.get_node(&position(key, depth))? {
            None => {
                return Ok(MapProof {
                    siblings,
                    leaf: None,
                })
            }
            Some(Node::Leaf { key: k, head }) => {
                return Ok(MapProof {
                    siblings,
                    leaf: Some((k, head)),
                })
            }
            Some(Node::Inner { left, right }) => {
                if depth == KEY_BITS {
                    break;
                }
                siblings.push(if bit(key, depth) { left } else { right });
            }
        }
    }
    Err("order map path is deeper than the key".into())
}

/// Checks `proof` for `key` against `root`: `Ok(Some(head))` if the map
/// holds the key, `Ok(None)` if it proves the key absent.
pub fn verify(proof: &MapProof, key: &Hash, root: &Hash) -> Result<Option<OrderHead>, String> {
    let depth = proof.siblings.len();
    if depth > KEY_BITS {
        return Err(format!(
            "map proof has {depth} siblings, more than the {KEY_BITS} key bits"
        ));
    }
    let (mut h, found) = match &proof.leaf {
        None => (EMPTY, None),
        Some((k, head)) => {
            if !same_prefix(k, key, depth) {
                return Err("the map proof's leaf is not on the order's path".into());
            }
            (leaf_hash(k, head), (k == key).then_some(*head))
        }
    };
    for i in (0..depth).rev() {
        let s = &proof.siblings[i];
        h = if bit(key, i) {
            inner_hash(s, &h)
        } else {
            inner_hash(&h, s)
        };
    }
    if &h != root {
        return Err("the map proof does not lead to the map root".into());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64) -> OrderHead {
        OrderHead {
            seq,
            hash: Sha256::digest(seq.to_be_bytes()).into(),
        }
    }

    /// The map's root computed from scratch, by the definition.
    fn reference_root(items: &BTreeMap<Hash, OrderHead>) -> Hash {
        fn sub(items: &[(Hash, OrderHead)], depth: usize) -> Hash {
            match items {
                [] => EMPTY,
                [(k, h)] => leaf_hash(k, h),
                _ => {
                    let (l, r) = split_at(items, depth);
                    inner_hash(&sub(l, depth + 1), &sub(r, depth + 1))
                }
            }
        }
        let v: Vec<_> = items.iter().map(|(k, h)| (*k, *h)).collect();
        sub(&v, 0)
    }

    fn changes(ids: impl IntoIterator<Item = (String, u64)>) -> BTreeMap<Hash, OrderHead> {
        ids.into_iter()
            .map(|(id, seq)| (order_key(&id), head(seq)))
            .collect()
    }

    #[test]
    fn empty_map_proves_absence() {
        let mut s = BTreeMap::new();
        assert_eq!(root(&mut s).unwrap(), EMPTY);
        let k = order_key("o-1");
        let p = prove(&mut s, &k).unwrap();
        assert_eq!(p.siblings.len(), 0);
        assert_eq!(verify(&p, &k, &EMPTY).unwrap(), None);
    }

    #[test]
    fn presence_and_absence_proofs_verify_and_tampering_fails() {
        let mut s = BTreeMap::new();
        let all = changes((0..200).map(|i| (format!("o-{i}"), i + 1)));
        let r = update(&mut s, &all).unwrap();
        assert_eq!(r, reference_root(&all));
        for i in 0..200u64 {
            let k = order_key(&format!("o-{i}"));
            let p = prove(&mut s, &k).unwrap();
            assert!(
                p.siblings.len() < 40,
                "path-compressed: {}",
                p.siblings.len()
            );
            assert_eq!(verify(&p, &k, &r).unwrap(), Some(head(i + 1)));
            // Another head, another root, a flipped sibling: refused.
            let mut bad = p.clone();
            bad.leaf = Some((k, head(i + 2)));
            assert!(verify(&bad, &k, &r).is_err());
            assert!(verify(&p, &k, &[1; 32]).is_err());
            if let Some(s0) = p.siblings.first() {
                let mut bad = p.clone();
                bad.siblings[0] = [s0[0] ^ 1; 32];
                assert!(verify(&bad, &k, &r).is_err());
            }
            // The proof of one order does not prove another.
            let other = order_key(&format!("o-{}", (i + 1) % 200));
            assert!(verify(&p, &other, &r).is_err() || verify(&p, &other, &r) == Ok(None));
        }
        let mut absent = 0;
        for i in 0..200u64 {
            let k = order_key(&format!("missing-{i}"));
            let p = prove(&mut s, &k).unwrap();
            assert_eq!(verify(&p, &k, &r).unwrap(), None);
            if let Some((_, h)) = p.leaf {
                absent += 1;
                // Passing the neighbour's leaf off as the key's own fails.
                let forged = MapProof {
                    leaf: Some((k, h)),
                    ..p.clone()
                };
                assert!(verify(&forged, &k, &r).is_err());
            }
        }
        assert!(
            absent > 0,
            "some absence proofs end at another order's leaf"
        );
    }

    #[test]
    fn a_proof_for_an_older_root_fails_against_the_newer() {
        let mut s = BTreeMap::new();
        let r1 = update(&mut s, &changes([("a".into(), 1), ("b".into(), 2)])).unwrap();
        let k = order_key("a");
        let old = prove(&mut s, &k).unwrap();
        let r2 = update(&mut s, &changes([("a".into(), 9)])).unwrap();
        assert_ne!(r1, r2);
        assert_eq!(verify(&old, &k, &r1).unwrap(), Some(head(1)));
        assert!(verify(&old, &k, &r2).is_err());
        assert_eq!(
            verify(&prove(&mut s, &k).unwrap(), &k, &r2).unwrap(),
            Some(head(9))
        );
    }

    #[test]
    fn epoch_updates_match_a_rebuild_whatever_the_batching() {
        // Replica A applies 12 epochs of changes; replica B one big update of
        // the final state; C the same epochs in another order of arrival.
        let mut a = BTreeMap::new();
        let mut state = BTreeMap::new();
        let mut epochs = Vec::new();
        for e in 0..12u64 {
            let c = changes((0..20).map(|j| (format!("o-{}", (e * 7 + j * 3) % 60), e * 100 + j)));
            let ra = update(&mut a, &c).unwrap();
            state.extend(c.clone());
            assert_eq!(ra, reference_root(&state), "epoch {e}");
            epochs.push(c);
        }
        let mut b = BTreeMap::new();
        assert_eq!(update(&mut b, &state).unwrap(), root(&mut a).unwrap());
        assert_eq!(a, b, "the same nodes, whatever the history");
        let mut c = BTreeMap::new();
        for ch in &epochs {
            // BTreeMap iteration: arrival order inside an epoch cannot matter.
            let mut rev: Vec<_> = ch.iter().collect();
            rev.reverse();
            let ch: BTreeMap<Hash, OrderHead> = rev.into_iter().map(|(k, v)| (*k, *v)).collect();
            update(&mut c, &ch).unwrap();
        }
        assert_eq!(a, c);
        assert_eq!(
            update(&mut c, &BTreeMap::new()).unwrap(),
            root(&mut a).unwrap()
        );
    }

    #[test]
    fn positions_and_nodes_encode_as_specified() {
        let k = [0xff; 32];
        assert_eq!(position(&k, 0), vec![0, 0]);
        assert_eq!(position(&k, 3), vec![0, 3, 0b1110_0000]);
        assert_eq!(position(&k, 8), vec![0, 8, 0xff]);
        assert_eq!(position(&k, 256).len(), 34);
        let n = Node::Leaf {
            key: k,
            head: head(5),
        };
        assert_eq!(Node::decode(&n.encode()).unwrap(), n);
        assert_eq!(Sha256::digest(n.encode()).as_slice(), n.hash());
        let i = Node::Inner {
            left: [1; 32],
            right: [2; 32],
        };
        assert_eq!(Node::decode(&i.encode()).unwrap(), i);
        assert_eq!(Sha256::digest(i.encode()).as_slice(), i.hash());
        assert!(Node::decode(&[2; 65]).is_err());
        assert_eq!(epoch_at(31), 0);
        assert_eq!(epoch_at(32), 32);
        assert_eq!(epoch_at(95), 64);
    }

    fn entry(
        seq: u64,
        order: &str,
        signer: &str,
        body: Option<crate::pb::command::Body>,
    ) -> crate::ledger::Entry {
        use prost::Message;
        let command = crate::pb::SignedCommand {
            signer: signer.into(),
            command: crate::pb::Command {
                body,
                ..Default::default()
            }
            .encode_to_vec(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut e = crate::ledger::Entry::next(
            None,
            seq,
            command,
            true,
            "accepted".into(),
            String::new(),
            order.into(),
            0,
        );
        e.seq = seq;
        e.hash = e.compute_hash();
        e
    }

    /// An epoch sets the orders' heads and extends each party's chain by
    /// its party entries in seq order, across epochs; the root is the
    /// reference root of those values.
    #[test]
    fn epochs_keep_party_chains_beside_order_heads() {
        use crate::pb::command::Body;
        use crate::pb::{EnrollParty, Genesis, GenesisOperator, PublishProfile, RevokeKey};
        let genesis = entry(
            0,
            "",
            "",
            Some(Body::Genesis(Genesis {
                operators: vec![GenesisOperator {
                    party_id: "op".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        );
        let enrol = entry(
            1,
            "",
            "op",
            Some(Body::EnrollParty(EnrollParty {
                party_id: "n".into(),
                ..Default::default()
            })),
        );
        let order = entry(2, "o-1", "n", None);
        let profile = entry(
            3,
            "",
            "n",
            Some(Body::PublishProfile(PublishProfile::default())),
        );
        let revoke = entry(
            40,
            "",
            "op",
            Some(Body::RevokeKey(RevokeKey {
                party_id: "n".into(),
                ..Default::default()
            })),
        );
        let mut s = BTreeMap::new();
        let (_, listed) = apply_epoch(&mut s, [&genesis, &enrol, &order, &profile]).unwrap();
        assert_eq!(listed, [("op".into(), 0), ("n".into(), 1), ("n".into(), 3)]);
        let (r, listed) = apply_epoch(&mut s, [&revoke]).unwrap();
        assert_eq!(listed, [("n".to_string(), 40)]);
        let c = |list: &[&crate::ledger::Entry]| {
            let mut c = None;
            for e in list {
                c = Some(OrderHead::then(c.as_ref(), e.seq, &e.hash));
            }
            c.unwrap()
        };
        let mut reference = BTreeMap::new();
        reference.insert(party_key("op"), c(&[&genesis]));
        reference.insert(party_key("n"), c(&[&enrol, &profile, &revoke]));
        reference.insert(
            order_key("o-1"),
            OrderHead {
                seq: 2,
                hash: order.hash,
            },
        );
        assert_eq!(r, reference_root(&reference));
        assert_eq!(
            get(&mut s, &party_key("n")).unwrap(),
            reference.get(&party_key("n")).copied()
        );
        assert_eq!(get(&mut s, &order_key("n")).unwrap(), None);
        assert_ne!(party_key("o-1"), order_key("o-1"));
        // A rejected party command, or an order's entry, is no party entry.
        assert!(party_entry_parties(false, &enrol.command).is_empty());
        assert_eq!(party_entry_parties(true, &profile.command), ["n"]);
        assert!(party_entry_parties(true, &order.command).is_empty());
        assert!(party_entry_parties(true, b"not a command").is_empty());
    }

    #[test]
    fn oversized_or_off_path_proofs_are_refused() {
        let k = order_key("x");
        let p = MapProof {
            siblings: vec![EMPTY; 257],
            leaf: None,
        };
        assert!(verify(&p, &k, &EMPTY).unwrap_err().contains("more than"));
        let mut other = k;
        other[0] ^= 0x80;
        let p = MapProof {
            siblings: vec![EMPTY],
            leaf: Some((other, head(1))),
        };
        assert!(verify(&p, &k, &EMPTY)
            .unwrap_err()
            .contains("not on the order's path"));
    }
}
