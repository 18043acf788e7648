//! `arbor watch`: follow the ledger live, one line per entry.

use std::io::Write;

use anyhow::{Context, Result};
use arbor_client::pb;
use clap::Args;
use futures::StreamExt;

use super::ledger::{cells, COLUMNS};
use super::output::{Format, Reply};
use super::Ctx;

#[derive(Args)]
pub struct WatchArgs {
    /// First sequence number to show (default: only entries committed from now on; 0 for the whole ledger)
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
}

pub async fn run(ctx: &Ctx, args: WatchArgs) -> Result<Reply> {
    let client = ctx.client().await?;
    let from = match args.from {
        Some(seq) => seq,
        None => {
            // The committed head now (linearizable): everything after it is new.
            let r = client.get_entries(u64::MAX, 1).await?;
            if r.empty {
                0
            } else {
                r.head_seq + 1
            }
        }
    };
    let mut feed = client.watch(from);
    let mut out = std::io::stdout();
    if ctx.format == Format::Table && !print(&mut out, &header()) {
        return Ok(Reply::new(String::new()));
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = &mut ctrl_c => {
                r.context("cannot listen for Ctrl-C")?;
                break;
            }
            item = feed.next() => match item {
                Some(Ok(e)) => {
                    // A closed pipe (`arbor watch | head`) ends the watch quietly.
                    if !print(&mut out, &line(ctx.format, &e)) {
                        break;
                    }
                }
                Some(Err(e)) => {
                    return Err(e).with_context(|| format!("watch stopped before seq {}", feed.next_seq()))
                }
                None => break,
            }
        }
    }
    Ok(Reply::new(String::new()))
}

/// Writes and flushes one line; false once stdout is closed.
fn print(out: &mut std::io::Stdout, line: &str) -> bool {
    let mut out = out.lock();
    out.write_all(line.as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}

fn header() -> String {
    row(&COLUMNS.map(String::from))
}

/// Fixed widths: lines are printed one at a time, so columns cannot be sized
/// to fit; a longer value just pushes the rest of its line right.
fn row(cells: &[String; 7]) -> String {
    let [seq, time, outcome, order, command, signer, hash] = cells;
    format!(
        "{seq:>7}  {time:<24}  {outcome:<16}  {order:<20}  {command:<16}  {signer:<16}  {hash}\n"
    )
}

/// One entry as a table row (the columns of `arbor ledger entries`), or as
/// one line of JSON (the fields of `arbor ledger entries --output json`).
pub fn line(format: Format, e: &pb::LedgerEntry) -> String {
    match format {
        Format::Json => format!("{}\n", super::ledger::entry_json(e)),
        Format::Table => row(&cells(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_client::Commands;
    use prost::Message;

    fn entry() -> pb::LedgerEntry {
        let id = arbor_client::Identity::generate("store-1").for_cluster("t");
        pb::LedgerEntry {
            seq: 42,
            time_ms: 1_765_121_024_123,
            command: id.claim_order("o-1", 1, 5).encode_to_vec(),
            outcome: Some(pb::Outcome {
                accepted: false,
                code: "already_owned".into(),
                message: "order o-1 is owned by store-2".into(),
            }),
            order_id: "o-1".into(),
            order_prev_seq: 40,
            prev_hash: vec![1; 32],
            hash: vec![0xab; 32],
        }
    }

    #[test]
    fn table_line_names_kind_and_signer() {
        let l = line(Format::Table, &entry());
        assert_eq!(l.lines().count(), 1);
        for part in [
            "42",
            "2025-12-07T15:23:44.123Z",
            "already_owned",
            "o-1",
            "claim_order",
            "store-1",
            "abababababab",
        ] {
            assert!(l.contains(part), "{part} missing from {l:?}");
        }
        assert!(header().starts_with("    SEQ  TIME"));
    }

    #[test]
    fn json_line_is_one_object() {
        let l = line(Format::Json, &entry());
        assert_eq!(l.lines().count(), 1);
        let j: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(j["seq"], 42);
        assert_eq!(j["command_kind"], "claim_order");
        assert_eq!(j["signer"], "store-1");
        assert_eq!(j["code"], "already_owned");
        assert_eq!(j["hash"], hex::encode([0xab; 32]));
    }
}
