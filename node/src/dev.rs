//! `arbor-node dev`: a complete local three-replica cluster in one process.
//!
//! Like `vault server -dev`: ports on 127.0.0.1 (base, base+1, base+2), data
//! under one directory, an operator key generated on first start, the cluster
//! bootstrapped, TLS on both ports with a local CA and replica certificates
//! generated on first start under `DIR/tls/`. The ports chosen on first
//! start are kept in `dev.json` so a restart on the same directory finds the
//! same membership and resumes. Peer ports are the client ports + 100.

use openraft::async_runtime::WatchReceiver;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::{start_node, NodeHandle};

pub const OPERATOR_PARTY: &str = "operator";

#[derive(Serialize, Deserialize)]
struct DevState {
    ports: [u16; 3],
}

/// Distance from a replica's client port to its peer port.
const PEER_PORT_OFFSET: u16 = 100;

/// The dev cluster's CA and replica certificates, created once.
fn ensure_certs(dir: &Path) -> anyhow::Result<()> {
    let tls = dir.join("tls");
    if !tls.join(crate::certs::CA_CERT).exists() {
        crate::certs::create_ca(&tls, "arbor-dev")?;
    }
    for id in 1..=3u64 {
        if !tls.join(format!("replica-{id}.pem")).exists() {
            crate::certs::issue_replica(
                &tls,
                id,
                &["127.0.0.1".into(), "localhost".into()],
                &tls,
                3650,
            )?;
        }
    }
    Ok(())
}

fn load_or_create_operator(path: &Path) -> anyhow::Result<SigningKey> {
    crate::identity::load_or_create_key_file(path, OPERATOR_PARTY)
        .map(|id| id.key)
        .map_err(|e| anyhow::anyhow!("operator key: {e}"))
}

fn ports(dir: &Path, base_port: u16) -> anyhow::Result<[u16; 3]> {
    let path = dir.join("dev.json");
    if path.exists() {
        let s: DevState = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .map_err(|e| anyhow::anyhow!("{} is damaged: {e}", path.display()))?;
        if s.ports[0] != base_port {
            tracing::warn!(ports = ?s.ports, "reusing the ports of the first start of this data directory");
        }
        return Ok(s.ports);
    }
    anyhow::ensure!(
        base_port > 0 && base_port < u16::MAX - 2 - PEER_PORT_OFFSET,
        "--base-port must leave room for three client ports and three peer ports (+{PEER_PORT_OFFSET})"
    );
    let s = DevState {
        ports: [base_port, base_port + 1, base_port + 2],
    };
    std::fs::write(&path, serde_json::to_string(&s)?)?;
    Ok(s.ports)
}

/// Runs the dev cluster until Ctrl-C or SIGTERM.
pub async fn run(data_dir: PathBuf, base_port: u16) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let ports = ports(&data_dir, base_port)?;
    let key_path = data_dir.join("operator.key");
    let op_key = load_or_create_operator(&key_path)?;
    let op_pub = op_key.verifying_key().to_bytes();
    ensure_certs(&data_dir)?;
    let tls_dir = data_dir.join("tls");
    let ca_path = tls_dir.join(crate::certs::CA_CERT);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peer_addrs: Vec<String> = ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p + PEER_PORT_OFFSET))
        .collect();
    let members: Vec<String> = addrs
        .iter()
        .zip(&peer_addrs)
        .enumerate()
        .map(|(i, (a, p))| format!("{}={a}/{p}", i + 1))
        .collect();

    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let cfg = NodeConfig {
            id,
            listen: addr.clone(),
            peer_listen: peer_addrs[i].clone(),
            tls: crate::tls::TlsConfig {
                ca_file: Some(ca_path.clone()),
                cert_file: Some(tls_dir.join(format!("replica-{id}.pem"))),
                key_file: Some(tls_dir.join(format!("replica-{id}.key"))),
                ..Default::default()
            },
            data_dir: data_dir.join(format!("node-{id}")),
            bootstrap: id == 1,
            members: if id == 1 { members.clone() } else { Vec::new() },
            operators: if id == 1 {
                vec![format!("{OPERATOR_PARTY}={}", hex::encode(op_pub))]
            } else {
                Vec::new()
            },
            ..NodeConfig::default()
        };
        let node = start_node(cfg)
            .await
            .map_err(|e| anyhow::anyhow!("replica {id} on {addr}: {e}"))?;
        nodes.push(node);
    }

    wait_ready(&nodes).await?;
    enroll_replicas(&nodes, &op_key, &ca_path).await?;
    let endpoints = addrs.join(",");
    let env_path = data_dir.join("dev.env");
    std::fs::write(
        &env_path,
        format!(
            "export ARBOR_ENDPOINTS={endpoints}\nexport ARBOR_OPERATOR_KEY={}\nexport ARBOR_CACERT={}\n",
            key_path.display(),
            ca_path.display()
        ),
    )?;
    println!(
        "arbor dev cluster is up: 3 replicas, data in {}",
        data_dir.display()
    );
    for (i, a) in addrs.iter().enumerate() {
        println!("  replica {} at {a} (peer port {})", i + 1, peer_addrs[i]);
    }
    println!(
        "TLS:          CA {} (clients need it: ARBOR_CACERT)",
        ca_path.display()
    );
    println!(
        "operator key: {} (party id \"{OPERATOR_PARTY}\")",
        key_path.display()
    );
    println!("environment:  source {}", env_path.display());
    println!("then try:     arbor cluster status");
    println!("stop with Ctrl-C; start again on the same directory to resume");

    shutdown_signal().await;
    println!("stopping...");
    for n in nodes {
        n.shutdown().await;
    }
    println!("stopped; data kept in {}", data_dir.display());
    Ok(())
}

/// Waits until the genesis entry exists and all three replicas are voters.
async fn wait_ready(nodes: &[NodeHandle]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = nodes[0].raft.metrics().borrow_watched().clone();
        let voters = m.membership_config.membership().voter_ids().count();
        let leader = m.current_leader.is_some();
        let genesis = nodes.iter().all(|n| matches!(n.reader.head(), Ok(Some(_))));
        if voters == nodes.len() && leader && genesis {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("cluster not ready after 60 s (voters {voters}, leader known {leader}, genesis on all {genesis})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Enrols each replica's checkpoint-signing key (role replica) with the
/// operator key, once, so that checkpoints can be verified from the ledger.
async fn enroll_replicas(
    nodes: &[NodeHandle],
    op: &SigningKey,
    ca_path: &Path,
) -> anyhow::Result<()> {
    use arbor_proto::pb;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let ca = std::fs::read(ca_path)?;
    let channel = Endpoint::from_shared(format!("https://{}", nodes[0].addr))?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?
        .connect()
        .await?;
    let mut client = pb::arbor_client::ArborClient::new(channel);
    let cluster_id = nodes[0]
        .reader
        .config()?
        .map(|c| c.cluster_id)
        .ok_or_else(|| anyhow::anyhow!("no genesis yet"))?;
    for n in nodes {
        if n.reader.party(&n.identity.name)?.is_some() {
            continue;
        }
        let cmd = pb::Command {
            nonce: rand::random(),
            body: Some(pb::command::Body::EnrollParty(pb::EnrollParty {
                party_id: n.identity.name.clone(),
                role: pb::Role::Replica as i32,
                kind: pb::NodeKind::Unspecified as i32,
                public_key: n.identity.public_key().to_vec(),
                channel_names: Vec::new(),
            })),
        };
        let reply = client
            .submit(arbor_proto::ledger::sign_command(
                op,
                &cluster_id,
                OPERATOR_PARTY,
                &cmd,
            ))
            .await
            .map_err(|s| anyhow::anyhow!("enrol {}: {}", n.identity.name, s.message()))?
            .into_inner();
        let accepted = reply.outcome.as_ref().map(|o| o.accepted).unwrap_or(false);
        anyhow::ensure!(accepted, "enrol {}: {:?}", n.identity.name, reply.outcome);
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
