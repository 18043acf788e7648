//! The openraft type configuration and the raft log's application payload:
//! what every raft log entry carries and what applying it answers. Imports
//! nothing else from the crate; `storage`, `raft::network` and `api` import
//! it (the `Raft` handle itself is declared at the crate root).

use arbor_proto::rules::RefusalKind;
use serde::{Deserialize, Serialize};

/// One raft log payload: a signed command as received, stamped by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The exact `SignedCommand` bytes.
    #[serde(with = "bytes")]
    pub command: Vec<u8>,
    /// The leader's wall clock when it proposed the command (ms since the Unix epoch).
    pub time_ms: u64,
    /// Set only on the bootstrap replica's genesis proposal.
    #[serde(default)]
    pub genesis: bool,
    /// The signer's public key the leader verified the signature against at
    /// admission (empty for genesis). Applying refuses the command if the
    /// signer's key in force differs by then (rotated or revoked meanwhile).
    #[serde(with = "bytes")]
    pub verified_key: Vec<u8>,
}

/// The outcome recorded in an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub accepted: bool,
    pub code: String,
    pub message: String,
}

/// What applying one raft log entry produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blank or membership entry: nothing for the ledger.
    #[default]
    Noop,
    /// A new ledger entry was appended.
    Appended {
        seq: u64,
        outcome: Outcome,
        hash: [u8; 32],
    },
    /// A resend of a command already in the ledger at `seq`: its original outcome.
    Duplicate {
        seq: u64,
        outcome: Outcome,
        hash: [u8; 32],
    },
    /// Refused by the deterministic checks at apply time: nothing appended.
    Refused { code: RefusalKind, message: String },
}

/// A member as the membership records it: where clients and where peers reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Client API address (`host:port`): what leader hints name.
    pub addr: String,
    /// Peer address (`host:port`, mutual TLS): raft traffic, cosigning, forwarding.
    pub peer_addr: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (peer {})", self.addr, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// arbor's openraft types: u64 node ids, [`Member`] nodes.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Member,
);

pub type NodeId = u64;

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command({} bytes, t={}{})",
            self.command.len(),
            self.time_ms,
            if self.genesis { ", genesis" } else { "" }
        )
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::Noop => write!(f, "noop"),
            Response::Appended { seq, outcome, .. } => write!(f, "appended {seq} {}", outcome.code),
            Response::Duplicate { seq, outcome, .. } => {
                write!(f, "duplicate of {seq} {}", outcome.code)
            }
            Response::Refused { code, .. } => write!(f, "refused {code}"),
        }
    }
}

/// Serde helper: bytes as a lowercase hex string, for fields meant to be
/// read by people in JSON (the raft log and raft RPCs are bincode, see
/// [`crate::raft::codec`]; plain bytes there are best carried with [`bytes`]).
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// Serde helper for `Vec<u8>` fields: one length and the raw bytes in bincode
/// (instead of one call per byte), a byte array in self-describing formats.
pub mod bytes {
    use std::fmt;

    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}
