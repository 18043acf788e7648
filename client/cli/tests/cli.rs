//! The `arbor` binary without a server: key files, argument errors, exit codes.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn arbor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(args)
        .env_remove("ARBOR_ENDPOINTS")
        .env_remove("ARBOR_CACERT")
        .env("ARBOR_INSECURE_PLAINTEXT", "true")
        .env_remove("ARBOR_KEY")
        .env_remove("ARBOR_OPERATOR_KEY")
        .output()
        .expect("run arbor")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Asserts exit code 1 and exactly one `error:` line on stderr; returns it.
fn one_error_line(o: &Output) -> String {
    error_line(o, 1)
}

/// Asserts exit code `code` and exactly one `error:` line on stderr; returns it.
fn error_line(o: &Output, code: i32) -> String {
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    err
}

/// Asserts exit code `code` and one JSON error object on stderr; returns it.
fn json_error(o: &Output, code: i32) -> serde_json::Value {
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    let v: serde_json::Value = serde_json::from_str(&err).expect("stderr is one JSON object");
    assert_eq!(v["exit_code"], code, "{v}");
    assert!(v["error"].is_string() && v["kind"].is_string(), "{v}");
    v
}

/// A local port that nothing listens on.
fn unused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn keys_generate_then_show() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("store-17.key");
    let key_s = key.to_str().unwrap();

    let o = arbor(&["keys", "generate", "--party", "store-17", "--out", key_s]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("store-17"), "{text}");

    let o = arbor(&["keys", "show", key_s, "--output", "json"]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["party_id"], "store-17");
    let pk = v["public_key"].as_str().unwrap();
    assert_eq!(pk.len(), 64);
    assert!(text.contains(pk), "generate printed the public key: {text}");
    let file = std::fs::read_to_string(&key).unwrap();
    assert!(!stdout(&o).contains(&file[file.find("secret_key").unwrap() + 14..][..64]));

    // The node's dev mode and the library read the same file.
    let id = arbor_client::Identity::load(&key).unwrap();
    assert_eq!(id.public_key_hex(), pk);

    // Never overwritten.
    let o = arbor(&["keys", "generate", "--party", "other", "--out", key_s]);
    let err = one_error_line(&o);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(
        arbor_client::Identity::load(&key).unwrap().party_id,
        "store-17"
    );
}

#[test]
fn keys_show_of_a_damaged_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("damaged.key");
    std::fs::write(&key, "{\"party_id\": \"x\"").unwrap();
    let err = one_error_line(&arbor(&["keys", "show", key.to_str().unwrap()]));
    assert!(err.contains("damaged.key"), "{err}");
}

#[test]
fn unreachable_cluster_fails_within_the_timeout() {
    let endpoints = format!("127.0.0.1:{},127.0.0.1:{}", unused_port(), unused_port());
    let started = Instant::now();
    let o = arbor(&[
        "order",
        "get",
        "X",
        "--endpoints",
        &endpoints,
        "--timeout",
        "1",
    ]);
    let elapsed = started.elapsed();
    let err = error_line(&o, 4);
    assert!(err.contains("unavailable"), "{err}");
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
}

#[test]
fn argument_errors_exit_64_with_one_line() {
    let err = error_line(&arbor(&["order", "claim", "o-1", "--total", "5"]), 64);
    assert!(err.contains("--price-version"), "{err}");
    // An acceptance quotes a price, or reads it.
    let err = error_line(&arbor(&["order", "accept-assignment", "o-1"]), 64);
    assert!(err.contains("--price-version"), "{err}");
    let err = error_line(&arbor(&["order", "reassign", "o-1"]), 64);
    assert!(err.contains("--reason"), "{err}");
    let err = error_line(
        &arbor(&["order", "decline-assignment", "o-1", "--decision-seq", "x"]),
        64,
    );
    assert!(err.contains("decision-seq"), "{err}");
    let err = error_line(&arbor(&["order", "frobnicate"]), 64);
    assert!(err.contains("frobnicate"), "{err}");
    let err = error_line(&arbor(&["order", "get", "X", "--endpoints", " , "]), 64);
    assert!(err.contains("no endpoints"), "{err}");
    let err = error_line(
        &arbor(&[
            "order",
            "claim",
            "o-1",
            "--price-version",
            "1",
            "--total",
            "5",
        ]),
        64,
    );
    assert!(err.contains("ARBOR_KEY"), "{err}");
    // A group without its subcommand prints help, as a usage error.
    assert_eq!(arbor(&["order"]).status.code(), Some(64));
    // Unix seconds where milliseconds are asked: refused with a hint.
    let err = error_line(
        &arbor(&[
            "order",
            "dispute",
            "o-1",
            "--kind",
            "lost",
            "--incident-ms",
            "1765121024",
        ]),
        64,
    );
    assert!(
        err.contains("seconds") && err.contains("1765121024000"),
        "{err}"
    );
    let err = error_line(
        &arbor(&["order", "dispute", "o-1", "--kind", "lost", "--at", "7 Dec"]),
        64,
    );
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn errors_as_json_objects_with_distinct_codes() {
    // Usage error, under --output json.
    let v = json_error(
        &arbor(&["order", "claim", "o-1", "--total", "5", "--output", "json"]),
        64,
    );
    assert_eq!(v["kind"], "usage", "{v}");
    // A missing file is "not found".
    let v = json_error(
        &arbor(&["keys", "show", "/nonexistent/k.key", "--output", "json"]),
        3,
    );
    assert_eq!(v["kind"], "not_found", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("/nonexistent/k.key"),
        "{v}"
    );
    // An unreachable cluster is "unavailable".
    let endpoints = format!("127.0.0.1:{}", unused_port());
    let v = json_error(
        &arbor(&[
            "order",
            "get",
            "X",
            "--endpoints",
            &endpoints,
            "--timeout",
            "1",
            "--output",
            "json",
        ]),
        4,
    );
    assert_eq!(v["kind"], "unavailable", "{v}");
}

#[test]
fn register_with_a_bad_order_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("meituan.key");
    arbor_client::Identity::generate("meituan")
        .save(&key)
        .unwrap();
    let order = dir.path().join("order-with-typo.json");
    std::fs::write(&order, r#"{"order_id": "o-1", "totl": 5}"#).unwrap();
    let args = [
        "order",
        "register",
        "--key",
        key.to_str().unwrap(),
        "--file",
        order.to_str().unwrap(),
    ];
    let err = one_error_line(&arbor(&args));
    assert!(
        err.contains("order-with-typo.json") && err.contains("totl"),
        "{err}"
    );
}

#[test]
fn help_is_available_everywhere() {
    for args in [
        &["--help"][..],
        &["keys", "generate", "--help"],
        &["party", "enroll", "--help"],
        &["order", "register", "--help"],
        &["order", "accept-assignment", "--help"],
        &["order", "decline-assignment", "--help"],
        &["order", "reassign", "--help"],
        &["ledger", "entries", "--help"],
        &["cluster", "status", "--help"],
    ] {
        let o = arbor(args);
        assert!(o.status.success(), "{args:?}");
        assert!(stdout(&o).contains("Usage"), "{args:?}");
    }
    assert!(stdout(&arbor(&["--help"])).contains("Exit codes"));
    assert!(!arbor(&[]).status.success());
}

#[test]
fn party_enroll_checks_arguments_before_signing() {
    let dir = tempfile::tempdir().unwrap();
    let op = dir.path().join("op.key");
    arbor_client::Identity::generate("operator")
        .save(&op)
        .unwrap();
    let node = dir.path().join("n.key");
    arbor_client::Identity::generate("store-1")
        .save(&node)
        .unwrap();
    let (op, secret) = (op.to_str().unwrap(), node.to_str().unwrap());
    // The secret key file is refused, pointing at export-public.
    let err = error_line(
        &arbor(&[
            "party",
            "enroll",
            "--key",
            op,
            "--role",
            "channel",
            "--public-key-file",
            secret,
        ]),
        64,
    );
    assert!(err.contains("export-public"), "{err}");
    let public = dir.path().join("n.pub");
    let o = arbor(&["keys", "export-public", secret, "--output", "json"]);
    assert!(o.status.success(), "{o:?}");
    let node = public.to_str().unwrap();
    let base = ["party", "enroll", "--key", op, "--public-key-file", node];

    let err = error_line(&arbor(&[&base[..], &["--role", "node"]].concat()), 64);
    assert!(err.contains("--kind"), "{err}");
    let err = error_line(
        &arbor(&[&base[..], &["--role", "channel", "--kind", "store"]].concat()),
        64,
    );
    assert!(err.contains("--kind"), "{err}");
    let err = error_line(
        &arbor(&[&base[..], &["--role", "channel", "--id", "other"]].concat()),
        64,
    );
    assert!(err.contains("store-1"), "{err}");
    assert!(Path::new(node).exists());
}

#[test]
fn keys_go_under_keys_private_and_the_public_half_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(["keys", "generate", "--party", "store-17"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let key = dir.path().join("keys/store-17.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
    }
    let key_s = key.to_str().unwrap();
    // The public half: party id and public key, no secret.
    let o = arbor(&["keys", "export-public", key_s, "--output", "json"]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let pubfile = dir.path().join("keys/store-17.pub");
    assert_eq!(v["file"], pubfile.to_str().unwrap());
    let text = std::fs::read_to_string(&pubfile).unwrap();
    let p: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(p["party_id"], "store-17");
    assert_eq!(p["public_key"], v["public_key"]);
    assert!(p.get("secret_key").is_none(), "{text}");
    // Never overwritten.
    let err = one_error_line(&arbor(&["keys", "export-public", key_s]));
    assert!(err.contains("refusing to overwrite"), "{err}");
    // A secret key readable by others is refused, with the fix.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = one_error_line(&arbor(&["keys", "show", key_s]));
        assert!(err.contains("chmod 600"), "{err}");
        let err = one_error_line(&arbor(&[
            "order",
            "claim",
            "o-1",
            "--at-current-price",
            "--key",
            key_s,
        ]));
        assert!(err.contains("readable by others"), "{err}");
    }
}
