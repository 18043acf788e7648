//! `TestCluster`: real `arbor-node` processes on OS-assigned ports in a temp dir.
//!
//! Every cluster runs TLS as a production one does: the harness creates a CA
//! and one certificate per replica with `arbor-node cert` (in `pki/`), each
//! replica serves its client port over TLS and its peer port over mutual TLS,
//! and every client the harness hands out checks the CA ([`TestCluster::transport`]).
//!
//! Shaped after etcd's integration `cluster.go` and TiKV's `test_raftstore`:
//! the test drives replicas (kill, stop, restart, add) and waits on observable
//! conditions with deadlines; [`TestCluster::check_invariants`] runs every
//! invariant of [`crate::invariants`] against what the replicas serve. On a
//! failing test the harness prints each replica's log tail (set
//! `ARBOR_KEEP_TEST_DIRS=1` to keep the data dirs too). Dropping the cluster
//! kills every replica.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arbor_client::{Client, Commands, Identity, Signer, TlsOptions, Transport};
use arbor_proto::pb;
use futures::StreamExt;
use tempfile::TempDir;

use crate::acks::{Acks, Submitter};
use crate::bins::node_bin;
use crate::fixtures::{sample_order, sample_profile};
use crate::invariants;
use crate::ports::free_port;
use crate::proxy::{self, Proxy};
use crate::replica::Process;
use crate::wait::{self, TIMEOUT};

/// Party id of the operator key named in genesis.
pub const OPERATOR: &str = "operator";

/// Per-call timeout of the clients the harness hands out.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a replica gets to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags every replica of the cluster is started with.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--snapshot-every N`
    pub snapshot_every: Option<u64>,
    /// `--keep-logs N`
    pub keep_logs: Option<u64>,
    /// `--lease-grace-ms N` (recorded in genesis by the bootstrap replica)
    pub lease_grace_ms: Option<u64>,
    /// `--fence-ms N` (recorded in genesis by the bootstrap replica)
    pub fence_ms: Option<u64>,
    /// Put a TCP proxy in front of every replica's peer port (and give each
    /// its own source address) so that [`TestCluster::partition`] can cut links.
    pub partitionable: bool,
    /// More arguments for every replica (e.g. `--config FILE`).
    pub extra_args: Vec<String>,
    /// `--cluster-id` (recorded in genesis); default [`DEFAULT_CLUSTER_ID`].
    pub cluster_id: Option<String>,
    /// The operator key genesis names; default a fresh one. Two clusters
    /// given the same key share an operator (the cross-cluster tests).
    pub operator: Option<Identity>,
}

/// The cluster id of a harness cluster unless [`Options::cluster_id`] says otherwise.
pub const DEFAULT_CLUSTER_ID: &str = "arbor-test";

struct Replica {
    /// The client API address.
    addr: String,
    /// The peer address the replica advertises (its proxy's, when partitionable).
    peer_addr: String,
    proxy: Option<Proxy>,
    process: Process,
    /// SIGSTOPped by [`TestCluster::pause`]: alive but unresponsive.
    paused: AtomicBool,
    /// The Prometheus endpoint (`--metrics-listen`).
    metrics_addr: String,
}

/// What [`TestCluster::check_invariants`] verified: the chain and its replayed state.
pub struct Audit {
    pub chain: Vec<pb::LedgerEntry>,
    pub state: arbor_proto::rules::MemState,
}

pub struct TestCluster {
    dir: TempDir,
    bin: PathBuf,
    transport: Transport,
    opts: Options,
    /// The operator named in genesis, bound to this cluster's id.
    operator: Signer,
    replicas: BTreeMap<u64, Replica>,
    acks: Acks,
}

/// Where a replica listens and what it advertises.
struct Address {
    listen: String,
    peer_listen: String,
    peer_advertised: String,
    proxy: Option<Proxy>,
}

/// Runs `arbor-node cert ...`; panics with its output unless it succeeds.
pub fn node_cert(bin: &Path, args: &[&str]) {
    let out = std::process::Command::new(bin)
        .arg("cert")
        .args(args)
        .output()
        .expect("run arbor-node cert");
    assert!(
        out.status.success(),
        "arbor-node cert {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The endpoint string a client is given for a replica address.
pub fn endpoint(addr: &str) -> String {
    addr.to_string()
}

impl TestCluster {
    /// Starts `n` voters and waits until they form a cluster: one leader, `n`
    /// voting members, genesis applied everywhere.
    pub async fn voters(n: u64) -> TestCluster {
        TestCluster::start(n, Options::default()).await
    }

    /// As [`TestCluster::voters`], with extra flags for every replica.
    pub async fn start(n: u64, opts: Options) -> TestCluster {
        assert!(n >= 1, "a cluster needs at least one replica");
        let bin = node_bin();
        let dir = tempfile::Builder::new()
            .prefix("arbor-cluster-")
            .tempdir()
            .expect("create temp dir");
        let cluster_id = opts
            .cluster_id
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER_ID.to_string());
        let operator = opts
            .operator
            .clone()
            .unwrap_or_else(|| Identity::generate(OPERATOR))
            .for_cluster(&cluster_id);
        let pki = dir.path().join("pki");
        node_cert(&bin, &["ca", "--dir", &pki.display().to_string()]);
        let ca = std::fs::read(pki.join("ca.pem")).expect("read ca.pem");
        let mut c = TestCluster {
            dir,
            bin,
            transport: Transport::Tls(TlsOptions::new(ca)),
            opts,
            operator,
            replicas: BTreeMap::new(),
            acks: Acks::default(),
        };
        let mut addrs = Vec::new();
        for id in 1..=n {
            addrs.push((id, c.new_address().await));
        }
        let members: Vec<(u64, String)> = addrs
            .iter()
            .map(|(id, a)| (*id, format!("{}/{}", a.listen, a.peer_advertised)))
            .collect();
        for (id, address) in addrs {
            let mut extra = Vec::new();
            if id == 1 {
                extra.push("--bootstrap".to_string());
                for (m, a) in &members {
                    extra.push("--member".into());
                    extra.push(format!("{m}={a}"));
                }
                extra.push("--operator".into());
                extra.push(format!(
                    "{}={}",
                    c.operator.party_id,
                    c.operator.public_key_hex()
                ));
                extra.push("--cluster-id".into());
                extra.push(c.operator.cluster_id().to_string());
            }
            c.spawn(id, address, extra);
        }
        for id in 1..=n {
            c.wait_ready(id).await;
        }
        c.wait_formed(n as usize).await;
        c
    }

    /// Fresh listen addresses, and the proxy in front of the peer port when
    /// the cluster is partitionable.
    async fn new_address(&self) -> Address {
        let listen = format!("127.0.0.1:{}", free_port());
        let peer_listen = format!("127.0.0.1:{}", free_port());
        if !self.opts.partitionable {
            return Address {
                listen,
                peer_advertised: peer_listen.clone(),
                peer_listen,
                proxy: None,
            };
        }
        let proxy = Proxy::start(peer_listen.parse().expect("listen address")).await;
        Address {
            listen,
            peer_advertised: proxy.addr.to_string(),
            peer_listen,
            proxy: Some(proxy),
        }
    }

    /// Issues replica `id`'s certificate (once) and returns the TLS flags.
    fn tls_args(&self, id: u64) -> Vec<String> {
        let pki = self.dir.path().join("pki");
        let cert = pki.join(format!("replica-{id}.pem"));
        if !cert.exists() {
            node_cert(
                &self.bin,
                &[
                    "replica",
                    "--dir",
                    &pki.display().to_string(),
                    "--id",
                    &id.to_string(),
                    "--host",
                    "127.0.0.1",
                ],
            );
        }
        vec![
            "--ca-file".into(),
            pki.join("ca.pem").display().to_string(),
            "--cert-file".into(),
            cert.display().to_string(),
            "--key-file".into(),
            pki.join(format!("replica-{id}.key")).display().to_string(),
        ]
    }

    fn spawn(&mut self, id: u64, address: Address, extra: Vec<String>) {
        let home = self.dir.path().join(format!("n{id}"));
        std::fs::create_dir_all(&home).expect("create replica dir");
        let mut args: Vec<String> = vec![
            "run".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            address.listen.clone(),
            "--peer-listen".into(),
            address.peer_listen.clone(),
            "--data-dir".into(),
            home.join("data").display().to_string(),
        ];
        args.extend(self.tls_args(id));
        if address.proxy.is_some() {
            args.extend([
                "--peer-advertise".into(),
                address.peer_advertised.clone(),
                "--source-ip".into(),
                proxy::source_ip(id).to_string(),
            ]);
        }
        args.extend(extra);
        let addr = address.listen;
        let peer_addr = address.peer_advertised;
        let proxy = address.proxy;
        if let Some(n) = self.opts.snapshot_every {
            args.extend(["--snapshot-every".into(), n.to_string()]);
        }
        if let Some(n) = self.opts.keep_logs {
            args.extend(["--keep-logs".into(), n.to_string()]);
        }
        if let Some(n) = self.opts.lease_grace_ms {
            args.extend(["--lease-grace-ms".into(), n.to_string()]);
        }
        if let Some(n) = self.opts.fence_ms {
            args.extend(["--fence-ms".into(), n.to_string()]);
        }
        args.extend(self.opts.extra_args.iter().cloned());
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        args.extend(["--metrics-listen".into(), metrics_addr.clone()]);
        let mut process = Process::new(
            format!("replica {id}"),
            &self.bin,
            args,
            home.join("log.txt"),
        );
        process.start();
        self.replicas.insert(
            id,
            Replica {
                addr,
                peer_addr,
                proxy,
                process,
                paused: AtomicBool::new(false),
                metrics_addr,
            },
        );
    }

    fn replica(&self, id: u64) -> &Replica {
        self.replicas
            .get(&id)
            .unwrap_or_else(|| panic!("no replica {id}"))
    }

    // ---------------------------------------------------------------------
    // Accessors
    // ---------------------------------------------------------------------

    /// The cluster's temp dir (replica `N` lives in `nN/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The operator named in genesis, signing for this cluster.
    pub fn operator(&self) -> &Signer {
        &self.operator
    }

    /// The cluster id genesis fixed, which every command signature names.
    pub fn cluster_id(&self) -> &str {
        self.operator.cluster_id()
    }

    /// `id` signing commands for this cluster.
    pub fn signer(&self, id: &Identity) -> Signer {
        id.for_cluster(self.cluster_id())
    }

    /// Every replica id ever started.
    pub fn ids(&self) -> Vec<u64> {
        self.replicas.keys().copied().collect()
    }

    /// Ids of the replicas running now (not killed, stopped or paused).
    pub fn running(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.process.is_started() && !r.paused.load(Ordering::SeqCst))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The process id of replica `id`, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.replica(id).process.pid()
    }

    /// Replica `id`'s client API address.
    pub fn addr(&self, id: u64) -> &str {
        &self.replica(id).addr
    }

    /// Replica `id`'s peer address (its proxy's when partitionable).
    pub fn peer_addr(&self, id: u64) -> &str {
        &self.replica(id).peer_addr
    }

    /// The PKI directory: `ca.pem`, `ca.key`, `replica-N.pem|key`.
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// The cluster CA's certificate file (for `arbor --cacert`).
    pub fn cacert(&self) -> String {
        self.pki_dir().join("ca.pem").display().to_string()
    }

    /// TLS with the cluster's CA: what every harness client uses.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The client endpoint of one replica.
    pub fn endpoint(&self, id: u64) -> String {
        endpoint(self.addr(id))
    }

    /// Endpoints of the running replicas.
    pub fn endpoints(&self) -> Vec<String> {
        self.running()
            .into_iter()
            .map(|id| self.endpoint(id))
            .collect()
    }

    /// Every acknowledgement recorded by this cluster's submitters.
    pub fn acks(&self) -> &Acks {
        &self.acks
    }

    /// A client over every running replica.
    pub async fn client(&self) -> Client {
        self.client_for(&self.running()).await
    }

    /// A client that knows only the given replicas.
    pub async fn client_for(&self, ids: &[u64]) -> Client {
        let eps: Vec<String> = ids.iter().map(|id| self.endpoint(*id)).collect();
        Client::connect(&eps, &self.transport)
            .await
            .unwrap_or_else(|e| panic!("connect to {eps:?}: {e}"))
            .with_timeout(CLIENT_TIMEOUT)
    }

    /// A recording client over every running replica.
    pub async fn submitter(&self) -> Submitter {
        Submitter::new(self.client().await, self.acks.clone())
    }

    /// A recording client that knows only the given replicas.
    pub async fn submitter_for(&self, ids: &[u64]) -> Submitter {
        Submitter::new(self.client_for(ids).await, self.acks.clone())
    }

    /// The last `lines` of replica `id`'s log.
    /// Replica `id`'s Prometheus endpoint, `HOST:PORT`.
    pub fn metrics_addr(&self, id: u64) -> &str {
        &self.replica(id).metrics_addr
    }

    /// Replica `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}")).join("data")
    }

    /// The `arbor-node` binary the replicas run.
    pub fn node_bin(&self) -> &Path {
        &self.bin
    }

    /// Starts a stopped replica's process again without waiting for it to
    /// answer (it may be expected to refuse to start).
    pub fn start_process(&mut self, id: u64) {
        self.replicas
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no replica {id}"))
            .process
            .start();
    }

    /// The exit status of replica `id`'s process, if it has exited.
    pub fn exited(&self, id: u64) -> Option<ExitStatus> {
        self.replica(id).process.exited()
    }

    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        self.replica(id).process.log_tail(lines)
    }

    // ---------------------------------------------------------------------
    // Status and waiting
    // ---------------------------------------------------------------------

    /// Replica `id`'s own view (never forwarded).
    pub async fn status(&self, id: u64) -> Result<pb::LocalStatusReply, String> {
        Client::local_status(&self.transport, &self.endpoint(id))
            .await
            .map_err(|e| e.to_string())
    }

    /// The view of every running replica.
    pub async fn statuses(&self) -> Vec<(u64, Result<pb::LocalStatusReply, String>)> {
        let ids = self.running();
        let all = futures::future::join_all(ids.iter().map(|id| self.status(*id))).await;
        ids.into_iter().zip(all).collect()
    }

    /// Panics if a replica the harness started has exited on its own.
    pub fn assert_alive(&self) {
        for (id, r) in &self.replicas {
            if let Some(st) = r.process.exited() {
                panic!(
                    "replica {id} exited unexpectedly ({st}); log tail:\n{}",
                    r.process.log_tail(60)
                );
            }
        }
    }

    /// Polls `probe` until it returns `Ok` (see [`wait::wait_until`]), failing
    /// fast if a replica crashes meanwhile.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        wait::wait_until(what, timeout, async || {
            self.assert_alive();
            probe().await
        })
        .await
    }

    /// Waits until replica `id` answers `LocalStatus`.
    pub async fn wait_ready(&self, id: u64) -> pb::LocalStatusReply {
        self.wait_until(&format!("replica {id} to answer"), TIMEOUT, async || {
            self.status(id).await
        })
        .await
    }

    /// Waits until exactly one running replica leads and every running
    /// replica agrees on it and its term. Returns the leader's id.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        self.wait_until("one leader every replica agrees on", timeout, async || {
            let sts = self.statuses().await;
            let mut views = Vec::new();
            for (id, st) in &sts {
                match st {
                    Ok(s) => views.push((*id, s.clone())),
                    Err(e) => return Err(format!("replica {id}: {e}")),
                }
            }
            let leaders: Vec<&(u64, pb::LocalStatusReply)> =
                views.iter().filter(|(_, s)| s.state == "Leader").collect();
            let [(leader, ls)] = leaders.as_slice() else {
                return Err(format!("leaders: {:?}", leaders.iter().map(|(id, _)| id).collect::<Vec<_>>()));
            };
            for (id, s) in &views {
                if s.leader_id != *leader || s.term != ls.term {
                    return Err(format!(
                        "replica {id} ({}) sees leader {} in term {}; replica {leader} leads term {}",
                        s.state, s.leader_id, s.term, ls.term
                    ));
                }
            }
            Ok(*leader)
        })
        .await
    }

    /// The running replicas other than the current leader.
    pub async fn followers(&self) -> Vec<u64> {
        let leader = self.wait_leader(TIMEOUT).await;
        self.running()
            .into_iter()
            .filter(|id| *id != leader)
            .collect()
    }

    async fn wait_formed(&self, n: usize) {
        let leader = self.wait_leader(TIMEOUT).await;
        self.wait_until(&format!("{n} voters"), TIMEOUT, async || {
            let s = self.status(leader).await?;
            let voters = s.members.iter().filter(|m| m.voter).count();
            if voters == n {
                Ok(())
            } else {
                Err(format!("members {:?}", s.members))
            }
        })
        .await;
        self.wait_converged(TIMEOUT).await;
    }

    /// Waits until every running replica has a ledger with the same head.
    /// Returns the head's sequence number.
    pub async fn wait_converged(&self, timeout: Duration) -> u64 {
        self.wait_until(
            "every running replica at the same chain head",
            timeout,
            async || {
                let mut heads = BTreeMap::new();
                for (id, st) in self.statuses().await {
                    let s = st.map_err(|e| format!("replica {id}: {e}"))?;
                    if !s.has_entries {
                        return Err(format!("replica {id} has no entries"));
                    }
                    heads.insert(id, (s.head_seq, s.head_hash));
                }
                let first = heads
                    .values()
                    .next()
                    .cloned()
                    .ok_or("no replica is running")?;
                if heads.values().all(|h| *h == first) {
                    Ok(first.0)
                } else {
                    let seqs: BTreeMap<u64, u64> = heads.iter().map(|(id, h)| (*id, h.0)).collect();
                    Err(format!("heads differ: {seqs:?}"))
                }
            },
        )
        .await
    }

    /// Waits until every running replica has applied ledger entry `seq`.
    pub async fn wait_applied(&self, seq: u64, timeout: Duration) {
        self.wait_until(
            &format!("every running replica to apply entry {seq}"),
            timeout,
            async || {
                for (id, st) in self.statuses().await {
                    let s = st.map_err(|e| format!("replica {id}: {e}"))?;
                    if !s.has_entries || s.head_seq < seq {
                        return Err(format!("replica {id} is at {}", s.head_seq));
                    }
                }
                Ok(())
            },
        )
        .await
    }

    /// The chain head the leader reports (waits for a leader).
    pub async fn head_seq(&self) -> u64 {
        let leader = self.wait_leader(TIMEOUT).await;
        let s = self.status(leader).await.expect("leader status");
        assert!(s.has_entries, "leader {leader} has no entries");
        s.head_seq
    }

    // ---------------------------------------------------------------------
    // Faults and membership
    // ---------------------------------------------------------------------

    /// SIGKILL: replica `id` crashes.
    pub fn kill(&self, id: u64) {
        let r = self.replica(id);
        assert!(r.process.is_started(), "replica {id} is not running");
        r.process.kill();
        r.paused.store(false, Ordering::SeqCst);
    }

    /// SIGTERM and wait for a clean exit (status 0).
    pub async fn stop(&self, id: u64) -> ExitStatus {
        let r = self.replica(id);
        assert!(r.process.is_started(), "replica {id} is not running");
        if r.paused.swap(false, Ordering::SeqCst) {
            r.process.resume();
        }
        let st = r.process.stop(STOP_TIMEOUT).await;
        assert!(
            st.success(),
            "replica {id} did not exit cleanly after SIGTERM ({st}); log tail:\n{}",
            r.process.log_tail(40)
        );
        st
    }

    /// Starts a killed or stopped replica again with the same arguments and
    /// waits until it answers.
    pub async fn restart(&mut self, id: u64) {
        let r = self
            .replicas
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no replica {id}"));
        r.process.start();
        self.wait_ready(id).await;
    }

    /// SIGSTOP: replica `id` hangs (neither answers nor crashes), as if cut
    /// off from the network. It no longer counts as running until resumed.
    pub fn pause(&self, id: u64) {
        let r = self.replica(id);
        assert!(r.process.is_started(), "replica {id} is not running");
        r.process.pause();
        r.paused.store(true, Ordering::SeqCst);
    }

    /// SIGCONT after [`TestCluster::pause`].
    pub fn resume(&self, id: u64) {
        let r = self.replica(id);
        r.process.resume();
        r.paused.store(false, Ordering::SeqCst);
    }

    /// Starts a new empty replica that is no member yet (see
    /// [`TestCluster::add_replica`]); returns its id once it answers.
    pub async fn start_replica(&mut self) -> u64 {
        let id = self.replicas.keys().max().copied().unwrap_or(0) + 1;
        let address = self.new_address().await;
        self.spawn(id, address, Vec::new());
        self.wait_ready(id).await;
        id
    }

    /// Starts a new empty replica and adds it through the client API (an
    /// operator-signed `AddReplica` ledger command). Returns its id once the
    /// command is accepted and raft's membership shows it as a voter.
    pub async fn add_replica(&mut self) -> u64 {
        let existing = self.running();
        let id = self.start_replica().await;
        let (addr, peer_addr) = (self.addr(id).to_string(), self.peer_addr(id).to_string());
        let client = self
            .client_for(&existing)
            .await
            .with_timeout(Duration::from_secs(150));
        let change = client
            .add_replica(&self.operator, id, &addr, &peer_addr)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "add replica {id} at {addr}: {e}; its log:\n{}",
                    self.log_tail(id, 40)
                )
            });
        let outcome = change.reply.outcome.clone().unwrap_or_default();
        assert!(outcome.accepted, "add replica {id}: {outcome:?}");
        assert!(
            change.in_effect,
            "add replica {id}: not a voter in time; members {:?}; its log:\n{}",
            change.members,
            self.log_tail(id, 40)
        );
        id
    }

    /// Cuts every link between the replicas in `group` and the others (both
    /// directions; open connections are cut too). Clients still reach every
    /// replica. Needs [`Options::partitionable`].
    pub fn partition(&self, group: &[u64]) {
        for (a, ra) in &self.replicas {
            for (b, rb) in &self.replicas {
                if group.contains(a) && !group.contains(b) {
                    let (pa, pb) = (
                        ra.proxy
                            .as_ref()
                            .expect("partition needs Options::partitionable"),
                        rb.proxy
                            .as_ref()
                            .expect("partition needs Options::partitionable"),
                    );
                    pa.block(proxy::source_ip(*b));
                    pb.block(proxy::source_ip(*a));
                }
            }
        }
    }

    /// Restores every link cut by [`TestCluster::partition`].
    pub fn heal(&self) {
        for r in self.replicas.values() {
            if let Some(p) = &r.proxy {
                p.unblock_all();
            }
        }
    }

    // ---------------------------------------------------------------------
    // Parties and orders
    // ---------------------------------------------------------------------

    /// Enrols a party with a fresh key (operator-signed). Panics unless accepted.
    pub async fn enroll(&self, party_id: &str, role: pb::Role, kind: pb::NodeKind) -> Signer {
        let id = self.signer(&Identity::generate(party_id));
        let cmd = self
            .operator
            .enroll_party(party_id, role, kind, &id.public_key());
        self.submitter()
            .await
            .submit_accepted(&format!("enrol {party_id}"), cmd)
            .await;
        id
    }

    /// Enrols a party that is not a node (a carrier, auditor, broker, ...).
    pub async fn enroll_party(&self, party_id: &str, role: pb::Role) -> Signer {
        self.enroll(party_id, role, pb::NodeKind::Unspecified).await
    }

    /// Enrols a channel whose orders' external references use the fixtures'
    /// marketplace name ([`crate::fixtures::CHANNEL_NAME`]) as well as its own id.
    pub async fn enroll_channel(&self, party_id: &str) -> Signer {
        let id = self.signer(&Identity::generate(party_id));
        let names = [
            crate::fixtures::CHANNEL_NAME.to_string(),
            party_id.to_string(),
        ];
        let cmd = self
            .operator
            .enroll_channel(party_id, &id.public_key(), &names);
        self.submitter()
            .await
            .submit_accepted(&format!("enrol {party_id}"), cmd)
            .await;
        id
    }

    /// Enrols a store node and publishes [`sample_profile`] for it, so it
    /// may claim sample orders. Panics unless both are accepted.
    pub async fn enroll_node(&self, party_id: &str) -> Signer {
        self.enroll_node_with(party_id, pb::NodeKind::Store, sample_profile())
            .await
    }

    /// Enrols a node of `kind` and publishes `profile` for it.
    pub async fn enroll_node_with(
        &self,
        party_id: &str,
        kind: pb::NodeKind,
        profile: pb::PublishProfile,
    ) -> Signer {
        let id = self.enroll(party_id, pb::Role::Node, kind).await;
        self.submitter()
            .await
            .submit_accepted(
                &format!("profile of {party_id}"),
                id.publish_profile(profile),
            )
            .await;
        id
    }

    /// Fetches each replica's checkpoint-signing identity from the replica
    /// itself and enrols it (role replica, operator-signed), so that
    /// checkpoints can be verified against keys the ledger holds
    /// (`arbor audit checkpoint|trace`, exports). Returns the replica names.
    pub async fn enroll_replicas(&self) -> Vec<String> {
        let mut names = Vec::new();
        for id in self.ids() {
            let ident = Client::get_replica_identity(&self.transport, &self.endpoint(id))
                .await
                .unwrap_or_else(|e| panic!("replica {id} identity: {e}"));
            assert_eq!(ident.name, format!("arbor-replica-{id}"));
            self.submitter()
                .await
                .submit_accepted(
                    &format!("enrol {}", ident.name),
                    self.operator.enroll_party(
                        &ident.name,
                        pb::Role::Replica,
                        pb::NodeKind::Unspecified,
                        &ident.public_key,
                    ),
                )
                .await;
            names.push(ident.name);
        }
        names
    }

    /// Registers [`sample_order`] `order_id`. Panics unless accepted.
    pub async fn register_order(&self, channel: &Signer, order_id: &str) -> pb::SubmitReply {
        self.submitter()
            .await
            .submit_accepted(
                &format!("register {order_id}"),
                channel.register_order(sample_order(order_id)),
            )
            .await
    }

    /// Registers many sample orders, `concurrency` in flight. Panics unless all are accepted.
    pub async fn register_orders(
        &self,
        channel: &Signer,
        order_ids: &[String],
        concurrency: usize,
    ) {
        let sub = self.submitter().await;
        let results: Vec<()> = futures::stream::iter(order_ids.iter().cloned())
            .map(|id| {
                let cmd = channel.register_order(sample_order(&id));
                let sub = sub.clone();
                async move {
                    sub.submit_accepted(&format!("register {id}"), cmd).await;
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        assert_eq!(results.len(), order_ids.len());
    }

    // ---------------------------------------------------------------------
    // Invariants
    // ---------------------------------------------------------------------

    /// Replica `id`'s whole chain, read locally from that replica.
    pub async fn chain_of(&self, id: u64) -> Result<Vec<pb::LedgerEntry>, String> {
        let ep = self.endpoint(id);
        let mut out: Vec<pb::LedgerEntry> = Vec::new();
        loop {
            let from = out.last().map(|e| e.seq + 1).unwrap_or(0);
            let r = Client::local_entries(&self.transport, &ep, from, 1000)
                .await
                .map_err(|e| format!("replica {id}: entries from {from}: {e}"))?;
            if r.empty {
                return Ok(out);
            }
            let done = r.entries.is_empty() || r.entries.last().map(|e| e.seq) >= Some(r.head_seq);
            out.extend(r.entries);
            if done {
                return Ok(out);
            }
        }
    }

    /// Invariant: every running replica holds the same chain. Waits for equal
    /// heads first. Returns the chain.
    pub async fn check_identical_chains(&self) -> Vec<pb::LedgerEntry> {
        self.wait_converged(TIMEOUT).await;
        let mut chains = Vec::new();
        for id in self.running() {
            let chain = self.chain_of(id).await.unwrap_or_else(|e| panic!("{e}"));
            chains.push((id, chain));
        }
        if let Err(e) = invariants::check_identical(&chains) {
            panic!("invariant violated: identical chains: {e}");
        }
        chains.swap_remove(0).1
    }

    /// Runs every invariant against the running replicas; panics naming the
    /// first violation. Returns the verified chain and its replayed state.
    pub async fn check_invariants(&self) -> Audit {
        let chain = self.check_identical_chains().await;
        let fail = |what: &str, e: String| -> ! { panic!("invariant violated: {what}: {e}") };
        let entries = invariants::check_links(&chain).unwrap_or_else(|e| fail("hash chain", e));
        let state = invariants::check_replay(&entries).unwrap_or_else(|e| fail("replay", e));
        invariants::check_signatures(&entries, &state).unwrap_or_else(|e| fail("signatures", e));
        invariants::check_single_owner(&entries, &state)
            .unwrap_or_else(|e| fail("single owner", e));
        invariants::check_acknowledged(&entries, &self.acks.snapshot())
            .unwrap_or_else(|e| fail("acknowledged entries", e));
        Audit { chain, state }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for r in self.replicas.values() {
            r.process.kill();
        }
        if std::thread::panicking() {
            for (id, r) in &self.replicas {
                eprintln!(
                    "----- replica {id} ({}) log tail: {} -----\n{}",
                    r.addr,
                    r.process.log_path().display(),
                    r.process.log_tail(60)
                );
            }
            if std::env::var_os("ARBOR_KEEP_TEST_DIRS").is_some() {
                self.dir.disable_cleanup(true);
                eprintln!("----- kept {} -----", self.dir.path().display());
            }
        }
    }
}
