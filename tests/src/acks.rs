//! Every acknowledged write, so the invariants can check none was lost.
//!
//! A `SubmitReply` is the cluster's promise that an entry is committed at
//! `seq` with `entry_hash`. [`Submitter`] records each one it receives; after
//! crashes and restarts the chain must still hold every one of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_client::{Client, ClientError};
use arbor_proto::pb;

/// One acknowledged entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    pub hash: Vec<u8>,
    pub accepted: bool,
    pub code: String,
}

/// The shared record of acknowledgements.
#[derive(Clone, Debug, Default)]
pub struct Acks(Arc<Mutex<Vec<Ack>>>);

impl Acks {
    pub fn record(&self, r: &pb::SubmitReply) {
        let o = r.outcome.clone().unwrap_or_default();
        self.0.lock().unwrap().push(Ack {
            seq: r.seq,
            hash: r.entry_hash.clone(),
            accepted: o.accepted,
            code: o.code,
        });
    }

    pub fn snapshot(&self) -> Vec<Ack> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A client whose every successful submit is recorded. Cheap to clone and
/// `'static`, for tasks that write concurrently.
#[derive(Clone)]
pub struct Submitter {
    client: Client,
    acks: Acks,
}

impl Submitter {
    pub fn new(client: Client, acks: Acks) -> Submitter {
        Submitter { client, acks }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Submits and records the acknowledgement.
    pub async fn submit(&self, cmd: pb::SignedCommand) -> Result<pb::SubmitReply, ClientError> {
        let r = self.client.submit(cmd).await?;
        self.acks.record(&r);
        Ok(r)
    }

    /// Submits and panics unless the command is appended and accepted.
    pub async fn submit_accepted(&self, what: &str, cmd: pb::SignedCommand) -> pb::SubmitReply {
        let r = self
            .submit(cmd)
            .await
            .unwrap_or_else(|e| panic!("{what}: submit failed: {e}"));
        let o = r.outcome.clone().unwrap_or_default();
        assert!(
            o.accepted,
            "{what}: expected accepted, got {} ({}) at seq {}",
            o.code, o.message, r.seq
        );
        r
    }

    /// The same submitter with a different per-call timeout.
    pub fn with_timeout(&self, t: Duration) -> Submitter {
        Submitter {
            client: self.client.clone().with_timeout(t),
            acks: self.acks.clone(),
        }
    }
}
