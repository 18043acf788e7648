//! Every column family name and every key encoding of the replica's RocksDB.
//!
//! Kept in one file so that the on-disk layout can be read (and reviewed for
//! changes) in one place. Changing anything here changes the on-disk format.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `raft_log` | log index, u64 big-endian | raft log entry, bincode (`raft::codec`) |
//! | `raft_meta` | `vote`, `committed`, `last_purged` | serde_json |
//! | `ledger` | ledger seq, u64 big-endian | `pb::LedgerEntry`, protobuf |
//! | `orders` | order id (UTF-8) | `rules::Order`, a record (`record::encode`: the byte `0x01`, then MessagePack with structs as arrays; a record starting `{` is serde_json, written by builds before that, and read as such) |
//! | `refs` | channel `\0` external id | order id (UTF-8) |
//! | `refs` | `\0delivery-code\0` + delivery code hash (rules version 4: the hashes registered under it) | order id (UTF-8) |
//! | `parties` | party id (UTF-8) | `rules::Party`, a record (as `orders`) |
//! | `party_keys` | public key (32 raw bytes) | party id (UTF-8) |
//! | `commands` | command id (32 bytes) | ledger seq, u64 big-endian |
//! | `sm_meta` | `head`, `last_applied`, `membership` (raft's), `config`, `replicas` (the ledger's desired membership) | serde_json |
//! | `profiles` | node party id (UTF-8) | `rules::Profile` (latest version), a record (as `orders`); scanned in key order for the nodes with a profile (rules version 4 sourcing decisions: `LedgerReader::profiled_nodes`) |
//! | `node_stats` | node party id (UTF-8) | `rules::NodeStats`, a record (as `orders`) |
//! | `order_map` | `t` + the position (`ledger::map::position`) of a tile's top node, whose depth is a multiple of `order_map::TILE_LEVELS` (4) | the tile: that node's subtree down to 3 levels below it, up to 15 nodes (`order_map::Tile::encode`: a 16-bit presence bitmap, then each present node, top first, left to right, as `map::Node::encode` — or the byte 2 for an inner node whose two children are in the tile, its hashes being theirs) |
//! | `order_map` | `n` + node position | one order map node per key (`map::Node::encode`), written before tiles: a database holding any rebuilds the map into tiles when it opens |
//! | `order_map` | `R` + map size, u64 big-endian | the version 2 order map root at that size (32 bytes; version 1 roots were under `r`, and a database holding only those rebuilds the map) |
//! | `order_map` | `p` + party key (`map::party_key`, 32 bytes) + seq, u64 big-endian | empty: the party's party entries below the newest map epoch |
//! | `merkle` | `0x80`, then the subtree's last leaf u64 big-endian, then its level u8 | the root of the complete Merkle subtree of `2^level` leaves ending at that leaf, 32 bytes (derived from `ledger`: [`super::merkle_tree`]) |
//! | `merkle` | `\xffsize` | the number of leaves the tree holds, u64 big-endian |
//! | `leases` | lease deadline ms, u64 big-endian, then order id (UTF-8); the empty key marks the index built | empty (derived from `orders`: [`super::leases`]) |
//!
//! Big-endian integer keys sort numerically under RocksDB's bytewise
//! comparator, so iterating `raft_log` or `ledger` walks them in order.
//! Ids never contain NUL (`rules::validate_command` allows only
//! `[A-Za-z0-9_.:@/-]`), so `\0` separates the two halves of a ref key
//! unambiguously.

/// The raft log: one entry per index.
pub const CF_LOG: &str = "raft_log";
/// The log store's own state: vote, committed log id, last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// Ledger entries by sequence number.
pub const CF_LEDGER: &str = "ledger";
pub const CF_ORDERS: &str = "orders";
pub const CF_REFS: &str = "refs";
pub const CF_PARTIES: &str = "parties";
/// Public key -> party id (for `StateView::party_by_key`).
pub const CF_PARTY_KEYS: &str = "party_keys";
/// Command id -> ledger seq: exactly-once for resent commands.
pub const CF_COMMANDS: &str = "commands";
/// The state machine's own state: chain head, last applied log id, membership.
pub const CF_SM_META: &str = "sm_meta";
/// A node's capability profile in force.
pub const CF_PROFILES: &str = "profiles";
/// A node's counters (open orders for capacity, claims, lapses, ...).
pub const CF_STATS: &str = "node_stats";
/// The order map's nodes and its root at each map epoch (`order_map.rs`).
pub const CF_ORDER_MAP: &str = "order_map";
/// Orders under a lease by deadline, for the lease sweep (derived from
/// `orders`, not in snapshots: see `storage::leases`).
pub const CF_LEASES: &str = "leases";

/// The complete subtrees of the ledger's Merkle tree (derived from
/// `ledger`, not in snapshots: see `storage::merkle_tree`).
pub const CF_MERKLE: &str = "merkle";

/// The column families that make up the state machine, i.e. what a snapshot
/// carries. A snapshot record's tag is `1 +` the index in this list, so the
/// order is part of the snapshot format: append only, never reorder.
pub const STATE_MACHINE_CFS: [&str; 10] = [
    CF_LEDGER,
    CF_ORDERS,
    CF_REFS,
    CF_PARTIES,
    CF_PARTY_KEYS,
    CF_COMMANDS,
    CF_SM_META,
    CF_PROFILES,
    CF_STATS,
    CF_ORDER_MAP,
];

/// Every column family the database is opened with.
pub const ALL_CFS: [&str; 14] = [
    CF_LOG,
    CF_RAFT_META,
    CF_LEDGER,
    CF_ORDERS,
    CF_REFS,
    CF_PARTIES,
    CF_PARTY_KEYS,
    CF_COMMANDS,
    CF_SM_META,
    CF_PROFILES,
    CF_STATS,
    CF_ORDER_MAP,
    CF_LEASES,
    CF_MERKLE,
];

// Keys of `raft_meta`.
pub const KEY_VOTE: &[u8] = b"vote";
pub const KEY_COMMITTED: &[u8] = b"committed";
pub const KEY_LAST_PURGED: &[u8] = b"last_purged";

// Keys of `sm_meta`.
pub const KEY_HEAD: &[u8] = b"head";
pub const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub const KEY_MEMBERSHIP: &[u8] = b"membership";
/// The cluster configuration genesis fixed (`rules::ClusterConfig`).
pub const KEY_CONFIG: &[u8] = b"config";
/// The desired membership the ledger records (`rules::Membership`).
pub const KEY_REPLICAS: &[u8] = b"replicas";

/// A raft log index or ledger sequence number as a key.
pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decodes a [`u64_key`]; `None` when the key is not 8 bytes.
pub fn decode_u64_key(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

/// The key of an order map node at `position` (`ledger::map::position`)
/// as written before tiles (`map_node_key(&[])` is the keys' prefix).
pub fn map_node_key(position: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + position.len());
    k.push(b'n');
    k.extend_from_slice(position);
    k
}

/// The key of the order map tile whose top node is at `position`
/// (`ledger::map::position`, of a depth multiple of `order_map::TILE_LEVELS`).
pub fn map_tile_key(position: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + position.len());
    k.push(b't');
    k.extend_from_slice(position);
    k
}

/// The key of the (version 2) order map root at map size `size`.
pub fn map_root_key(size: u64) -> [u8; 9] {
    let mut k = [b'R'; 9];
    k[1..].copy_from_slice(&size.to_be_bytes());
    k
}

/// The key that lists entry `seq` as a party entry of the party whose map
/// key is `party_key` (`ledger::map::party_key`).
pub fn map_party_entry_key(party_key: &[u8; 32], seq: u64) -> [u8; 41] {
    let mut k = [b'p'; 41];
    k[1..33].copy_from_slice(party_key);
    k[33..].copy_from_slice(&seq.to_be_bytes());
    k
}

// Keys of `merkle`.
/// How many leaves the Merkle tree holds (its nodes cover exactly those).
/// After every node key, so that the records a batch writes (its nodes and
/// this) sort after everything written before.
pub const KEY_MERKLE_SIZE: &[u8] = b"\xffsize";

/// The first byte of every node key. Keys of the earlier layout (level
/// first, then index; and `size`) all sort before it.
pub const MERKLE_NODE_PREFIX: u8 = 0x80;

/// The key of the complete Merkle subtree at `level` and `index`, covering
/// leaves `[index << level, (index + 1) << level)`: `0x80 || last leaf
/// (u64 BE) || level (u8)`. A node is written by the entry that is its last
/// leaf, so keys are written in increasing order: RocksDB then moves
/// flushed files down the levels without rewriting them (with the level
/// first, every flushed file overlapped the whole tree, and each compaction
/// rewrote all of it).
pub fn merkle_node_key(level: u32, index: u64) -> [u8; 10] {
    let last_leaf = ((index + 1) << level) - 1;
    let mut k = [0u8; 10];
    k[0] = MERKLE_NODE_PREFIX;
    k[1..9].copy_from_slice(&last_leaf.to_be_bytes());
    k[9] = level as u8;
    k
}

/// The level and index of a node key (`None`: not a node key).
pub fn merkle_node_of_key(k: &[u8]) -> Option<(u32, u64)> {
    if k.len() != 10 || k[0] != MERKLE_NODE_PREFIX || k[9] >= 64 {
        return None;
    }
    let last_leaf = u64::from_be_bytes(k[1..9].try_into().ok()?);
    let level = u32::from(k[9]);
    Some((level, (last_leaf >> level)))
}

/// The key of an external reference: `channel \0 external_id`.
pub fn ref_key(channel: &str, external_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(channel.len() + 1 + external_id.len());
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(external_id.as_bytes());
    k
}

/// The `refs` key of a delivery code hash (rules version 4):
/// `\0delivery-code\0` + hash. Channel ids are never empty, so no
/// external reference's key starts with `\0`.
pub fn delivery_code_key(hash: &[u8]) -> Vec<u8> {
    const PREFIX: &[u8] = b"\0delivery-code\0";
    let mut k = Vec::with_capacity(PREFIX.len() + hash.len());
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(hash);
    k
}

/// A key as it should appear in an error message: the text when it is
/// printable ASCII, hex otherwise.
pub fn display_key(key: &[u8]) -> String {
    if !key.is_empty() && key.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(key).into_owned()
    } else {
        format!("0x{}", hex::encode(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_keys_sort_numerically() {
        let mut v = [300u64, 2, 1 << 40, 0, 255, 256];
        let mut keys: Vec<[u8; 8]> = v.iter().map(|n| u64_key(*n)).collect();
        keys.sort();
        v.sort();
        let back: Vec<u64> = keys.iter().map(|k| decode_u64_key(k).unwrap()).collect();
        assert_eq!(back, v);
        assert_eq!(decode_u64_key(b"short"), None);
    }

    #[test]
    fn ref_keys_do_not_collide() {
        assert_ne!(ref_key("ab", "c"), ref_key("a", "bc"));
        assert_eq!(ref_key("web", "42"), b"web\x0042".to_vec());
        // No channel id is empty, so no ref key starts with NUL.
        assert_eq!(
            delivery_code_key(&[7; 2]),
            b"\0delivery-code\0\x07\x07".to_vec()
        );
        assert_ne!(delivery_code_key(b"x")[0], ref_key("a", "x")[0]);
    }

    #[test]
    fn keys_display_readably() {
        assert_eq!(display_key(b"order-1"), "order-1");
        assert_eq!(display_key(&[0, 1]), "0x0001");
    }
}
