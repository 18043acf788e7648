#!/usr/bin/env bash
# Run every check CI runs: formatting, clippy, unit and property tests,
# storage conformance, and the cluster tests against real arbor-node processes.
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_prereqs
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> build (binaries are used by the cluster tests)"
# Always the whole workspace with all targets: the same feature set for every
# step. RocksDB's C++ is compiled by the first build on this machine only and
# linked from the cache after that (scripts/lib.sh).
if use_prebuilt_rocksdb debug; then
  cargo build --workspace --all-targets
else
  echo "    (first build on this machine: compiles RocksDB's C++, ~13 min on 2 cores)"
  cargo build --workspace --all-targets
  save_prebuilt_rocksdb debug
  cargo build --workspace --all-targets
fi
echo "==> clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> tests"
# Cluster tests start three or more real replicas each; two at a time fit a 2-core machine.
cargo test --workspace --no-fail-fast -- --test-threads=2
