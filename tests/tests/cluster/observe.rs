//! Health (`grpc.health.v1` with tonic-health's own client), reflection,
//! the Prometheus endpoint checked against docs/monitoring/, and disk
//! faults: a damaged replica refuses to serve, and `arbor-node recover`
//! brings it back from its peers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arbor_tests::cluster::TestCluster;
use arbor_tests::dev::run_cli;
use arbor_tests::wait::{wait_until, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn channel(c: &TestCluster, id: u64) -> Result<Channel, String> {
    let ca = std::fs::read(c.cacert()).map_err(|e| e.to_string())?;
    Channel::from_shared(format!("https://{}", c.addr(id)))
        .map_err(|e| e.to_string())?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// A channel to replica `id`'s peer port, as replica `as_id` (mutual TLS).
async fn peer_channel(c: &TestCluster, id: u64, as_id: u64) -> Result<Channel, String> {
    let pki = c.pki_dir();
    let read = |f: String| std::fs::read(pki.join(f)).map_err(|e| e.to_string());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())?))
        .identity(tonic::transport::Identity::from_pem(
            read(format!("replica-{as_id}.pem"))?,
            read(format!("replica-{as_id}.key"))?,
        ));
    Channel::from_shared(format!("https://{}", c.peer_addr(id)))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// The replica's health for `service` ("" = the whole server).
async fn health(c: &TestCluster, id: u64, service: &str) -> Result<ServingStatus, String> {
    let mut client = HealthClient::new(channel(c, id).await?);
    let reply = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.into_inner().status())
}

async fn wait_health(c: &TestCluster, id: u64, want: ServingStatus) {
    wait_until(
        &format!("replica {id} to report {want:?}"),
        TIMEOUT,
        async || match health(c, id, "").await? {
            s if s == want => Ok(()),
            s => Err(format!("{s:?}")),
        },
    )
    .await
}

/// GET /metrics over plain HTTP/1.0.
async fn scrape(addr: &str) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: arbor\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no HTTP body")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not 200: {head}"));
    }
    Ok(body.to_string())
}

/// The value of an unlabelled sample.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every `arbor_*` metric docs/monitoring/ names, without the suffixes the
/// exposition adds to histograms and counters.
fn documented_metrics() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring");
    let mut names = BTreeSet::new();
    for f in ["grafana-dashboard.json", "alerts.yml"] {
        let text = std::fs::read_to_string(dir.join(f)).expect("read docs/monitoring");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("arbor_") {
            let tail = &rest[i..];
            let end = tail
                .find(|ch: char| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'))
                .unwrap_or(tail.len());
            let mut name = &tail[..end];
            for suffix in ["_bucket", "_sum", "_count", "_total"] {
                if let Some(n) = name.strip_suffix(suffix) {
                    name = n;
                }
            }
            names.insert(name.to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_as_the_docs_name_them() {
    let c = TestCluster::voters(3).await;
    let leader = c.wait_leader(TIMEOUT).await;
    for id in c.ids() {
        wait_health(&c, id, ServingStatus::Serving).await;
        for svc in ["arbor.v1.Arbor", "arbor.v1.Raft"] {
            assert_eq!(health(&c, id, svc).await.unwrap(), ServingStatus::Serving);
        }
    }
    // The peer port answers the same health service (to members' certificates).
    let other = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let peer = HealthClient::new(peer_channel(&c, leader, other).await.unwrap())
        .check(HealthCheckRequest {
            service: "arbor.v1.Raft".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(peer.status(), ServingStatus::Serving);
    // An unknown service is NOT_FOUND, as the health protocol says.
    let unknown = HealthClient::new(channel(&c, leader).await.unwrap())
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Reflection lists the API.
    let mut refl = tonic_reflection_client(&c, leader).await;
    let services = refl.list_services().await;
    assert!(
        services.iter().any(|s| s == "arbor.v1.Arbor"),
        "{services:?}"
    );

    // Some traffic, then every metric the dashboard and alerts name exists.
    let channel_signer = c.enroll_channel("chan-obs").await;
    c.register_order(&channel_signer, "obs-1").await;
    let text = scrape(c.metrics_addr(leader)).await.unwrap();
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let documented = documented_metrics();
    assert!(documented.len() >= 20, "{documented:?}");
    let missing: Vec<&String> = documented
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "named in docs/monitoring but not exported: {missing:?}\n{text}"
    );
    assert_eq!(sample(&text, "arbor_serving"), Some(1.0));
    assert_eq!(sample(&text, "arbor_raft_is_leader"), Some(1.0));
    assert_eq!(sample(&text, "arbor_raft_leader_id"), Some(leader as f64));
    assert!(sample(&text, "arbor_raft_term").unwrap() >= 1.0);
    assert!(sample(&text, "arbor_raft_applied_index").unwrap() >= 1.0);
    assert!(
        text.contains(
            "arbor_grpc_requests_total{port=\"client\",method=\"Arbor/Submit\",code=\"Ok\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("arbor_commands_applied_total{command="),
        "{text}"
    );
    for f in c.ids().into_iter().filter(|f| *f != leader) {
        assert!(
            text.contains(&format!(
                "arbor_raft_replication_lag_entries{{follower=\"{f}\"}}"
            )),
            "{text}"
        );
        let ftext = scrape(c.metrics_addr(f)).await.unwrap();
        assert_eq!(sample(&ftext, "arbor_raft_is_leader"), Some(0.0));
        assert_eq!(sample(&ftext, "arbor_raft_leader_id"), Some(leader as f64));
    }
    // Anything but /metrics is 404.
    let mut s = tokio::net::TcpStream::connect(c.metrics_addr(leader))
        .await
        .unwrap();
    s.write_all(b"GET /other HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.0 404") || out.starts_with("HTTP/1.1 404"),
        "{out}"
    );

    // `arbor cluster status`: 0 while all is well, 4 naming the unreachable replica.
    let endpoints = c.endpoints().join(",");
    let cacert = c.cacert();
    let status = async || {
        run_cli(&[
            "--endpoints",
            &endpoints,
            "--cacert",
            &cacert,
            "cluster",
            "status",
        ])
        .await
    };
    let out = status().await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    c.kill(others[0]);
    let out = status().await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "replica {} ({}) unreachable",
            others[0],
            c.addr(others[0])
        )),
        "{out:?}"
    );

    // Alone, a replica has no leader it can reach: NOT_SERVING, still answering.
    c.kill(others[1]);
    wait_health(&c, leader, ServingStatus::NotServing).await;
    let text = scrape(c.metrics_addr(leader)).await.unwrap();
    assert_eq!(sample(&text, "arbor_serving"), Some(0.0));
}

/// A minimal reflection client: list the services.
struct Reflection(
    tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient<Channel>,
);

async fn tonic_reflection_client(c: &TestCluster, id: u64) -> Reflection {
    Reflection(
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            channel(c, id).await.unwrap(),
        ),
    )
}

impl Reflection {
    async fn list_services(&mut self) -> Vec<String> {
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let req = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = self
            .0
            .server_reflection_info(futures::stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let reply = stream.message().await.unwrap().expect("a reflection reply");
        match reply.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection reply {other:?}"),
        }
    }
}

/// The newest file in `dir` whose name ends with `ext`, and its size.
fn newest(dir: &Path, ext: &str) -> (PathBuf, u64) {
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    files.sort();
    files
        .pop()
        .unwrap_or_else(|| panic!("no *{ext} in {}", dir.display()))
}

/// Waits until the damaged replica has exited non-zero, naming the fault.
async fn wait_refused(c: &TestCluster, id: u64, what: &str) -> String {
    let st = wait_until(
        &format!("damaged replica {id} to exit ({what})"),
        TIMEOUT,
        async || c.exited(id).ok_or_else(|| "still running".to_string()),
    )
    .await;
    let log = c.log_tail(id, 30);
    eprintln!("replica {id} refused ({what}), {st}:\n{log}");
    assert!(
        !st.success(),
        "replica {id} exited 0 with damaged storage:\n{log}"
    );
    assert!(
        log.contains("arbor-node recover"),
        "the log must say how to recover:\n{log}"
    );
    log
}

/// `arbor-node recover`, then the replica rebuilds from its peers and serves.
async fn recover(c: &mut TestCluster, id: u64) {
    c.kill(id); // reap the exited process
    let out = std::process::Command::new(c.node_bin())
        .args(["recover", "--data-dir"])
        .arg(c.data_dir(id))
        .output()
        .expect("run arbor-node recover");
    assert!(
        out.status.success(),
        "recover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        c.data_dir(id).join("identity.key").exists(),
        "identity kept"
    );
    assert!(c.data_dir(id).join("RECOVERING").exists());
    c.start_process(id);
    wait_health(c, id, ServingStatus::Serving).await;
    assert!(
        !c.data_dir(id).join("RECOVERING").exists(),
        "the marker goes once caught up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_storage_is_never_served_and_rebuilds_from_peers() {
    let mut c = TestCluster::voters(3).await;
    let leader = c.wait_leader(TIMEOUT).await;
    let victim = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let channel_signer = c.enroll_channel("chan-disk").await;
    let ids: Vec<String> = (0..20).map(|i| format!("disk-{i}")).collect();
    c.register_orders(&channel_signer, &ids, 4).await;
    let seq = c.head_seq().await;
    c.wait_applied(seq, TIMEOUT).await;

    // 1. A crash, then the WAL loses its second half. RocksDB's consistent
    // recovery refuses it; the replica salvages what is consistent, knows it
    // may have lost acknowledged entries, and recovers from its peers (no
    // vote, no service) before serving again: never a silent rollback.
    c.kill(victim);
    let db = c.data_dir(victim).join("db");
    let (wal, len) = newest(&db, ".log");
    assert!(len > 64, "the WAL holds the entries ({len} bytes)");
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(len / 2 + 3).unwrap();
    drop(f);
    c.start_process(victim);
    wait_until("the salvaged replica to catch up", TIMEOUT, async || {
        if let Some(st) = c.exited(victim) {
            panic!("exited {st}:\n{}", c.log_tail(victim, 40));
        }
        match health(&c, victim, "").await? {
            ServingStatus::Serving => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    let log = c.log_tail(victim, 200);
    assert!(log.contains("write-ahead log is damaged"), "{log}");
    assert!(log.contains("recovery complete"), "{log}");
    assert!(!c.data_dir(victim).join("RECOVERING").exists());
    let applied = c.status(victim).await.unwrap();
    assert!(applied.head_seq >= seq, "caught up: {applied:?}");

    // 2. A clean stop (memtables flushed to SST files), then one SST byte flips.
    let ids: Vec<String> = (0..5).map(|i| format!("disk2-{i}")).collect();
    c.register_orders(&channel_signer, &ids, 4).await;
    let seq = c.head_seq().await;
    c.wait_applied(seq, TIMEOUT).await;
    c.stop(victim).await;
    let db = c.data_dir(victim).join("db");
    let (sst, len) = newest(&db, ".sst");
    let mut bytes = std::fs::read(&sst).unwrap();
    let at = (len / 4) as usize;
    bytes[at] ^= 0x5a;
    std::fs::write(&sst, bytes).unwrap();
    c.start_process(victim);
    let log = wait_refused(&c, victim, "flipped SST byte").await;
    assert!(log.to_lowercase().contains("corrupt"), "{log}");
    recover(&mut c, victim).await;

    c.check_identical_chains().await;
}

/// Starts a lone plaintext replica with `env` and `args`, returns its first
/// stderr lines up to one containing `until`, then kills it.
async fn node_stderr(env: &[(&str, &str)], args: &[&str], until: &str) -> Vec<String> {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(arbor_tests::bins::node_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("ARBOR_") || k == "RUST_LOG" || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .args(["run", "--insecure-plaintext", "--listen", "127.0.0.1:0"])
        .args(["--peer-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn arbor-node");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut out = Vec::new();
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Ok(Some(l)) = lines.next_line().await {
            let done = l.contains(until);
            out.push(l);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.kill().await;
    assert_eq!(found, Ok(true), "no line with {until:?} in {out:#?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_honour_rust_log_arbor_log_and_json_without_colour_off_a_terminal() {
    // RUST_LOG filters, --log-format json: one JSON object per line.
    let lines = node_stderr(
        &[("RUST_LOG", "warn")],
        &["--log-format", "json"],
        "NOT_SERVING",
    )
    .await;
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        let level = v["level"].as_str().unwrap_or_default();
        assert!(
            level == "WARN" || level == "ERROR",
            "RUST_LOG=warn let through {l}"
        );
        assert!(v["fields"]["message"].is_string(), "{l}");
    }
    // ARBOR_LOG is the older name; RUST_LOG wins over it.
    let lines = node_stderr(&[("ARBOR_LOG", "warn")], &[], "NOT_SERVING").await;
    assert!(!lines.iter().any(|l| l.contains(" INFO ")), "{lines:#?}");
    let lines = node_stderr(
        &[("ARBOR_LOG", "warn"), ("RUST_LOG", "info")],
        &[],
        "replica serving",
    )
    .await;
    // stderr is a pipe here: no ANSI colour codes.
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_replica_neither_serves_nor_answers_until_caught_up() {
    let mut c = TestCluster::voters(3).await;
    let leader = c.wait_leader(TIMEOUT).await;
    let victim = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let channel_signer = c.enroll_channel("chan-rec").await;
    let ids: Vec<String> = (0..5).map(|i| format!("rec-{i}")).collect();
    c.register_orders(&channel_signer, &ids, 4).await;
    let seq = c.head_seq().await;
    c.wait_applied(seq, TIMEOUT).await;
    c.stop(victim).await;
    let out = std::process::Command::new(c.node_bin())
        .args(["recover", "--data-dir"])
        .arg(c.data_dir(victim))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Recovering with no leader to catch up from: it stays out of service.
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != victim).collect();
    for o in &others {
        c.stop(*o).await;
    }
    c.start_process(victim);
    let refused = wait_until(
        "the recovering replica to answer",
        TIMEOUT,
        async || match c.status(victim).await {
            Ok(s) => Err(format!("answered {s:?}")),
            Err(e) if e.contains("recovering") => Ok(e),
            Err(e) => Err(e),
        },
    )
    .await;
    assert!(
        refused.contains("Unavailable") || refused.contains("unavailable"),
        "{refused}"
    );
    assert_eq!(
        health(&c, victim, "").await.unwrap(),
        ServingStatus::NotServing
    );
    let text = scrape(c.metrics_addr(victim)).await.unwrap();
    assert_eq!(sample(&text, "arbor_recovering"), Some(1.0), "{text}");
    assert!(c.data_dir(victim).join("RECOVERING").exists());
    // With its peers back it catches up, then serves and drops the marker.
    for o in &others {
        c.restart(*o).await;
    }
    wait_health(&c, victim, ServingStatus::Serving).await;
    assert!(!c.data_dir(victim).join("RECOVERING").exists());
    let s = c.status(victim).await.unwrap();
    assert!(s.head_seq >= seq, "{s:?}");
    c.check_identical_chains().await;
}

/// The offset of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_found_at_read_time_takes_the_replica_out_of_service() {
    let mut c = TestCluster::voters(3).await;
    let leader = c.wait_leader(TIMEOUT).await;
    let victim = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let channel_signer = c.enroll_channel("chan-read").await;
    let order = "read-time-corruption-order";
    c.register_order(&channel_signer, order).await;
    let seq = c.head_seq().await;
    c.wait_applied(seq, TIMEOUT).await;
    // A clean stop flushes memtables: the order is in an SST file. The
    // replica starts again (its start-up check passes) and then a byte of
    // the block holding the order flips under it.
    c.stop(victim).await;
    c.restart(victim).await;
    wait_health(&c, victim, ServingStatus::Serving).await;
    // Every copy of the order id in every SST file (the orders record is
    // among them), rewritten in place: same inode, the replica's open
    // handles read the damage.
    let db = c.data_dir(victim).join("db");
    let mut flipped = 0;
    for e in std::fs::read_dir(&db).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".sst") {
            continue;
        }
        let mut bytes = std::fs::read(&p).unwrap();
        let mut from = 0;
        while let Some(at) = find(&bytes[from..], order.as_bytes()) {
            bytes[from + at + 3] ^= 0x20;
            flipped += 1;
            from += at + order.len();
        }
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        f.sync_all().unwrap();
    }
    assert!(flipped > 0, "no SST file holds the order id");
    let mut api =
        arbor_proto::pb::arbor_client::ArborClient::new(channel(&c, victim).await.unwrap());
    let read = api
        .get_order(arbor_proto::pb::GetOrderRequest {
            order_id: order.into(),
            local: true,
        })
        .await;
    let err = read.expect_err("a corrupted record is never served");
    assert!(err.message().to_lowercase().contains("corrupt"), "{err:?}");
    let st = wait_until("the replica to exit", TIMEOUT, async || {
        c.exited(victim).ok_or_else(|| "still running".to_string())
    })
    .await;
    assert!(!st.success(), "{st}");
    let log = c.log_tail(victim, 40);
    assert!(log.contains("storage corruption"), "{log}");
    assert!(log.contains("out of service"), "{log}");
    // Started again, it refuses (its start-up check finds the damage).
    c.kill(victim);
    c.start_process(victim);
    let st = wait_until("the damaged replica to refuse", TIMEOUT, async || {
        c.exited(victim).ok_or_else(|| "still running".to_string())
    })
    .await;
    assert!(!st.success(), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_majority_reports_not_serving() {
    let c = TestCluster::start(
        3,
        arbor_tests::Options {
            partitionable: true,
            ..Default::default()
        },
    )
    .await;
    let old = c.wait_leader(TIMEOUT).await;
    for id in c.ids() {
        wait_health(&c, id, ServingStatus::Serving).await;
    }
    c.partition(&[old]);
    // The old leader's client port still answers, but it is no longer
    // acknowledged by a quorum: NOT_SERVING. The majority elects a leader
    // and serves.
    wait_health(&c, old, ServingStatus::NotServing).await;
    let majority: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    for id in &majority {
        wait_health(&c, *id, ServingStatus::Serving).await;
    }
    c.heal();
    wait_health(&c, old, ServingStatus::Serving).await;
}
