//! `arbor audit`: pin trust in a ledger, export it, verify an export
//! offline, check the cluster's checkpoint, and measure verification speed.
//!
//! Every command that judges a checkpoint takes `--trust FILE` (a trust
//! file, `arbor_proto::audit::trust`): only then can it exit 0. Without it
//! the result shows internal consistency only, says so loudly and exits 7.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arbor_client::audit::{
    verify_export, verify_export_trusted, Summary, Trust, TrustedCheckpoint, VerifyOptions,
};
use arbor_proto::audit::synth::Synth;
use clap::Subcommand;
use serde_json::json;

use super::output::{kv, render, utc, Reply};
use super::Ctx;

/// Said when a verdict rests on no pinned trust (exit 7).
pub const UNVERIFIED_FILE: &str = "UNVERIFIED: no --trust given. This result shows internal consistency only: \
no key in it was checked against keys you pinned, so a forger who wrote the whole file gets the same result. \
Pin the ledger once (`arbor audit trust init`, compare its fingerprint out of band) and pass --trust FILE";

/// Said when a checkpoint was judged by keys the cluster itself reported (exit 7).
pub const UNVERIFIED_CLUSTER: &str = "UNVERIFIED: no --trust given. The replica keys came from the cluster \
being checked, so one lying replica could have chosen them. Pin the ledger once (`arbor audit trust init`, \
compare its fingerprint out of band) and pass --trust FILE";

/// The trust file option of every command that judges a checkpoint.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TrustArg {
    /// Trust file to judge checkpoints by (`arbor audit trust init`); without it the result is unverified (exit 7)
    #[arg(long, env = "ARBOR_TRUST", value_name = "TRUSTFILE")]
    pub trust: Option<PathBuf>,
}

impl TrustArg {
    pub fn load(&self) -> Result<Option<Trust>> {
        self.trust
            .as_deref()
            .map(|p| Trust::load(p).map_err(anyhow::Error::from))
            .transpose()
    }
}

#[derive(Subcommand)]
pub enum TrustCmd {
    /// Build a trust file from a running cluster (then compare its fingerprint out of band)
    #[command(
        long_about = "Build a trust file from a running cluster: the cluster id and the hash of the \
genesis entry (its hash checked against its contents and proven in the checkpoint), the replica \
keys the cluster currently uses (enrolled replica parties among the checkpoint's signers and \
the members), and the latest checkpoint, signed by a quorum of them. Refuses to overwrite \
FILE. Everything in it is the cluster's word: compare the printed fingerprint with one \
obtained out of band (from the operator, another auditor) before relying on it. The format is \
in docs/ledger-format.md §10.\n\nExample:\n  arbor audit trust init --out arbor.trust"
    )]
    Init {
        /// File to write (must not exist)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print a trust file's fingerprint and what it pins
    #[command(
        long_about = "Print the fingerprint of a trust file (SHA256 of its canonical anchors: \
cluster id, genesis hash, replica keys; not the saved checkpoint), and what it pins.\n\n\
Example:\n  arbor audit trust fingerprint arbor.trust"
    )]
    Fingerprint {
        /// The trust file (made by `arbor audit trust init`)
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Pin trust in a ledger: build a trust file, print its fingerprint
    #[command(subcommand)]
    Trust(TrustCmd),
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
        /// Add the consistency proof to this trust file's saved checkpoint (needed to verify a partial export that does not reach it)
        #[arg(long, value_name = "TRUSTFILE")]
        trust: Option<PathBuf>,
    },
    /// Verify an export file offline: hashes, signatures, replay, checkpoint
    #[command(
        long_about = "Verify an export file without any server: every entry's hash and link, every \
command signature against the key its signer was enrolled with, a replay of the arbitration \
rules that must reproduce every recorded outcome byte for byte, and the Merkle root against \
the checkpoint. With --trust, entry 0 must be the pinned genesis and the checkpoint must be \
signed by a quorum of the pinned replica keys (and be proven consistent with the trust's saved \
checkpoint); without it the checkpoint is checked against the replica keys the ledger itself \
enrols, which shows internal consistency only. Uses every core.\n\n\
Exits 0 only when the export verified against pinned trust; 7 (with a warning) when it is \
internally consistent but no --trust was given; 1 with one `error: entry N: ...` line at the \
first problem. An export that does not start at entry 0 is checked for links and root only \
(reported as partial), and exits 0 only if its checkpoint verifies against the trust.\n\n\
--save-checkpoint writes the verified checkpoint into the trust file, so the next \
verification also proves the ledger only grew; a complete export also moves the pinned \
replica keys to the ones in force at the checkpoint (they were vouched for by it).\n\n\
Examples:\n  arbor audit verify ledger.arbor --trust arbor.trust\n  arbor audit verify ledger.arbor --trust arbor.trust --save-checkpoint --output json"
    )]
    Verify {
        /// The export file
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        trust: TrustArg,
        /// Save the verified checkpoint into the trust file (needs --trust)
        #[arg(long, requires = "trust")]
        save_checkpoint: bool,
        /// Signature worker threads (0: one per core)
        #[arg(long, value_name = "N", default_value_t = 0)]
        threads: usize,
    },
    /// Fetch the cluster's current checkpoint and check who signed it
    #[command(
        long_about = "Fetch the cluster's current cosigned checkpoint (C2SP signed note) and check \
its signatures against the replica keys enrolled in the ledger, read with GetParty for the \
cluster's members (`arbor-replica-<id>`) and the note's signers. A quorum is more than half \
of the replica keys found. Those keys come from the cluster itself, so without --trust the \
result is unverified (exit 7). With --trust only the pinned keys count (a quorum of them), and \
a consistency proof from the trust's saved checkpoint must verify; --save-checkpoint then \
writes the checkpoint into the trust file.\n\n\
Example:\n  arbor audit checkpoint --trust arbor.trust --save-checkpoint"
    )]
    Checkpoint {
        #[command(flatten)]
        trust: TrustArg,
        /// Save the verified checkpoint into the trust file (needs --trust)
        #[arg(long, requires = "trust")]
        save_checkpoint: bool,
    },
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
fails (after printing the timeline). With --trust the checkpoint is judged by the pinned keys \
only (as `arbor audit checkpoint --trust` does); without it the result is unverified (exit 7).\n\n\
Examples:\n  arbor audit trace ord-1001\n  arbor audit trace ord-1001 --output json | jq '.custody[] | {holder, from_seq, to_seq}'"
    )]
    Trace {
        /// Canonical order id
        #[arg(value_name = "ORDER_ID")]
        order_id: String,
        #[command(flatten)]
        trust: TrustArg,
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
    /// Serve the audit explorer: a local web app that verifies and shows the ledger
    #[command(
        long_about = "Serve the audit explorer on --listen (127.0.0.1:8080 by default; the address is \
printed at start): a local web app for an auditor or an operator, talking to the cluster with \
the connection options above. It shows the cluster (members, leader, the latest checkpoint \
and whether its signatures verified), finds an order by id, external reference \
(channel/external-id) or a party by id, and shows an order's timeline (every entry with its \
time, signer, decoded command, outcome, inclusion proof and signature, each verified here), \
its custody as a bar over time (who held it when, handoffs, the carrier's window), its price \
versions and its disputes with the rulings and the entries cited as evidence; a party's page \
(profile versions, counters, lapses, late shipments); and a live tail of the ledger. Every \
asset is in the binary; nothing is fetched from elsewhere. Stop it with Ctrl-C.\n\n\
Examples:\n  arbor audit serve\n  arbor audit serve --listen 127.0.0.1:0 --cacert arbor-data/pki/ca.pem"
    )]
    Serve(super::explore::ServeArgs),
    /// Write an order's custody events (or a range of entries) as an EPCIS 2.0 JSON-LD document
    #[command(
        long_about = "Write the custody events of one ORDER, or of the ledger entries --from SEQ \
--to SEQ, as a GS1 EPCIS 2.0 JSON-LD document (docs/epcis.md describes the mapping): accepted \
claims, accepted handoffs, shipping and delivery milestones, returns, each an ObjectEvent with \
CBV bizStep, disposition, readPoint/bizLocation and source/destination lists, the parties as \
URNs. Every event carries, under the arbor namespace of @context, the ledger seq and entry \
hash, verified by an inclusion proof against a checkpoint cosigned by a quorum of the replicas \
before it is written; a receiver can ask arbor for the same proof. Refuses to overwrite FILE.\n\n\
Examples:\n  arbor audit epcis ord-1001 --out ord-1001.epcis.jsonld\n  arbor audit epcis --from 0 --to 500 --out batch.jsonld"
    )]
    Epcis(super::epcis::EpcisArgs),
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
        /// Signatures per batch (0: the verifier's default)
        #[arg(long, value_name = "N", default_value_t = 0)]
        batch: usize,
    },
    #[command(flatten)]
    Bundle(super::audit_bundle::BundleCmd),
}

pub async fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<Reply> {
    match cmd {
        AuditCmd::Trust(TrustCmd::Init { out }) => trust_init(ctx, &out).await,
        AuditCmd::Trust(TrustCmd::Fingerprint { file }) => trust_show(ctx, &file),
        AuditCmd::Export {
            out,
            from,
            to,
            trust,
        } => export(ctx, &out, from, to, trust).await,
        AuditCmd::Verify {
            file,
            trust,
            save_checkpoint,
            threads,
        } => verify(ctx, &file, &trust, save_checkpoint, threads),
        AuditCmd::Checkpoint {
            trust,
            save_checkpoint,
        } => checkpoint(ctx, &trust, save_checkpoint).await,
        AuditCmd::Trace { order_id, trust } => {
            super::trace::trace(ctx, &order_id, trust.load()?.as_ref()).await
        }
        AuditCmd::Dispute {
            order_id,
            dispute,
            resolve,
            key,
        } => super::dispute::dispute(ctx, &order_id, dispute, resolve, key).await,
        AuditCmd::Serve(a) => super::explore::serve(ctx, a).await,
        AuditCmd::Epcis(a) => super::epcis::run(ctx, a).await,
        AuditCmd::BenchVerify {
            entries,
            runs,
            threads,
            batch,
        } => bench(ctx, entries, runs, threads, batch),
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

async fn export(
    ctx: &Ctx,
    out: &Path,
    from: u64,
    to: Option<u64>,
    trust: Option<PathBuf>,
) -> Result<Reply> {
    if out.exists() {
        bail!("{} already exists; refusing to overwrite it", out.display());
    }
    let trust = trust.as_deref().map(Trust::load).transpose()?;
    let client = ctx.client().await?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let mut progress = Progress::new("exporting");
    let result = client
        .export_for(BufWriter::new(file), from, to, trust.as_ref(), |d, t| {
            progress.update(d, t)
        })
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
            (
                "next",
                format!("arbor audit verify {} --trust TRUSTFILE", out.display()),
            ),
        ])
    });
    Ok(Reply::new(text))
}

fn verify(
    ctx: &Ctx,
    file: &Path,
    trust_arg: &TrustArg,
    save: bool,
    threads: usize,
) -> Result<Reply> {
    let trust = trust_arg.load()?;
    let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut progress = Progress::new("verifying");
    let mut cb = |d: u64, t: u64| progress.update(d, t);
    let result = verify_export_trusted(
        f,
        trust.as_ref(),
        VerifyOptions {
            threads,
            progress: Some(&mut cb),
            ..VerifyOptions::default()
        },
    );
    progress.clear();
    let mut s = result?;
    if let (true, Some(t), Some(path)) = (save, &trust, &trust_arg.trust) {
        s.notes.push(save_verified(t, path, &s)?);
    }
    let mut reply = Reply::new(show_summary(ctx, &file.display().to_string(), &s));
    if s.trust.is_none() {
        reply.unverified = Some(UNVERIFIED_FILE.into());
    }
    Ok(reply)
}

/// Writes the checkpoint of a verified export into the trust file (and,
/// for a complete export, the replica keys it vouched for); says what changed.
fn save_verified(t: &Trust, path: &Path, s: &Summary) -> Result<String> {
    let ts = s.trust.as_ref().expect("verified against the trust");
    let cp = &s.checkpoint;
    if t.checkpoint
        .as_ref()
        .is_some_and(|c| c.checkpoint.size >= cp.size)
    {
        return Ok(format!(
            "--save-checkpoint: the trust file already holds a checkpoint of size {} >= {}; left unchanged",
            t.checkpoint.as_ref().map_or(0, |c| c.checkpoint.size),
            cp.size
        ));
    }
    let mut next = match &ts.replicas_at_checkpoint {
        Some(keys) => t.with_replicas(keys.clone()),
        None => t.clone(),
    };
    next.set_checkpoint(s.checkpoint.note.clone())
        .map_err(anyhow::Error::msg)?;
    next.save(path)?;
    let keys = if next.fingerprint() == t.fingerprint() {
        "pinned keys unchanged".to_string()
    } else {
        format!(
            "pinned replica keys changed: fingerprint {} -> {}",
            t.fingerprint(),
            next.fingerprint()
        )
    };
    Ok(format!(
        "--save-checkpoint: checkpoint of size {} saved in {} ({keys})",
        cp.size,
        path.display()
    ))
}

fn rate(entries: u64, d: Duration) -> f64 {
    entries as f64 / d.as_secs_f64().max(1e-9)
}

fn summary_json(file: &str, s: &Summary) -> serde_json::Value {
    let c = &s.checkpoint;
    json!({
        "file": file,
        "valid": s.trust.is_some(),
        "verified_against_trust": s.trust.is_some(),
        "internally_consistent": true,
        "trust": s.trust.as_ref().map(|t| json!({
            "fingerprint": t.fingerprint,
            "signed_by": t.signed_by,
            "quorum": t.quorum,
            "pinned": t.pinned,
            "anchored": t.anchored,
        })),
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
        if let Some(t) = &s.trust {
            rows.push((
                "trust",
                format!("{} ({} pinned replica keys)", t.fingerprint, t.pinned),
            ));
            if t.signed_by.is_empty() {
                rows.push((
                    "signed by",
                    "(a proven prefix of the trusted checkpoint)".into(),
                ));
            } else {
                rows.push((
                    "signed by",
                    format!(
                        "{} (quorum {} of {} pinned keys)",
                        t.signed_by.join(", "),
                        t.quorum,
                        t.pinned
                    ),
                ));
            }
            if let Some(a) = t.anchored {
                rows.push((
                    "anchored",
                    format!("consistent with the trusted checkpoint of size {a}"),
                ));
            }
        } else if c.signatures_verified {
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
            match (s.trust.is_some(), s.complete) {
                (true, true) => "valid: verified against pinned trust".into(),
                (true, false) => {
                    "valid: the range verified against pinned trust (partial export, see notes)"
                        .into()
                }
                (false, true) => {
                    "UNVERIFIED: internally consistent only (no --trust given)".into()
                }
                (false, false) => {
                    "UNVERIFIED: links and root consistent within the range only (partial export, no --trust given)".into()
                }
            },
        ));
        let mut out = kv(&rows);
        for n in &s.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    })
}

async fn checkpoint(ctx: &Ctx, trust_arg: &TrustArg, save: bool) -> Result<Reply> {
    let trust = trust_arg.load()?;
    let client = ctx.client().await?;
    let tc = match &trust {
        Some(t) => client.checkpoint_against(t).await?,
        None => client.trusted_checkpoint().await?,
    };
    let mut saved = None;
    if let (true, Some(t), Some(path)) = (save, &trust, &trust_arg.trust) {
        let mut next = t.clone();
        if t.checkpoint
            .as_ref()
            .is_some_and(|c| c.checkpoint.size >= tc.checkpoint.size)
        {
            saved = Some(format!(
                "the trust file already holds a checkpoint of size {} >= {}; left unchanged",
                t.checkpoint.as_ref().map_or(0, |c| c.checkpoint.size),
                tc.checkpoint.size
            ));
        } else {
            next.set_checkpoint(tc.reply.note.clone())
                .map_err(anyhow::Error::msg)?;
            next.save(path)?;
            saved = Some(format!(
                "checkpoint of size {} saved in {} (pinned keys unchanged)",
                tc.checkpoint.size,
                path.display()
            ));
        }
    }
    let TrustedCheckpoint {
        reply,
        checkpoint: cp,
        signed_by,
        keys,
        quorum,
        fingerprint,
        anchored,
    } = tc;
    let what_keys = if fingerprint.is_some() {
        "pinned keys"
    } else {
        "replica keys found"
    };
    let json = json!({
        "verified_against_trust": fingerprint.is_some(),
        "trust": fingerprint,
        "anchored": anchored,
        "saved": saved,
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
                    "{} (quorum {} of {} {what_keys})",
                    signed_by.join(", "),
                    quorum,
                    keys.len()
                ),
            ),
        ]);
        let mut more = Vec::new();
        if let Some(f) = &fingerprint {
            more.push(("trust", f.clone()));
        }
        if let Some(a) = anchored {
            more.push((
                "anchored",
                format!("consistent with the trusted checkpoint of size {a}"),
            ));
        }
        if let Some(s) = &saved {
            more.push(("saved", s.clone()));
        }
        more.push((
            "result",
            if fingerprint.is_some() {
                "valid: verified against pinned trust".into()
            } else {
                "UNVERIFIED: judged by keys the cluster reported (no --trust given)".into()
            },
        ));
        out.push_str(&kv(&more));
        out.push('\n');
        out.push_str(&reply.note);
        out
    });
    let mut r = Reply::new(text);
    if fingerprint.is_none() {
        r.unverified = Some(UNVERIFIED_CLUSTER.into());
    }
    Ok(r)
}

async fn trust_init(ctx: &Ctx, out: &Path) -> Result<Reply> {
    if out.exists() {
        bail!("{} already exists; refusing to overwrite it", out.display());
    }
    let client = ctx.client().await?;
    let t = client.trust_init().await?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .and_then(|mut f| {
            f.write_all(t.to_text().as_bytes())
                .and_then(|_| f.sync_all())
        })
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut reply = trust_reply(ctx, &out.display().to_string(), &t);
    if ctx.format == super::output::Format::Table {
        reply.text.push_str(&format!(
            "\nCompare this fingerprint with one obtained OUT OF BAND (from the operator, or another\n\
auditor who pinned the same ledger) before relying on {}: everything in it is what the\n\
cluster you asked says.\n",
            out.display()
        ));
    }
    eprintln!(
        "compare the fingerprint {} out of band before relying on {}",
        t.fingerprint(),
        out.display()
    );
    Ok(reply)
}

fn trust_show(ctx: &Ctx, file: &Path) -> Result<Reply> {
    let t = Trust::load(file)?;
    Ok(trust_reply(ctx, &file.display().to_string(), &t))
}

fn trust_reply(ctx: &Ctx, file: &str, t: &Trust) -> Reply {
    let keys: Vec<String> = t
        .replicas
        .iter()
        .map(arbor_proto::audit::trust::verifier_key)
        .collect();
    let saved = t.checkpoint.as_ref().map(|c| &c.checkpoint);
    let json = json!({
        "file": file,
        "fingerprint": t.fingerprint(),
        "cluster_id": t.cluster_id,
        "genesis_hash": hex::encode(t.genesis_hash),
        "replicas": keys,
        "quorum": t.quorum(),
        "checkpoint": saved.map(|c| json!({
            "size": c.size,
            "root": hex::encode(c.root),
            "time_ms": c.time_ms,
        })),
    });
    let text = render(ctx.format, json, || {
        let mut rows = vec![
            ("file", file.to_string()),
            ("fingerprint", t.fingerprint()),
            ("cluster", t.cluster_id.clone()),
            ("genesis", hex::encode(t.genesis_hash)),
            (
                "quorum",
                format!("{} of {} pinned replica keys", t.quorum(), t.replicas.len()),
            ),
        ];
        for k in &keys {
            rows.push(("replica", k.clone()));
        }
        if let Some(c) = saved {
            rows.push((
                "checkpoint",
                format!("size {}, root {}", c.size, hex::encode(c.root)),
            ));
        }
        kv(&rows)
    });
    Reply::new(text)
}

/// CPU seconds this process has used so far, every thread, user and system.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn bench(ctx: &Ctx, entries: u64, runs: u32, threads: usize, batch: usize) -> Result<Reply> {
    if entries < 20 {
        bail!("--entries must be at least 20");
    }
    let started = Instant::now();
    let s = Synth::build(entries, 3);
    let bytes = s.full_export();
    let built = started.elapsed();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..runs.max(1) {
        let cpu_before = process_cpu_seconds();
        let sum = verify_export(
            bytes.as_slice(),
            VerifyOptions {
                threads,
                batch: if batch == 0 {
                    VerifyOptions::default().batch
                } else {
                    batch
                },
                ..VerifyOptions::default()
            },
        )?;
        times.push(sum.elapsed);
        cpu.push(process_cpu_seconds() - cpu_before);
    }
    let best = *times.iter().min().expect("at least one run");
    let least_cpu = cpu.iter().copied().fold(f64::INFINITY, f64::min);
    let json = json!({
        "entries": entries,
        "export_bytes": bytes.len(),
        "cores": cores,
        "build_ms": built.as_millis() as u64,
        "runs_ms": times.iter().map(|t| t.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
        "best_entries_per_second": rate(entries, best).round(),
        "runs_cpu_seconds": cpu,
        "least_cpu_us_per_entry": least_cpu * 1e6 / entries as f64,
        "batch": if batch == 0 { VerifyOptions::default().batch } else { batch },
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
            (
                "cpu",
                format!(
                    "{} s (all threads); least {:.2} us per entry",
                    cpu.iter()
                        .map(|c| format!("{c:.3}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    least_cpu * 1e6 / entries as f64
                ),
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
