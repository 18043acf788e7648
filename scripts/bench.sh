#!/usr/bin/env bash
# The claims benchmark, reproducibly: build release, start a fresh
# three-replica cluster (three separate `arbor-node run` processes on
# 127.0.0.1, free ports, a temp data dir), run `arbor bench --output json`
# against it with this script's arguments, stop the cluster, and print ONE
# JSON line on stdout: the bench report plus the script's command line, the
# machine, and the CPU seconds each replica and the client spent during the
# bench, each replica's memory and data-dir bytes at the end, and how the
# replicas batched the work (`batches`: synced raft log appends and entries
# per append, ms per append, apply batches and entries per batch,
# AppendEntries received, signature batches at admission; from each
# replica's /metrics, scraped before and after `arbor bench`, so over all its
# phases). Everything else (build output, progress) goes to stderr.
#
# The cluster runs the production configuration: `arbor bench` enrols each
# replica's identity (as `arbor-node dev` does), so the leader's lease sweep
# runs (`--lapse-sweep-ms`, default 1000). The replicas' pids are passed to it
# (`--pid N=PID`): the report gives the CPU microseconds per claim and per read
# of each replica and of the client, and each one's idle CPU (% of a core).
#
#   scripts/bench.sh                         # defaults: 20000 orders, 8 nodes, 256 in flight, 20% duplicates
#   scripts/bench.sh --orders 5000 --in-flight 16
#   scripts/bench.sh --preload 1000000 --preload-in-flight 2048   # measured on a ledger of 1M orders
#
# Environment:
#   ARBOR_BENCH_BIN_DIR=DIR  use arbor-node and arbor from DIR, skip the build
#   ARBOR_BENCH_KEEP=1       keep the temp dir (replica logs and data) afterwards
#   ARBOR_BENCH_REUSE=DIR    run on DIR, a directory an earlier run kept (ARBOR_BENCH_KEEP=1),
#                            instead of a fresh cluster: its replicas restart on their data, so a
#                            ledger preloaded once (e.g. --preload 1000000) is measured again in
#                            minutes; give no --preload then. DIR is kept.
#   ARBOR_BENCH_PLAINTEXT=1  run replicas and client with --insecure-plaintext (to measure what TLS costs)
#   ARBOR_BENCH_NODE_ARGS    extra arguments for every `arbor-node run` (e.g. "--snapshot-every 50000")
#   ARBOR_LOG                replica log filter (default info,openraft=warn)
# See docs/performance.md for figures and how to read them.
cd "$(dirname "$0")/.."
source scripts/lib.sh

script_cmd="scripts/bench.sh $*"
[ -z "${ARBOR_BENCH_NODE_ARGS:-}" ] || script_cmd="ARBOR_BENCH_NODE_ARGS=\"$ARBOR_BENCH_NODE_ARGS\" $script_cmd"
[ -z "${ARBOR_BENCH_REUSE:-}" ] || script_cmd="ARBOR_BENCH_REUSE=$ARBOR_BENCH_REUSE $script_cmd"
reuse="${ARBOR_BENCH_REUSE:-}"
if [ -n "$reuse" ]; then
  for f in ports operator.key n1 n2 n3; do
    [ -e "$reuse/$f" ] || { echo "error: ARBOR_BENCH_REUSE=$reuse is not a directory kept by scripts/bench.sh (no $f)" >&2; exit 64; }
  done
  work="$(cd "$reuse" && pwd)"
  export ARBOR_BENCH_KEEP=1
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/arbor-bench-XXXXXX")"
fi
pids=()

trap 'bench_cleanup n replica bench.sh' EXIT
trap 'exit 130' INT TERM

if [ -n "${ARBOR_BENCH_BIN_DIR:-}" ]; then
  bin="$ARBOR_BENCH_BIN_DIR"
else
  ensure_prereqs
  echo "==> cargo build --release --workspace --bins (the first release build compiles RocksDB: ~13 min on 2 cores)" >&2
  if use_prebuilt_rocksdb release; then
    cargo build --release --workspace --bins >&2
  else
    cargo build --release --workspace --bins >&2
    save_prebuilt_rocksdb release
  fi
  # A private copy: another build sharing the target dir cannot swap them mid-run.
  bin="$work/bin"
  mkdir -p "$bin"
  cp "$CARGO_TARGET_DIR/release/arbor-node" "$CARGO_TARGET_DIR/release/arbor" "$bin/"
fi
for b in arbor-node arbor; do
  [ -x "$bin/$b" ] || { echo "error: $bin/$b is not an executable" >&2; exit 1; }
done

# shellcheck disable=SC2206
node_args=(${ARBOR_BENCH_NODE_ARGS:-})
# Settings from the caller's environment must not leak into the replicas or the CLI.
for v in $(env | grep -o '^ARBOR_[A-Z_]*' | grep -v -e '^ARBOR_LOG$' -e '^ARBOR_BENCH_'); do
  unset "$v"
done

# Six free ports (three client, three peer): nothing answers on them now.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=()
if [ -n "$reuse" ]; then
  # The members' addresses are in the raft membership: the same ports again.
  read -r -a ports <"$work/ports"
  for p in "${ports[@]}"; do
    port_free "$p" || { echo "error: port $p of $work is in use" >&2; exit 1; }
  done
else
  while [ "${#ports[@]}" -lt 6 ]; do
    p=$((20000 + RANDOM % 40000))
    if port_free "$p" && [[ " ${ports[*]} " != *" $p "* ]]; then ports+=("$p"); fi
  done
  echo "${ports[*]}" >"$work/ports"
fi
# Three more for the replicas' metrics (not part of the membership: fresh each run).
mports=()
while [ "${#mports[@]}" -lt 3 ]; do
  p=$((20000 + RANDOM % 40000))
  if port_free "$p" && [[ " ${ports[*]} ${mports[*]} " != *" $p "* ]]; then mports+=("$p"); fi
done
addr() { echo "127.0.0.1:${ports[$(($1 - 1))]}"; }
peer() { echo "127.0.0.1:${ports[$(($1 + 2))]}"; }
endpoints="$(addr 1),$(addr 2),$(addr 3)"

if [ "${ARBOR_BENCH_PLAINTEXT:-}" = 1 ]; then
  transport="plaintext"
  client_tls=(--insecure-plaintext)
else
  transport="tls"
  [ -f "$work/pki/ca.pem" ] || "$bin/arbor-node" cert ca --dir "$work/pki" >/dev/null
  client_tls=(--cacert "$work/pki/ca.pem")
fi
replica_tls() {
  if [ "$transport" = plaintext ]; then
    echo --insecure-plaintext
  else
    [ -f "$work/pki/replica-$1.pem" ] ||
      "$bin/arbor-node" cert replica --dir "$work/pki" --id "$1" --host 127.0.0.1 >/dev/null
    echo --ca-file "$work/pki/ca.pem" --cert-file "$work/pki/replica-$1.pem" --key-file "$work/pki/replica-$1.key"
  fi
}

[ -f "$work/operator.key" ] || "$bin/arbor" keys generate --party operator --out "$work/operator.key" >/dev/null
op_pub="$(grep -o '"public_key": *"[0-9a-f]*"' "$work/operator.key" | grep -o '[0-9a-f]\{64\}')"

echo "==> starting 3 replicas on $endpoints (data in $work)" >&2
for i in 1 2 3; do
  # shellcheck disable=SC2207
  args=(run --id "$i" --listen "$(addr "$i")" --peer-listen "$(peer "$i")" --data-dir "$work/n$i" $(replica_tls "$i")
    --metrics-listen "127.0.0.1:${mports[$((i - 1))]}" ${node_args[@]+"${node_args[@]}"})
  if [ "$i" = 1 ] && [ -z "$reuse" ]; then
    args+=(--bootstrap --member "1=$(addr 1)/$(peer 1)" --member "2=$(addr 2)/$(peer 2)"
      --member "3=$(addr 3)/$(peer 3)" --operator "operator=$op_pub")
  fi
  "$bin/arbor-node" "${args[@]}" >>"$work/n$i.log" 2>&1 &
  pids+=($!)
done

# Ready: one leader, three voters, and genesis applied on every replica.
ready=""
for _ in $(seq 1 600); do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "error: a replica exited during start-up" >&2; exit 1; }
  done
  if st="$("$bin/arbor" --endpoints "$endpoints" "${client_tls[@]}" --timeout 2 --output json cluster status 2>/dev/null)" &&
    [ "$(grep -c '"state": "Leader"' <<<"$st")" = 1 ] &&
    [ "$(grep -c '"voter": true' <<<"$st")" = 3 ] &&
    [ "$(grep -c '"has_entries": true' <<<"$st")" = 3 ]; then
    ready=1
    break
  fi
  sleep 0.2
done
[ -n "$ready" ] || { echo "error: the cluster did not form within 120 s" >&2; exit 1; }

# CPU seconds (user + system) of each replica and of the bench client, over the
# whole `arbor bench` run (every phase; the report has each phase on its own).
tck="$(getconf CLK_TCK)"
before=()
for pid in "${pids[@]}"; do before+=("$(proc_cpu_ticks "$pid")"); done
children_secs >"$work/client.before"

for i in 1 2 3; do metrics_get "${mports[$((i - 1))]}" >"$work/metrics-$i.before"; done
echo "==> arbor bench $*" >&2
rc=0
pid_args=()
for i in 1 2 3; do pid_args+=(--pid "$i=${pids[$((i - 1))]}"); done
report="$("$bin/arbor" --endpoints "$endpoints" "${client_tls[@]}" --output json bench --key "$work/operator.key" "${pid_args[@]}" "$@")" || rc=$?
batches="{"
for i in 1 2 3; do
  metrics_get "${mports[$((i - 1))]}" >"$work/metrics-$i.after"
  [ "$i" = 1 ] || batches+=", "
  batches+="\"replica_$i\": $(batch_stats "$work/metrics-$i.before" "$work/metrics-$i.after")"
done
batches+="}"
cpu="{"
for i in 1 2 3; do
  t="$(proc_cpu_ticks "${pids[$((i - 1))]}")"
  cpu+="$(awk -v a="${before[$((i - 1))]}" -v b="$t" -v h="$tck" -v n="$i" -v ad="$(addr "$i")" \
    'BEGIN { printf "\"replica_%s\": {\"addr\": \"%s\", \"seconds\": %.2f}, ", n, ad, (b - a) / h }')"
done
children_secs >"$work/client.after"
cpu+="$(awk -v a="$(cat "$work/client.before")" -v b="$(cat "$work/client.after")" 'BEGIN { printf "\"arbor_bench\": %.2f}", b - a }')"
# Each replica's memory (resident now and its peak) and its data directory's
# bytes on disk, once the bench is over: what a ledger of this size costs.
mem="{"
for i in 1 2 3; do
  pid="${pids[$((i - 1))]}"
  rss="$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)"
  hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)"
  bytes="$(du -sb "$work/n$i" 2>/dev/null | cut -f1)"
  [ "$i" = 1 ] || mem+=", "
  mem+="\"replica_$i\": {\"rss_kib\": ${rss:-0}, \"peak_rss_kib\": ${hwm:-0}, \"data_dir_bytes\": ${bytes:-0}}"
done
mem+="}"
if [ "$rc" != 0 ]; then
  [ -z "$report" ] || echo "$report" >&2
  echo "error: arbor bench failed (exit $rc)" >&2
  exit "$rc"
fi

# One line: the report (pretty-printed by arbor; no string spans lines) with
# the script's command line and the machine in front.
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
model="$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//')"
one_line="$(sed -e 's/^ *//' <<<"$report" | tr -d '\n')"
printf '{"script_command": %s, "transport": "%s", "machine": {"cpus": %s, "cpu": %s}, "cpu_seconds": %s, "replicas": %s, "batches": %s, %s\n' \
  "$(json_str "$script_cmd")" "$transport" "$(nproc)" "$(json_str "$model")" "$cpu" "$mem" "$batches" "${one_line#\{}"
