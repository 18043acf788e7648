#!/usr/bin/env bash
# The claims benchmark against etcd, for a side-by-side figure with
# scripts/bench.sh: the same workload (`arbor bench --etcd`, same defaults:
# 20000 orders, 8 nodes, 256 in flight, 20% duplicates, 4 connections) against
# a fresh three-member etcd v3 cluster — three `etcd` processes on 127.0.0.1,
# free ports, a temp data dir, plaintext — where registering an order is one
# put and a claim is one transaction (owner key never created ? put owner :
# read owner). Prints ONE JSON line on stdout: the bench report (CPU per claim
# and per read of each etcd member and of the client, their idle CPU) plus the
# script's command line, the machine, the etcd version and the CPU seconds each
# member and the client spent over the whole run. Progress goes to stderr.
# Stops the cluster and removes its temp dir when done (or interrupted).
#
#   scripts/bench-etcd.sh                          # defaults, as scripts/bench.sh
#   scripts/bench-etcd.sh --orders 5000 --in-flight 16
#
# etcd: `etcd` and `etcdctl` from PATH; when missing, Debian's etcd-server and
# etcd-client packages (3.4.23 on bookworm) are installed with apt-get (as
# root, or through sudo). On a machine with systemd the package also enables
# and starts its own etcd service (127.0.0.1:2379); this script never talks
# to it (`systemctl disable --now etcd` stops it). Members run with etcd's
# defaults except a backend quota of 8 GiB (room for large --preload runs).
#
# Environment:
#   ARBOR_BENCH_BIN_DIR=DIR  use `arbor` from DIR, skip the build
#   ARBOR_BENCH_KEEP=1       keep the temp dir (member logs and data) afterwards
#   ARBOR_ETCD_BIN_DIR=DIR   use etcd and etcdctl from DIR
# See docs/performance.md for the method and figures.
cd "$(dirname "$0")/.."
source scripts/lib.sh

script_cmd="scripts/bench-etcd.sh $*"
work="$(mktemp -d "${TMPDIR:-/tmp}/arbor-bench-etcd-XXXXXX")"
pids=()

trap 'bench_cleanup e "etcd member" bench-etcd.sh' EXIT
trap 'exit 130' INT TERM

# etcd itself.
if [ -n "${ARBOR_ETCD_BIN_DIR:-}" ]; then
  etcd_bin="$ARBOR_ETCD_BIN_DIR/etcd"
  etcdctl_bin="$ARBOR_ETCD_BIN_DIR/etcdctl"
else
  if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
    echo "==> installing etcd-server and etcd-client (apt-get)" >&2
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client >&2 || {
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >&2
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client >&2
    }
  fi
  etcd_bin="$(command -v etcd)"
  etcdctl_bin="$(command -v etcdctl)"
fi
for b in "$etcd_bin" "$etcdctl_bin"; do
  [ -x "$b" ] || { echo "error: $b is not an executable" >&2; exit 1; }
done
etcd_version="$("$etcd_bin" --version 2>/dev/null | sed -n 's/^etcd Version: *//p' | head -n 1)"

# The load generator.
if [ -n "${ARBOR_BENCH_BIN_DIR:-}" ]; then
  bin="$ARBOR_BENCH_BIN_DIR"
else
  echo "==> cargo build --release -p arbor-cli --bin arbor" >&2
  cargo build --release -p arbor-cli --bin arbor >&2
  bin="$work/bin"
  mkdir -p "$bin"
  cp "$CARGO_TARGET_DIR/release/arbor" "$bin/"
fi
[ -x "$bin/arbor" ] || { echo "error: $bin/arbor is not an executable" >&2; exit 1; }

# Settings from the caller's environment must not leak into etcd or the client.
for v in $(env | grep -o '^\(ETCD\|ETCDCTL\|ARBOR\)_[A-Z_]*' | grep -v '^ARBOR_BENCH_'); do
  unset "$v"
done

# Six free ports (three client, three peer): nothing answers on them now.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=()
while [ "${#ports[@]}" -lt 6 ]; do
  p=$((20000 + RANDOM % 40000))
  if port_free "$p" && [[ " ${ports[*]} " != *" $p "* ]]; then ports+=("$p"); fi
done
client_url() { echo "http://127.0.0.1:${ports[$(($1 - 1))]}"; }
peer_url() { echo "http://127.0.0.1:${ports[$(($1 + 2))]}"; }
endpoints="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
initial="etcd-1=$(peer_url 1),etcd-2=$(peer_url 2),etcd-3=$(peer_url 3)"
token="arbor-bench-$(basename "$work")"

echo "==> starting 3 etcd members ($etcd_version) on $endpoints (data in $work)" >&2
for i in 1 2 3; do
  "$etcd_bin" --name "etcd-$i" --data-dir "$work/e$i" \
    --listen-client-urls "$(client_url "$i")" --advertise-client-urls "$(client_url "$i")" \
    --listen-peer-urls "$(peer_url "$i")" --initial-advertise-peer-urls "$(peer_url "$i")" \
    --initial-cluster "$initial" --initial-cluster-token "$token" --initial-cluster-state new \
    --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) >"$work/e$i.log" 2>&1 &
  pids+=($!)
done

# Ready: every member healthy (a health check is a linearizable read, so a leader exists).
ready=""
for _ in $(seq 1 600); do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "error: an etcd member exited during start-up" >&2; exit 1; }
  done
  if ETCDCTL_API=3 "$etcdctl_bin" --endpoints "$endpoints" --command-timeout 2s endpoint health >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
[ -n "$ready" ] || { echo "error: the etcd cluster did not form within 120 s" >&2; exit 1; }

tck="$(getconf CLK_TCK)"
before=()
for pid in "${pids[@]}"; do before+=("$(proc_cpu_ticks "$pid")"); done
children_secs >"$work/client.before"

pid_args=()
for i in 1 2 3; do pid_args+=(--pid "etcd-$i=${pids[$((i - 1))]}"); done
echo "==> arbor bench --etcd $endpoints $*" >&2
rc=0
report="$("$bin/arbor" --output json bench --etcd "$endpoints" "${pid_args[@]}" "$@")" || rc=$?
cpu="{"
for i in 1 2 3; do
  t="$(proc_cpu_ticks "${pids[$((i - 1))]}")"
  cpu+="$(awk -v a="${before[$((i - 1))]}" -v b="$t" -v h="$tck" -v n="$i" -v ad="127.0.0.1:${ports[$((i - 1))]}" \
    'BEGIN { printf "\"etcd_%s\": {\"addr\": \"%s\", \"seconds\": %.2f}, ", n, ad, (b - a) / h }')"
done
children_secs >"$work/client.after"
cpu+="$(awk -v a="$(cat "$work/client.before")" -v b="$(cat "$work/client.after")" 'BEGIN { printf "\"arbor_bench\": %.2f}", b - a }')"
if [ "$rc" != 0 ]; then
  [ -z "$report" ] || echo "$report" >&2
  echo "error: arbor bench --etcd failed (exit $rc)" >&2
  exit "$rc"
fi

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
model="$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//')"
one_line="$(sed -e 's/^ *//' <<<"$report" | tr -d '\n')"
printf '{"script_command": %s, "etcd_version": %s, "machine": {"cpus": %s, "cpu": %s}, "cpu_seconds": %s, %s\n' \
  "$(json_str "$script_cmd")" "$(json_str "$etcd_version")" "$(nproc)" "$(json_str "$model")" "$cpu" "${one_line#\{}"
