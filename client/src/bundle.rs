//! Building a dispute bundle (docs/ledger-format.md §12) from a cluster:
//! [`Client::dispute_bundle`]. Everything the cluster serves is checked on
//! the way (map proof, inclusion paths, the order's links), but the result
//! is only as trustworthy as [`verify_bundle`] finds it, offline.

use std::collections::BTreeSet;

use arbor_proto::audit::bundle::{decode_bundle, encode_bundle};
pub use arbor_proto::audit::bundle::{
    pack, unpack, verify_bundle, verify_unpacked, BundleError, BundleReport, CheckpointKeys,
    PartyUnpacked, Unpacked, BUNDLE_MAGIC,
};
use arbor_proto::ledger::checkpoint::Checkpoint;
use arbor_proto::ledger::map::{self, MapProof};
use arbor_proto::pb;
use prost::Message;

use crate::audit::{note_signers, verify_inclusion};
use crate::client::Client;
use crate::error::ClientError;

/// Why a bundle could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BundleFetchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The order is not in the order map at its newest epoch.
    #[error("{0}")]
    NotFound(String),
    /// What the cluster served does not add up.
    #[error("{0}")]
    Inconsistent(String),
}

fn bad(m: impl Into<String>) -> BundleFetchError {
    BundleFetchError::Inconsistent(m.into())
}

/// Reads a bundle file's bytes (the inverse of [`bundle_bytes`]).
pub fn read_bundle(bytes: &[u8]) -> Result<pb::DisputeBundle, BundleError> {
    decode_bundle(bytes)
}

/// The file bytes of a bundle.
pub fn bundle_bytes(b: &pb::DisputeBundle) -> Vec<u8> {
    encode_bundle(b)
}

impl Client {
    /// An order's proof in the order map at the newest map epoch, with a
    /// cosigned checkpoint naming that epoch, and the map proofs and party
    /// entries of `parties` at the same epoch.
    pub async fn get_order_map_proof(
        &self,
        order_id: &str,
        parties: &[String],
    ) -> Result<pb::OrderMapProofReply, ClientError> {
        let req = pb::OrderMapProofRequest {
            order_id: order_id.to_string(),
            parties: parties.to_vec(),
        };
        self.unary(
            &req,
            |mut c, r| async move { c.get_order_map_proof(r).await },
        )
        .await
    }

    /// Builds the dispute bundle of `order_id`: the checkpoint, the map
    /// proof, the order's entries from registration to the head the map
    /// names, the complete key and profile history below the map size of
    /// every party the history needs (its signers, the nodes that took the
    /// order on, the replicas that signed the checkpoint) with their map
    /// proofs, and the supporting entries (genesis; replica key changes at
    /// or after the map size), each with its inclusion path.
    pub async fn dispute_bundle(
        &self,
        order_id: &str,
    ) -> Result<pb::DisputeBundle, BundleFetchError> {
        // The parties a history needs are known once it is read: ask again
        // (at the then newest epoch) until the reply covers them all.
        let mut asked: BTreeSet<String> = BTreeSet::new();
        for _ in 0..4 {
            let (b, needed) = self.bundle_attempt(order_id, &asked).await?;
            if needed.is_subset(&asked) {
                return Ok(b);
            }
            asked.extend(needed);
        }
        Err(bad(
            "the parties the order's history needs kept changing while the bundle was built",
        ))
    }

    async fn bundle_attempt(
        &self,
        order_id: &str,
        asked: &BTreeSet<String>,
    ) -> Result<(pb::DisputeBundle, BTreeSet<String>), BundleFetchError> {
        let asked_list: Vec<String> = asked.iter().cloned().collect();
        let reply = self.get_order_map_proof(order_id, &asked_list).await?;
        let cpr = reply
            .checkpoint
            .ok_or_else(|| bad("the map proof reply holds no checkpoint"))?;
        let split = cpr
            .note
            .find("\n\n")
            .ok_or_else(|| bad("the checkpoint note has no blank line"))?;
        let cp = Checkpoint::parse_body(&cpr.note[..split + 1]).map_err(bad)?;
        let m = cp
            .map
            .ok_or_else(|| bad("the checkpoint has no map line"))?;
        if m.size != reply.map_size || m.root.as_slice() != reply.map_root.as_slice() {
            return Err(bad(
                "the reply's map size or root differs from its checkpoint's map line",
            ));
        }
        let proof_pb = reply
            .proof
            .ok_or_else(|| bad("the map proof reply holds no proof"))?;
        let proof = MapProof::from_pb(&proof_pb).map_err(bad)?;
        let head = map::verify(&proof, &map::order_key(order_id), &m.root)
            .map_err(bad)?
            .ok_or_else(|| {
                BundleFetchError::NotFound(format!(
                    "order {order_id} is not in the order map at size {} (the map covers entries below it)",
                    m.size
                ))
            })?;

        // The history, head first, then reversed.
        let mut entries = Vec::new();
        let mut needed: BTreeSet<String> = note_signers(&cpr.note).into_iter().collect();
        let mut seq = head.seq;
        loop {
            let p = self.get_inclusion_proof(seq, cp.size).await?;
            let e = verify_inclusion(&p, seq, cp.size, &cp.root).map_err(|e| bad(e.to_string()))?;
            if e.order_id != order_id {
                return Err(bad(format!(
                    "entry {seq} belongs to order {:?}, not {order_id}",
                    e.order_id
                )));
            }
            if entries.is_empty() && e.hash != head.hash {
                return Err(bad(format!(
                    "entry {seq} is not the head the order map names"
                )));
            }
            let env = pb::SignedCommand::decode(e.command.as_slice())
                .map_err(|m| bad(format!("entry {seq}: {m}")))?;
            // The signer; a lease's node is the signer of its claim or
            // accepted handoff.
            needed.insert(env.signer.clone());
            let prev = e.order_prev_seq;
            entries.push((p.entry.unwrap_or_default(), p.path));
            if prev == 0 {
                break;
            }
            if prev >= seq {
                return Err(bad(format!("entry {seq} links forward to entry {prev}")));
            }
            seq = prev;
        }
        entries.reverse();

        // Each party's history below the map size, as the reply lists it.
        let mut parties = Vec::new();
        for pp in &reply.parties {
            let mut list = Vec::new();
            for &seq in pp.seqs.iter().filter(|s| **s > 0) {
                if seq >= m.size {
                    return Err(bad(format!(
                        "party {}: entry {seq} is listed below the map size {}",
                        pp.party_id, m.size
                    )));
                }
                let p = self.get_inclusion_proof(seq, cp.size).await?;
                verify_inclusion(&p, seq, cp.size, &cp.root).map_err(|e| bad(e.to_string()))?;
                list.push((p.entry.unwrap_or_default(), p.path));
            }
            parties.push(PartyUnpacked {
                party_id: pp.party_id.clone(),
                map_proof: pp.proof.clone(),
                entries: list,
            });
        }
        parties.sort_by(|a, b| a.party_id.cmp(&b.party_id));

        // Supporting entries: genesis, and replica key changes the map does
        // not cover yet (for a check against the keys the bundle carries).
        let mut want: BTreeSet<u64> = BTreeSet::from([0]);
        for name in note_signers(&cpr.note) {
            if let Ok(p) = self.get_party(&name).await {
                if p.key_seq >= m.size && p.key_seq < cp.size {
                    want.insert(p.key_seq);
                }
            }
        }
        let mut supporting = Vec::new();
        for seq in want {
            let p = self.get_inclusion_proof(seq, cp.size).await?;
            verify_inclusion(&p, seq, cp.size, &cp.root).map_err(|e| bad(e.to_string()))?;
            supporting.push((p.entry.unwrap_or_default(), p.path));
        }
        let bundle = pack(&Unpacked {
            order_id: order_id.to_string(),
            checkpoint: cpr.note,
            map_proof: Some(proof_pb),
            entries,
            supporting,
            parties,
        });
        Ok((bundle, needed))
    }
}
