//! `arbor-node`: run one replica, or a local three-replica dev cluster.

use std::path::PathBuf;

use anyhow::Context;
use arbor_node::{start_node, NodeConfig};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "arbor-node",
    version,
    about = "A replica of the arbor order arbitration ledger",
    long_about = concat!(
        "A replica of the arbor order arbitration ledger: openraft consensus, RocksDB storage, gRPC.\n\n",
        "Run one replica (the bootstrap one; the others need only --id, --listen, --data-dir):\n",
        "  arbor-node run --id 1 --listen 127.0.0.1:7101 --data-dir data/1 \\\n",
        "    --bootstrap --member 1=127.0.0.1:7101 --member 2=127.0.0.1:7102 --member 3=127.0.0.1:7103 \\\n",
        "    --operator operator=<PUBLIC_KEY_HEX>\n",
        "Local three-replica cluster:\n",
        "  arbor-node dev\n\n",
        "Settings come from defaults < --config FILE (TOML) < ARBOR_* environment < flags.\n",
        "See docs/arbor-node.example.toml and docs/operations.md."
    ),
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Cmd {
    /// Run one replica (the default when no subcommand is given)
    Run(RunArgs),
    /// Start a complete local three-replica cluster in this process
    #[command(
        long_about = "Start a complete local three-replica cluster in this process.\n\n\
Replicas listen on 127.0.0.1 at --base-port, +1, +2. On first start an operator key is generated\n\
at DIR/operator.key and the cluster is bootstrapped; DIR/dev.env exports ARBOR_ENDPOINTS and\n\
ARBOR_OPERATOR_KEY for the arbor CLI. Started again on the same directory it resumes with all data.\n\
Stops cleanly on Ctrl-C or SIGTERM."
    )]
    Dev(DevArgs),
}

#[derive(Args)]
struct DevArgs {
    /// Directory for all three replicas' data, the operator key and dev.env
    #[arg(long, env = "ARBOR_DATA_DIR", default_value = "arbor-data")]
    data_dir: PathBuf,
    /// First of three consecutive ports on 127.0.0.1
    #[arg(long, env = "ARBOR_BASE_PORT", default_value_t = 7101)]
    base_port: u16,
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
    /// Address peers and clients use for this replica (default: the listen address)
    #[arg(long, env = "ARBOR_ADVERTISE")]
    advertise: Option<String>,
    /// Data directory (RocksDB, snapshots)
    #[arg(long, env = "ARBOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Initialise a new cluster from this replica on first start
    #[arg(long)]
    bootstrap: bool,
    /// Initial member ID=HOST:PORT (repeat; with --bootstrap)
    #[arg(long = "member", value_name = "ID=HOST:PORT")]
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
        if let Some(v) = self.lapse_sweep_ms {
            c.lapse_sweep_ms = v;
        }
        if let Some(v) = self.snapshot_every {
            c.snapshot_every = v;
        }
        if let Some(v) = self.keep_logs {
            c.keep_logs = v;
        }
        c.validate()?;
        Ok(c)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARBOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let node = start_node(config).await.context("cannot start replica")?;
    println!("arbor-node {} serving on {}", node.id, node.addr);
    arbor_node::dev::shutdown_signal().await;
    node.shutdown().await;
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.cmd {
            Some(Cmd::Dev(d)) => arbor_node::dev::run(d.data_dir, d.base_port).await,
            Some(Cmd::Run(r)) => run(r).await,
            None => run(cli.run).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
