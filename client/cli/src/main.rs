//! `arbor`: the command line client. Argument definitions, dispatch, the
//! runtime, printing and exit codes live here; each command is a module
//! beside this file, built on the `arbor-client` library (which knows
//! nothing of clap or anyhow).
//!
//! Each command returns a [`Reply`] already rendered in the chosen format;
//! `main` prints it and turns it into the exit code (0 ok, 1 error, 2 the
//! cluster recorded the command as rejected).

mod audit;
mod audit_bundle;
mod bench;
mod cluster;
mod dispute;
mod keys;
mod ledger;
mod order;
mod output;
mod party;
mod profile;
mod trace;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use arbor_client::{Client, Identity, Signer};
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use output::{Format, Reply};

pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  error: bad arguments, unreadable key or file, cluster unreachable, command refused
  2  the command was committed but its outcome is `rejected` (recorded in the ledger)
  7  an audit result that shows internal consistency only: no --trust was given

Errors are printed as one line starting with `error:` on stderr.";

/// Command line client for arbor, the replicated order arbitration ledger.
#[derive(Parser)]
#[command(
    name = "arbor",
    version,
    arg_required_else_help = true,
    long_about = "Command line client for arbor, the replicated, hash-chained order arbitration ledger.\n\n\
Signs commands with a party's key file and submits them to any replica; leader changes \
and unreachable replicas are retried transparently until --timeout.\n\n\
Example (against `arbor-node dev`):\n  \
source arbor-data/dev.env\n  \
arbor keys generate --party store-17 --out store-17.key\n  \
arbor party enroll --role node --kind store --public-key-file store-17.key\n  \
arbor cluster status",
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct Global {
    /// Replica addresses, comma-separated (host:port)
    #[arg(long, global = true, help_heading = "Global options", env = "ARBOR_ENDPOINTS", value_name = "LIST", default_value = DEFAULT_ENDPOINTS)]
    pub endpoints: String,
    /// CA certificate (PEM) that replicas' certificates are checked against
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ARBOR_CACERT",
        value_name = "FILE"
    )]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for clusters that require one
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ARBOR_TLS_CERT",
        value_name = "FILE"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ARBOR_TLS_KEY",
        value_name = "FILE"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// INSECURE: talk to a cluster run with --insecure-plaintext (no TLS)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ARBOR_INSECURE_PLAINTEXT"
    )]
    pub insecure_plaintext: bool,
    /// Cluster id commands are signed for (default: asked of the cluster)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ARBOR_CLUSTER_ID",
        value_name = "ID"
    )]
    pub cluster_id: Option<String>,
    /// Output format
    #[arg(long, global = true, help_heading = "Global options", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Give up on the cluster after this many seconds (retries included)
    #[arg(long, global = true, help_heading = "Global options", value_name = "SECS", default_value = "15", value_parser = parse_secs)]
    pub timeout: Duration,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate and inspect key files
    #[command(subcommand, arg_required_else_help = true)]
    Keys(keys::KeysCmd),
    /// Enrol and look up parties
    #[command(subcommand, arg_required_else_help = true)]
    Party(party::PartyCmd),
    /// Register, claim and look up orders
    #[command(subcommand, arg_required_else_help = true)]
    Order(order::OrderCmd),
    /// Publish and show node capability profiles
    #[command(subcommand, arg_required_else_help = true)]
    Profile(profile::ProfileCmd),
    /// Fulfilment node statistics
    #[command(subcommand, arg_required_else_help = true)]
    Node(profile::NodeCmd),
    /// Read ledger entries
    #[command(subcommand, arg_required_else_help = true)]
    Ledger(ledger::LedgerCmd),
    /// Cluster status and membership
    #[command(subcommand, arg_required_else_help = true)]
    Cluster(cluster::ClusterCmd),
    /// Export and verify the ledger, trace an order, rule on disputes
    #[command(subcommand, arg_required_else_help = true)]
    Audit(audit::AuditCmd),
    /// Claims benchmark against a running cluster (throughput, latency, single owner)
    #[command(
        long_about = "Claims benchmark against a running cluster: throughput, latency, and a check that \
every order ends with exactly one owner.\n\n\
The operator key enrols a fresh channel and --nodes fresh fulfilment nodes (under a random \
run id, so runs can repeat on one cluster). The channel registers --orders orders (not timed), \
then the nodes claim them with --in-flight claims outstanding; a --duplicates share of the \
claims is a second node racing for an order already claimed, which must be rejected \
`already_owned`. Every claim is its own signed command, signed before the clock starts. \
Reports claims/s over the claims phase, latency (submit to reply) p50/p90/p99/max in ms, \
and accepted and rejected counts by code. Then every order is read back: if one has no \
owner, or its owner is not the node whose claim was acknowledged as accepted, the report \
is printed and the command exits 1. Progress goes to stderr. scripts/bench.sh runs it \
against a fresh local three-replica cluster.\n\n\
Example:\n  arbor bench --key operator.key --orders 20000 --in-flight 256 --duplicates 0.2 --output json"
    )]
    Bench(bench::BenchArgs),
    /// Follow the ledger live: one line per entry as it is committed, until Ctrl-C
    #[command(
        long_about = "Follow the ledger live: print one line per ledger entry as it is committed, \
in sequence order, until Ctrl-C. Each line shows the sequence number, leader timestamp (UTC), \
outcome code, the order concerned, the kind of command and its signer, and a prefix of the \
entry hash. With --output json each line is one JSON object with every field in full \
(the fields of `arbor ledger entries --output json`).\n\n\
Without --from only entries committed from now on are shown; --from SEQ starts at that \
sequence number (0: the whole ledger, then live). Any replica serves the feed. When the \
replica being read dies or restarts, the watch resumes on another endpoint right after \
the last entry printed: no entry is missed or printed twice, and every entry's hash and \
link to the previous one is checked. It gives up (exit code 1) when no replica has served \
the feed for --timeout seconds.\n\n\
Examples:\n  arbor watch\n  arbor watch --from 0 --output json | jq -c 'select(.accepted | not)'"
    )]
    Watch(watch::WatchArgs),
}

fn main() -> ExitCode {
    let args = match Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::from(1)
                }
                _ => fail(&clap_error_line(&e)),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(args)) {
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`arbor ledger entries | head`) is not an error.
            let _ = out
                .write_all(reply.text.as_bytes())
                .and_then(|_| out.flush());
            if let Some(e) = &reply.failed {
                fail(e)
            } else if let Some(w) = &reply.unverified {
                eprintln!("warning: {w}");
                ExitCode::from(7)
            } else if reply.rejected {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&chain(&e)),
    }
}

/// The error and its causes joined by `: `, skipping causes already in the text
/// (library errors often print their source too).
fn chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    msg
}

/// Prints one `error:` line on stderr and exits with code 1.
fn fail(msg: &str) -> ExitCode {
    let line = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {line}");
    ExitCode::from(1)
}

/// What every command may need: where the cluster is and how to print.
pub struct Ctx {
    pub endpoints: String,
    pub format: Format,
    pub timeout: Duration,
    cacert: Option<std::path::PathBuf>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    insecure_plaintext: bool,
    pub cluster_id: Option<String>,
}

impl Ctx {
    /// TLS (or, with --insecure-plaintext, none) as the global options say.
    pub fn transport(&self) -> Result<arbor_client::Transport> {
        Ok(arbor_client::Transport::from_options(
            self.cacert.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.insecure_plaintext,
        )?)
    }

    pub async fn client(&self) -> Result<Client> {
        Ok(
            Client::connect(std::slice::from_ref(&self.endpoints), &self.transport()?)
                .await?
                .with_timeout(self.timeout),
        )
    }

    /// The cluster id commands are signed for: `--cluster-id` (or
    /// `ARBOR_CLUSTER_ID`), else the one the cluster's genesis fixed.
    pub async fn cluster_id(&self) -> Result<String> {
        match &self.cluster_id {
            Some(id) => Ok(id.clone()),
            None => Ok(self.client().await?.cluster_id().await?),
        }
    }
}

pub async fn run(cli: Cli) -> Result<Reply> {
    let ctx = Ctx {
        endpoints: cli.global.endpoints,
        format: cli.global.output,
        timeout: cli.global.timeout,
        cacert: cli.global.cacert,
        tls_cert: cli.global.tls_cert,
        tls_key: cli.global.tls_key,
        insecure_plaintext: cli.global.insecure_plaintext,
        cluster_id: cli.global.cluster_id.filter(|c| !c.is_empty()),
    };
    match cli.command {
        Command::Keys(c) => keys::run(ctx.format, c),
        Command::Party(c) => party::run(&ctx, c).await,
        Command::Order(c) => order::run(&ctx, c).await,
        Command::Profile(c) => profile::run(&ctx, c).await,
        Command::Node(c) => profile::run_node(&ctx, c).await,
        Command::Ledger(c) => ledger::run(&ctx, c).await,
        Command::Cluster(c) => cluster::run(&ctx, c).await,
        Command::Audit(c) => audit::run(&ctx, c).await,
        Command::Bench(a) => bench::run(&ctx, a).await,
        Command::Watch(a) => watch::run(&ctx, a).await,
    }
}

/// The key of a party command: `--key`, which clap already fills from
/// `ARBOR_KEY`, bound to the cluster ([`Ctx::cluster_id`]).
async fn signing_key(ctx: &Ctx, key: Option<PathBuf>) -> Result<Signer> {
    let id = match key {
        Some(p) => Identity::load(&p)?,
        None => bail!("no key given: pass --key FILE or set ARBOR_KEY"),
    };
    Ok(id.for_cluster(&ctx.cluster_id().await?))
}

/// [`operator_key`] bound to the cluster, for operator commands.
async fn operator_signer(ctx: &Ctx, key: Option<PathBuf>) -> Result<Signer> {
    let id = operator_key(key)?;
    Ok(id.for_cluster(&ctx.cluster_id().await?))
}

/// The key of an operator command: `--key`, else `ARBOR_OPERATOR_KEY`, else `ARBOR_KEY`.
fn operator_key(key: Option<PathBuf>) -> Result<Identity> {
    let from_env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    match key
        .or_else(|| from_env("ARBOR_OPERATOR_KEY"))
        .or_else(|| from_env("ARBOR_KEY"))
    {
        Some(p) => Ok(Identity::load(&p)?),
        None => bail!("no operator key given: pass --key FILE or set ARBOR_OPERATOR_KEY"),
    }
}

fn parse_secs(s: &str) -> std::result::Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{s:?} must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A clap error as one line: the first paragraph of its message, whitespace collapsed.
pub fn clap_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    let first = first.trim().strip_prefix("error:").unwrap_or(first).trim();
    let line = first.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{line} (see --help)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_help_with_an_example() {
        fn walk(cmd: &clap::Command, path: String) {
            let subs: Vec<_> = cmd.get_subcommands().collect();
            if subs.is_empty() {
                assert!(cmd.get_about().is_some(), "{path} has no about");
                let long = cmd
                    .get_long_about()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                assert!(long.contains("Example"), "{path} has no example");
            }
            for s in subs {
                walk(s, format!("{path} {}", s.get_name()));
            }
        }
        walk(&Cli::command(), "arbor".into());
    }

    #[test]
    fn parse_errors_are_one_line() {
        let e = Cli::try_parse_from(["arbor", "keys", "generate", "--out", "x"])
            .err()
            .unwrap();
        let line = clap_error_line(&e);
        assert!(!line.contains('\n'));
        assert!(line.contains("--party"), "{line}");

        let e = Cli::try_parse_from(["arbor", "party", "enroll", "--role", "boss", "--id", "x"])
            .err()
            .unwrap();
        let line = clap_error_line(&e);
        assert!(line.contains("boss") && line.contains("operator"), "{line}");
    }

    #[test]
    fn globals_and_timeout() {
        let cli = Cli::try_parse_from([
            "arbor",
            "order",
            "get",
            "o-1",
            "--timeout",
            "0.5",
            "--output",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.timeout, Duration::from_millis(500));
        assert_eq!(cli.global.output, Format::Json);
        assert!(Cli::try_parse_from(["arbor", "order", "get", "o-1", "--timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["arbor", "order", "get", "o-1", "--timeout", "x"]).is_err());
        let cli = Cli::try_parse_from([
            "arbor",
            "order",
            "claim",
            "o-1",
            "--price-version",
            "1",
            "--total",
            "-5",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Order(order::OrderCmd::Claim { total: -5, .. })
        ));
    }
}
