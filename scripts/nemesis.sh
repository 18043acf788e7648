#!/usr/bin/env bash
# A bounded fault campaign against real arbor-node processes on 127.0.0.1
# (tests/tests/cluster/nemesis.rs): leader and follower SIGKILL + restart,
# SIGSTOP + SIGCONT, partitions through the harness's proxies, whole-cluster
# SIGTERM + restart, under racing claims; then the recorded history is
# checked against the final ledger. Prints a NEMESIS line with the figures.
#
#   scripts/nemesis.sh [FAULTS [SECONDS]]    defaults: 120 faults, 1800 s budget
#
# No fault starts once the time budget is spent. Debug build, like the tests.
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_prereqs
export ARBOR_NEMESIS_FAULTS="${1:-120}" ARBOR_NEMESIS_SECS="${2:-1800}"
use_prebuilt_rocksdb debug || true
cargo build --workspace --all-targets
cargo test --workspace --test cluster nemesis::long_campaign -- \
  --ignored --nocapture --test-threads=1 2>&1 | tee "${ARBOR_NEMESIS_LOG:-/dev/null}" |
  grep -E '^(nemesis:|NEMESIS|test |thread|invariant)|panicked|test result'
