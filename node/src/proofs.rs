//! Merkle proofs and checkpoints over the applied ledger.
//!
//! Leaf i is `leaf_hash(entry_i.hash)`. The state machine persists the root
//! of every complete subtree as it applies (`storage/merkle_tree.rs`), so a
//! root, an inclusion proof and a consistency proof are O(log n) RocksDB
//! reads and hashes, and nothing of the tree is held in memory.

use arbor_proto::ledger::merkle::Hash;
use arbor_proto::pb;
use prost::Message;

use crate::storage::LedgerReader;

/// Roots and proofs of the replica's ledger. Cheap to clone.
#[derive(Clone)]
pub struct MerkleProofs {
    reader: LedgerReader,
}

impl MerkleProofs {
    pub fn new(reader: LedgerReader) -> Self {
        MerkleProofs { reader }
    }

    pub fn root(&self, size: u64) -> Result<Hash, String> {
        self.reader.merkle_root(size)
    }

    pub fn inclusion(&self, seq: u64, size: u64) -> Result<Vec<Hash>, String> {
        self.reader.inclusion_proof(seq, size)
    }

    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, String> {
        self.reader.consistency_proof(old, new)
    }

    /// The checkpoint origin: `arbor/<cluster id of the genesis entry>`.
    pub fn origin(&self) -> Result<String, String> {
        let genesis = self
            .reader
            .entry(0)
            .map_err(|e| e.to_string())?
            .ok_or("ledger has no genesis entry yet")?;
        let env =
            pb::SignedCommand::decode(genesis.command.as_slice()).map_err(|e| e.to_string())?;
        let cmd = pb::Command::decode(env.command.as_slice()).map_err(|e| e.to_string())?;
        match cmd.body {
            Some(pb::command::Body::Genesis(g)) => Ok(format!("arbor/{}", g.cluster_id)),
            _ => Err("entry 0 is not a genesis entry".into()),
        }
    }
}
