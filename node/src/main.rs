//! `arbor-node`: run one replica, or a local three-replica dev cluster.

use std::path::PathBuf;

use anyhow::Context;
use arbor_node::{start_node, NodeConfig};
use clap::{Args, Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a claim allocates and frees many
/// small buffers on every replica (docs/performance.md, "Allocation").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "arbor-node",
    version,
    about = "A replica of the arbor order arbitration ledger",
    long_about = concat!(
        "A replica of the arbor order arbitration ledger: openraft consensus, RocksDB storage, gRPC.\n\n",
        "Run one replica (the bootstrap one; the others need no --bootstrap, --member, --operator):\n",
        "  arbor-node cert ca --dir pki && arbor-node cert replica --dir pki --id 1 --host 127.0.0.1\n",
        "  arbor-node run --id 1 --listen 127.0.0.1:7101 --peer-listen 127.0.0.1:7201 --data-dir data/1 \\\n",
        "    --ca-file pki/ca.pem --cert-file pki/replica-1.pem --key-file pki/replica-1.key \\\n",
        "    --bootstrap --member 1=127.0.0.1:7101/127.0.0.1:7201 --member 2=127.0.0.1:7102/127.0.0.1:7202 \\\n",
        "    --member 3=127.0.0.1:7103/127.0.0.1:7203 --operator operator=<PUBLIC_KEY_HEX>\n",
        "Local three-replica cluster (TLS, certificates generated on first start):\n",
        "  arbor-node dev\n\n",
        "Settings come from defaults < --config FILE (TOML) < ARBOR_* environment < flags.\n",
        "See docs/arbor-node.example.toml and docs/operations.md."
    ),
    after_long_help = EXIT_CODES,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The exit codes `arbor-node` uses (those of `arbor`, docs/operations.md).
const EXIT_CODES: &str = "Exit codes:
  0   stopped cleanly (Ctrl-C, SIGTERM), or the command succeeded
  1   failure: cannot start (already running on the data directory, port in use, storage), or an error not covered below
  3   not found: a file named by a flag (config, certificate, key)
  64  usage error: bad flags or arguments, an invalid configuration, no subcommand";

/// Exit code 64: bad flags, arguments or configuration.
const EXIT_USAGE: i32 = 64;

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Cmd {
    /// Run one replica
    #[command(
        long_about = "Run one replica with the settings of --config FILE, ARBOR_* environment and flags \
(see docs/operations.md). Only the bootstrap replica takes --bootstrap, --member and --operator.\n\n\
Example:\n  arbor-node run --config /etc/arbor/node-1.toml"
    )]
    Run(RunArgs),
    /// Start a complete local three-replica cluster in this process
    #[command(
        long_about = "Start a complete local three-replica cluster in this process.\n\n\
Replicas listen on 127.0.0.1 at --base-port, +1, +2. On first start an operator key is generated\n\
at DIR/operator.key and the cluster is bootstrapped; DIR/dev.env exports ARBOR_ENDPOINTS and\n\
ARBOR_OPERATOR_KEY for the arbor CLI. Started again on the same directory it resumes with all data\n\
(on the ports of its first start). Stops cleanly on Ctrl-C or SIGTERM.\n\n\
Example:\n  arbor-node dev --data-dir arbor-data --base-port 7101"
    )]
    Dev(DevArgs),
    /// Create the cluster CA and issue replica and client certificates
    #[command(subcommand, arg_required_else_help = true)]
    Cert(CertCmd),
    /// Set aside a replica's damaged storage so that it rebuilds from its peers (keeps its identity)
    #[command(
        long_about = "Set aside a replica's damaged storage so that it rebuilds from its peers.\n\n\
Run it on the stopped replica, with the same --config/--data-dir it runs with. It moves DIR/db and\n\
DIR/snapshots to DIR/damaged-<unix time>/ and leaves a RECOVERING marker; identity.key and the\n\
bootstrap marker stay, so the replica keeps its node id and checkpoint identity. Then start the\n\
replica as usual: the leader sends it a snapshot and the log. Until it has caught up it refuses\n\
to vote and answers clients UNAVAILABLE (health NOT_SERVING). See docs/operations.md \"Disk faults\"."
    )]
    Recover(RecoverArgs),
}

#[derive(Args)]
struct RecoverArgs {
    /// TOML config file of the replica (for its data-dir)
    #[arg(long, env = "ARBOR_CONFIG")]
    config: Option<PathBuf>,
    /// The replica's data directory (overrides the config file)
    #[arg(long, env = "ARBOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand)]
enum CertCmd {
    /// Create a new cluster CA: DIR/ca.pem (give it to replicas and clients) and DIR/ca.key (keep it offline)
    Ca {
        /// Directory for ca.pem and ca.key
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Name in the CA's subject (e.g. the cluster id)
        #[arg(long, value_name = "NAME", default_value = "arbor")]
        name: String,
    },
    /// Issue a replica certificate: names arbor-replica-ID (what peers check) and each --host
    Replica {
        /// Directory holding ca.pem and ca.key
        #[arg(long)]
        dir: PathBuf,
        /// The replica's raft node id
        #[arg(long)]
        id: u64,
        /// IP address or DNS name clients reach this replica by (repeat)
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Where to write replica-ID.pem and replica-ID.key (default: --dir)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity in days
        #[arg(long, default_value_t = arbor_node::certs::DEFAULT_DAYS)]
        days: u32,
    },
    /// Issue a client certificate (for clusters that require them: tls.client-cert-required)
    Client {
        /// Directory holding ca.pem and ca.key
        #[arg(long)]
        dir: PathBuf,
        /// Name in the certificate (letters, digits, '-', '_', '.')
        #[arg(long)]
        name: String,
        /// Where to write client-NAME.pem and client-NAME.key (default: --dir)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity in days
        #[arg(long, default_value_t = arbor_node::certs::DEFAULT_DAYS)]
        days: u32,
    },
}

#[derive(Args)]
struct DevArgs {
    /// Directory for all three replicas' data, the operator key and dev.env
    #[arg(long, env = "ARBOR_DATA_DIR", default_value = "arbor-data")]
    data_dir: PathBuf,
    /// First of three consecutive client ports on 127.0.0.1 (peers +100) [default: 7101]; a directory started before keeps its ports
    #[arg(long, env = "ARBOR_BASE_PORT", value_name = "PORT")]
    base_port: Option<u16>,
    /// Log format on stderr: text (colour only on a terminal) or json (one object per line)
    #[arg(long, env = "ARBOR_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Args, Clone, Default)]
struct RunArgs {
    /// TOML config file (unknown keys are an error)
    #[arg(long, env = "ARBOR_CONFIG")]
    config: Option<PathBuf>,
    /// Raft node id (> 0, unique in the cluster)
    #[arg(long, env = "ARBOR_NODE_ID")]
    id: Option<u64>,
    /// gRPC listen address, e.g. 127.0.0.1:7101
    #[arg(long, env = "ARBOR_LISTEN")]
    listen: Option<String>,
    /// Address clients use for this replica (default: the listen address)
    #[arg(long, env = "ARBOR_ADVERTISE")]
    advertise: Option<String>,
    /// Peer listen address (raft traffic, mutual TLS, members only), e.g. 127.0.0.1:7201
    #[arg(long, env = "ARBOR_PEER_LISTEN")]
    peer_listen: Option<String>,
    /// Address other replicas use for this replica (default: the peer listen address)
    #[arg(long, env = "ARBOR_PEER_ADVERTISE")]
    peer_advertise: Option<String>,
    /// The cluster CA certificate (PEM)
    #[arg(long, env = "ARBOR_TLS_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// This replica's certificate (PEM, from `arbor-node cert replica`)
    #[arg(long, env = "ARBOR_TLS_CERT_FILE")]
    cert_file: Option<PathBuf>,
    /// This replica's private key (PEM)
    #[arg(long, env = "ARBOR_TLS_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// CA of client certificates (default: the cluster CA)
    #[arg(long, env = "ARBOR_TLS_CLIENT_CA_FILE")]
    client_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate from the client CA
    #[arg(long)]
    client_cert_required: bool,
    /// INSECURE: serve both ports without TLS; anyone reaching the peer port can rewrite the ledger
    #[arg(long)]
    insecure_plaintext: bool,
    /// Data directory (RocksDB, snapshots)
    #[arg(long, env = "ARBOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Initialise a new cluster from this replica on first start
    #[arg(long)]
    bootstrap: bool,
    /// Initial member ID=CLIENT_HOST:PORT/PEER_HOST:PORT (repeat; with --bootstrap)
    #[arg(long = "member", value_name = "ID=ADDR/PEER_ADDR")]
    members: Vec<String>,
    /// Genesis operator PARTY_ID=PUBLIC_KEY_HEX (repeat; with --bootstrap)
    #[arg(long = "operator", value_name = "PARTY=PUBHEX")]
    operators: Vec<String>,
    /// Cluster name recorded in the genesis entry
    #[arg(long, env = "ARBOR_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// Lease grace in ms recorded in the genesis entry: added to a node's
    /// declared dispatch time before its ownership of an unshipped order lapses
    #[arg(long, env = "ARBOR_LEASE_GRACE_MS")]
    lease_grace_ms: Option<u64>,
    /// Fence in ms recorded in the genesis entry: how long a lapsed order that
    /// was picked or packed stays held for its old owner (0 = the default, 2 h)
    #[arg(long, env = "ARBOR_FENCE_MS")]
    fence_ms: Option<u64>,
    /// Claim deadline recorded in the genesis entry: KIND=DURATION, KIND one of lost, damaged, late, duplicate_processing, price_mismatch (repeat; a kind not named gets its default; with --bootstrap)
    #[arg(long = "claim-deadline", value_name = "KIND=DURATION", value_parser = parse_claim_deadline)]
    claim_deadlines: Vec<String>,
    /// Every N ms the leader records lapsed leases (RecordLapse, signed by its
    /// enrolled replica identity); 0 = off
    #[arg(long, env = "ARBOR_LAPSE_SWEEP_MS")]
    lapse_sweep_ms: Option<u64>,
    /// Local IP for connections to other replicas (default: chosen by the OS)
    #[arg(long, env = "ARBOR_SOURCE_IP", value_name = "IP")]
    source_ip: Option<String>,
    /// Build a snapshot every N raft log entries
    #[arg(long, env = "ARBOR_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// Raft log entries kept after a snapshot
    #[arg(long, env = "ARBOR_KEEP_LOGS")]
    keep_logs: Option<u64>,
    /// Prometheus endpoint address (GET /metrics, plain HTTP), e.g. 127.0.0.1:9101
    #[arg(long, env = "ARBOR_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Log format on stderr: text (colour only on a terminal) or json (one object per line)
    #[arg(long, env = "ARBOR_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

/// Checks one `KIND=DURATION` as typed (the parser `arbor cluster
/// set-rules --claim-deadline` uses).
fn parse_claim_deadline(s: &str) -> Result<String, String> {
    arbor_proto::rules::parse_claim_deadline(s)?;
    Ok(s.to_string())
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.config {
            Some(p) => NodeConfig::from_file(p)?,
            None => NodeConfig::default(),
        };
        if let Some(v) = self.id {
            c.id = v;
            if self.data_dir.is_none() && self.config.is_none() {
                c.data_dir = PathBuf::from(format!("arbor-data/node-{v}"));
            }
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.advertise {
            c.advertise = Some(v);
        }
        if let Some(v) = self.peer_listen {
            c.peer_listen = v;
        }
        if let Some(v) = self.peer_advertise {
            c.peer_advertise = Some(v);
        }
        if let Some(v) = self.ca_file {
            c.tls.ca_file = Some(v);
        }
        if let Some(v) = self.cert_file {
            c.tls.cert_file = Some(v);
        }
        if let Some(v) = self.key_file {
            c.tls.key_file = Some(v);
        }
        if let Some(v) = self.client_ca_file {
            c.tls.client_ca_file = Some(v);
        }
        if self.client_cert_required {
            c.tls.client_cert_required = true;
        }
        if self.insecure_plaintext {
            c.insecure_plaintext = true;
        }
        if let Some(v) = self.source_ip {
            c.source_ip = Some(v);
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if self.bootstrap {
            c.bootstrap = true;
        }
        if !self.members.is_empty() {
            c.members = self.members;
        }
        if !self.operators.is_empty() {
            c.operators = self.operators;
        }
        if let Some(v) = self.cluster_id {
            c.cluster_id = v;
        }
        if let Some(v) = self.lease_grace_ms {
            c.lease_grace_ms = v;
        }
        if let Some(v) = self.fence_ms {
            c.fence_ms = v;
        }
        if !self.claim_deadlines.is_empty() {
            c.claim_deadlines = self.claim_deadlines;
        }
        if let Some(v) = self.lapse_sweep_ms {
            c.lapse_sweep_ms = v;
        }
        if let Some(v) = self.snapshot_every {
            c.snapshot_every = v;
        }
        if let Some(v) = self.keep_logs {
            c.keep_logs = v;
        }
        if let Some(v) = self.metrics_listen {
            c.metrics_listen = Some(v);
        }
        c.validate()?;
        Ok(c)
    }
}

/// Log filter: `RUST_LOG`, else `ARBOR_LOG` (the older name), else info.
/// Colour only when stderr is a terminal; `--log-format json` for collectors.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("ARBOR_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
}

/// Exit status of a replica that stopped because it can no longer serve
/// (raft's core stopped, storage corrupt): a supervisor restarts it.
const EXIT_OUT_OF_SERVICE: i32 = 1;

async fn run(config: NodeConfig) -> anyhow::Result<()> {
    // A second instance on the same data is named, not left to a RocksDB lock error.
    let _lock = arbor_node::dev::lock_data_dir(&config.data_dir)?;
    let node = start_node(config).await.context("cannot start replica")?;
    match &node.metrics_addr {
        Some(m) => println!(
            "arbor-node {} serving on {} (metrics http://{m}/metrics)",
            node.id, node.addr
        ),
        None => println!("arbor-node {} serving on {}", node.id, node.addr),
    }
    let stopped = node.stopped();
    tokio::select! {
        _ = arbor_node::dev::shutdown_signal() => {
            node.shutdown().await;
            Ok(())
        }
        reason = stopped => {
            tracing::error!(node = node.id, %reason, "replica out of service: exiting so that a supervisor restarts it");
            eprintln!("error: replica {} out of service: {reason}", node.id);
            node.shutdown().await;
            std::process::exit(EXIT_OUT_OF_SERVICE);
        }
    }
}

fn recover(args: RecoverArgs) -> anyhow::Result<()> {
    let data_dir = match (args.data_dir, args.config) {
        (Some(d), _) => d,
        (None, Some(c)) => NodeConfig::from_file(&c)?.data_dir,
        (None, None) => anyhow::bail!("give --data-dir or --config"),
    };
    // Not while the replica runs on it.
    let _lock = arbor_node::dev::lock_data_dir(&data_dir)?;
    let moved = arbor_node::health::recover(&data_dir)?;
    println!(
        "damaged storage moved to {}; start the replica as usual: it rebuilds from its peers",
        moved.display()
    );
    Ok(())
}

fn cert(cmd: CertCmd) -> anyhow::Result<()> {
    use arbor_node::certs;
    let (cert, key) = match cmd {
        CertCmd::Ca { dir, name } => certs::create_ca(&dir, &name)?,
        CertCmd::Replica {
            dir,
            id,
            hosts,
            out,
            days,
        } => {
            let out = out.unwrap_or_else(|| dir.clone());
            certs::issue_replica(&dir, id, &hosts, &out, days)?
        }
        CertCmd::Client {
            dir,
            name,
            out,
            days,
        } => {
            let out = out.unwrap_or_else(|| dir.clone());
            certs::issue_client(&dir, &name, &out, days)?
        }
    };
    println!("wrote {} and {}", cert.display(), key.display());
    Ok(())
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            });
        }
    };
    // Flags and configuration are checked before anything starts.
    let run_config = match &cli.cmd {
        Cmd::Run(r) => match r.clone().into_config() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(exit_code(&e, EXIT_USAGE));
            }
        },
        _ => None,
    };
    let log_format = match &cli.cmd {
        Cmd::Dev(d) => d.log_format,
        Cmd::Run(r) => r.log_format,
        Cmd::Cert(_) | Cmd::Recover(_) => None,
    };
    init_tracing(log_format.unwrap_or_default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Dev(d) => arbor_node::dev::run(d.data_dir, d.base_port).await,
            Cmd::Run(_) => run(run_config.expect("checked above")).await,
            Cmd::Cert(c) => cert(c),
            Cmd::Recover(r) => recover(r),
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(exit_code(&e, 1));
    }
}

/// 3 when a file named by a flag does not exist, else `otherwise`.
fn exit_code(e: &anyhow::Error, otherwise: i32) -> i32 {
    let not_found = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    });
    if not_found {
        3
    } else {
        otherwise
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
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
        walk(&Cli::command(), "arbor-node".into(), &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }

    #[test]
    fn a_missing_file_is_not_found_other_errors_keep_their_code() {
        let missing = std::fs::read("/nonexistent/arbor.toml").unwrap_err();
        let e = anyhow::Error::from(missing).context("cannot read config file");
        assert_eq!(exit_code(&e, EXIT_USAGE), 3);
        assert_eq!(
            exit_code(&anyhow::anyhow!("id must be > 0"), EXIT_USAGE),
            64
        );
        assert_eq!(exit_code(&anyhow::anyhow!("port in use"), 1), 1);
        let c = Cli::try_parse_from(["arbor-node", "run", "--config", "/nonexistent/arbor.toml"])
            .unwrap();
        let Cmd::Run(r) = c.cmd else { panic!("run") };
        assert_eq!(exit_code(&r.into_config().unwrap_err(), EXIT_USAGE), 3);
    }

    #[test]
    fn no_subcommand_is_a_usage_error_not_a_replica() {
        let e = Cli::try_parse_from(["arbor-node"])
            .err()
            .expect("no subcommand");
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        let e = Cli::try_parse_from(["arbor-node", "--id", "1"])
            .err()
            .expect("flags need run");
        assert_ne!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(Cli::try_parse_from(["arbor-node", "run", "--id", "1"]).is_ok());
        let dev = Cli::try_parse_from(["arbor-node", "dev"]).unwrap();
        assert!(matches!(
            dev.cmd,
            Cmd::Dev(DevArgs {
                base_port: None,
                ..
            })
        ));
    }
}
