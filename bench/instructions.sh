#!/usr/bin/env bash
# Instructions per call of Tollgate and of the ceiling, counted by callgrind: a figure that does
# not move with the neighbours, for A/B comparisons of a change on this shared machine. Each
# server runs under valgrind (serialised on one thread, ~50x slower); tollgate-load, natively,
# offers WARMUP_CALLS unmeasured calls, then the counters are zeroed and CALLS calls are
# counted. See bench/README.md.
#
# Every setting is an environment variable:
#   CALLS=20000 WARMUP_CALLS=5000        counted calls, and calls before the count starts
#   CONNECTIONS=8 CONCURRENCY=256        HTTP/2 connections, calls in flight in total
#   KEYS=10000 RULES=10000 WILDCARDS=100 as in bench/run.sh
#   WORKLOADS="one-hot-key uniform three-plus-global many-rules-exact"
#   KEEP_PROFILES=dir                    keep the callgrind files (callgrind_annotate reads them)
#   CALLGRIND_OPTS="--cache-sim=yes"     more valgrind options (here: simulated cache misses)
#   CEILING_ARGS="--read-in-place"       more options of tollgate-ceiling (here: requests read
#                                        in place, as Tollgate reads them: its own work alone)
#   CARGO_TARGET_DIR                     where cargo builds (default: target)
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS=${CALLS:-20000}
WARMUP_CALLS=${WARMUP_CALLS:-5000}
CONNECTIONS=${CONNECTIONS:-8}
CONCURRENCY=${CONCURRENCY:-256}
KEYS=${KEYS:-10000}
RULES=${RULES:-10000}
WILDCARDS=${WILDCARDS:-100}
WORKLOADS=${WORKLOADS:-one-hot-key uniform three-plus-global many-rules-exact}
BIN="${CARGO_TARGET_DIR:-target}/release"

for tool in valgrind callgrind_control python3; do
  command -v "$tool" >/dev/null || {
    echo "instructions.sh: $tool is needed (Debian: apt-get install valgrind python3)" >&2
    exit 1
  }
done

echo "== building release binaries" >&2
cargo build --release --locked --bin tollgate --bin tollgate-load --bin tollgate-ceiling >&2

# shellcheck source=bench/lib.sh
source bench/lib.sh
write_configs "$WORK/configs"
PROFILES=${KEEP_PROFILES:-$WORK/profiles}
mkdir -p "$PROFILES"

# load SERVER PORT WORKLOAD CALLS: a verified batch of calls, exits on any failure.
load() {
  local checks=()
  [[ $1 == tollgate ]] && checks=(--require-limit)
  "$BIN/tollgate-load" --addr "http://127.0.0.1:$2" --workload "$3" --keys "$(keys_for "$3")" \
    --expect ok "${checks[@]}" --connections "$CONNECTIONS" --concurrency "$CONCURRENCY" \
    --warmup 0 --requests "$4" --threads 1 --timeout 60 --json >"$WORK/load.json" || {
    echo "instructions.sh: $1/$3: calls failed verification:" >&2
    cat "$WORK/load.json" >&2
    exit 1
  }
}

# Each server on one CPU, as bench/run.sh runs them: the runtime it then builds is the one-CPU
# runtime (current-thread), whatever the machine has.
PIN_SERVER=()
read -r -a CPUS <<<"$(allowed_cpus)"
command -v taskset >/dev/null && PIN_SERVER=(taskset -c "${CPUS[0]}")

# count SERVER WORKLOAD: instructions per counted call, on the server started for it.
count() {
  local server=$1 workload=$2 port log pid
  port=$(free_port)
  log="$WORK/$server.$workload.log"
  local out="$PROFILES/$server.$workload.callgrind"
  # shellcheck disable=SC2206 # CEILING_ARGS is a list of options
  local cmd=("$BIN/tollgate-ceiling" --grpc-addr "127.0.0.1:$port" ${CEILING_ARGS:-})
  if [[ $server == tollgate ]]; then
    cmd=("$BIN/tollgate" serve --config "$WORK/configs" --log warn
      --grpc-addr "127.0.0.1:$port" --http-addr "127.0.0.1:$(free_port)")
  fi
  # shellcheck disable=SC2086 # CALLGRIND_OPTS is a list of options
  "${PIN_SERVER[@]}" valgrind --tool=callgrind ${CALLGRIND_OPTS:-} --callgrind-out-file="$out" \
    "${cmd[@]}" >"$log" 2>&1 &
  pid=$!
  track "$pid"
  wait_for_port "$server" "$pid" "$port" "$log" 1200
  load "$server" "$port" "$workload" "$WARMUP_CALLS"
  callgrind_control --zero "$pid" >/dev/null 2>&1
  load "$server" "$port" "$workload" "$CALLS"
  callgrind_control --dump="counted" "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  # The dump after zeroing is the file whose description says "counted".
  python3 - "$out" "$CALLS" <<'EOF'
import glob, re, sys
out, calls = sys.argv[1], int(sys.argv[2])
for path in sorted(glob.glob(out + "*")):
    text = open(path, errors="replace").read()
    if re.search(r"^desc: Trigger: .*counted$", text, re.M):
        print(int(re.search(r"^summary: (\d+)", text, re.M).group(1)) / calls)
        break
else:
    sys.exit(f"instructions.sh: no counted dump among {out}*")
EOF
}

ROWS=()
for workload in $WORKLOADS; do
  echo "== $workload: $WARMUP_CALLS calls, then $CALLS counted, each server under callgrind" >&2
  tollgate=$(count tollgate "$workload")
  ceiling=$(count ceiling "$workload")
  echo "   tollgate $tollgate, ceiling $ceiling instructions per call" >&2
  ROWS+=("$workload $tollgate $ceiling")
done

echo
echo "| workload | Tollgate instructions/call | ceiling instructions/call | ratio | Tollgate's own |"
echo "|---|---:|---:|---:|---:|"
for row in "${ROWS[@]}"; do
  # shellcheck disable=SC2086
  set -- $row
  python3 -c "import sys; w, t, c = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]); print(f'| {w} | {t:,.0f} | {c:,.0f} | {t / c:.2f}x | {t - c:,.0f} |')" "$@"
done
echo
echo "Settings: CALLS=$CALLS WARMUP_CALLS=$WARMUP_CALLS CONNECTIONS=$CONNECTIONS CONCURRENCY=$CONCURRENCY KEYS=$KEYS RULES=$RULES CEILING_ARGS=${CEILING_ARGS:-}; valgrind $(valgrind --version | sed 's/valgrind-//'); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
