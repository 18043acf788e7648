//! The write path: admission (decode, authorize, the signature checked in a
//! batch — `admission.rs`) and proposal through raft, with the answer to a
//! resend. `Submit` on the leader comes here; followers forward it first.

use arbor_proto::pb;
use arbor_proto::rules;
use openraft::async_runtime::WatchReceiver;
use prost::Message;
use tonic::Status;

use super::client_api::{now_ms, ArborApi, Served};
use super::routing;
use super::status;
use crate::storage::{CheckedView, ReadError};
use crate::types::{Request as RaftRequest, Response as RaftResponse};

/// How long a refusal waits for the applied state to catch up with the log
/// before it is judged again (`ArborApi::caught_up_after_lag`).
const APPLY_LAG_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why admission did not admit a command.
enum Admit {
    Refused(rules::Refusal),
    /// Reading the state it is judged against failed (nothing decided).
    Storage(ReadError),
}

impl From<rules::Refusal> for Admit {
    fn from(r: rules::Refusal) -> Admit {
        Admit::Refused(r)
    }
}

impl ArborApi {
    /// Proposes a command on this (leader) replica and waits for its outcome.
    /// `Moved` if leadership moved before the command was committed here:
    /// the caller routes it again (a resend is safe, the command id
    /// deduplicates it).
    pub(super) async fn propose(&self, env: &pb::SignedCommand) -> Result<pb::SubmitReply, Served> {
        let bytes = env.encode_to_vec();
        let slot = self.admission.reserve()?;
        let mut admitted = self.admit(&bytes).await;
        drop(slot);
        // Admission reads this replica's applied state. A leader new in its
        // term may not have applied entries an earlier leader acknowledged
        // (an enrolment, a key rotation): a refusal read from such a lag is
        // judged again once everything in this leader's log is applied.
        if matches!(admitted, Err(Admit::Refused(_))) && self.caught_up_after_lag().await {
            let slot = self.admission.reserve()?;
            admitted = self.admit(&bytes).await;
            drop(slot);
        }
        let key = match admitted {
            Ok(key) => key,
            // A resend of an applied command gets its original outcome even
            // if admission now refuses it (the signer's key changed since).
            // Looked up only on refusal: admitted resends are answered by the
            // state machine's own deduplication, off the hot path's reads.
            Err(Admit::Storage(e)) => {
                return Err(status::unavailable(
                    format!("this replica cannot read its state to admit the command: {e}"),
                    None,
                )
                .into())
            }
            Err(Admit::Refused(refusal)) => match self.applied_before(env)? {
                Some(reply) => return Ok(reply),
                None => {
                    self.metrics.refused(refusal.kind());
                    return Err(status::refusal(&refusal).into());
                }
            },
        };
        let req = RaftRequest {
            command: bytes,
            time_ms: now_ms(),
            genesis: false,
            verified_key: key.unwrap_or_default(),
        };
        // A leader cut off from its quorum cannot commit; the others elect a
        // new leader, where the client's resend is decided (deduplicated).
        let written = tokio::select! {
            w = self.raft.client_write(req) => w,
            since = routing::quorum_lost(&self.raft) => {
                self.metrics.proposed("failed");
                return Err(status::unavailable(
                    format!(
                        "not committed yet: this leader has not heard from a quorum of replicas \
                         for {} ms; resend the same command on another replica (safe: it is \
                         applied at most once)",
                        since.as_millis()
                    ),
                    None,
                )
                .into())
            }
        };
        let resp = match written {
            Ok(r) => {
                self.metrics.proposed("committed");
                r.data
            }
            // Leadership moved while proposing: the new leader decides.
            Err(e) if e.forward_to_leader().is_some() => {
                self.metrics.proposed("forwarded");
                return Err(Served::Moved);
            }
            Err(e) => {
                self.metrics.proposed("failed");
                return Err(status::unavailable(
                    format!("command not committed: raft is not running on this replica: {e}"),
                    None,
                )
                .into());
            }
        };
        match resp {
            RaftResponse::Appended { seq, outcome, hash } => Ok(reply(seq, outcome, hash, false)),
            RaftResponse::Duplicate { seq, outcome, hash } => Ok(reply(seq, outcome, hash, true)),
            RaftResponse::Refused { code, message } => Err(status::refused(&code, &message).into()),
            RaftResponse::Noop => Err(status::internal("state machine returned no outcome").into()),
        }
    }

    /// Admission (`rules::decode`, `rules::authorize`, then the signature, checked in a batch):
    /// the key the signature was verified against (`None` for genesis).
    async fn admit(&self, bytes: &[u8]) -> Result<Option<Vec<u8>>, Admit> {
        let admitted = rules::decode(bytes)?;
        let view = CheckedView::new(&self.reader);
        let authorized = rules::authorize(&view, &admitted, false);
        view.finish().map_err(Admit::Storage)?;
        let Some(party) = authorized? else {
            return Ok(None);
        };
        let key = party.public_key.clone();
        let cluster_id = self
            .admission
            .cluster_id(|| self.reader.config().ok().flatten().map(|c| c.cluster_id))
            .ok_or(rules::Refusal::NoGenesis)?;
        self.admission
            .check_signature(admitted, party, cluster_id)
            .await?;
        Ok(Some(key))
    }

    /// Whether this replica's applied state lagged its log and has caught
    /// up now: waits (at most [`APPLY_LAG_WAIT`]) until every entry in the log
    /// when called is applied. `false` when nothing lagged (nothing to judge
    /// again) or the wait ran out (the first verdict stands).
    async fn caught_up_after_lag(&self) -> bool {
        let (applied, last) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            (
                m.last_applied.as_ref().map_or(0, |l| l.index()),
                m.last_log_index.unwrap_or(0),
            )
        };
        if applied >= last {
            return false;
        }
        self.raft
            .wait(Some(APPLY_LAG_WAIT))
            .applied_index_at_least(Some(last), "admission: apply what the log holds")
            .await
            .is_ok()
    }

    /// The original reply if this exact command is already in the ledger.
    fn applied_before(&self, env: &pb::SignedCommand) -> Result<Option<pb::SubmitReply>, Status> {
        let id = arbor_proto::ledger::command_id(&env.signer, &env.command);
        let Some(seq) = self.reader.command_seq(&id).map_err(status::internal)? else {
            return Ok(None);
        };
        let Some(e) = self.reader.entry(seq).map_err(status::internal)? else {
            return Ok(None);
        };
        Ok(Some(pb::SubmitReply {
            owner: rejection_owner(&e.code, &e.message),
            seq,
            outcome: Some(pb::Outcome {
                accepted: e.accepted,
                code: e.code.clone(),
                message: e.message.clone(),
            }),
            entry_hash: e.hash.to_vec(),
            duplicate: true,
        }))
    }
}

/// The reply to a committed command, from the state machine's answer (moved, not copied).
fn reply(
    seq: u64,
    outcome: crate::types::Outcome,
    hash: [u8; 32],
    duplicate: bool,
) -> pb::SubmitReply {
    pb::SubmitReply {
        owner: rejection_owner(&outcome.code, &outcome.message),
        seq,
        outcome: Some(pb::Outcome {
            accepted: outcome.accepted,
            code: outcome.code,
            message: outcome.message,
        }),
        entry_hash: hash.to_vec(),
        duplicate,
    }
}

/// The owner an `already_owned` rejection names. The rules word it as
/// "order ID is owned by OWNER (since entry N)" (`rules::decide::claims`),
/// and that message is part of the hashed ledger entry, so the wording is
/// fixed; party ids hold no spaces.
pub(super) fn rejection_owner(code: &str, message: &str) -> String {
    if code != rules::Code::AlreadyOwned.as_str() {
        return String::new();
    }
    message
        .split_once(" is owned by ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::rejection_owner;

    #[test]
    fn owner_of_an_already_owned_rejection() {
        assert_eq!(
            rejection_owner(
                "already_owned",
                "order o-1 is owned by store-7 (since entry 12)"
            ),
            "store-7"
        );
        assert_eq!(
            rejection_owner("already_owned", "order o-1 is owned by"),
            ""
        );
        assert_eq!(rejection_owner("already_owned", "something else"), "");
        assert_eq!(
            rejection_owner("not_open", "order o-1 is owned by store-7 (since entry 12)"),
            ""
        );
        assert_eq!(rejection_owner("accepted", ""), "");
    }
}
