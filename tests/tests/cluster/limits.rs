//! Resource limits (`[limits]` in the config, `node/src/limits.rs`) against
//! real replicas started with small limits: each limit answers
//! `RESOURCE_EXHAUSTED` naming its config key; more connections than the
//! limit, or running out of file descriptors, leave connected clients served
//! and the replica's CPU idle; idle connections are closed but open watch
//! streams are not; slow watchers do not grow the replica's memory.
//!
//! CPU and memory are read from /proc (utime + stime, VmRSS): these are
//! resource bounds, kept generous, not latencies.

use arbor_client::Commands;
use std::time::{Duration, Instant};

use arbor_proto::pb;
use arbor_proto::pb::arbor_client::ArborClient;
use arbor_tests::fixtures::random_key;
use arbor_tests::{Options, TestCluster, TIMEOUT};
use futures::StreamExt;
use prost::Message;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::Code;

/// Options starting every replica with `[limits]` set to `table`. The
/// config file lives in the returned dir.
fn with_limits(table: &str) -> (TempDir, Options) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, format!("[limits]\n{table}\n")).expect("write config");
    let opts = Options {
        extra_args: vec!["--config".into(), path.display().to_string()],
        ..Default::default()
    };
    (dir, opts)
}

/// A raw client on its own connection to replica 1.
async fn raw_client(c: &TestCluster) -> ArborClient<Channel> {
    let ep = c.endpoint(1);
    let channel = arbor_client::channel(&ep, c.transport())
        .unwrap_or_else(|e| panic!("channel to {ep}: {e}"));
    ArborClient::new(channel)
}

/// An order of `lines` lines with long SKUs: about 56 bytes a line.
fn big_order(order_id: &str, lines: usize) -> pb::RegisterOrder {
    let mut o = arbor_tests::fixtures::sample_order(order_id);
    o.lines = (0..lines)
        .map(|i| pb::OrderLine {
            sku: format!("sku-{i:05}-{}", "x".repeat(38)),
            quantity: 1,
            unit_price: 1,
        })
        .collect();
    o.total = lines as i64;
    o
}

fn assert_exhausted(s: &tonic::Status, key: &str) {
    assert_eq!(s.code(), Code::ResourceExhausted, "{key}: {s:?}");
    assert!(
        s.message().contains(&format!("limits.{key} = ")),
        "the refusal should name limits.{key}: {}",
        s.message()
    );
}

/// CPU time (user + system) the process has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces): state is field 3,
    // utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Share of one core the process used over `window`.
async fn cpu_share(pid: u32, window: Duration) -> f64 {
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(window).await;
    (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
}

/// Resident memory of the process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// Sockets of `sockets` the other side has closed (a read sees end of stream
/// or a reset), checked without blocking.
fn closed(sockets: &[TcpStream]) -> usize {
    let mut buf = [0u8; 16];
    sockets
        .iter()
        .filter(|s| match s.try_read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        })
        .count()
}

/// Opens `n` plain TCP connections to `addr` (they never speak HTTP/2).
async fn flood(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.expect("connect"));
    }
    out
}

/// TCP connections in state ESTABLISHED whose local port is `port` (the
/// server's ends of the replica's connections), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&suffix) && f[3] == "01"
        })
        .count()
}

/// Watch streams, reply bytes and message size: each refused
/// `RESOURCE_EXHAUSTED` naming its key; replies are cut in bytes and paging
/// through them still yields the whole chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_answers_resource_exhausted_naming_it() {
    const REPLY: usize = 16 * 1024;
    let (_cfg, opts) = with_limits(&format!(
        "max-watch-streams = 3\nmax-reply-bytes = {REPLY}\nmax-client-message-bytes = 65536\nwatch-buffer-entries = 4"
    ));
    let c = TestCluster::start(1, opts).await;
    let channel = c.enroll_channel("shop").await;
    let ids: Vec<String> = (0..80).map(|i| format!("o-{i}")).collect();
    c.register_orders(&channel, &ids, 8).await;

    // GetEntries: cut in bytes, not only in count; paging gets everything.
    let mut raw = raw_client(&c).await;
    let head = c.head_seq().await;
    let r = raw
        .get_entries(pb::GetEntriesRequest {
            from_seq: 0,
            limit: 1000,
            local: true,
        })
        .await
        .expect("get entries")
        .into_inner();
    assert!(
        !r.entries.is_empty() && (r.entries.len() as u64) < head + 1,
        "{} entries of {} in one reply of at most {REPLY} bytes",
        r.entries.len(),
        head + 1
    );
    assert!(
        r.encoded_len() <= REPLY,
        "reply is {} bytes",
        r.encoded_len()
    );
    let chain = c.check_identical_chains().await;
    assert_eq!(chain.len() as u64, head + 1, "paging yields every entry");

    // An entry bigger than max-reply-bytes (but under the message limit).
    let big = c
        .submitter()
        .await
        .submit_accepted("a big order", channel.register_order(big_order("big", 500)))
        .await;
    let s = raw
        .get_entries(pb::GetEntriesRequest {
            from_seq: big.seq,
            limit: 10,
            local: true,
        })
        .await
        .expect_err("an entry bigger than a reply");
    assert_exhausted(&s, "max-reply-bytes");
    assert!(
        s.message().contains(&format!("entry {}", big.seq)),
        "{}",
        s.message()
    );
    // A reply that reaches it stops before it.
    let r = raw
        .get_entries(pb::GetEntriesRequest {
            from_seq: big.seq - 1,
            limit: 10,
            local: true,
        })
        .await
        .expect("the entry before")
        .into_inner();
    assert_eq!(
        r.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![big.seq - 1]
    );

    // A watch reaching it ends RESOURCE_EXHAUSTED after every entry before it.
    let mut feed = raw
        .watch_entries(pb::WatchRequest { from_seq: 0 })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = 0u64;
    let end = loop {
        match tokio::time::timeout(TIMEOUT, feed.message()).await {
            Err(_) => panic!("the watch stalled after {seen} entries"),
            Ok(Ok(Some(e))) => {
                assert_eq!(e.seq, seen);
                seen += 1;
            }
            Ok(Ok(None)) => panic!("the watch ended without an error"),
            Ok(Err(s)) => break s,
        }
    };
    assert_eq!(seen, big.seq, "every entry before the big one was sent");
    assert_exhausted(&end, "max-reply-bytes");
    drop(feed);

    // Watch streams: three may be open; the fourth is refused; a closed one
    // frees its slot.
    let next = big.seq + 1;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut cl = raw_client(&c).await;
        let s = cl
            .watch_entries(pb::WatchRequest { from_seq: next })
            .await
            .expect("a watch within the limit")
            .into_inner();
        open.push((cl, s));
    }
    let s = raw
        .watch_entries(pb::WatchRequest { from_seq: next })
        .await
        .expect_err("a fourth watch stream");
    assert_exhausted(&s, "max-watch-streams");
    open.pop();
    c.wait_until(
        "a closed watch stream to free its slot",
        TIMEOUT,
        async || {
            raw.clone()
                .watch_entries(pb::WatchRequest { from_seq: next })
                .await
                .map(drop)
                .map_err(|s| s.to_string())
        },
    )
    .await;

    // Message size: a request over max-client-message-bytes, raw and through
    // the client library; nothing is appended.
    let s = raw
        .submit(pb::SignedCommand {
            signer: "shop".into(),
            command: vec![0; 70_000],
            signature: vec![0; 64],
        })
        .await
        .expect_err("an oversized request");
    assert_exhausted(&s, "max-client-message-bytes");
    assert!(s.message().contains("request too large"), "{}", s.message());
    let e = c
        .client()
        .await
        .submit(channel.register_order(big_order("huge", 1300)))
        .await
        .expect_err("an oversized command");
    assert_eq!(e.code(), Some(Code::ResourceExhausted), "{e}");
    assert!(e.to_string().contains("max-client-message-bytes"), "{e}");
    assert_eq!(c.head_seq().await, big.seq, "nothing was appended");
    // The replica still serves what fits.
    c.register_order(&channel, "after").await;
}

/// With every admission slot taken, submits are refused RESOURCE_EXHAUSTED
/// naming max-pending-admission, and nothing of them is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_admission_is_bounded() {
    let (_cfg, opts) = with_limits("max-pending-admission = 1");
    let c = TestCluster::start(1, opts).await;
    let channel = c.enroll_channel("shop").await;
    let client = c.client().await;
    let mut refused: Vec<pb::SignedCommand> = Vec::new();
    let mut accepted = 0u64;
    let before = c.head_seq().await;
    let deadline = Instant::now() + TIMEOUT;
    let mut round = 0;
    while refused.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no submit was refused in {round} bursts"
        );
        let cmds: Vec<pb::SignedCommand> = (0..200)
            .map(|i| {
                channel.register_order(arbor_tests::fixtures::sample_order(&format!(
                    "r{round}-{i}"
                )))
            })
            .collect();
        round += 1;
        let results: Vec<_> = futures::stream::iter(cmds)
            .map(|cmd| {
                let client = client.clone();
                async move { (cmd.clone(), client.submit(cmd).await) }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        for (cmd, r) in results {
            match r {
                Ok(reply) => {
                    let o = reply.outcome.unwrap_or_default();
                    assert!(o.accepted, "{} {}", o.code, o.message);
                    accepted += 1;
                }
                Err(e) => {
                    assert_eq!(e.code(), Some(Code::ResourceExhausted), "{e}");
                    assert!(
                        e.to_string().contains("limits.max-pending-admission = 1"),
                        "{e}"
                    );
                    refused.push(cmd);
                }
            }
        }
    }
    assert_eq!(
        c.head_seq().await,
        before + accepted,
        "only accepted submits were appended"
    );
    // Refused ones were not appended: sent again, they are new.
    for cmd in refused.into_iter().take(5) {
        let r = client.submit(cmd).await.expect("resend");
        assert!(!r.duplicate, "a refused submit had been appended");
        assert!(r.outcome.unwrap_or_default().accepted);
    }
}

/// More connections than max-connections: those beyond are closed at once,
/// clients already connected are still served, the replica's CPU stays
/// idle, and once the flood is gone new clients connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_leave_clients_served_and_cpu_idle() {
    const LIMIT: usize = 24;
    const FLOOD: usize = 150;
    let (_cfg, opts) = with_limits(&format!("max-connections = {LIMIT}\nidle-timeout-ms = 0"));
    let c = TestCluster::start(1, opts).await;
    let pid = c.pid(1).expect("replica pid");
    let served = c.client().await;
    served.get_entries(0, 1).await.expect("connected client");

    let sockets = flood(c.addr(1), FLOOD).await;
    let n = c
        .wait_until(
            "connections over the limit to be closed",
            TIMEOUT,
            async || {
                let n = closed(&sockets);
                if n >= FLOOD - LIMIT {
                    Ok(n)
                } else {
                    Err(format!("{n} of {FLOOD} closed"))
                }
            },
        )
        .await;
    assert!(
        n < FLOOD,
        "connections within the limit stay open ({n} closed)"
    );

    let share = cpu_share(pid, Duration::from_secs(2)).await;
    eprintln!("with the limit reached: replica CPU {share:.3} of a core");
    assert!(
        share < 0.5,
        "replica used {share:.2} of a core with the limit reached"
    );
    // Served meanwhile: a read and a write on the connected client.
    served.get_entries(0, 1).await.expect("read while flooded");
    let key = random_key();
    let r = served
        .submit(c.operator().enroll_party(
            "shop",
            pb::Role::Channel,
            pb::NodeKind::Unspecified,
            &key.verifying_key().to_bytes(),
        ))
        .await
        .expect("write while flooded");
    assert!(r.outcome.unwrap_or_default().accepted);
    assert!(
        c.log_tail(1, 200).contains("limits.max-connections"),
        "the replica warns that the limit is reached"
    );

    drop(sockets);
    c.wait_until("new clients to connect again", TIMEOUT, async || {
        arbor_client::Client::local_status(c.transport(), &c.endpoint(1))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
}

/// Out of file descriptors (the replica's limit lowered below what a flood
/// of connections needs): the accept loop backs off instead of spinning,
/// connected clients are still served, and it accepts again once
/// descriptors are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_backs_off_and_keeps_serving() {
    const FLOOD: usize = 100;
    let c = TestCluster::start(1, Options::default()).await;
    let pid = c.pid(1).expect("replica pid");
    let served = c.client().await;
    served.get_entries(0, 1).await.expect("connected client");

    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list fds")
        .count() as u64;
    let lim = libc::rlimit {
        rlim_cur: open_fds + 16,
        rlim_max: open_fds + 16,
    };
    // SAFETY: prlimit on our own child with a valid rlimit; the old value is not read.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    let sockets = flood(c.addr(1), FLOOD).await;
    c.wait_until(
        "the replica to run out of descriptors",
        TIMEOUT,
        async || {
            if c.log_tail(1, 200).contains("cannot accept connections") {
                Ok(())
            } else {
                Err("no warning yet".to_string())
            }
        },
    )
    .await;
    let share = cpu_share(pid, Duration::from_secs(2)).await;
    eprintln!("out of descriptors: replica CPU {share:.3} of a core");
    assert!(
        share < 0.5,
        "replica used {share:.2} of a core out of descriptors"
    );
    let r = served
        .get_entries(0, 10)
        .await
        .expect("served out of descriptors");
    assert!(!r.entries.is_empty());

    drop(sockets);
    c.wait_until("new clients to connect again", TIMEOUT, async || {
        arbor_client::Client::local_status(c.transport(), &c.endpoint(1))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    c.assert_alive();
}

/// Connections with no open call are closed after idle-timeout-ms (a TCP
/// connection that never speaks, an HTTP/2 one whose calls are done); one
/// with an open watch stream is not, and the stream goes on delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_watch_streams_stay() {
    let (_cfg, opts) = with_limits("idle-timeout-ms = 1000");
    let c = TestCluster::start(1, opts).await;
    let port: u16 = c.addr(1).rsplit(':').next().unwrap().parse().unwrap();
    let channel = c.enroll_channel("shop").await;

    let mut watcher = raw_client(&c).await;
    let mut feed = watcher
        .watch_entries(pb::WatchRequest { from_seq: 0 })
        .await
        .expect("watch")
        .into_inner();
    let first = feed
        .message()
        .await
        .expect("first entry")
        .expect("an entry");
    assert_eq!(first.seq, 0);
    let mut unary = raw_client(&c).await;
    unary
        .local_status(pb::LocalStatusRequest {})
        .await
        .expect("status");
    let silent = flood(c.addr(1), 1).await;

    c.wait_until(
        "the silent TCP connection to be closed",
        TIMEOUT,
        async || {
            if closed(&silent) == 1 {
                Ok(())
            } else {
                Err("still open".into())
            }
        },
    )
    .await;
    c.wait_until(
        "only the watch stream's connection to stay open",
        TIMEOUT,
        async || match established_to(port) {
            1 => Ok(()),
            n => Err(format!("{n} connections open")),
        },
    )
    .await;

    // The watch goes on: it sees the entries written meanwhile and a new one.
    c.register_order(&channel, "late").await;
    let head = c.head_seq().await;
    let mut last = first.seq;
    while last < head {
        let e = tokio::time::timeout(TIMEOUT, feed.message())
            .await
            .expect("the watch delivers")
            .expect("the watch stream is still open")
            .expect("an entry");
        assert_eq!(e.seq, last + 1);
        last = e.seq;
    }
    // A closed client connection is reopened by its channel.
    unary
        .local_status(pb::LocalStatusRequest {})
        .await
        .expect("status after the idle close");
}

/// Slow watchers (opened, never read) over many large entries pin at most a
/// page each: the replica's RSS stays far below what reading the backlog
/// into memory would take, and a watcher that reads gets every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watchers_do_not_grow_memory() {
    const ORDERS: usize = 240;
    const WATCHERS: usize = 40;
    let (_cfg, opts) =
        with_limits("max-reply-bytes = 262144\nwatch-buffer-entries = 16\nmax-watch-streams = 64");
    let c = TestCluster::start(1, opts).await;
    let pid = c.pid(1).expect("replica pid");
    let channel = c.enroll_channel("shop").await;
    let sub = c.submitter().await;
    let cmds: Vec<pb::SignedCommand> = (0..ORDERS)
        .map(|i| channel.register_order(big_order(&format!("big-{i}"), 1000)))
        .collect();
    let ledger_bytes: usize = cmds.iter().map(|c| c.encoded_len()).sum();
    futures::stream::iter(cmds)
        .map(|cmd| {
            let sub = sub.clone();
            async move {
                sub.submit_accepted("a big order", cmd).await;
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    let head = c.head_seq().await;
    let before = rss_bytes(pid);

    // Slow watchers: ten streams on each of four connections, never read.
    let mut slow = Vec::new();
    for _ in 0..WATCHERS / 10 {
        let cl = raw_client(&c).await;
        for _ in 0..10 {
            let s = cl
                .clone()
                .watch_entries(pb::WatchRequest { from_seq: 0 })
                .await
                .expect("a slow watcher")
                .into_inner();
            slow.push(s);
        }
    }
    // A watcher that reads everything meanwhile.
    let mut reader = raw_client(&c)
        .await
        .watch_entries(pb::WatchRequest { from_seq: 0 })
        .await
        .expect("watch")
        .into_inner();
    let mut n = 0u64;
    while n <= head {
        let e = tokio::time::timeout(TIMEOUT, reader.message())
            .await
            .expect("the reading watcher is served")
            .expect("stream open")
            .expect("an entry");
        assert_eq!(e.seq, n);
        n += 1;
    }
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(rss_bytes(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = peak.saturating_sub(before);
    // Read into memory, the backlog would be WATCHERS x ledger_bytes (~500 MB).
    let bound = 150 * 1024 * 1024;
    assert!(
        grown < bound,
        "RSS grew {} MB with {WATCHERS} slow watchers over a {} MB ledger (RSS {} MB before)",
        grown >> 20,
        ledger_bytes >> 20,
        before >> 20
    );
    eprintln!(
        "slow watchers: RSS {} MB before, peak {} MB ({} watchers, ledger {} MB)",
        before >> 20,
        peak >> 20,
        WATCHERS,
        ledger_bytes >> 20
    );
    drop(slow);
}
