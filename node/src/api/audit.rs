//! Audit endpoints: quorum-cosigned checkpoints and Merkle proofs.
//!
//! The leader builds a checkpoint of its applied ledger, signs it with its
//! replica identity and asks every other voter to cosign, over the peer port
//! (only members may ask). A cosigner signs only if its own chain has the
//! same root at that size and the checkpoint's time is within
//! [`COSIGN_CLOCK_TOLERANCE_MS`] of its own clock, so a quorum of signatures
//! means a quorum of replicas hold that exact ledger at about that time.
//!
//! Once the ledger has a map epoch, the checkpoint also names the order map
//! root at the newest epoch `M <= size` (its `map` line); a cosigner signs
//! only if its own root at `M` is the same. `GetOrderMapProof` serves an
//! order's map proof at the newest epoch, read under one RocksDB snapshot,
//! with a checkpoint at the size of that snapshot.

use std::collections::BTreeSet;
use std::time::Duration;

use arbor_proto::ledger::checkpoint::{verify_note, Checkpoint, MapCommitment, NoteKey};
use arbor_proto::ledger::map;
use arbor_proto::pb;
use openraft::async_runtime::WatchReceiver;
use tonic::{Request, Status};

use super::client_api::{now_ms, ArborApi};
use super::status;

/// The most parties one `GetOrderMapProof` serves.
pub const MAX_MAP_PROOF_PARTIES: usize = 64;

/// How far a checkpoint's time may be from a cosigner's clock.
pub const COSIGN_CLOCK_TOLERANCE_MS: u64 = 30_000;

impl ArborApi {
    fn size(&self) -> Result<u64, Status> {
        let head = self.reader.head().map_err(status::internal)?;
        head.map(|h| h.seq + 1)
            .ok_or_else(|| status::failed_precondition("ledger has no entries yet"))
    }

    /// The map line of a checkpoint of `size` entries, from this replica's
    /// own order map.
    fn map_commitment(&self, size: u64) -> Result<Option<MapCommitment>, Status> {
        let m = map::epoch_at(size);
        if m == 0 {
            return Ok(None);
        }
        let root = self
            .reader
            .map_root(m)
            .map_err(status::internal)?
            .ok_or_else(|| {
                status::failed_precondition(format!(
                    "replica {} has no order map root at size {m} (its database predates the order map)",
                    self.id
                ))
            })?;
        Ok(Some(MapCommitment {
            size: m,
            root,
            version: map::MAP_VERSION,
        }))
    }

    /// Builds and cosigns a checkpoint of the current ledger (leader only).
    pub(super) async fn checkpoint(&self) -> Result<pb::CheckpointReply, Status> {
        let size = self.size()?;
        self.checkpoint_at(size).await
    }

    /// An order's map proof at the newest map epoch and a cosigned
    /// checkpoint naming it (leader only).
    pub(super) async fn order_map_proof(
        &self,
        req: &pb::OrderMapProofRequest,
    ) -> Result<pb::OrderMapProofReply, Status> {
        if req.parties.len() > MAX_MAP_PROOF_PARTIES {
            return Err(status::invalid(format!(
                "{} parties asked for, at most {MAX_MAP_PROOF_PARTIES}",
                req.parties.len()
            )));
        }
        let snap = self
            .reader
            .order_map_proof(&req.order_id, &req.parties)
            .map_err(status::internal)?;
        if snap.map_size == 0 {
            return Err(status::failed_precondition(format!(
                "the ledger has {} entries: the order map's first epoch is at {}",
                snap.size,
                map::MAP_EPOCH
            )));
        }
        let checkpoint = self.checkpoint_at(snap.size).await?;
        Ok(pb::OrderMapProofReply {
            checkpoint: Some(checkpoint),
            map_size: snap.map_size,
            map_root: snap.map_root.to_vec(),
            proof: Some(snap.proof.to_pb()),
            parties: snap
                .parties
                .iter()
                .map(|p| pb::PartyMapProof {
                    party_id: p.party_id.clone(),
                    proof: Some(p.proof.to_pb()),
                    seqs: p.seqs.clone(),
                })
                .collect(),
        })
    }

    /// Builds and cosigns a checkpoint of the first `size` entries.
    async fn checkpoint_at(&self, size: u64) -> Result<pb::CheckpointReply, Status> {
        let root = self.leaves.root(size).map_err(status::internal)?;
        let origin = self.leaves.origin().map_err(status::internal)?;
        let map = self.map_commitment(size)?;
        let cp = Checkpoint {
            origin: origin.clone(),
            size,
            root,
            time_ms: now_ms(),
            map,
        };
        let mut lines = vec![cp.sign_line(&self.identity.name, &self.identity.key)];
        let mut signed_by = vec![self.identity.name.clone()];

        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let quorum = voters.len() / 2 + 1;
        let mut calls = Vec::new();
        for id in voters.iter().filter(|id| **id != self.id) {
            let Some(node) = membership.get_node(id) else {
                continue;
            };
            let peers = self.peers.clone();
            let (peer_id, peer_addr) = (*id, node.peer_addr.clone());
            let req = pb::CosignRequest {
                origin: origin.clone(),
                size,
                root: root.to_vec(),
                time_ms: cp.time_ms,
                map_size: map.map_or(0, |m| m.size),
                map_root: map.map_or(Vec::new(), |m| m.root.to_vec()),
            };
            calls.push(tokio::spawn(async move {
                let mut c = peers.raft(peer_id, &peer_addr).map_err(status::internal)?;
                let mut r = Request::new(req);
                r.set_timeout(Duration::from_secs(5));
                c.cosign_checkpoint(r).await.map(|r| r.into_inner())
            }));
        }
        let mut refusals = Vec::new();
        for c in calls {
            match c.await {
                Ok(Ok(reply)) => {
                    signed_by.push(reply.name);
                    lines.push(reply.signature_line);
                }
                Ok(Err(e)) => refusals.push(e.message().to_string()),
                Err(e) => refusals.push(e.to_string()),
            }
        }
        if signed_by.len() < quorum {
            return Err(status::unavailable(
                format!(
                    "only {} of {} replicas cosigned the checkpoint at size {size} ({} needed): {}",
                    signed_by.len(),
                    voters.len(),
                    quorum,
                    refusals.join("; ")
                ),
                None,
            ));
        }
        // Count only signatures an auditor can check: by replica keys the
        // ledger enrols and has not revoked (as `arbor audit verify` does).
        let note = cp.note(&lines);
        let mut keys = Vec::new();
        for name in &signed_by {
            let Some(p) = self.reader.party(name).map_err(status::internal)? else {
                continue;
            };
            if p.role != pb::Role::Replica as i32 || p.revoked {
                continue;
            }
            if let Ok(public_key) = <[u8; 32]>::try_from(p.public_key.as_slice()) {
                keys.push(NoteKey {
                    name: name.clone(),
                    public_key,
                });
            }
        }
        if keys.len() < quorum {
            return Err(status::failed_precondition(format!(
                "only {} of the replicas that cosigned the checkpoint have an identity key enrolled in the ledger ({quorum} needed): enrol each replica's identity key (docs/operations.md)",
                keys.len()
            )));
        }
        let verified = verify_note(&note, &keys, quorum).map_err(|e| {
            status::unavailable(
                format!(
                    "the checkpoint at size {size} is not cosigned by a quorum of replica keys enrolled in the ledger ({e}); enrol each replica's identity key (docs/operations.md)"
                ),
                None,
            )
        })?;
        Ok(pb::CheckpointReply {
            note,
            size,
            root: root.to_vec(),
            signed_by: verified.signed_by,
        })
    }

    /// Signs a checkpoint if this replica's own chain agrees with it and its
    /// time is plausible by this replica's clock. Called by the peer service
    /// once the caller is known to be a member.
    pub(crate) async fn cosign(&self, req: pb::CosignRequest) -> Result<pb::CosignReply, Status> {
        let now = now_ms();
        if req.time_ms.abs_diff(now) > COSIGN_CLOCK_TOLERANCE_MS {
            return Err(status::failed_precondition(format!(
                "checkpoint time {} ms is more than {} ms from replica {}'s clock ({now} ms): refusing to cosign",
                req.time_ms, COSIGN_CLOCK_TOLERANCE_MS, self.id
            )));
        }
        // The leader may be slightly ahead: wait (briefly) until we have applied that far.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let have = self
                .reader
                .head()
                .map_err(status::internal)?
                .map(|h| h.seq + 1)
                .unwrap_or(0);
            if have >= req.size {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(status::failed_precondition(format!(
                    "replica {} has {have} entries, fewer than the checkpoint's {}",
                    self.id, req.size
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let origin = self.leaves.origin().map_err(status::internal)?;
        if origin != req.origin {
            return Err(status::failed_precondition(format!(
                "checkpoint origin {:?} is not this ledger's {origin:?}",
                req.origin
            )));
        }
        let root = self.leaves.root(req.size).map_err(status::internal)?;
        if root.as_slice() != req.root.as_slice() {
            return Err(status::failed_precondition(format!(
                "replica {} has a different root at size {}: refusing to cosign",
                self.id, req.size
            )));
        }
        let map = self.map_commitment(req.size)?;
        let (map_size, map_root) = map.map_or((0, Vec::new()), |m| (m.size, m.root.to_vec()));
        if req.map_size != map_size || req.map_root != map_root {
            return Err(status::failed_precondition(format!(
                "replica {} has order map root {} at size {map_size}, the checkpoint names {} at size {}: refusing to cosign",
                self.id,
                hex::encode(&map_root),
                hex::encode(&req.map_root),
                req.map_size
            )));
        }
        let cp = Checkpoint {
            origin,
            size: req.size,
            root,
            time_ms: req.time_ms,
            map,
        };
        Ok(pb::CosignReply {
            name: self.identity.name.clone(),
            signature_line: cp.sign_line(&self.identity.name, &self.identity.key),
        })
    }

    pub(super) fn inclusion(
        &self,
        req: &pb::InclusionProofRequest,
    ) -> Result<pb::InclusionProofReply, Status> {
        let current = self.size()?;
        let size = if req.tree_size == 0 {
            current
        } else {
            req.tree_size
        };
        if size > current {
            return Err(status::invalid(format!(
                "tree size {size} is larger than the ledger ({current})"
            )));
        }
        if req.seq >= size {
            return Err(status::invalid(format!(
                "entry {} is not in a tree of size {size}",
                req.seq
            )));
        }
        let entry = self
            .reader
            .entry(req.seq)
            .map_err(status::internal)?
            .ok_or_else(|| status::not_found(format!("entry {} not found", req.seq)))?;
        let path = self
            .leaves
            .inclusion(req.seq, size)
            .map_err(status::internal)?;
        Ok(pb::InclusionProofReply {
            entry: Some(entry.to_pb()),
            tree_size: size,
            path: path.iter().map(|h| h.to_vec()).collect(),
        })
    }

    pub(super) fn consistency(
        &self,
        req: &pb::ConsistencyProofRequest,
    ) -> Result<pb::ConsistencyProofReply, Status> {
        let current = self.size()?;
        let new = if req.new_size == 0 {
            current
        } else {
            req.new_size
        };
        if new > current || req.old_size > new {
            return Err(status::invalid(format!(
                "need old size <= new size <= {current} (got {} and {new})",
                req.old_size
            )));
        }
        let path = self
            .leaves
            .consistency(req.old_size, new)
            .map_err(status::internal)?;
        Ok(pb::ConsistencyProofReply {
            old_size: req.old_size,
            new_size: new,
            path: path.iter().map(|h| h.to_vec()).collect(),
        })
    }
}
