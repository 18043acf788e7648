//! The newcomer path, end to end, with the real binaries: `arbor-node dev`
//! and the `arbor` CLI, as the README tells a new user to run them.

use arbor_tests::dev::DevCluster;
use arbor_tests::ports::free_port_range;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_path_with_the_dev_cluster() {
    let tmp = tempfile::Builder::new()
        .prefix("arbor-dev-")
        .tempdir()
        .expect("temp dir");
    let data = tmp.path().join("data");
    let base = free_port_range(3);
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
        &key("shop"),
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
            &key(store),
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
    let args_a = claim("store-a");
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    dev.cli(&args_a).await.ok();
    let args_b = claim("store-b");
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
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
    // names; signed for another cluster id, a command is refused (exit 1).
    let status = dev
        .cli(&["cluster", "status", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(status["cluster_id"], "arbor", "{status}");
    let mut elsewhere = args_b.clone();
    elsewhere.extend(["--cluster-id", "elsewhere"]);
    let refused = dev.cli(&elsewhere).await;
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.text().contains("signature"), "{refused}");

    let owner_of = async |dev: &DevCluster| {
        let got = dev.cli(&["order", "get", "o-cli-1"]).await.ok();
        got.json()["owner"].as_str().map(str::to_string)
    };
    assert_eq!(owner_of(&dev).await.as_deref(), Some("store-a"));

    // The lifecycle through the CLI: hand the order to store-b, which ships
    // and delivers it.
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
    // store-a no longer owns it: its milestone is rejected (exit 2).
    let late = dev
        .cli(&[
            "order",
            "milestone",
            "o-cli-1",
            "packed",
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

    dev.stop().await;
    dev.restart().await;
    assert_eq!(
        owner_of(&dev).await.as_deref(),
        Some("store-b"),
        "owner lost across a dev restart"
    );
    dev.stop().await;
}
