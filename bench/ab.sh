#!/usr/bin/env bash
# A/B of two builds of Tollgate: the server CPU time per call of each, under the same load, in
# the same run. For deciding whether a change pays: run.sh compares Tollgate with the ceiling,
# whose own figures move from one run to the next by more than most changes are worth; here
# both sides are Tollgate, measured in alternating order (ABBA) on the same machine state.
# See bench/README.md.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY
#
# Build each side first; an earlier commit in a worktree of its own, for example:
#   git worktree add /tmp/tg-a HEAD~1 && (cd /tmp/tg-a && cargo build --release --bin tollgate)
#   cargo build --release --bin tollgate
#   bench/ab.sh /tmp/tg-a/target/release/tollgate target/release/tollgate
#   git worktree remove --force /tmp/tg-a
#
# Settings (environment): WORKLOADS ("uniform many-rules-exact"), RUNS (8 per side; even),
# DURATION (3 s measured), WARMUP (1 s), CONNECTIONS (8), CONCURRENCY (256), KEYS, RULES and
# WILDCARDS as in run.sh, CARGO_TARGET_DIR (for tollgate-load, built here).
set -euo pipefail

if [[ $# -ne 2 || ! -x $1 || ! -x $2 ]]; then
  echo "usage: bench/ab.sh OLD_BINARY NEW_BINARY (two executable builds of tollgate)" >&2
  exit 2
fi
A=$(realpath "$1")
B=$(realpath "$2")
cd "$(dirname "$0")/.."
WORKLOADS=${WORKLOADS:-uniform many-rules-exact}
RUNS=${RUNS:-8}
if ((RUNS < 2 || RUNS % 2)); then
  echo "ab.sh: RUNS=$RUNS: give an even number, so that each build goes first in half the pairs" >&2
  exit 2
fi
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-8}
CONCURRENCY=${CONCURRENCY:-256}
KEYS=${KEYS:-10000}
RULES=${RULES:-10000}
WILDCARDS=${WILDCARDS:-100}
LOAD="${CARGO_TARGET_DIR:-target}/release/tollgate-load"

command -v python3 >/dev/null || { echo "ab.sh: python3 is needed for the table" >&2; exit 1; }
echo "== building tollgate-load" >&2
cargo build --release --locked --bin tollgate-load >&2

# shellcheck source=bench/lib.sh
source bench/lib.sh
write_configs "$WORK/configs"

# Both servers on one core, the load on another, as run.sh does.
read -r -a CPUS <<<"$(allowed_cpus)"
PIN_SERVER=()
PIN_LOAD=()
if [[ ${#CPUS[@]} -ge 2 ]] && command -v taskset >/dev/null; then
  PIN_SERVER=(taskset -c "${CPUS[0]}")
  PIN_LOAD=(taskset -c "${CPUS[1]}")
else
  echo "ab.sh: not pinned (fewer than 2 cores or no taskset)" >&2
fi

declare -A PID PORT
for side in A B; do
  binary=$A
  [[ $side == B ]] && binary=$B
  PORT[$side]=$(free_port)
  "${PIN_SERVER[@]}" "$binary" serve --config "$WORK/configs" --log warn \
    --grpc-addr "127.0.0.1:${PORT[$side]}" --http-addr "127.0.0.1:$(free_port)" \
    >"$WORK/$side.log" 2>&1 &
  PID[$side]=$!
  track "${PID[$side]}"
  wait_for_port "$side" "${PID[$side]}" "${PORT[$side]}" "$WORK/$side.log"
done

# One line per run: workload, side, calls (warmup included), server CPU ticks over them.
for workload in $WORKLOADS; do
  echo "== $workload: $RUNS runs of ${DURATION}s per side" >&2
  for ((run = 1; run <= RUNS; run++)); do
    order=(A B)
    ((run % 2)) || order=(B A)
    for side in "${order[@]}"; do
      before=$(cpu_ticks "${PID[$side]}")
      "${PIN_LOAD[@]}" "$LOAD" --addr "http://127.0.0.1:${PORT[$side]}" --json \
        --workload "$workload" --keys "$(keys_for "$workload")" --expect ok --require-limit \
        --connections "$CONNECTIONS" --concurrency "$CONCURRENCY" --warmup "$WARMUP" \
        --duration "$DURATION" >"$WORK/run.json" || {
        echo "ab.sh: $side/$workload: calls failed verification:" >&2
        cat "$WORK/run.json" >&2
        exit 1
      }
      after=$(cpu_ticks "${PID[$side]}")
      python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], r["calls"] + r["warmup_calls"], sys.argv[4])' \
        "$WORK/run.json" "$workload" "$side" "$((after - before))"
    done
  done
done >"$WORK/runs.txt"

python3 - "$WORK/runs.txt" "$(getconf CLK_TCK)" <<'EOF'
import collections, statistics, sys
runs, hz = sys.argv[1], int(sys.argv[2])
us = collections.defaultdict(list)
for line in open(runs):
    workload, side, calls, ticks = line.split()
    us[(workload, side)].append(int(ticks) / hz * 1e6 / int(calls))
print("| workload | A CPU µs/call | B CPU µs/call | B / A | B / A per pair (min–max) |")
print("|---|---:|---:|---:|---:|")
for workload in dict.fromkeys(w for w, _ in us):
    a, b = us[(workload, "A")], us[(workload, "B")]
    pairs = [y / x for x, y in zip(a, b)]
    print(f"| {workload} | {statistics.median(a):.2f} | {statistics.median(b):.2f} | "
          f"{statistics.median(b) / statistics.median(a):.3f} | {min(pairs):.3f}–{max(pairs):.3f} |")
EOF
echo
echo "A: $A; B: $B. Medians of $RUNS runs each, ${DURATION}s measured + ${WARMUP}s warmup, $CONNECTIONS connections x $CONCURRENCY in flight."
