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

    let owner_of = async |dev: &DevCluster| {
        let got = dev.cli(&["order", "get", "o-cli-1"]).await.ok();
        got.json()["owner"].as_str().map(str::to_string)
    };
    assert_eq!(owner_of(&dev).await.as_deref(), Some("store-a"));

    dev.stop().await;
    dev.restart().await;
    assert_eq!(
        owner_of(&dev).await.as_deref(),
        Some("store-a"),
        "owner lost across a dev restart"
    );
    dev.stop().await;
}
