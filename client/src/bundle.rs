//! Building a dispute bundle (docs/ledger-format.md §12) from a cluster:
//! [`Client::dispute_bundle`]. Everything the cluster serves is checked on
//! the way (map proof, inclusion paths, the order's links), but the result
//! is only as trustworthy as [`verify_bundle`] finds it, offline.

use std::collections::BTreeSet;

use arbor_proto::audit::bundle::{decode_bundle, encode_bundle};
pub use arbor_proto::audit::bundle::{
    pack, unpack, verify_bundle, verify_unpacked, BundleError, BundleReport, CheckpointKeys,
    Unpacked, BUNDLE_MAGIC,
};
use arbor_proto::ledger::checkpoint::Checkpoint;
use arbor_proto::ledger::map::{self, MapProof};
use arbor_proto::ledger::Entry;
use arbor_proto::pb;
use arbor_proto::pb::command::Body;
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
    /// cosigned checkpoint naming that epoch.
    pub async fn get_order_map_proof(
        &self,
        order_id: &str,
    ) -> Result<pb::OrderMapProofReply, ClientError> {
        let req = pb::OrderMapProofRequest {
            order_id: order_id.to_string(),
        };
        self.unary(
            &req,
            |mut c, r| async move { c.get_order_map_proof(r).await },
        )
        .await
    }

    /// Builds the dispute bundle of `order_id`: the checkpoint, the map
    /// proof, the order's entries from registration to the head the map
    /// names, and the supporting entries (genesis; the enrolments and key
    /// rotations of the order's signers and of the replicas that signed the
    /// checkpoint; the profile in force of each node that took the order on),
    /// each with its inclusion path.
    pub async fn dispute_bundle(
        &self,
        order_id: &str,
    ) -> Result<pb::DisputeBundle, BundleFetchError> {
        let reply = self.get_order_map_proof(order_id).await?;
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
        let mut decoded: Vec<(Entry, String, Option<Body>)> = Vec::new();
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
            let body = pb::Command::decode(env.command.as_slice())
                .map_err(|m| bad(format!("entry {seq}: {m}")))?
                .body;
            let prev = e.order_prev_seq;
            entries.push((p.entry.unwrap_or_default(), p.path));
            decoded.push((e, env.signer, body));
            if prev == 0 {
                break;
            }
            if prev >= seq {
                return Err(bad(format!("entry {seq} links forward to entry {prev}")));
            }
            seq = prev;
        }
        entries.reverse();

        // Supporting entries.
        let mut want: BTreeSet<u64> = BTreeSet::from([0]);
        let mut parties: BTreeSet<String> = decoded.iter().map(|(_, s, _)| s.clone()).collect();
        parties.extend(note_signers(&cpr.note));
        for name in &parties {
            let Ok(p) = self.get_party(name).await else {
                continue;
            };
            want.insert(p.enrolled_seq);
            want.insert(p.key_seq);
        }
        let nodes: BTreeSet<String> = decoded
            .iter()
            .filter(|(e, _, b)| {
                e.accepted && matches!(b, Some(Body::ClaimOrder(_) | Body::AcceptHandoff(_)))
            })
            .map(|(_, s, _)| s.clone())
            .collect();
        for node in &nodes {
            if let Ok(p) = self.get_profile(node).await {
                want.insert(p.published_seq);
            }
        }
        let mut supporting = Vec::new();
        for seq in want.into_iter().filter(|s| *s < cp.size) {
            let p = self.get_inclusion_proof(seq, cp.size).await?;
            verify_inclusion(&p, seq, cp.size, &cp.root).map_err(|e| bad(e.to_string()))?;
            supporting.push((p.entry.unwrap_or_default(), p.path));
        }
        Ok(pack(&Unpacked {
            order_id: order_id.to_string(),
            checkpoint: cpr.note,
            map_proof: Some(proof_pb),
            entries,
            supporting,
        }))
    }
}
