//! `arbor audit`: export the ledger, verify an export offline, check the
//! cluster's checkpoint, and measure verification speed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arbor_client::audit::{verify_export, Summary, TrustedCheckpoint, VerifyOptions};
use arbor_proto::audit::synth::Synth;
use clap::Subcommand;
use serde_json::json;

use super::output::{kv, render, utc, Reply};
use super::Ctx;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Export the ledger to a file that `arbor audit verify` checks offline
    #[command(
        long_about = "Export the ledger to FILE. First fetches a checkpoint cosigned by a quorum of \
replicas, then pages through the entries up to the checkpoint's size and streams them to \
FILE, with the checkpoint in the file's header. A range that does not start at entry 0 or \
does not end at the checkpoint also carries the Merkle proofs that tie it to the checkpoint. \
Refuses to overwrite FILE. The format is specified in docs/ledger-format.md.\n\n\
Examples:\n  arbor audit export --out ledger.arbor\n  arbor audit export --out recent.arbor --from 100000"
    )]
    Export {
        /// File to write (must not exist)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// First entry to export; anything but 0 cannot be replayed by the verifier
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        from: u64,
        /// Last entry to export [default: the checkpoint's last entry]
        #[arg(long, value_name = "SEQ")]
        to: Option<u64>,
    },
    /// Verify an export file offline: hashes, signatures, replay, checkpoint
    #[command(
        long_about = "Verify an export file without any server: every entry's hash and link, every \
command signature against the key its signer was enrolled with, a replay of the arbitration \
rules that must reproduce every recorded outcome byte for byte, and the Merkle root against \
the checkpoint, signed by a quorum of the replica keys the ledger enrols. Uses every core. \
Exits 0 when the export is valid, 1 with one `error: entry N: ...` line at the first problem. \
An export that does not start at entry 0 is checked for links and root only (reported as partial).\n\n\
Examples:\n  arbor audit verify ledger.arbor\n  arbor audit verify ledger.arbor --output json"
    )]
    Verify {
        /// The export file
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Signature worker threads (0: one per core)
        #[arg(long, value_name = "N", default_value_t = 0)]
        threads: usize,
    },
    /// Fetch the cluster's current checkpoint and check who signed it
    #[command(
        long_about = "Fetch the cluster's current cosigned checkpoint (C2SP signed note) and check \
its signatures against the replica keys enrolled in the ledger, read with GetParty for the \
cluster's members (`arbor-replica-<id>`) and the note's signers. A quorum is more than half \
of the replica keys found. The keys come from the cluster itself; for a check that trusts \
nothing, export and verify.\n\n\
Example:\n  arbor audit checkpoint"
    )]
    Checkpoint,
    /// One order's custody timeline, every entry proven in the cosigned ledger
    #[command(
        long_about = "Trace one order: every entry of its history, fetched with an inclusion proof \
against the cluster's current checkpoint, whose signatures are first checked against the \
replica keys enrolled in the ledger (as `arbor audit checkpoint` does). Each entry's hash \
is checked against its contents, its signed command is decoded to say who did what when \
(registration, claims with the quoted price version, handoff offers and the acceptances or \
declines that answer them, milestones with carrier, tracking id and proof of delivery, \
price amendments, lease lapses, exceptions, returns, disputes and rulings) with its \
outcome, and its signature is verified with the signer's key when that key was already \
in force at the entry (otherwise: \"key rotated since; verified offline by `arbor audit \
verify`\"). A handoff shows both signatures: the offer signed by the sender, the \
acceptance by the receiver.\n\n\
Then the custody intervals: who held the goods from which entry to which (claim or \
accepted handoff -> the node, shipped -> the carrier; release, lapse or delivery with \
proof end custody), and the order's disputes.\n\n\
Every line is marked [proof ok] or [proof FAILED]. Exits 1 if any proof or signature \
fails (after printing the timeline).\n\n\
Examples:\n  arbor audit trace ord-1001\n  arbor audit trace ord-1001 --output json | jq '.custody[] | {holder, from_seq, to_seq}'"
    )]
    Trace {
        /// Canonical order id
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
    },
    /// Preview the ruling on an order's dispute; --resolve signs and submits it
    #[command(
        long_about = "Show the ruling the responsibility rules compute now for a dispute on ORDER \
(PreviewRuling): the liable party (or nobody), the rule applied, the evidence entries \
it rests on and a one-sentence explanation. Without --dispute, the order's only open \
dispute is used; if it has several, they are listed. \n\n\
With --resolve, the auditor key given by --key signs a ResolveDispute carrying exactly \
the previewed ruling and submits it; the outcome is printed, and a rejected outcome \
(e.g. ruling_mismatch if the ledger changed in between) exits with code 2.\n\n\
Examples:\n  arbor audit dispute ord-1001\n  arbor audit dispute ord-1001 --dispute 42 --resolve --key auditor.key"
    )]
    Dispute {
        /// Canonical order id
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        /// The entry that opened the dispute [default: the order's only open dispute]
        #[arg(long, value_name = "SEQ")]
        dispute: Option<u64>,
        /// Sign and submit the previewed ruling (needs --key)
        #[arg(long)]
        resolve: bool,
        /// Auditor key file (with --resolve)
        #[arg(long, env = "ARBOR_KEY", value_name = "AUDITORKEY")]
        key: Option<PathBuf>,
    },
    /// Measure offline verification speed on a synthetic ledger
    #[command(
        long_about = "Build a synthetic ledger of N entries in memory (fixed keys, accepted and \
rejected claims, a checkpoint signed by the replicas), export it to memory and verify it, \
printing entries per second. No server needed. Build with --release for real figures.\n\n\
Example:\n  cargo run --release -p arbor-cli --bin arbor -- audit bench-verify --entries 200000"
    )]
    BenchVerify {
        /// Entries in the synthetic ledger
        #[arg(long, value_name = "N", default_value_t = 200_000)]
        entries: u64,
        /// Verification runs (the best is reported too)
        #[arg(long, value_name = "N", default_value_t = 3)]
        runs: u32,
        /// Signature worker threads (0: one per core)
        #[arg(long, value_name = "N", default_value_t = 0)]
        threads: usize,
    },
    #[command(flatten)]
    Bundle(super::audit_bundle::BundleCmd),
}

pub async fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<Reply> {
    match cmd {
        AuditCmd::Export { out, from, to } => export(ctx, &out, from, to).await,
        AuditCmd::Verify { file, threads } => verify(ctx, &file, threads),
        AuditCmd::Checkpoint => checkpoint(ctx).await,
        AuditCmd::Trace { order_id } => super::trace::trace(ctx, &order_id).await,
        AuditCmd::Dispute {
            order_id,
            dispute,
            resolve,
            key,
        } => super::dispute::dispute(ctx, &order_id, dispute, resolve, key).await,
        AuditCmd::BenchVerify {
            entries,
            runs,
            threads,
        } => bench(ctx, entries, runs, threads),
        AuditCmd::Bundle(c) => super::audit_bundle::run(ctx, c).await,
    }
}

/// A `\r`-rewritten progress line on stderr, only when stderr is a terminal.
struct Progress {
    on: bool,
    what: &'static str,
    last: Instant,
}

impl Progress {
    fn new(what: &'static str) -> Progress {
        Progress {
            on: std::io::stderr().is_terminal(),
            what,
            last: Instant::now(),
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.on || (done < total && self.last.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last = Instant::now();
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        eprint!("\r{}: {done}/{total} entries ({pct}%)", self.what);
        let _ = std::io::stderr().flush();
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

async fn export(ctx: &Ctx, out: &Path, from: u64, to: Option<u64>) -> Result<Reply> {
    if out.exists() {
        bail!("{} already exists; refusing to overwrite it", out.display());
    }
    let client = ctx.client().await?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let mut progress = Progress::new("exporting");
    let result = client
        .export(BufWriter::new(file), from, to, |d, t| progress.update(d, t))
        .await;
    progress.clear();
    let (w, x) = match result.map_err(anyhow::Error::from).and_then(|(w, x)| {
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok((f, x))
    }) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(out);
            return Err(e.context(format!("export to {} failed (file removed)", out.display())));
        }
    };
    let bytes = w.metadata().map(|m| m.len()).unwrap_or(0);
    let json = json!({
        "file": out.display().to_string(),
        "bytes": bytes,
        "from_seq": x.from_seq,
        "to_seq": x.to_seq,
        "entries": x.entries,
        "checkpoint": {
            "origin": x.checkpoint.origin,
            "size": x.checkpoint.size,
            "root": hex::encode(x.checkpoint.root),
            "time_ms": x.checkpoint.time_ms,
            "signed_by": x.signed_by,
        },
    });
    let text = render(ctx.format, json, || {
        kv(&[
            ("file", format!("{} ({bytes} bytes)", out.display())),
            (
                "entries",
                format!("{}..={} ({})", x.from_seq, x.to_seq, x.entries),
            ),
            (
                "checkpoint",
                format!("{} size {}", x.checkpoint.origin, x.checkpoint.size),
            ),
            ("root", hex::encode(x.checkpoint.root)),
            ("time", utc(x.checkpoint.time_ms)),
            (
                "cosigned by",
                format!("{} (not yet verified)", x.signed_by.join(", ")),
            ),
            ("next", format!("arbor audit verify {}", out.display())),
        ])
    });
    Ok(Reply::new(text))
}

fn verify(ctx: &Ctx, file: &Path, threads: usize) -> Result<Reply> {
    let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut progress = Progress::new("verifying");
    let mut cb = |d: u64, t: u64| progress.update(d, t);
    let result = verify_export(
        f,
        VerifyOptions {
            threads,
            progress: Some(&mut cb),
            ..VerifyOptions::default()
        },
    );
    progress.clear();
    let s = result?;
    Ok(Reply::new(show_summary(
        ctx,
        &file.display().to_string(),
        &s,
    )))
}

fn rate(entries: u64, d: Duration) -> f64 {
    entries as f64 / d.as_secs_f64().max(1e-9)
}

fn summary_json(file: &str, s: &Summary) -> serde_json::Value {
    let c = &s.checkpoint;
    json!({
        "file": file,
        "valid": true,
        "complete": s.complete,
        "from_seq": s.from_seq,
        "to_seq": s.to_seq,
        "entries": s.entries,
        "accepted": s.accepted,
        "rejected": s.rejected,
        "parties": s.parties,
        "orders": s.orders,
        "signatures_verified": s.signatures,
        "replayed": s.replayed,
        "cluster_id": s.cluster_id,
        "head_hash": hex::encode(s.head_hash),
        "checkpoint": {
            "origin": c.origin,
            "size": c.size,
            "root": hex::encode(c.root),
            "time_ms": c.time_ms,
            "signed_by": c.signed_by,
            "replicas": c.replicas,
            "quorum": c.quorum,
            "signatures_verified": c.signatures_verified,
        },
        "notes": s.notes,
        "elapsed_ms": s.elapsed.as_secs_f64() * 1000.0,
        "entries_per_second": rate(s.entries, s.elapsed).round(),
    })
}

fn show_summary(ctx: &Ctx, file: &str, s: &Summary) -> String {
    render(ctx.format, summary_json(file, s), || {
        let c = &s.checkpoint;
        let mut rows = vec![
            ("file", file.to_string()),
            (
                "entries",
                format!("{}..={} ({})", s.from_seq, s.to_seq, s.entries),
            ),
            (
                "outcomes",
                format!("{} accepted, {} rejected", s.accepted, s.rejected),
            ),
        ];
        if s.replayed {
            rows.push(("parties", s.parties.to_string()));
            rows.push(("orders", s.orders.to_string()));
            rows.push(("signatures", format!("{} verified", s.signatures)));
            rows.push(("replay", "every entry reproduced by the rules".into()));
        }
        rows.push(("checkpoint", format!("{} size {}", c.origin, c.size)));
        rows.push(("root", hex::encode(c.root)));
        rows.push(("time", utc(c.time_ms)));
        if c.signatures_verified {
            rows.push((
                "signed by",
                format!(
                    "{} (quorum {} of {} enrolled replicas)",
                    c.signed_by.join(", "),
                    c.quorum,
                    c.replicas
                ),
            ));
        }
        rows.push((
            "elapsed",
            format!(
                "{:.2} s ({:.0} entries/s)",
                s.elapsed.as_secs_f64(),
                rate(s.entries, s.elapsed)
            ),
        ));
        rows.push((
            "result",
            if s.complete {
                "valid".into()
            } else {
                "valid as far as checked (partial export, see notes)".into()
            },
        ));
        let mut out = kv(&rows);
        for n in &s.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    })
}

async fn checkpoint(ctx: &Ctx) -> Result<Reply> {
    let client = ctx.client().await?;
    let TrustedCheckpoint {
        reply,
        checkpoint: cp,
        signed_by,
        keys,
        quorum,
    } = client.trusted_checkpoint().await?;
    let json = json!({
        "origin": cp.origin,
        "size": cp.size,
        "root": hex::encode(cp.root),
        "time_ms": cp.time_ms,
        "signed_by": signed_by,
        "replicas": keys.iter().map(|k| k.name.clone()).collect::<Vec<_>>(),
        "quorum": quorum,
        "note": reply.note,
    });
    let text = render(ctx.format, json, || {
        let mut out = kv(&[
            ("origin", cp.origin.clone()),
            ("size", cp.size.to_string()),
            ("root", hex::encode(cp.root)),
            ("time", utc(cp.time_ms)),
            (
                "signed by",
                format!(
                    "{} (quorum {} of {} replica keys found)",
                    signed_by.join(", "),
                    quorum,
                    keys.len()
                ),
            ),
        ]);
        out.push('\n');
        out.push_str(&reply.note);
        out
    });
    Ok(Reply::new(text))
}

fn bench(ctx: &Ctx, entries: u64, runs: u32, threads: usize) -> Result<Reply> {
    if entries < 20 {
        bail!("--entries must be at least 20");
    }
    let started = Instant::now();
    let s = Synth::build(entries, 3);
    let bytes = s.full_export();
    let built = started.elapsed();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let sum = verify_export(
            bytes.as_slice(),
            VerifyOptions {
                threads,
                ..VerifyOptions::default()
            },
        )?;
        times.push(sum.elapsed);
    }
    let best = *times.iter().min().expect("at least one run");
    let json = json!({
        "entries": entries,
        "export_bytes": bytes.len(),
        "cores": cores,
        "build_ms": built.as_millis() as u64,
        "runs_ms": times.iter().map(|t| t.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
        "best_entries_per_second": rate(entries, best).round(),
        "debug_build": cfg!(debug_assertions),
    });
    let text = render(ctx.format, json, || {
        let runs: Vec<String> = times
            .iter()
            .map(|t| format!("{:.3} s ({:.0}/s)", t.as_secs_f64(), rate(entries, *t)))
            .collect();
        let mut rows = vec![
            ("entries", entries.to_string()),
            ("export", format!("{} bytes", bytes.len())),
            ("cores", cores.to_string()),
            ("built in", format!("{:.2} s", built.as_secs_f64())),
            ("runs", runs.join(", ")),
            (
                "best",
                format!("{:.0} entries/s verified", rate(entries, best)),
            ),
        ];
        if cfg!(debug_assertions) {
            rows.push((
                "warning",
                "debug build: run with --release for real figures".into(),
            ));
        }
        kv(&rows)
    });
    Ok(Reply::new(text))
}
