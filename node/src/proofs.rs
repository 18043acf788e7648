//! Merkle proofs and checkpoints over the applied ledger.
//!
//! Leaf i is `leaf_hash(entry_i.hash)`. Entries never change once applied,
//! so the leaf hashes are cached in memory (32 bytes per entry) and extended
//! from storage on demand. Roots and proofs are computed from the cache
//! (O(n) hashing for a root; a persisted tree of subtree roots is the next
//! step when ledgers grow past a few million entries).

use std::sync::{Arc, RwLock};

use arbor_proto::ledger::merkle::{self, Hash};
use arbor_proto::pb;
use prost::Message;

use crate::storage::LedgerReader;

#[derive(Clone)]
pub struct LeafCache {
    reader: LedgerReader,
    leaves: Arc<RwLock<Vec<Hash>>>,
}

impl LeafCache {
    pub fn new(reader: LedgerReader) -> Self {
        LeafCache {
            reader,
            leaves: Arc::new(RwLock::new(Vec::new())),
        }
    }

    /// Makes sure the first `size` leaves are cached; fails if the ledger is shorter.
    fn fill(&self, size: u64) -> Result<(), String> {
        let have = self.leaves.read().expect("leaf cache poisoned").len() as u64;
        if have >= size {
            return Ok(());
        }
        let mut leaves = self.leaves.write().expect("leaf cache poisoned");
        while (leaves.len() as u64) < size {
            let from = leaves.len() as u64;
            let batch = self.reader.entries(from, 4096).map_err(|e| e.to_string())?;
            if batch.is_empty() {
                return Err(format!(
                    "ledger has {from} entries, fewer than the {size} asked for"
                ));
            }
            for e in batch {
                if e.seq != leaves.len() as u64 {
                    return Err(format!(
                        "ledger entry {} found where {} was expected",
                        e.seq,
                        leaves.len()
                    ));
                }
                leaves.push(merkle::leaf_hash(&e.hash));
            }
        }
        Ok(())
    }

    pub fn root(&self, size: u64) -> Result<Hash, String> {
        self.fill(size)?;
        Ok(merkle::root(
            self.leaves.read().expect("leaf cache poisoned").as_slice(),
            size,
        ))
    }

    pub fn inclusion(&self, seq: u64, size: u64) -> Result<Vec<Hash>, String> {
        self.fill(size)?;
        merkle::inclusion_proof(
            self.leaves.read().expect("leaf cache poisoned").as_slice(),
            seq,
            size,
        )
    }

    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, String> {
        self.fill(new)?;
        merkle::consistency_proof(
            self.leaves.read().expect("leaf cache poisoned").as_slice(),
            old,
            new,
        )
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
