//! `arbor ledger`: read the hash-chained ledger.

use anyhow::Result;
use arbor_client::pb;
use clap::Subcommand;
use serde_json::json;

use super::decode::decode_signed;
/// `ClaimOrder` -> `claim_order` (kept here for the trace).
pub(super) use super::decode::snake_case;
use super::output::{render, short_hash, utc, Reply, Table};
use super::Ctx;

#[derive(Subcommand)]
pub enum LedgerCmd {
    /// List ledger entries: seq, time, outcome, order, command, signer, hash
    #[command(
        long_about = "List ledger entries in sequence order: sequence number, leader timestamp (UTC), \
outcome code, the order concerned, the kind of command (a milestone names its kind: \
report_milestone:shipped) and its signer, and a prefix of the entry hash; `arbor watch` \
prints the same columns. The read is linearizable. With --output json every field is shown \
in full: the command decoded (`command`, with `kind` and its fields) beside its exact signed \
bytes (`command_bytes`, hex), hashes in hex, times as `time` (RFC 3339, UTC) and `time_ms`.\n\n\
Examples:\n  arbor ledger entries --limit 20\n  arbor ledger entries --from 1000 --output json"
    )]
    Entries {
        /// First sequence number to list
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        from: u64,
        /// Most entries to list (0: the server's default, 1000)
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
    },
}

pub async fn run(ctx: &Ctx, cmd: LedgerCmd) -> Result<Reply> {
    match cmd {
        LedgerCmd::Entries { from, limit } => {
            let r = ctx.client().await?.get_entries(from, limit).await?;
            Ok(Reply::new(show_entries(ctx, &r)))
        }
    }
}

/// Signer and command kind, read from the entry's signed command bytes.
pub(super) fn command_summary(bytes: &[u8]) -> (String, String) {
    let d = decode_signed(bytes);
    let base = d.kind.split(':').next().unwrap_or_default().to_string();
    (d.signer, base)
}

/// One ledger entry as JSON, as `ledger entries` and `watch` print it: the
/// command decoded (`command`, see [`crate::decode`]) and its exact signed
/// bytes (`command_bytes`, hex).
pub fn entry_json(e: &pb::LedgerEntry) -> serde_json::Value {
    let o = e.outcome.clone().unwrap_or_default();
    let d = decode_signed(&e.command);
    let base = d.kind.split(':').next().unwrap_or_default().to_string();
    json!({
        "seq": e.seq,
        "time_ms": e.time_ms,
        "time": utc(e.time_ms),
        "accepted": o.accepted,
        "code": o.code,
        "message": o.message,
        "order_id": e.order_id,
        "order_prev_seq": e.order_prev_seq,
        "signer": d.signer,
        "command_kind": base,
        "command": d.json,
        "command_bytes": hex::encode(&e.command),
        "prev_hash": hex::encode(&e.prev_hash),
        "hash": hex::encode(&e.hash),
    })
}

/// The columns of `ledger entries` and `watch`, in this order.
pub const COLUMNS: [&str; 7] = [
    "SEQ", "TIME", "OUTCOME", "ORDER", "COMMAND", "SIGNER", "HASH",
];

/// One entry's cells under [`COLUMNS`]; a milestone names its kind
/// (`report_milestone:shipped`).
pub fn cells(e: &pb::LedgerEntry) -> [String; 7] {
    let o = e.outcome.clone().unwrap_or_default();
    let d = decode_signed(&e.command);
    let order = if e.order_id.is_empty() {
        "-".into()
    } else {
        e.order_id.clone()
    };
    [
        e.seq.to_string(),
        utc(e.time_ms),
        o.code,
        order,
        d.kind,
        d.signer,
        short_hash(&e.hash),
    ]
}

fn show_entries(ctx: &Ctx, r: &pb::GetEntriesReply) -> String {
    let entries: Vec<_> = r.entries.iter().map(entry_json).collect();
    let json = json!({ "entries": entries, "head_seq": r.head_seq, "empty": r.empty });
    render(ctx.format, json, || {
        if r.empty {
            return "the ledger has no entries yet\n".into();
        }
        let mut t = Table::new(&COLUMNS);
        for e in &r.entries {
            t.row(cells(e).to_vec());
        }
        let mut out = if r.entries.is_empty() {
            format!(
                "no entries from that sequence number (head is seq {})\n",
                r.head_seq
            )
        } else {
            t.render()
        };
        if let Some(last) = r.entries.last() {
            if last.seq < r.head_seq {
                out.push_str(&format!(
                    "... up to seq {}; continue with --from {}\n",
                    r.head_seq,
                    last.seq + 1
                ));
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_client::Commands;
    use prost::Message;

    #[test]
    fn summary_reads_signer_and_kind() {
        let id = arbor_client::Identity::generate("store-1").for_cluster("t");
        let env = id.claim_order("o-1", 1, 5);
        assert_eq!(
            command_summary(&env.encode_to_vec()),
            ("store-1".into(), "claim_order".into())
        );
        assert_eq!(command_summary(&[0xff, 0xff]).1, "undecodable");
        let e = pb::LedgerEntry {
            seq: 9,
            command: id.report_shipped("o-1", "sf", "SF1").encode_to_vec(),
            ..Default::default()
        };
        let j = entry_json(&e);
        assert_eq!(j["command_kind"], "report_milestone");
        assert_eq!(j["command"]["milestone"], "shipped");
        assert_eq!(j["command"]["tracking_id"], "SF1");
        assert_eq!(j["command_bytes"], hex::encode(&e.command));
        assert_eq!(cells(&e)[4], "report_milestone:shipped");
        assert_eq!(cells(&e)[5], "store-1");
    }
}
