//! The binary encoding of everything openraft hands to arbor to store or send:
//! raft log entries (in RocksDB) and the raft RPCs between replicas
//! (`RaftPayload.data`).
//!
//! It is bincode (varint integers, little-endian) over the types' serde
//! derives, so a field added to [`Request`](crate::types::Request) (or to openraft's
//! types) is carried without code here; it is positional, so replicas of one
//! cluster must run the same build, and adding a field changes the format of
//! raft log entries already on disk (start from an empty data dir, or add a
//! migration). Decoding refuses trailing bytes and anything longer than
//! [`MAX_ENCODED`].

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest value decoded (a raft message or log entry).
pub const MAX_ENCODED: u64 = 1 << 30;

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_ENCODED)
}

/// Encodes `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    options().serialize(value)
}

/// Encodes `value` at the end of `out`.
pub fn encode_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), bincode::Error> {
    options().serialize_into(out, value)
}

/// Decodes a whole `bytes` as one `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Request, TypeConfig};
    use openraft::entry::RaftEntry;

    #[test]
    fn log_entries_round_trip() {
        let leader = openraft::impls::leader_id_adv::LeaderId {
            term: 3,
            node_id: 2,
        };
        let req = Request {
            command: (0..=255).collect(),
            time_ms: 1_700_000_000_000,
            genesis: false,
            verified_key: vec![7; 32],
        };
        let entry: openraft::alias::EntryOf<TypeConfig> =
            openraft::Entry::new_normal(openraft::LogId::new(leader, 42), req);
        let bytes = encode(&entry).unwrap();
        // The command's bytes are carried raw, not one by one or as hex.
        assert!(bytes.len() < 256 + 32 + 40, "{}", bytes.len());
        let back: openraft::alias::EntryOf<TypeConfig> = decode(&bytes).unwrap();
        assert_eq!(back, entry);

        let mut long = bytes.clone();
        long.push(0);
        assert!(decode::<openraft::alias::EntryOf<TypeConfig>>(&long).is_err());
        assert!(decode::<openraft::alias::EntryOf<TypeConfig>>(&bytes[..10]).is_err());
    }
}
