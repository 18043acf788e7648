//! `arbor audit bundle` and `arbor audit verify-bundle`: one order's
//! complete history as a small file, and its offline check
//! (docs/ledger-format.md §12).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arbor_client::bundle::{
    bundle_bytes, read_bundle, verify_bundle, BundleFetchError, BundleReport, CheckpointKeys,
};
use arbor_proto::audit::trust::Trust;
use clap::Subcommand;
use serde_json::json;

use super::output::{kv, render, utc, Reply};
use super::Ctx;

/// Said when a bundle's checkpoint was judged by keys the bundle carries (exit 7).
const UNVERIFIED_BUNDLE: &str = "UNVERIFIED: no --trust given. The checkpoint was checked against \
replica keys the bundle itself carries, so whoever made the file could have chosen them: \
internal consistency only. Pin the ledger once (`arbor audit trust init`, compare its \
fingerprint out of band) and pass --trust FILE";

#[derive(Subcommand)]
pub enum BundleCmd {
    /// Write an order's dispute bundle: its whole history, proven, in a few KB
    #[command(
        long_about = "Write the dispute bundle of ORDER to FILE: a checkpoint cosigned by a quorum \
of replicas whose `map` line commits to the order map, the order's proof in that map (its \
latest entry at the map size M), every entry of the order from its registration to that \
head (through the entries' order_prev_seq links), and the complete key and profile history \
below M of its signers, of the nodes that held it and of the replicas that signed (every \
enrolment, key rotation, revocation and profile, proven complete by the order map) — each \
with its inclusion proof in the checkpoint's tree. Entries of \
the order at or after M are not in the bundle (the map is updated every 32 entries). \
Refuses to overwrite FILE. `arbor audit verify-bundle` checks it with no server. The \
format is specified in docs/ledger-format.md §12.\n\n\
Example:\n  arbor audit bundle ord-1001 --out ord-1001.bundle"
    )]
    Bundle {
        /// Canonical order id
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// File to write (must not exist)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Verify a dispute bundle offline and print the rulings it supports
    #[command(
        long_about = "Verify a dispute bundle without any server or database: the checkpoint \
(against the pinned trust with --trust; otherwise against the replica keys the bundle \
carries, which shows internal consistency only and exits 7), every inclusion proof, the \
order map proof, the order's history from the map's head back to its registration with \
nothing missing and nothing foreign, each needed party's key and profile history against \
the map (nothing left out), every signature by the key in force at its entry, and then the \
responsibility \
rules on the facts it records: the ruling of each dispute on the order, which must be the \
one recorded by any ResolveDispute. Exits 0 when verified against pinned trust, 7 when \
consistent but unpinned, 1 with one `error:` line naming the check that failed.\n\n\
Examples:\n  arbor audit verify-bundle ord-1001.bundle --trust arbor.trust\n  \
arbor audit verify-bundle ord-1001.bundle --output json"
    )]
    VerifyBundle {
        /// The bundle file
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Trust file to judge the checkpoint by (`arbor audit trust init`)
        #[arg(long, value_name = "TRUST")]
        trust: Option<PathBuf>,
    },
}

pub async fn run(ctx: &Ctx, cmd: BundleCmd) -> Result<Reply> {
    match cmd {
        BundleCmd::Bundle { order_id, out } => write(ctx, &order_id, &out).await,
        BundleCmd::VerifyBundle { file, trust } => verify(ctx, &file, trust.as_deref()),
    }
}

async fn write(ctx: &Ctx, order_id: &str, out: &Path) -> Result<Reply> {
    let client = ctx.client().await?;
    let b = match client.dispute_bundle(order_id).await {
        Ok(b) => b,
        Err(BundleFetchError::NotFound(m)) => anyhow::bail!("{m}"),
        Err(e) => return Err(e).context(format!("building the bundle of order {order_id}")),
    };
    let bytes = bundle_bytes(&b);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    if let Err(e) = f.write_all(&bytes).and_then(|_| f.sync_all()) {
        let _ = std::fs::remove_file(out);
        return Err(e).with_context(|| format!("writing {}", out.display()));
    }
    let head = b
        .entries
        .last()
        .and_then(|p| p.entry.as_ref())
        .map_or(0, |e| e.seq);
    let json = json!({
        "file": out.display().to_string(),
        "order_id": order_id,
        "bytes": bytes.len(),
        "entries": b.entries.len(),
        "supporting": b.supporting.len(),
        "head_seq": head,
    });
    Ok(Reply::new(render(ctx.format, json, || {
        kv(&[
            ("file", out.display().to_string()),
            ("order", order_id.to_string()),
            ("entries", format!("{} (latest {head})", b.entries.len())),
            ("supporting", b.supporting.len().to_string()),
            ("size", format!("{} bytes", bytes.len())),
        ])
    })))
}

fn verify(ctx: &Ctx, file: &Path, trust: Option<&Path>) -> Result<Reply> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let b = read_bundle(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let trust = trust.map(Trust::load).transpose()?;
    let keys = match &trust {
        Some(t) => CheckpointKeys::Pinned(t),
        None => CheckpointKeys::Carried,
    };
    let report = verify_bundle(&b, keys).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut reply = Reply::new(render(ctx.format, report_json(&report), || {
        report_text(&report)
    }));
    if !report.pinned {
        reply.unverified = Some(UNVERIFIED_BUNDLE.into());
    }
    Ok(reply)
}

fn report_json(r: &BundleReport) -> serde_json::Value {
    json!({
        "valid": true,
        "pinned": r.pinned,
        "order_id": r.order_id,
        "cluster_id": r.cluster_id,
        "checkpoint_size": r.size,
        "map_size": r.map_size,
        "signed_by": r.signed_by,
        "history": r.history.iter().map(|h| json!({
            "seq": h.seq, "time_ms": h.time_ms, "signer": h.signer,
            "command": h.command, "accepted": h.accepted, "code": h.code,
        })).collect::<Vec<_>>(),
        "disputes": r.disputes.iter().map(|d| json!({
            "dispute_seq": d.dispute_seq, "kind": d.kind, "incident_ms": d.incident_ms,
            "opened_by": d.opened_by, "liable": d.ruling.liable,
            "rule": d.ruling.rule.as_str(), "evidence": d.ruling.evidence,
            "explanation": d.ruling.explanation, "resolved_seq": d.resolved_seq,
        })).collect::<Vec<_>>(),
        "notes": r.notes,
    })
}

fn report_text(r: &BundleReport) -> String {
    let mut s = kv(&[
        ("order", r.order_id.clone()),
        ("cluster", r.cluster_id.clone()),
        (
            "checkpoint",
            format!(
                "size {}, order map at size {}, signed by {}{}",
                r.size,
                r.map_size,
                r.signed_by.join(", "),
                if r.pinned { " (pinned keys)" } else { "" }
            ),
        ),
        (
            "history",
            format!(
                "{} entries, complete from registration to the map's head",
                r.history.len()
            ),
        ),
    ]);
    s.push('\n');
    for h in &r.history {
        s.push_str(&format!(
            "  {:>6}  {}  {:<16} {:<15} {}\n",
            h.seq,
            utc(h.time_ms),
            h.signer,
            h.command,
            if h.accepted {
                "accepted".to_string()
            } else {
                format!("rejected {}", h.code)
            }
        ));
    }
    if r.disputes.is_empty() {
        s.push_str("\nno dispute on the order\n");
    }
    for d in &r.disputes {
        let liable = if d.ruling.liable.is_empty() {
            "nobody"
        } else {
            &d.ruling.liable
        };
        s.push_str(&format!(
            "\ndispute {} ({} at {}, opened by {}): {liable} liable under {} on evidence {:?}{}\n  {}\n",
            d.dispute_seq,
            d.kind,
            d.incident_ms,
            d.opened_by,
            d.ruling.rule.as_str(),
            d.ruling.evidence,
            match d.resolved_seq {
                Some(s) => format!(" (the ruling recorded by entry {s})"),
                None => " (not yet resolved)".into(),
            },
            d.ruling.explanation
        ));
    }
    for n in &r.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}
