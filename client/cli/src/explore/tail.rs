//! The live tail: the last entries of the ledger, fed by [`Client::watch`]
//! (which checks each entry's hash and its link to the previous one, across
//! replica failovers) in a background task, kept in a ring buffer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_client::{pb, Client};
use futures::StreamExt;

use crate::ledger::command_summary;

/// One entry as the tail shows it.
#[derive(Clone, Debug)]
pub struct Row {
    pub seq: u64,
    pub time_ms: u64,
    pub order_id: String,
    pub signer: String,
    pub kind: String,
    pub accepted: bool,
    pub code: String,
    pub message: String,
    pub hash: String,
}

impl Row {
    pub fn from_entry(e: &pb::LedgerEntry) -> Row {
        let o = e.outcome.clone().unwrap_or_default();
        let (signer, kind) = command_summary(&e.command);
        Row {
            seq: e.seq,
            time_ms: e.time_ms,
            order_id: e.order_id.clone(),
            signer,
            kind,
            accepted: o.accepted,
            code: o.code,
            message: o.message,
            hash: hex::encode(&e.hash),
        }
    }
}

#[derive(Default)]
struct Buf {
    rows: VecDeque<Row>,
    error: Option<String>,
}

pub struct Tail {
    buf: Arc<Mutex<Buf>>,
}

impl Tail {
    /// Starts following the ledger from `keep` entries before its head.
    pub fn start(client: Client, keep: usize) -> Tail {
        let buf = Arc::new(Mutex::new(Buf::default()));
        let b = buf.clone();
        tokio::spawn(async move {
            let mut next = match client.get_entries(0, 1).await {
                Ok(r) if !r.empty => (r.head_seq + 1).saturating_sub(keep as u64),
                Ok(_) => 0,
                Err(_) => 0,
            };
            loop {
                let mut feed = client.watch(next);
                while let Some(item) = feed.next().await {
                    let mut g = b.lock().unwrap_or_else(|p| p.into_inner());
                    match item {
                        Ok(e) => {
                            next = e.seq + 1;
                            g.error = None;
                            g.rows.push_back(Row::from_entry(&e));
                            while g.rows.len() > keep {
                                g.rows.pop_front();
                            }
                        }
                        Err(e) => g.error = Some(e.to_string()),
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        Tail { buf }
    }

    /// The rows after `after` (all without), newest first, and the feed's last error.
    pub fn snapshot(&self, after: Option<u64>) -> (Vec<Row>, Option<String>) {
        let g = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let rows = g
            .rows
            .iter()
            .rev()
            .filter(|r| after.is_none_or(|a| r.seq > a))
            .cloned()
            .collect();
        (rows, g.error.clone())
    }
}
