//! `arbor`: the command line client. Argument definitions, dispatch, the
//! runtime, printing and exit codes live here; each command is a module
//! beside this file, built on the `arbor-client` library (which knows
//! nothing of clap or anyhow).
//!
//! Each command returns a [`Reply`] already rendered in the chosen format;
//! `main` prints it and turns it, or the error, into the exit code
//! ([`exit`]: 0 ok, 2 rejected, 3 not found, 4 unavailable, 5 refused by
//! the replica, 6 refused locally, 64 usage, 1 anything else).

mod audit;
mod audit_bundle;
mod bench;
mod cluster;
mod cluster_rules;
mod decode;
mod dispute;
mod epcis;
mod exit;
mod explore;
mod keys;
mod ledger;
mod order;
mod output;
mod party;
mod profile;
mod time;
mod trace;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use arbor_client::{Client, Identity, Signer};
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use exit::{CliError, Exit};
use output::{Format, Reply};

/// mimalloc instead of glibc's malloc, as in `arbor-node`: `arbor bench`
/// and `arbor audit verify` allocate per command and per entry.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

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
arbor keys generate --party store-17            # keys/store-17.key (secret, 0600)\n  \
arbor keys export-public keys/store-17.key      # keys/store-17.pub (for the operator)\n  \
arbor party enroll --role node --kind store --public-key-file keys/store-17.pub\n  \
arbor cluster status",
    after_long_help = exit::EXIT_CODES_HELP
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
    /// Give up on the cluster after this long (retries included): seconds, or a duration such as 2m
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
    /// Claims benchmark against a running cluster (throughput, latency, CPU per claim, single owner)
    #[command(
        long_about = "Claims benchmark against a running cluster: throughput, latency, CPU per claim, \
and a check that every order ends with exactly one owner.\n\n\
Production configuration first: each replica's checkpoint-signing identity is enrolled (role \
replica) if it is not yet, as `arbor-node dev` does, so the leader's lease sweep runs. The \
operator key enrols a fresh channel and --nodes fresh fulfilment nodes (under a random run id, \
so runs can repeat on one cluster). Phases: --preload N orders registered and claimed by real \
signed commands (fast, --preload-in-flight at a time; not measured as claims); --orders orders \
registered; an idle window (--settle-secs, then --idle-secs with nothing submitted) measuring \
each --pid process's CPU as % of a core; the claims, timed: --in-flight outstanding, a \
--duplicates share of them a second node racing for an order already claimed, which must be \
rejected `already_owned`, every claim its own signed command, signed before the clock starts; \
then every order read back (linearizable GetOrder), timed. Claims and reads report ops/s, \
latency (submit to reply) p50/p90/p99/p999/max in ms, and CPU microseconds per operation of \
each --pid process (from /proc/PID/stat) and of the bench itself. If an order has no owner, \
or its owner is not the node whose claim was acknowledged as accepted, the report is printed \
and the command exits 1. Progress goes to stderr.\n\n\
With --etcd ENDPOINTS the same workload runs against etcd v3 instead (a claim is one \
transaction: owner key never created ? put owner : read owner). scripts/bench.sh and \
scripts/bench-etcd.sh run it against fresh local clusters; scripts/bench-compare.sh runs both \
side by side.\n\n\
Example:\n  arbor bench --key operator.key --orders 20000 --in-flight 256 --duplicates 0.2 --pid 1=4242 --output json"
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
    /// Print a shell completion script: bash, zsh or fish
    #[command(
        long_about = "Print a completion script for the shell on stdout; subcommands, flags and \
their values complete on TAB.\n\n\
Examples:\n  arbor completions bash > ~/.local/share/bash-completion/completions/arbor\n  \
arbor completions zsh > \"${fpath[1]}/_arbor\"\n  \
arbor completions fish > ~/.config/fish/completions/arbor.fish"
    )]
    Completions {
        /// The shell to complete in
        #[arg(value_enum, value_name = "SHELL")]
        shell: CompletionShell,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script of `arbor` for `shell`.
fn completions(shell: CompletionShell) -> Reply {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "arbor", &mut out);
    Reply::new(String::from_utf8_lossy(&out).into_owned())
}

fn main() -> ExitCode {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json_errors = wants_json(&raw);
    let args = match Cli::try_parse_from(&raw) {
        Ok(a) => a,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    Exit::Usage.into()
                }
                _ => report_error(
                    json_errors,
                    &CliError::new(Exit::Usage, clap_error_line(&e)),
                ),
            };
        }
    };
    let json_errors = args.global.output == Format::Json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return report_error(
                json_errors,
                &CliError::new(
                    Exit::Failure,
                    format!("cannot start the async runtime: {e}"),
                ),
            )
        }
    };
    match runtime.block_on(run(args)) {
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`arbor ledger entries | head`) is not an error.
            let _ = out
                .write_all(reply.text.as_bytes())
                .and_then(|_| out.flush());
            let code = reply.exit_code();
            match &reply.failed {
                Some(e) => report_error(json_errors, &CliError::new(code, e.clone())),
                None => {
                    if let Some(w) = &reply.unverified {
                        eprintln!("warning: {w}");
                    }
                    code.into()
                }
            }
        }
        Err(e) => {
            let exit = exit::classify(&e);
            let details = e
                .chain()
                .find_map(|c| c.downcast_ref::<CliError>())
                .and_then(|c| c.details.clone());
            let mut err = CliError::new(exit, chain(&e));
            err.details = details;
            report_error(json_errors, &err)
        }
    }
}

/// Whether the command line asks for `--output json` (read before clap has
/// parsed it, so that a usage error can be reported as JSON too).
fn wants_json(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    args.windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.contains(&"--output=json")
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

/// Prints the error on stderr, one `error:` line or (with `--output json`)
/// one JSON object, and gives its exit code.
fn report_error(json: bool, e: &CliError) -> ExitCode {
    let line = e.message.split_whitespace().collect::<Vec<_>>().join(" ");
    if json {
        let mut obj = serde_json::json!({
            "error": line,
            "kind": e.exit.name(),
            "exit_code": e.exit.code(),
        });
        if let Some(serde_json::Value::Object(d)) = &e.details {
            for (k, v) in d {
                obj[k] = v.clone();
            }
        }
        eprintln!("{obj}");
    } else {
        eprintln!("error: {line}");
    }
    e.exit.into()
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
        Command::Completions { shell } => Ok(completions(shell)),
    }
}

/// The key of a party command: `--key`, which clap already fills from
/// `ARBOR_KEY`, bound to the cluster ([`Ctx::cluster_id`]).
async fn signing_key(ctx: &Ctx, key: Option<PathBuf>) -> Result<Signer> {
    let id = match key {
        Some(p) => keys::load_secret(&p)?,
        None => exit::usage!("no key given: pass --key FILE or set ARBOR_KEY"),
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
        Some(p) => keys::load_secret(&p),
        None => exit::usage!("no operator key given: pass --key FILE or set ARBOR_OPERATOR_KEY"),
    }
}

fn parse_secs(s: &str) -> std::result::Result<Duration, String> {
    let secs: f64 = match s.trim().parse() {
        Ok(v) => v,
        Err(_) => time::parse_duration(s)
            .map_err(|_| format!("{s:?} is not a number of seconds or a duration (15, 2m)"))?
            .as_secs_f64(),
    };
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

    /// Every flag and positional of every subcommand says what it is.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: String, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in cmd.get_subcommands() {
                if s.get_about().is_none() && s.get_long_about().is_none() {
                    missing.push(format!("{path} {} (subcommand)", s.get_name()));
                }
                walk(s, format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "arbor".into(), &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let script = completions(shell).text;
            for word in ["order", "claim", "at-current-price", "dry-run", "watch"] {
                assert!(script.contains(word), "{shell:?} lacks {word}");
            }
        }
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
            Command::Order(order::OrderCmd::Claim {
                quote: order::Quote {
                    total: Some(-5),
                    ..
                },
                ..
            })
        ));
    }
}
