//! Finding the `arbor-node` and `arbor` binaries the tests run.
//!
//! Cargo builds a test binary into `target/<profile>/deps/`; the workspace
//! binaries sit one level up. `cargo test` does not build them for an
//! integration-test-only crate, hence the explicit message.

use std::path::PathBuf;

/// The `arbor-node` replica binary (`ARBOR_NODE_BIN` overrides).
pub fn node_bin() -> PathBuf {
    locate("ARBOR_NODE_BIN", "arbor-node")
}

/// The `arbor` CLI binary (`ARBOR_BIN` overrides).
pub fn cli_bin() -> PathBuf {
    locate("ARBOR_BIN", "arbor")
}

/// A compiled example of the workspace (`target/<profile>/examples/NAME`),
/// built by `cargo build --workspace --all-targets` (and by `cargo test`).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a parent dir")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join("examples").join(name);
    assert!(
        p.is_file(),
        "example {name} not found at {}: run `cargo build --workspace --all-targets` first",
        p.display()
    );
    p
}

fn locate(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env}={} is not a file", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a parent dir")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{name} not found at {}: run `cargo build --workspace --bins` first (or set {env})",
        p.display()
    );
    p
}
