//! The audit explorer (`arbor audit serve`) in a real headless Chromium, and
//! the EPCIS 2.0 export (`arbor audit epcis`) validated against GS1's
//! schema, on one real order history: a claim, a handoff (damage noted, a
//! hostile note), shipping with a carrier, a resolved dispute (with a hostile
//! statement) and an open one.

use std::path::PathBuf;
use std::process::Stdio;

use arbor_client::Commands;
use arbor_proto::pb;
use arbor_tests::bins::cli_bin;
use arbor_tests::browser::{artifacts_dir, Browser};
use arbor_tests::dev::run_cli;
use arbor_tests::fixtures::{sample_order_with_ref, sample_profile, SAMPLE_TOTAL};
use arbor_tests::{Options, TestCluster, TIMEOUT};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const ORDER: &str = "o-explore-1";
/// The cluster's lease grace (see the slow node below).
const GRACE_MS: u64 = 5_000;
/// Would mark the page if any of it ran as markup or script.
const NOTE: &str = "<script>document.body.setAttribute('data-pwned','note')</script>";
const STATEMENT: &str =
    "never arrived <img src=x onerror=\"document.body.setAttribute('data-pwned','statement')\">";

/// `arbor audit serve` on a free port; the address is read from its first line.
struct Explorer {
    _child: tokio::process::Child,
    base: String,
}

impl Explorer {
    async fn start(c: &TestCluster, extra: &[&str]) -> Explorer {
        let mut child = tokio::process::Command::new(cli_bin())
            .args([
                "--endpoints",
                &c.endpoints().join(","),
                "--cacert",
                &c.cacert(),
                "audit",
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("ARBOR_ENDPOINTS")
            .env_remove("ARBOR_CACERT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start arbor audit serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(TIMEOUT, lines.next_line())
            .await
            .expect("the explorer printed no address in time")
            .expect("read the explorer's stdout")
            .expect("the explorer exited before printing its address");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Explorer {
            _child: child,
            base,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// `GET /` with the given `Host` header, over a plain socket; the reply's head.
async fn raw_get(addr: &str, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("reply in time")
        .expect("read");
    String::from_utf8_lossy(&buf).chars().take(200).collect()
}

/// The opening tag of the element carrying all of `attrs` (in that order).
fn has_element(dom: &str, tag: &str, attrs: &[(&str, String)]) -> bool {
    let want: String = attrs.iter().map(|(k, v)| format!(" {k}=\"{v}\"")).collect();
    dom.match_indices(&format!("<{tag} ")).any(|(i, _)| {
        let open = &dom[i..i + dom[i..].find('>').unwrap_or(0)];
        open.contains(&want)
    })
}

/// GS1's files: `ARBOR_EPCIS_DIR`, else `../shared/epcis/` beside the clone
/// (CI), else the first `shared/epcis/` beside one of the clone's parents
/// (a worktree). They are GS1's and not copied into the repo.
fn shared_epcis(name: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("ARBOR_EPCIS_DIR") {
        return PathBuf::from(d).join(name);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repo root")
        .to_path_buf();
    root.ancestors()
        .skip(1)
        .map(|d| d.join("shared/epcis"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| root.join("../shared/epcis"))
        .join(name)
}

fn epcis_validator() -> jsonschema::Validator {
    let path = shared_epcis("EPCIS-JSON-Schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "GS1's EPCIS 2.0 JSON Schema is expected at {} (shared/epcis/ beside the clone): {e}",
            path.display()
        )
    });
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_in_chromium_and_epcis_export() {
    // Before anything starts: no browser, no test (and a clear message).
    let browser = Browser::find();
    let validator = epcis_validator();

    // Grace enough that a shipment after store-slow's 300 ms promise is late
    // but not lapsed; short enough to wait out for a lapse.
    let c = TestCluster::start(
        3,
        Options {
            lease_grace_ms: Some(GRACE_MS),
            ..Default::default()
        },
    )
    .await;
    c.wait_leader(TIMEOUT).await;

    // Before any replica key is enrolled no checkpoint can be verified: the
    // explorer says so.
    let ex = Explorer::start(&c, &[]).await;
    let dom = browser.dom(&ex.url("/"), None).await;
    assert!(dom.contains("✘ NOT verified"), "{dom}");
    assert!(!dom.contains("✔ verified"), "{dom}");
    c.enroll_replicas().await;
    let shop = c.enroll_channel("shop").await;
    let store = c.enroll_node("store-sh").await;
    let wh = c
        .enroll_node_with("wh-east", pb::NodeKind::Warehouse, sample_profile())
        .await;
    c.enroll("sf-express", pb::Role::Node, pb::NodeKind::Carrier)
        .await;
    let auditor = c.enroll_party("auditor-1", pb::Role::Auditor).await;
    let sub = c.submitter().await;
    let client = c.client().await;

    sub.submit_accepted(
        "register",
        shop.register_order(sample_order_with_ref(ORDER, "shop", "PO-7781")),
    )
    .await;
    let claim = sub
        .submit_accepted("claim", store.claim_order(ORDER, 1, SAMPLE_TOTAL))
        .await;
    let offer = sub
        .submit_accepted("offer", store.offer_handoff(ORDER, "wh-east", 600_000))
        .await;
    let accept = sub
        .submit_accepted("accept", wh.accept_handoff(ORDER, offer.seq, true, NOTE))
        .await;
    for m in [pb::Milestone::Picked, pb::Milestone::Packed] {
        sub.submit_accepted("milestone", wh.report_milestone(ORDER, m))
            .await;
    }
    let ship = sub
        .submit_accepted("ship", wh.report_shipped(ORDER, "sf-express", "SF99887766"))
        .await;
    let ship_ms = client
        .get_entries(ship.seq, 1)
        .await
        .expect("entry")
        .entries[0]
        .time_ms;
    let lost = sub
        .submit_accepted(
            "lost dispute",
            shop.open_dispute(ORDER, pb::IncidentKind::Lost, ship_ms, STATEMENT),
        )
        .await;
    let ruling = client
        .preview_ruling(ORDER, lost.seq)
        .await
        .expect("preview");
    // Rules version 4: sf-express signed nothing (a node of kind carrier, no
    // tender), so the shipper stays liable for what it handed over.
    assert_eq!(ruling.liable, "wh-east", "{ruling:?}");
    let resolved = sub
        .submit_accepted(
            "ruling",
            auditor.resolve_dispute(
                ORDER,
                lost.seq,
                &ruling.liable,
                &ruling.rule,
                ruling.evidence.clone(),
            ),
        )
        .await;
    let damaged = sub
        .submit_accepted(
            "damaged dispute",
            shop.open_dispute(ORDER, pb::IncidentKind::Damaged, ship_ms, "box crushed"),
        )
        .await;
    let order = client.get_order(ORDER).await.expect("order");

    // store-slow ships one order late and lets another lapse (claimed by store-sh then).
    let slow = c
        .enroll_node_with(
            "store-slow",
            pb::NodeKind::Store,
            pb::PublishProfile {
                dispatch_time_ms: 300,
                ..sample_profile()
            },
        )
        .await;
    for id in ["o-late", "o-lapse"] {
        c.register_order(&shop, id).await;
    }
    let late_claim = sub
        .submit_accepted("slow claim", slow.claim_order("o-late", 1, SAMPLE_TOTAL))
        .await;
    let lapse_claim = sub
        .submit_accepted("slow claim 2", slow.claim_order("o-lapse", 1, SAMPLE_TOTAL))
        .await;
    // Past the 300 ms promise (by the leader's clock), well inside the grace.
    c.wait_until("the dispatch promise to pass", TIMEOUT, async || {
        let head = client
            .get_entries(c.head_seq().await, 1)
            .await
            .map_err(|e| e.to_string())?;
        let now = head.entries.first().map(|e| e.time_ms).unwrap_or(0);
        let claimed = client
            .get_entries(late_claim.seq, 1)
            .await
            .map_err(|e| e.to_string())?
            .entries[0]
            .time_ms;
        if now > claimed + 400 {
            Ok(())
        } else {
            // Entries carry the leader's time: append one to move the head on.
            sub.submit(slow.report_milestone("o-late", pb::Milestone::Picked))
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Err(format!("head time {now}, claim at {claimed}"))
        }
    })
    .await;
    let late_ship = sub
        .submit_accepted(
            "late ship",
            slow.report_shipped("o-late", "sf-express", "SF-LATE"),
        )
        .await;
    let reclaim = c
        .wait_until(
            "store-slow's lease on o-lapse to lapse",
            TIMEOUT,
            async || {
                let r = sub
                    .submit(store.claim_order("o-lapse", 1, SAMPLE_TOTAL))
                    .await
                    .map_err(|e| e.to_string())?;
                let o = r.outcome.clone().unwrap_or_default();
                if o.accepted {
                    Ok(r.seq)
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    Err(o.message)
                }
            },
        )
        .await;
    // The entry that recorded the lapse: this claim, or the leader's sweep before it.
    let mut lapse = 0;
    for seq in client.get_order("o-lapse").await.expect("order").history {
        let e = client.get_entries(seq, 1).await.expect("entry").entries[0].clone();
        let o = e.outcome.unwrap_or_default();
        if o.accepted && o.message.starts_with("lease of store-slow lapsed") {
            lapse = seq;
        }
    }
    assert!(
        lapse > lapse_claim.seq && lapse <= reclaim,
        "lapse at {lapse}"
    );
    let stats = client.node_stats("store-slow").await.expect("stats");
    assert_eq!((stats.lapses, stats.late_shipments), (1, 1), "{stats:?}");

    let shots = artifacts_dir();

    // The cluster: members, leader, the checkpoint verified.
    let dom = browser.dom(&ex.url("/"), None).await;
    assert!(dom.contains("id=\"checkpoint-status\""), "{dom}");
    assert!(dom.contains("✔ verified"), "{dom}");
    assert!(!dom.contains("NOT verified"), "{dom}");
    for id in c.ids() {
        assert!(dom.contains(&format!("data-node-id=\"{id}\"")), "{dom}");
    }
    assert!(dom.contains("(leader)"), "{dom}");
    browser
        .screenshot(&ex.url("/"), &shots.join("cluster.png"))
        .await;

    // The order: verified, every entry proven, every custody interval.
    let order_url = ex.url(&format!("/order?id={ORDER}"));
    let dom = browser.dom(&order_url, None).await;
    assert!(
        dom.contains(&format!("<span id=\"order-id\">{ORDER}</span>")),
        "{dom}"
    );
    assert!(
        has_element(
            &dom,
            "p",
            &[
                ("id", "order-verified".into()),
                ("data-verified", "true".into())
            ]
        ),
        "{dom}"
    );
    assert!(dom.contains("verified: all"), "{dom}");
    assert_eq!(
        dom.matches("data-proof=\"verified\"").count(),
        order.history.len(),
        "{dom}"
    );
    assert_eq!(
        dom.matches("data-signature=\"verified\"").count(),
        order.history.len()
    );
    assert!(!dom.contains("data-proof=\"failed\""), "{dom}");
    let intervals = [
        ("store-sh", claim.seq, accept.seq.to_string(), "false"),
        ("wh-east", accept.seq, ship.seq.to_string(), "false"),
        // Rules version 4: the shipper's own custody, as its carrier's principal.
        ("wh-east", ship.seq, "open".to_string(), "false"),
    ];
    for (holder, from, to, carrier) in &intervals {
        let attrs = [
            ("data-holder", holder.to_string()),
            ("data-from-seq", from.to_string()),
            ("data-to-seq", to.clone()),
            ("data-carrier", carrier.to_string()),
        ];
        assert!(has_element(&dom, "tr", &attrs), "row {holder}: {dom}");
        assert!(has_element(&dom, "g", &attrs), "bar {holder}: {dom}");
    }
    assert_eq!(
        dom.matches("class=\"custody-interval\"").count(),
        3,
        "{dom}"
    );
    // Rules version 4: no carrier window: sf-express signed nothing, so the
    // last interval is the shipper's own, and says why.
    assert!(!dom.contains("carrier window"), "{dom}");
    assert!(
        dom.contains("not an enrolled carrier: the node&#39;s agent")
            || dom.contains("not an enrolled carrier: the node's agent"),
        "{dom}"
    );
    assert!(dom.contains(">handoff</text>"), "{dom}");
    // The resolved dispute with its ruling and evidence, the open one with the preview.
    assert!(
        has_element(
            &dom,
            "article",
            &[
                ("data-dispute-seq", lost.seq.to_string()),
                ("data-resolved", "true".into())
            ]
        ),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            "ruling recorded at <a class=\"seq\" href=\"#e{}\"",
            resolved.seq
        )),
        "{dom}"
    );
    for seq in &ruling.evidence {
        assert!(
            dom.contains(&format!("data-evidence-seq=\"{seq}\"")),
            "{dom}"
        );
    }
    assert!(
        has_element(
            &dom,
            "article",
            &[
                ("data-dispute-seq", damaged.seq.to_string()),
                ("data-resolved", "false".into())
            ]
        ),
        "{dom}"
    );
    assert!(dom.contains("damage_noted_at_acceptance"), "{dom}");
    assert!(dom.contains("data-price-version=\"1\""), "{dom}");
    // Hostile text from the ledger is text: shown, escaped, and nothing ran.
    assert!(
        dom.contains("<body><header>"),
        "a ledger string ran in the page (the body got attributes): {dom}"
    );
    assert!(
        !dom.contains("<img") && !dom.contains("<script>document"),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;script&gt;document.body.setAttribute"),
        "{dom}"
    );
    assert!(dom.contains("&lt;img src=x onerror="), "{dom}");
    browser
        .screenshot(&order_url, &shots.join("order.png"))
        .await;
    // The one in the README (docs/img/explorer-order.png): the top of the page, smaller.
    browser
        .screenshot_at(
            &order_url,
            &shots.join("order-readme.png"),
            (1100, 1180),
            0.75,
        )
        .await;

    // Search: by external reference and by order id land on the order.
    for q in ["shop/PO-7781", ORDER] {
        let dom = browser
            .dom(
                &ex.url(&format!("/search?q={}", q.replace('/', "%2F"))),
                None,
            )
            .await;
        assert!(
            dom.contains(&format!("<span id=\"order-id\">{ORDER}</span>")),
            "search {q}: {dom}"
        );
    }
    let dom = browser.dom(&ex.url("/search?q=no-such-thing"), None).await;
    assert!(dom.contains("No order, external reference"), "{dom}");
    // A hostile query is echoed as text; an unknown order is a 404 page.
    let dom = browser
        .dom(
            &ex.url("/search?q=%3Cscript%3Edocument.body.id%3D1%3C%2Fscript%3E"),
            None,
        )
        .await;
    assert!(
        dom.contains("<body><header>") && dom.contains("&lt;script&gt;document.body.id"),
        "{dom}"
    );
    // A request for another host name (DNS rebinding) is refused.
    let addr = ex.base.trim_start_matches("http://").to_string();
    for (host, status) in [("evil.example", "403"), (addr.as_str(), "200")] {
        let reply = raw_get(&addr, host).await;
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "Host {host}: {reply}"
        );
    }
    let dom = browser.dom(&ex.url("/order?id=o-nope"), None).await;
    assert!(
        dom.contains("<h1>404 Not Found</h1>") && dom.contains("o-nope"),
        "{dom}"
    );

    // A node's page: profile versions, counters, the shipment.
    let node_url = ex.url("/node?id=wh-east");
    let dom = browser.dom(&node_url, None).await;
    assert!(
        dom.contains("<span id=\"party-id\">wh-east</span>"),
        "{dom}"
    );
    assert!(dom.contains("data-profile-version=\"1\""), "{dom}");
    assert!(dom.contains("data-counter=\"late_shipments\""), "{dom}");
    assert!(
        dom.contains(&format!("data-shipment-seq=\"{}\"", ship.seq)),
        "{dom}"
    );
    browser.screenshot(&node_url, &shots.join("node.png")).await;
    let dom = browser.dom(&ex.url("/node?id=store-slow"), None).await;
    assert!(
        dom.contains(&format!("data-lapse-seq=\"{lapse}\""))
            && dom.contains(&format!("since seq {}", lapse_claim.seq)),
        "{dom}"
    );
    assert!(
        has_element(
            &dom,
            "tr",
            &[
                ("data-shipment-seq", late_ship.seq.to_string()),
                ("data-late", "true".into())
            ]
        ),
        "{dom}"
    );
    assert!(dom.contains("<td data-counter=\"lapses\">1</td>"), "{dom}");
    assert!(
        dom.contains("<td data-counter=\"late_shipments\">1</td>"),
        "{dom}"
    );
    // The lapsed order's custody: store-slow until the lapse, then store-sh.
    let dom = browser.dom(&ex.url("/order?id=o-lapse"), None).await;
    let attrs = [
        ("data-holder", "store-slow".to_string()),
        ("data-from-seq", lapse_claim.seq.to_string()),
        ("data-to-seq", lapse.to_string()),
    ];
    assert!(has_element(&dom, "tr", &attrs), "{dom}");
    assert!(dom.contains("lease lapsed"), "{dom}");

    // The live tail: rendered up to the claim, the script fetches the rest.
    let head = c.head_seq().await;
    let tail_url = ex.url(&format!("/tail?upto={}", claim.seq));
    let dom = browser.dom(&tail_url, Some(10_000)).await;
    assert!(
        dom.contains(&format!("<tr data-seq=\"{}\"", claim.seq)),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("<tr data-seq=\"{head}\"")),
        "the tail's script did not fetch entries after {}: {dom}",
        claim.seq
    );
    browser
        .screenshot(&ex.url("/tail"), &shots.join("tail.png"))
        .await;
    eprintln!("explorer screenshots: {}", shots.display());

    // EPCIS: the validator knows a valid document (the standard's own
    // example) from an invalid one.
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(shared_epcis("Example_9.6.1-ObjectEvent.jsonld"))
            .expect("example"),
    )
    .expect("example is JSON");
    assert_eq!(schema_errors(&validator, &example), Vec::<String>::new());
    let mut broken = example.clone();
    broken["epcisBody"]["eventList"][0]["action"] = "LOOK".into();
    assert!(!schema_errors(&validator, &broken).is_empty());

    // The order's custody events, validated.
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("order.jsonld");
    let base = [
        "--endpoints".to_string(),
        c.endpoints().join(","),
        "--cacert".into(),
        c.cacert(),
    ];
    // Judged by a pinned trust file (without one the export exits 7, unverified).
    let trust = tmp.path().join("arbor.trust").display().to_string();
    let mut init = base.to_vec();
    init.extend(["audit", "trust", "init", "--out", &trust].map(String::from));
    run_cli(&init.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .ok();
    {
        // The explorer judged by the same trust: its fingerprint shown, verified.
        let pinned = Explorer::start(&c, &["--trust", &trust]).await;
        let dom = browser.dom(&pinned.url("/"), None).await;
        assert!(dom.contains("✔ verified"), "{dom}");
        assert!(dom.contains("pinned trust SHA256:"), "{dom}");
        let dom = browser
            .dom(&pinned.url(&format!("/order?id={ORDER}")), None)
            .await;
        assert!(dom.contains("verified: all"), "{dom}");
    }
    let run = |extra: Vec<String>| {
        let mut all = base.to_vec();
        all.extend(extra);
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run_cli(&refs).await
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    run(s(&[
        "audit",
        "epcis",
        ORDER,
        "--out",
        out.to_str().unwrap(),
        "--trust",
        &trust,
    ]))
    .await
    .ok();
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("JSON");
    assert_eq!(
        schema_errors(&validator, &doc),
        Vec::<String>::new(),
        "{doc:#}"
    );
    let events = doc["epcisBody"]["eventList"].as_array().expect("events");
    let steps: Vec<(&str, u64)> = events
        .iter()
        .map(|e| {
            (
                e["bizStep"].as_str().unwrap_or(""),
                e["arbor:seq"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("accepting", claim.seq),
            ("receiving", accept.seq),
            ("picking", accept.seq + 1),
            ("packing", accept.seq + 2),
            ("shipping", ship.seq),
        ],
        "{doc:#}"
    );
    let party = |p: &str| format!("urn:arbor:{}:party:{p}", c.cluster_id());
    let handoff = &events[1];
    assert_eq!(handoff["disposition"], "damaged");
    assert_eq!(handoff["sourceList"][0]["source"], party("store-sh"));
    assert_eq!(
        handoff["destinationList"][0]["destination"],
        party("wh-east")
    );
    assert_eq!(handoff["arbor:note"], NOTE);
    assert_eq!(
        events[4]["destinationList"][0]["destination"],
        party("sf-express")
    );
    assert_eq!(events[4]["disposition"], "in_transit");
    // Each event names its entry: the seq and the hash the ledger has.
    for e in events {
        let seq = e["arbor:seq"].as_u64().expect("seq");
        let entry = &client.get_entries(seq, 1).await.expect("entry").entries[0];
        assert_eq!(e["arbor:entryHash"], hex::encode(&entry.hash), "{e}");
    }
    assert_eq!(doc["@context"][1]["arbor"], "urn:arbor:epcis:");

    // A range of entries: the same events (the order's are the only ones there).
    let out2 = tmp.path().join("range.jsonld");
    run(s(&[
        "audit",
        "epcis",
        "--from",
        "0",
        "--to",
        &head.to_string(),
        "--out",
        out2.to_str().unwrap(),
        "--trust",
        &trust,
    ]))
    .await
    .ok();
    let doc2: Value =
        serde_json::from_str(&std::fs::read_to_string(&out2).expect("read")).expect("JSON");
    assert_eq!(schema_errors(&validator, &doc2), Vec::<String>::new());
    // The order's events as in its own document, and the other orders' too.
    let all = doc2["epcisBody"]["eventList"].as_array().expect("events");
    let of = |id: &str| -> Vec<Value> {
        all.iter()
            .filter(|e| e["arbor:orderId"] == id)
            .cloned()
            .collect()
    };
    assert_eq!(&of(ORDER), events, "{doc2:#}");
    let late: Vec<u64> = of("o-late")
        .iter()
        .filter(|e| e["bizStep"] == "shipping")
        .map(|e| e["arbor:seq"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(late, [late_ship.seq], "{doc2:#}");
    let lapsed: Vec<(String, u64)> = of("o-lapse")
        .iter()
        .map(|e| {
            (
                e["arbor:signer"].as_str().unwrap_or("").to_string(),
                e["arbor:seq"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        lapsed,
        [
            (party("store-slow"), lapse_claim.seq),
            (party("store-sh"), reclaim)
        ],
        "{doc2:#}"
    );
    // `--out -` prints the same document.
    let unverified = run(s(&["audit", "epcis", ORDER, "--out", "-"])).await;
    assert_eq!(unverified.code, Some(7), "without --trust: unverified");
    let printed = run(s(&[
        "audit", "epcis", ORDER, "--out", "-", "--trust", &trust,
    ]))
    .await
    .ok()
    .json();
    assert_eq!(printed["epcisBody"], doc["epcisBody"]);
    // It never overwrites, and an unknown order is an error.
    let again = run(s(&[
        "audit",
        "epcis",
        ORDER,
        "--out",
        out.to_str().unwrap(),
        "--trust",
        &trust,
    ]))
    .await;
    assert_ne!(again.code, Some(0), "{again}");
    assert!(again.stderr.contains("already exists"), "{again}");
    let none = run(s(&[
        "audit",
        "epcis",
        "o-nope",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]))
    .await;
    assert_ne!(none.code, Some(0), "{none}");
    assert!(!tmp.path().join("x").exists());
}
