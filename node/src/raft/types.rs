//! The openraft type configuration and the raft log's application payload.

use arbor_proto::rules::RefusalKind;
use serde::{Deserialize, Serialize};

/// One raft log payload: a signed command as received, stamped by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The exact `SignedCommand` bytes.
    #[serde(with = "super::codec::bytes")]
    pub command: Vec<u8>,
    /// The leader's wall clock when it proposed the command (ms since the Unix epoch).
    pub time_ms: u64,
    /// Set only on the bootstrap replica's genesis proposal.
    #[serde(default)]
    pub genesis: bool,
    /// The signer's public key the leader verified the signature against at
    /// admission (empty for genesis). Applying refuses the command if the
    /// signer's key in force differs by then (rotated or revoked meanwhile).
    #[serde(with = "super::codec::bytes")]
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

openraft::declare_raft_types!(
    /// arbor's openraft types: u64 node ids, `BasicNode { addr }` (the gRPC address).
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachineStore>;

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
/// [`super::codec`]; plain bytes there are best carried with `codec::bytes`).
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
