# Shared by the scripts: make sure the build prerequisites are present.
# Sourced, not run.

set -euo pipefail

# A target dir outside the clone lets repeated runs (and CI on the same
# machine) reuse the ~13 min RocksDB C++ build. Override with CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbor-target}"

# RocksDB's C++ library (~13 min on 2 cores) is compiled once per machine and
# profile, then linked from a cache: librocksdb-sys links a prebuilt
# $ROCKSDB_LIB_DIR/librocksdb.a when ROCKSDB_LIB_DIR and ROCKSDB_STATIC are set.
# The cache is keyed by the librocksdb-sys version in Cargo.lock and the
# rocksdb line of Cargo.toml (its features decide what the C++ is built with).
rocksdb_key() {
  local version features
  version="$(grep -A1 '^name = "librocksdb-sys"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')"
  features="$(grep '^rocksdb = ' Cargo.toml | sha256sum | cut -c1-8)"
  echo "$version-$features"
}
ARBOR_ROCKSDB_CACHE="${ARBOR_ROCKSDB_CACHE:-$HOME/.cache/arbor-rocksdb/$(rocksdb_key)}"

# use_prebuilt_rocksdb PROFILE: link the cached library of PROFILE (debug or
# release) from now on, if there is one. Returns 1 if there is none yet.
use_prebuilt_rocksdb() {
  local dir="$ARBOR_ROCKSDB_CACHE/$1"
  if [ -f "$dir/librocksdb.a" ]; then
    export ROCKSDB_LIB_DIR="$dir" ROCKSDB_STATIC=1
    return 0
  fi
  unset ROCKSDB_LIB_DIR ROCKSDB_STATIC
  return 1
}

# save_prebuilt_rocksdb PROFILE: after a build that compiled RocksDB, keep its
# library in the cache (atomically) and link it from now on.
save_prebuilt_rocksdb() {
  local dir="$ARBOR_ROCKSDB_CACHE/$1" lib
  lib="$(ls -t "$CARGO_TARGET_DIR/$1"/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)"
  if [ -n "$lib" ]; then
    mkdir -p "$dir"
    cp "$lib" "$dir/librocksdb.a.tmp.$$" && mv "$dir/librocksdb.a.tmp.$$" "$dir/librocksdb.a"
    use_prebuilt_rocksdb "$1"
  fi
}

have_libclang() {
  # On Debian/Ubuntu ask dpkg: libclang-cpp (often preinstalled) is not enough,
  # bindgen needs libclang itself and clang's builtin headers (libclang-dev).
  if command -v dpkg >/dev/null 2>&1; then
    dpkg -s libclang-dev >/dev/null 2>&1
  else
    ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib*/libclang.so* /usr/lib*/*/libclang-[0-9]*.so* >/dev/null 2>&1
  fi
}

have_chromium() {
  # The explorer's browser tests (tests/src/browser.rs) look for these, or ARBOR_CHROMIUM.
  [ -n "${ARBOR_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 ||
    command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1
}

ensure_prereqs() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  local updated=""
  if ! have_libclang; then
    echo "==> installing libclang-dev (RocksDB's bindings need it)"
    $sudo apt-get update -qq && updated=1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >/dev/null
  fi
  if ! have_chromium; then
    echo "==> installing chromium (the audit explorer's tests run it headless)"
    [ -n "$updated" ] || $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  fi
}

# The exit trap of the benchmark scripts: stops the processes in "${pids[@]}",
# on failure prints the tail of each member's log ("$work/<LOG_PREFIX>N.log"),
# and removes "$work" unless the run failed or ARBOR_BENCH_KEEP=1.
#   trap 'bench_cleanup n replica bench.sh' EXIT
bench_cleanup() { # LOG_PREFIX MEMBER_NAME SCRIPT_NAME
  local rc=$? prefix=$1 member=$2 script=$3
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    for i in 1 2 3; do
      if [ -f "$work/$prefix$i.log" ]; then
        echo "----- $member $i log tail ($work/$prefix$i.log) -----" >&2
        tail -n 20 "$work/$prefix$i.log" >&2
      fi
    done
  fi
  if [ "${ARBOR_BENCH_KEEP:-}" = 1 ] || [ "$rc" != 0 ]; then
    echo "$script: kept $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}

# CPU clock ticks (user + system) process PID has used, from /proc/PID/stat
# (the fields after the command name, which may hold spaces). Divide by
# `getconf CLK_TCK` for seconds.
proc_cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# CPU seconds (user + system) of this shell's finished children, via the
# `times` builtin: call it in the script's own shell (a redirect, never a
# $(...) subshell, which would not see them). Uses "$work/times".
children_secs() {
  times >"$work/times"
  tail -n 1 "$work/times" | awk 'function s(x, a) { split(x, a, "m"); sub("s", "", a[2]); return a[1] * 60 + a[2] }
    { printf "%.3f", s($1) + s($2) }'
}
