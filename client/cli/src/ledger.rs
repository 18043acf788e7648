//! `arbor ledger`: read the hash-chained ledger.

use anyhow::Result;
use arbor_client::pb;
use clap::Subcommand;
use prost::Message;
use serde_json::json;

use super::output::{render, short_hash, utc, Reply, Table};
use super::Ctx;

#[derive(Subcommand)]
pub enum LedgerCmd {
    /// List ledger entries: seq, time, outcome, order, signer, command, hash
    #[command(
        long_about = "List ledger entries in sequence order: sequence number, leader timestamp (UTC), \
outcome code, the order concerned, the signer and kind of command, and a prefix of the \
entry hash. The read is linearizable. With --output json every field is shown in full \
(hashes in hex).\n\n\
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
    let Ok(env) = pb::SignedCommand::decode(bytes) else {
        return ("?".into(), "undecodable".into());
    };
    let kind = match pb::Command::decode(env.command.as_slice()) {
        Ok(c) if c.body.is_none() => "empty".to_string(),
        Ok(c) => snake_case(arbor_proto::rules::command_name(&c)),
        Err(_) => "undecodable".to_string(),
    };
    let signer = if env.signer.is_empty() {
        "-".into()
    } else {
        env.signer
    };
    (signer, kind)
}

/// One ledger entry as JSON, as `ledger entries` and `watch` print it.
pub fn entry_json(e: &pb::LedgerEntry) -> serde_json::Value {
    let o = e.outcome.clone().unwrap_or_default();
    let (signer, command) = command_summary(&e.command);
    json!({
        "seq": e.seq,
        "time_ms": e.time_ms,
        "time": utc(e.time_ms),
        "accepted": o.accepted,
        "code": o.code,
        "message": o.message,
        "order_id": e.order_id,
        "order_prev_seq": e.order_prev_seq,
        "signer": signer,
        "command_kind": command,
        "command": hex::encode(&e.command),
        "prev_hash": hex::encode(&e.prev_hash),
        "hash": hex::encode(&e.hash),
    })
}

/// `ClaimOrder` -> `claim_order`.
pub(super) fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn show_entries(ctx: &Ctx, r: &pb::GetEntriesReply) -> String {
    let entries: Vec<_> = r.entries.iter().map(entry_json).collect();
    let json = json!({ "entries": entries, "head_seq": r.head_seq, "empty": r.empty });
    render(ctx.format, json, || {
        if r.empty {
            return "the ledger has no entries yet\n".into();
        }
        let mut t = Table::new(&[
            "SEQ", "TIME", "OUTCOME", "ORDER", "SIGNER", "COMMAND", "HASH",
        ]);
        for e in &r.entries {
            let o = e.outcome.clone().unwrap_or_default();
            let (signer, command) = command_summary(&e.command);
            let order = if e.order_id.is_empty() {
                "-".into()
            } else {
                e.order_id.clone()
            };
            t.row(vec![
                e.seq.to_string(),
                utc(e.time_ms),
                o.code,
                order,
                signer,
                command,
                short_hash(&e.hash),
            ]);
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

    #[test]
    fn summary_reads_signer_and_kind() {
        let id = arbor_client::Identity::generate("store-1").for_cluster("t");
        let env = id.claim_order("o-1", 1, 5);
        assert_eq!(
            command_summary(&env.encode_to_vec()),
            ("store-1".into(), "claim_order".into())
        );
        assert_eq!(command_summary(&[0xff, 0xff]).1, "undecodable");
    }
}
