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
    /// Create the cluster CA and issue replica and client certificates
    #[command(subcommand)]
    Cert(CertCmd),
}

#[derive(Subcommand)]
enum CertCmd {
    /// Create a new cluster CA: DIR/ca.pem (give it to replicas and clients) and DIR/ca.key (keep it offline)
    Ca {
        /// Directory for ca.pem and ca.key
        #[arg(long)]
        dir: PathBuf,
        /// Name in the CA's subject (e.g. the cluster id)
        #[arg(long, default_value = "arbor")]
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
            Some(Cmd::Cert(c)) => cert(c),
            None => run(cli.run).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
