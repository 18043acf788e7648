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

# A replica's Prometheus text (GET /metrics on 127.0.0.1:PORT), over bash's
# /dev/tcp: no HTTP client needed. Prints nothing if the port does not answer.
metrics_get() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1" &&
    printf 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 &&
    timeout 10 cat <&3 | tr -d '\r' | sed '1,/^$/d') 2>/dev/null || true
}

# What the bench asked of each replica's raft log and state machine, from two
# scrapes (before, after) of its metrics: synced log appends and the entries
# each held, the time of one append, apply batches and their entries,
# AppendEntries received, signature batches at admission. One JSON object.
batch_stats() {
  awk '
    { f = (FILENAME == ARGV[1]) ? 1 : 2 }
    /^#/ || NF != 2 { next }
    { v[f, $1] = $2 }
    END {
      split("arbor_log_append_entries_count arbor_log_append_entries_sum arbor_log_append_seconds_sum " \
        "arbor_apply_batch_entries_count arbor_apply_batch_entries_sum arbor_apply_batch_seconds_sum " \
        "arbor_admission_batch_size_count arbor_admission_batch_size_sum", names, " ")
      for (i in names) d[names[i]] = v[2, names[i]] - v[1, names[i]]
      ae = "arbor_grpc_request_duration_seconds_count{port=\"peer\",method=\"Raft/AppendEntries\"}"
      q = d["arbor_log_append_entries_count"]; a = d["arbor_apply_batch_entries_count"]; s = d["arbor_admission_batch_size_count"]
      printf "{\"log_appends\": %d, \"entries_per_append\": %.1f, \"ms_per_append\": %.2f, ", \
        q, q ? d["arbor_log_append_entries_sum"] / q : 0, q ? 1000 * d["arbor_log_append_seconds_sum"] / q : 0
      printf "\"apply_batches\": %d, \"entries_per_apply\": %.1f, \"ms_per_apply\": %.2f, ", \
        a, a ? d["arbor_apply_batch_entries_sum"] / a : 0, a ? 1000 * d["arbor_apply_batch_seconds_sum"] / a : 0
      printf "\"append_entries_received\": %d, \"signature_batches\": %d, \"signatures_per_batch\": %.1f}", \
        v[2, ae] - v[1, ae], s, s ? d["arbor_admission_batch_size_sum"] / s : 0
    }' "$1" "$2"
}

# CPU seconds (user + system) of this shell's finished children, via the
# `times` builtin: call it in the script's own shell (a redirect, never a
# $(...) subshell, which would not see them). Uses "$work/times".
children_secs() {
  times >"$work/times"
  tail -n 1 "$work/times" | awk 'function s(x, a) { split(x, a, "m"); sub("s", "", a[2]); return a[1] * 60 + a[2] }
    { printf "%.3f", s($1) + s($2) }'
}
