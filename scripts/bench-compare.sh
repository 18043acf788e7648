#!/usr/bin/env bash
# arbor and etcd side by side, interleaved: ROUNDS rounds, each running
# scripts/bench.sh and scripts/bench-etcd.sh once per in-flight setting
# (which of the two goes first alternates from round to round), every run on
# a fresh cluster; then one markdown table of every run and one of the range
# per system and setting, with the command lines, for docs/performance.md.
# Every other argument is passed to both (the workload: --orders, --nodes,
# --duplicates, --connections, --preload, ...; not --in-flight).
#
#   scripts/bench-compare.sh                       # 3 rounds x {16, 256} in flight x {arbor, etcd}
#   ARBOR_COMPARE_ROUNDS=1 scripts/bench-compare.sh --orders 2000
#
# Environment:
#   ARBOR_COMPARE_ROUNDS=N        rounds (default 3)
#   ARBOR_COMPARE_IN_FLIGHT="A B" in-flight settings (default "16 256")
#   ARBOR_COMPARE_OUT=DIR         where the JSON lines (results.jsonl) and the
#                                 tables (table.md) go (default: a new temp dir, kept)
#   ARBOR_BENCH_BIN_DIR=DIR       arbor-node and arbor from DIR, skip the build
# Needs jq (installed with apt-get when missing, like etcd by bench-etcd.sh).
cd "$(dirname "$0")/.."
source scripts/lib.sh

rounds="${ARBOR_COMPARE_ROUNDS:-3}"
in_flight="${ARBOR_COMPARE_IN_FLIGHT:-16 256}"
out="${ARBOR_COMPARE_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/arbor-compare-XXXXXX")}"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
for a in "$@"; do
  case "$a" in
  --in-flight | --in-flight=*) echo "error: set the in-flight settings with ARBOR_COMPARE_IN_FLIGHT" >&2; exit 2 ;;
  --etcd | --etcd=* | --pid | --pid=*) echo "error: $a is set by the scripts" >&2; exit 2 ;;
  esac
done

if ! command -v jq >/dev/null 2>&1; then
  echo "==> installing jq (apt-get)" >&2
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y jq >&2
fi

# One release build for every run (bench.sh's build, done once here).
if [ -z "${ARBOR_BENCH_BIN_DIR:-}" ]; then
  ensure_prereqs
  echo "==> cargo build --release --workspace --bins" >&2
  if use_prebuilt_rocksdb release; then
    cargo build --release --workspace --bins >&2
  else
    cargo build --release --workspace --bins >&2
    save_prebuilt_rocksdb release
  fi
  mkdir -p "$out/bin"
  cp "$CARGO_TARGET_DIR/release/arbor-node" "$CARGO_TARGET_DIR/release/arbor" "$out/bin/"
  export ARBOR_BENCH_BIN_DIR="$out/bin"
fi

run_one() { # SYSTEM ROUND IN_FLIGHT ARGS...
  local system=$1 round=$2 f=$3 script line
  shift 3
  script=scripts/bench.sh
  [ "$system" = etcd ] && script=scripts/bench-etcd.sh
  echo "==> round $round/$rounds: $system, $f in flight: $script --in-flight $f $*" >&2
  # A fresh cluster's start can lose a free port to another process between
  # the pick and the bind: such a run is retried once on a new cluster.
  if line="$("$script" --in-flight "$f" "$@")" ||
    { echo "==> retrying once on a fresh cluster" >&2 && line="$("$script" --in-flight "$f" "$@")"; }; then
    jq -c --argjson round "$round" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
      '. + {compare_round: $round, load_avg_before: ($load | tonumber)}' <<<"$line" >>"$results"
  else
    echo "error: $system run failed (round $round, $f in flight); see above" >&2
    exit 1
  fi
}

for round in $(seq 1 "$rounds"); do
  for f in $in_flight; do
    if [ $((round % 2)) = 1 ]; then
      run_one arbor "$round" "$f" "$@"
      run_one etcd "$round" "$f" "$@"
    else
      run_one etcd "$round" "$f" "$@"
      run_one arbor "$round" "$f" "$@"
    fi
  done
done

# The tables. CPU per claim: total of the cluster's processes and the client;
# leader: the leading replica or member alone; idle: the cluster (client not
# counted) over the idle window.
{
  echo "Every run ($(jq -s 'length' "$results") runs, $rounds rounds; machine: $(head -n 1 "$results" | jq -r '"\(.machine.cpus) CPUs, \(.machine.cpu)"'))"
  echo
  echo "| round | system | in flight | claims/s | p50 ms | p99 ms | p999 ms | CPU µs/claim (all) | leader µs/claim | client µs/claim | reads/s | read p99 ms | CPU µs/read (all) | idle % core | load before |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  jq -r '
    def leader(c): ([c.processes[] | select(.leader == true) | .us_per_op] | first) // "?";
    def client(c): ([c.processes[] | select(.name == "bench") | .us_per_op] | first) // "?";
    "| \(.compare_round) | \(.system) | \(.in_flight) | \(.claims_per_sec) | \(.latency_ms.p50) | \(.latency_ms.p99) | \(.latency_ms.p999) | \(.claims_cpu.total_us_per_op) | \(leader(.claims_cpu)) | \(client(.claims_cpu)) | \(.reads.per_sec) | \(.reads.latency_ms.p99) | \(.reads.cpu.total_us_per_op) | \(.idle.cluster_pct_core // "-") | \(.load_avg_before) |"
  ' "$results"
  echo
  echo "Range per system and setting (min – max over the rounds)"
  echo
  echo "| in flight | system | claims/s | p99 ms | CPU µs/claim (all) | reads/s |"
  echo "|---|---|---|---|---|---|"
  jq -s -r '
    def range(f): (map(f) | "\(min) – \(max)");
    group_by([.in_flight, .system]) | .[] |
    "| \(.[0].in_flight) | \(.[0].system) | \(range(.claims_per_sec)) | \(range(.latency_ms.p99)) | \(range(.claims_cpu.total_us_per_op)) | \(range(.reads.per_sec)) |"
  ' "$results"
  echo
  echo "Command lines (ports, pids and temp dirs differ per run):"
  echo
  echo '```'
  echo "scripts/bench-compare.sh $*   # ARBOR_COMPARE_ROUNDS=$rounds ARBOR_COMPARE_IN_FLIGHT=\"$in_flight\""
  jq -r '.script_command' "$results" | awk '!seen[$0]++'
  echo "# which ran, e.g.:"
  jq -s -r 'group_by(.system) | .[] | .[0].command' "$results"
  echo '```'
} | tee "$out/table.md"
echo "bench-compare.sh: results in $results, table in $out/table.md" >&2
