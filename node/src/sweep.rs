//! The leader's lease sweep.
//!
//! A lapse is decided by the rules from the leader's time stamp on an entry
//! (docs/protocol.md). Without the sweep it is recorded only when some
//! command touches the order again; until then the old owner's capacity and
//! counters still count the order. Every `lapse-sweep-ms` the leader looks
//! for orders whose lease has run out and proposes a `RecordLapse` for each,
//! signed with its replica identity key (which must be enrolled in the
//! ledger, role replica, for the command to be admitted). The rules accept
//! it only if the lease has run out by the entry's time, so a sweep racing
//! another command on the same order is harmless (`not_lapsed`).
//!
//! It reads the state machine's lease index (orders under a lease by
//! deadline, `storage::leases`) up to the current time, so a tick costs in
//! proportion to the leases that ran out, not to the orders in the ledger.

use std::time::Duration;

use arbor_proto::ledger::sign_command;
use arbor_proto::pb;
use prost::Message;
use rand::RngCore;
use tracing::{debug, info, warn};

use crate::api::client_api::now_ms;
use crate::identity::ReplicaIdentity;
use crate::storage::LedgerReader;
use crate::types::{Request, Response};
use crate::Raft;

/// Orders recorded per tick at most.
const PER_TICK: usize = 256;

pub fn spawn(
    raft: Raft,
    reader: LedgerReader,
    identity: ReplicaIdentity,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !raft.is_leader() {
                continue;
            }
            if let Err(e) = sweep(&raft, &reader, &identity).await {
                debug!(error = %e, "lease sweep skipped");
            }
        }
    })
}

/// One pass: records the lapse of every order whose lease has run out.
async fn sweep(raft: &Raft, reader: &LedgerReader, id: &ReplicaIdentity) -> Result<(), String> {
    let me = reader.party(&id.name).map_err(|e| e.to_string())?;
    let public_key = id.key.verifying_key().to_bytes().to_vec();
    match me {
        Some(p)
            if p.role == pb::Role::Replica as i32 && !p.revoked && p.public_key == public_key => {}
        _ => return Err(format!("{} is not an enrolled replica key", id.name)),
    }
    let cluster_id = reader
        .config()
        .map_err(|e| e.to_string())?
        .map(|c| c.cluster_id)
        .ok_or("no genesis yet")?;
    let now = now_ms();
    let lapsed = reader
        .lapsed_leases(now, PER_TICK)
        .map_err(|e| e.to_string())?;
    for order in lapsed {
        let cmd = pb::Command {
            nonce: rand::rngs::OsRng.next_u64(),
            body: Some(pb::command::Body::RecordLapse(pb::RecordLapse {
                order_id: order.order_id.clone(),
            })),
        };
        let req = Request {
            command: sign_command(&id.key, &cluster_id, &id.name, &cmd).encode_to_vec(),
            time_ms: now_ms(),
            genesis: false,
            verified_key: public_key.clone(),
        };
        match raft.client_write(req).await {
            Ok(r) => match r.response() {
                Response::Appended { seq, outcome, .. } if outcome.accepted => {
                    info!(seq, order = %order.order_id, "lease lapse recorded")
                }
                other => debug!(order = %order.order_id, ?other, "lapse not recorded"),
            },
            Err(e) => {
                warn!(error = %e, "lease sweep stopped: proposal failed");
                return Ok(());
            }
        }
    }
    Ok(())
}
