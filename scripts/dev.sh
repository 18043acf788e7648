#!/usr/bin/env bash
# Build arbor and start a local three-replica cluster (arbor-node dev).
# Extra arguments go to `arbor-node dev`, e.g. --data-dir DIR --base-port 7101.
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_prereqs
if use_prebuilt_rocksdb release; then
  echo "==> building"
  cargo build --release --workspace --bins
else
  echo "==> building (the first release build compiles RocksDB's C++: ~13 min on 2 cores)"
  cargo build --release --workspace --bins
  save_prebuilt_rocksdb release
fi
echo "==> CLI: $CARGO_TARGET_DIR/release/arbor  (add it to PATH: export PATH=\"$CARGO_TARGET_DIR/release:\$PATH\")"
exec "$CARGO_TARGET_DIR/release/arbor-node" dev "$@"
