//! The newcomer path, end to end, with the real binaries: `arbor-node dev`
//! and the `arbor` CLI, as the README tells a new user to run them.

use arbor_tests::dev::DevCluster;
use arbor_tests::ports::free_port_ranges;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_path_with_the_dev_cluster() {
    let tmp = tempfile::Builder::new()
        .prefix("arbor-dev-")
        .tempdir()
        .expect("temp dir");
    let data = tmp.path().join("data");
    // Client ports, peer ports (+100) and metrics ports (+200).
    let base = free_port_ranges(3, &[100, 200]);
    let mut dev = DevCluster::start(&data, base, tmp.path().join("dev.log")).await;
    assert!(
        data.join("operator.key").is_file(),
        "dev did not write operator.key"
    );
    let op_key = dev.operator_key();
    assert!(
        op_key.is_file(),
        "ARBOR_OPERATOR_KEY {} is not a file",
        op_key.display()
    );
    let op_key = op_key.display().to_string();

    let key = |name: &str| tmp.path().join(format!("{name}.key")).display().to_string();
    for party in ["shop", "store-a", "store-b"] {
        let out = dev
            .cli(&["keys", "generate", "--party", party, "--out", &key(party)])
            .await
            .ok();
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(key(party)).expect("key file written"))
                .expect("key file is JSON");
        assert_eq!(file["party_id"], party, "key file {}: {file}", key(party));
        assert_eq!(
            file["public_key"].as_str().map(str::len),
            Some(64),
            "{file}"
        );
        assert!(
            !out.stdout
                .contains(file["secret_key"].as_str().unwrap_or("-")),
            "keys generate printed the secret key"
        );
    }

    // The operator enrols from the public halves only.
    let public = |name: &str| tmp.path().join(format!("{name}.pub")).display().to_string();
    for party in ["shop", "store-a", "store-b"] {
        dev.cli(&["keys", "export-public", &key(party)]).await.ok();
    }
    let refused = dev
        .cli(&[
            "party",
            "enroll",
            "--key",
            &op_key,
            "--role",
            "channel",
            "--public-key-file",
            &key("shop"),
        ])
        .await;
    assert_eq!(refused.code, Some(64), "{refused}");
    assert!(refused.stderr.contains("export-public"), "{refused}");
    dev.cli(&[
        "party",
        "enroll",
        "--key",
        &op_key,
        "--id",
        "shop",
        "--role",
        "channel",
        // Its orders carry references of the marketplace "meituan".
        "--channel-name",
        "meituan",
        "--public-key-file",
        &public("shop"),
    ])
    .await
    .ok();
    for store in ["store-a", "store-b"] {
        dev.cli(&[
            "party",
            "enroll",
            "--key",
            &op_key,
            "--id",
            store,
            "--role",
            "node",
            "--kind",
            "store",
            "--public-key-file",
            &public(store),
        ])
        .await
        .ok();
    }

    // Nodes claim only within a published capability profile.
    let profile_file = tmp.path().join("profile.toml");
    std::fs::write(
        &profile_file,
        "regions = [\"CN-31\"]\nmax-open-orders = 10\ndispatch-time-ms = 3600000\n",
    )
    .expect("write profile.toml");
    for store in ["store-a", "store-b"] {
        dev.cli(&[
            "profile",
            "publish",
            "--key",
            &key(store),
            "--file",
            &profile_file.display().to_string(),
        ])
        .await
        .ok();
    }
    let shown = dev
        .cli(&["profile", "show", "store-a", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["version"], 1, "{shown}");
    assert_eq!(shown["regions"][0], "CN-31", "{shown}");

    let order = serde_json::json!({
        "order_id": "o-cli-1",
        "external_refs": [{"channel": "meituan", "external_id": "meituan_20251207152344_8892"}],
        "lines": [
            {"sku": "sku-tea-500g", "quantity": 2, "unit_price": 1250},
            {"sku": "sku-cup", "quantity": 1, "unit_price": 500}
        ],
        "currency": "CNY",
        "total": 3000,
        "destination_region": "CN-31"
    });
    let order_file = tmp.path().join("order.json");
    std::fs::write(&order_file, order.to_string()).expect("write order.json");
    dev.cli(&[
        "order",
        "register",
        "--key",
        &key("shop"),
        "--file",
        &order_file.display().to_string(),
    ])
    .await
    .ok();

    // Typos are caught before anything is signed: each is refused locally
    // (exit 6) naming the expected value, and the ledger does not grow.
    let head = async |dev: &DevCluster| {
        let r = dev
            .cli(&["ledger", "entries", "--limit", "1", "--output", "json"])
            .await
            .ok()
            .json();
        r["head_seq"].as_u64().expect("head_seq")
    };
    let before = head(&dev).await;
    let (ka, kb) = (key("store-a"), key("store-b"));
    let refused_locally = async |dev: &DevCluster, args: &[&str], needle: &str| {
        let out = dev.cli(args).await;
        assert_eq!(out.code, Some(6), "{out}");
        assert!(out.stderr.contains(needle), "{needle:?} not named:\n{out}");
        assert!(out.stdout.is_empty(), "{out}");
        out
    };
    let wrong_total = [
        "order",
        "claim",
        "o-cli-1",
        "--price-version",
        "1",
        "--total",
        "3001",
        "--key",
        &ka,
    ];
    refused_locally(&dev, &wrong_total, "total 3000").await;
    refused_locally(
        &dev,
        &[
            "order",
            "claim",
            "o-cli-1",
            "--price-version",
            "2",
            "--total",
            "3000",
            "--key",
            &ka,
        ],
        "price version 1",
    )
    .await;
    refused_locally(
        &dev,
        &[
            "order",
            "claim",
            "o-cli-l",
            "--price-version",
            "1",
            "--total",
            "3000",
            "--key",
            &ka,
        ],
        "not registered",
    )
    .await;
    refused_locally(
        &dev,
        &["order", "milestone", "o-cli-1", "picked", "--key", &ka],
        "not_owner",
    )
    .await;
    // As JSON: one object on stderr with the prediction.
    let mut as_json = wrong_total.to_vec();
    as_json.extend(["--output", "json"]);
    let out = refused_locally(&dev, &as_json, "price_mismatch").await;
    let err: serde_json::Value = serde_json::from_str(out.stderr.trim()).expect("JSON error");
    assert_eq!(err["exit_code"], 6, "{err}");
    assert_eq!(err["kind"], "refused_locally", "{err}");
    assert_eq!(err["predicted"]["code"], "price_mismatch", "{err}");
    assert_eq!(err["command"]["total"], 3001, "{err}");
    // A dry run shows the command and the predicted outcome, signs nothing.
    let mut dry = wrong_total.to_vec();
    dry.extend(["--dry-run", "--output", "json"]);
    let out = dev.cli(&dry).await;
    assert_eq!(out.code, Some(6), "{out}");
    let d = out.json();
    assert_eq!(d["predicted"]["accepted"], false, "{d}");
    assert_eq!(d["command"]["kind"], "claim_order", "{d}");
    let dry_ok = dev
        .cli(&[
            "order",
            "claim",
            "o-cli-1",
            "--at-current-price",
            "--dry-run",
            "--key",
            &ka,
        ])
        .await
        .ok();
    assert_eq!(dry_ok.json()["predicted"]["accepted"], true, "{dry_ok}");
    assert_eq!(dry_ok.json()["quoted"]["total"], 3000, "{dry_ok}");
    assert_eq!(
        head(&dev).await,
        before,
        "a refused or dry-run command was appended"
    );

    // --force records the wrong quote on purpose (rejected, exit 2).
    let mut forced = wrong_total.to_vec();
    forced.push("--force");
    let out = dev.cli(&forced).await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stdout.contains("price_mismatch"), "{out}");
    assert_eq!(head(&dev).await, before + 1);

    let claim = |store: &str| {
        vec![
            "order".to_string(),
            "claim".into(),
            "o-cli-1".into(),
            "--price-version".into(),
            "1".into(),
            "--total".into(),
            "3000".into(),
            "--key".into(),
            key(store),
        ]
    };
    // --at-current-price reads and shows the locked price it quotes.
    let won = dev
        .cli(&[
            "order",
            "claim",
            "o-cli-1",
            "--at-current-price",
            "--key",
            &ka,
            "--output",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(won["accepted"], true, "{won}");
    assert_eq!(won["quoted"]["total"], 3000, "{won}");
    assert_eq!(won["quoted"]["price_version"], 1, "{won}");
    let args_b = claim("store-b");
    let mut args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    // The losing claim is caught before signing, naming the owner...
    let caught = dev.cli(&args_b).await;
    assert_eq!(caught.code, Some(6), "{caught}");
    assert!(caught.stderr.contains("store-a"), "{caught}");
    // ... and recorded when forced.
    args_b.push("--force");
    let second = dev.cli(&args_b).await;
    assert_eq!(
        second.code,
        Some(2),
        "second claim should exit 2 (rejected):\n{second}"
    );
    assert!(
        second.text().contains("store-a"),
        "rejection does not name the owner:\n{second}"
    );
    assert!(
        second.text().contains("already_owned"),
        "rejection does not give the code:\n{second}"
    );

    // The CLI signs for the cluster it talks to, which `cluster status`
    // names; signed for another cluster id, a command is refused by the
    // replica (exit 5, nothing appended).
    let status = dev
        .cli(&["cluster", "status", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(status["cluster_id"], "arbor", "{status}");
    let mut elsewhere = args_b.clone();
    elsewhere.extend(["--cluster-id", "elsewhere"]);
    let refused = dev.cli(&elsewhere).await;
    assert_eq!(refused.code, Some(5), "{refused}");
    assert!(refused.text().contains("signature"), "{refused}");

    let owner_of = async |dev: &DevCluster| {
        let got = dev.cli(&["order", "get", "o-cli-1"]).await.ok();
        got.json()["owner"].as_str().map(str::to_string)
    };
    assert_eq!(owner_of(&dev).await.as_deref(), Some("store-a"));

    // The lifecycle through the CLI: hand the order to store-b, which ships
    // and delivers it.
    // An offer to a mistyped node is caught.
    let before = head(&dev).await;
    refused_locally(
        &dev,
        &[
            "order", "offer", "o-cli-1", "--to", "store-bb", "--key", &ka,
        ],
        "store-bb is not enrolled",
    )
    .await;
    assert_eq!(head(&dev).await, before);
    let offer_text = dev
        .cli(&[
            "order",
            "offer",
            "o-cli-1",
            "--to",
            "store-b",
            "--expires-in",
            "30m",
            "--key",
            &ka,
            "--dry-run",
        ])
        .await
        .ok();
    assert_eq!(
        offer_text.json()["command"]["expires_in_ms"],
        1_800_000,
        "{offer_text}"
    );
    let offer = dev
        .cli(&[
            "order",
            "offer",
            "o-cli-1",
            "--to",
            "store-b",
            "--key",
            &key("store-a"),
            "--output",
            "json",
        ])
        .await
        .ok()
        .json();
    let offer_seq = offer["seq"].as_u64().expect("offer seq").to_string();
    assert_eq!(offer["offer_seq"], offer["seq"], "{offer}");
    assert_eq!(
        offer["accept_command"],
        format!("arbor order accept o-cli-1 --offer-seq {offer_seq} --key keys/store-b.key"),
        "{offer}"
    );
    // Accepting a mistyped offer seq is caught, naming the pending one.
    refused_locally(
        &dev,
        &[
            "order",
            "accept",
            "o-cli-1",
            "--offer-seq",
            "1",
            "--key",
            &kb,
        ],
        &format!("entry {offer_seq}"),
    )
    .await;
    dev.cli(&[
        "order",
        "accept",
        "o-cli-1",
        "--offer-seq",
        &offer_seq,
        "--key",
        &key("store-b"),
    ])
    .await
    .ok();
    assert_eq!(owner_of(&dev).await.as_deref(), Some("store-b"));
    // store-a no longer owns it: its milestone is caught before signing,
    // and rejected (exit 2) when forced.
    refused_locally(
        &dev,
        &["order", "milestone", "o-cli-1", "packed", "--key", &ka],
        "owned by store-b",
    )
    .await;
    // Wrong state: delivered before shipped.
    refused_locally(
        &dev,
        &["order", "milestone", "o-cli-1", "delivered", "--key", &kb],
        "milestone_out_of_order",
    )
    .await;
    let late = dev
        .cli(&[
            "order",
            "milestone",
            "o-cli-1",
            "packed",
            "--force",
            "--key",
            &key("store-a"),
        ])
        .await;
    assert_eq!(late.code, Some(2), "{late}");
    assert!(late.text().contains("not_owner"), "{late}");
    for m in [
        vec!["packed"],
        vec!["shipped", "--carrier", "sf-express", "--tracking-id", "SF1"],
        vec!["delivered", "--proof-of-delivery", "pod-1"],
    ] {
        let mut args = vec!["order", "milestone", "o-cli-1"];
        args.extend(m);
        let k = key("store-b");
        args.extend(["--key", k.as_str()]);
        dev.cli(&args).await.ok();
    }
    let got = dev
        .cli(&["order", "get", "o-cli-1", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(got["status"], "delivered", "{got}");
    assert_eq!(got["tracking_id"], "SF1", "{got}");
    // A dispute on a mistyped order is caught; an incident in the future too.
    refused_locally(
        &dev,
        &[
            "order", "dispute", "o-cli-l", "--kind", "lost", "--at", "now-1h", "--key", &ka,
        ],
        "not registered",
    )
    .await;
    refused_locally(
        &dev,
        &[
            "order", "dispute", "o-cli-1", "--kind", "lost", "--at", "now+2h", "--key", &ka,
        ],
        "incident_in_future",
    )
    .await;
    // A refund at a wrong price version, on an order with no return claimed.
    refused_locally(
        &dev,
        &[
            "order",
            "return",
            "o-cli-1",
            "receive",
            "--refund",
            "3000",
            "--price-version",
            "1",
            "--key",
            &kb,
        ],
        "o-cli-1",
    )
    .await;
    let stats = dev
        .cli(&["node", "stats", "store-b", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(stats["handoffs_in"], 1, "{stats}");
    assert_eq!(stats["shipped"], 1, "{stats}");
    assert_eq!(stats["open_orders"], 0, "{stats}");
    let listed = dev
        .cli(&["order", "list", "--status", "delivered", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed["orders"][0]["order_id"], "o-cli-1", "{listed}");

    // Membership through the CLI: the command is recorded in the ledger
    // even when rejected (exit 2), and names the rule's code.
    let rm = dev
        .cli(&["cluster", "remove-node", "9", "--key", &op_key])
        .await;
    assert_eq!(rm.code, Some(2), "{rm}");
    let out = rm.json();
    assert_eq!(out["code"], "unknown_replica", "{out}");
    assert_eq!(out["accepted"], false, "{out}");
    assert_eq!(out["in_effect"], false, "{out}");

    // A second instance on the same data names the one running.
    let second = std::process::Command::new(arbor_tests::bins::node_bin())
        .args(["dev", "--data-dir", &data.display().to_string()])
        .output()
        .expect("run a second arbor-node dev");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already running") && err.contains("(pid "),
        "{err}"
    );
    // `arbor-node` alone prints help (exit 64) and starts nothing.
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir_all(&cwd).expect("mkdir");
    let bare = std::process::Command::new(arbor_tests::bins::node_bin())
        .current_dir(&cwd)
        .env_remove("ARBOR_DATA_DIR")
        .output()
        .expect("run arbor-node");
    assert_eq!(bare.status.code(), Some(64), "{bare:?}");
    assert!(
        String::from_utf8_lossy(&bare.stderr).contains("Usage")
            || String::from_utf8_lossy(&bare.stdout).contains("Usage"),
        "{bare:?}"
    );
    assert!(
        !cwd.join("arbor-data").exists(),
        "arbor-node alone created data"
    );

    dev.stop().await;
    dev.restart().await;
    assert_eq!(
        owner_of(&dev).await.as_deref(),
        Some("store-b"),
        "owner lost across a dev restart"
    );
    dev.stop().await;
}
