#!/usr/bin/env bash
# Tollgate beside the ceiling of its own stack: builds the release binaries, starts Tollgate and
# tollgate-ceiling on loopback, offers each the same load per workload, measures each server's
# CPU time per call, and prints its tables (medians of RUNS runs). See bench/README.md.
#
# Every setting is an environment variable:
#   DURATION=5 WARMUP=1 RUNS=4            seconds per measurement, warmup, repetitions (even:
#                                         half the pairs start with each server)
#   CONNECTIONS=8 CONCURRENCY=256         HTTP/2 connections, calls in flight in total
#   KEYS=10000                            key space of uniform, zipf, three-plus-global
#   RULES=10000 WILDCARDS=100             size of the generated many-rules configs
#   WORKLOADS="one-hot-key uniform ..."   closed-loop workloads (default: all six)
#   OPEN_WORKLOADS="one-hot-key three-plus-global"   open-loop workloads (empty to skip)
#   OPEN_FRACTIONS="0.1 0.25 0.5"         their offered rates, as fractions of the ceiling's
#                                         closed-loop throughput
#   H2LOAD_REQUESTS=200000 H2LOAD_RUNS=4  calls per h2load run (0 to skip the cross-check), and
#   H2LOAD_WORKLOADS="one-hot-key three-plus-global"   its workloads (one fixed request each)
#                                         pairs of runs (ABBA, as in closed loop)
#   BUSY_FLOOR=0.8 RETRIES=2              repeat a closed-loop run in which neither side kept its
#                                         core this busy (a neighbour took the CPU), at most twice
#   RESULTS_DIR=dir                       keep the raw JSON reports there (new or empty)
#   CARGO_TARGET_DIR                      where cargo builds (default: target)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
RUNS=${RUNS:-4}
CONNECTIONS=${CONNECTIONS:-8}
CONCURRENCY=${CONCURRENCY:-256}
KEYS=${KEYS:-10000}
RULES=${RULES:-10000}
WILDCARDS=${WILDCARDS:-100}
WORKLOADS=${WORKLOADS:-one-hot-key uniform zipf three-plus-global many-rules-exact many-rules-wildcard}
OPEN_WORKLOADS=${OPEN_WORKLOADS-one-hot-key three-plus-global}
OPEN_FRACTIONS=${OPEN_FRACTIONS:-0.1 0.25 0.5}
H2LOAD_REQUESTS=${H2LOAD_REQUESTS:-200000}
H2LOAD_RUNS=${H2LOAD_RUNS:-4}
H2LOAD_WORKLOADS=${H2LOAD_WORKLOADS:-one-hot-key three-plus-global}
BUSY_FLOOR=${BUSY_FLOOR:-0.8}
RETRIES=${RETRIES:-2}
REPEATED=0
KEPT_DISTURBED=0
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release"

command -v python3 >/dev/null || { echo "run.sh: python3 is needed for the table" >&2; exit 1; }

echo "== building release binaries" >&2
cargo build --release --locked --bin tollgate --bin tollgate-load --bin tollgate-ceiling >&2

# shellcheck source=bench/lib.sh
source bench/lib.sh
RESULTS=${RESULTS_DIR:-$WORK/results}
mkdir -p "$RESULTS"
# The tables read every report in it: an earlier run's would be counted as this one's.
if [[ -n $(ls -A "$RESULTS") ]]; then
  echo "run.sh: RESULTS_DIR $RESULTS is not empty; give a new or empty directory" >&2
  exit 1
fi

# Server on one core, load generator on another, when there are two cores to give.
read -r -a CPUS <<<"$(allowed_cpus)"
if [[ ${#CPUS[@]} -ge 2 ]] && command -v taskset >/dev/null; then
  PIN_SERVER=(taskset -c "${CPUS[0]}")
  PIN_LOAD=(taskset -c "${CPUS[1]}")
  PINNING="server on core ${CPUS[0]}, load generator on core ${CPUS[1]}"
  PINNED=1
else
  PIN_SERVER=()
  PIN_LOAD=()
  PINNING="not pinned (fewer than 2 cores or no taskset): server and load share the CPU"
  PINNED=0
  echo "run.sh: $PINNING" >&2
fi

write_configs "$WORK/configs"

TG_PORT=$(free_port)
TG_HTTP=$(free_port)
CEIL_PORT=$(free_port)
"${PIN_SERVER[@]}" "$BIN/tollgate" serve --config "$WORK/configs" --log warn \
  --grpc-addr "127.0.0.1:$TG_PORT" --http-addr "127.0.0.1:$TG_HTTP" >"$WORK/tollgate.log" 2>&1 &
TG_PID=$!
track "$TG_PID"
"${PIN_SERVER[@]}" "$BIN/tollgate-ceiling" --grpc-addr "127.0.0.1:$CEIL_PORT" \
  >"$WORK/ceiling.log" 2>&1 &
CEIL_PID=$!
track "$CEIL_PID"
wait_for_port tollgate "$TG_PID" "$TG_PORT" "$WORK/tollgate.log"
wait_for_port tollgate-ceiling "$CEIL_PID" "$CEIL_PORT" "$WORK/ceiling.log"
echo "== tollgate (pid $TG_PID) on $TG_PORT, ceiling (pid $CEIL_PID) on $CEIL_PORT; $PINNING" >&2

# measure SERVER WORKLOAD TAG [tollgate-load flags...]: one run, its report, the server's CPU
# time and the load generator's, saved as $RESULTS/SERVER.WORKLOAD.TAG.json.
#
# In a closed-loop run one side is the bottleneck and keeps its core busy. When neither the
# server nor the load generator did (below BUSY_FLOOR of their pinned cores), something else on
# the machine took the CPU: the run is repeated, up to RETRIES times, and the last one kept.
measure() {
  local try
  for ((try = 0; ; try++)); do
    if measure_once "$@"; then
      return 0
    fi
    if ((try >= RETRIES)); then
      echo "run.sh: $1/$2/$3 kept although disturbed ($((try + 1)) tries)" >&2
      KEPT_DISTURBED=$((KEPT_DISTURBED + 1))
      return 0
    fi
    echo "run.sh: $1/$2/$3: neither the server nor the load generator kept its core busy (something else ran): again" >&2
    REPEATED=$((REPEATED + 1))
  done
}

# measure_once: as measure, once; fails (status 1) only if the run looks disturbed.
measure_once() {
  local server=$1 workload=$2 tag=$3
  shift 3
  local pid port checks=()
  if [[ $server == tollgate ]]; then
    pid=$TG_PID port=$TG_PORT checks=(--require-limit)
  else
    pid=$CEIL_PID port=$CEIL_PORT
  fi
  local out="$RESULTS/$server.$workload.$tag.json" before after started ended status=0
  local TIMEFORMAT='%3U %3S' # bash's `time`: the load generator's user and system seconds
  started=$EPOCHREALTIME
  before=$(cpu_ticks "$pid")
  { time "${PIN_LOAD[@]}" "$BIN/tollgate-load" --addr "http://127.0.0.1:$port" --json \
    --workload "$workload" --keys "$(keys_for "$workload")" --expect ok "${checks[@]}" \
    --connections "$CONNECTIONS" --concurrency "$CONCURRENCY" --warmup "$WARMUP" "$@" \
    >"$out.load" 2>"$out.err"; } 2>"$out.time" || status=$?
  after=$(cpu_ticks "$pid")
  ended=$EPOCHREALTIME
  if [[ $status -ne 0 ]]; then
    echo "run.sh: $server/$workload/$tag failed verification or could not run:" >&2
    cat "$out.load" "$out.err" >&2
    exit 1
  fi
  local check_busy=0
  [[ $tag == closed* && $PINNED == 1 ]] && check_busy=1
  python3 - "$out" "$server" "$workload" "$tag" "$((after - before))" "$(getconf CLK_TCK)" \
    "$started" "$ended" "$(cat "$out.time")" "$check_busy" "$BUSY_FLOOR" <<'EOF' || status=$?
import json, sys
out, server, workload, tag, ticks, hz, started, ended, load_cpu, check, floor = sys.argv[1:]
report = json.load(open(out + ".load"))
wall = float(ended) - float(started)
user, system = map(float, load_cpu.split())
report.update(server=server, cpu_secs=int(ticks) / int(hz), wall_secs=wall,
              load_cpu_secs=user + system)
json.dump(report, open(out, "w"))
server_busy, load_busy = report["cpu_secs"] / wall, report["load_cpu_secs"] / wall
print(f"   {server:9} {workload:20} {tag:8} {report['throughput']:10.0f} calls/s  "
      f"p99 {report['latency']['p99_us']:8.1f} µs  core busy: server {server_busy:4.0%}, "
      f"load {load_busy:4.0%}", file=sys.stderr)
sys.exit(1 if check == "1" and max(server_busy, load_busy) < float(floor) else 0)
EOF
  rm -f "$out.load" "$out.err" "$out.time"
  return "$status"
}

echo "== closed loop: $WORKLOADS; $RUNS runs of ${DURATION}s (+${WARMUP}s warmup) each" >&2
# measure_pair WORKLOAD TAG RUN [flags...]: one run of each server, back to back. Odd runs
# start with Tollgate, even runs with the ceiling (ABBA; balanced when RUNS is even), so that
# neither a drift in the machine's load nor going first favours one server.
measure_pair() {
  local workload=$1 tag=$2 run=$3
  shift 3
  if ((run % 2)); then
    measure tollgate "$workload" "$tag" "$@"
    measure ceiling "$workload" "$tag" "$@"
  else
    measure ceiling "$workload" "$tag" "$@"
    measure tollgate "$workload" "$tag" "$@"
  fi
}

for workload in $WORKLOADS; do
  for ((run = 1; run <= RUNS; run++)); do
    measure_pair "$workload" "closed$run" "$run" --duration "$DURATION"
  done
done

median_throughput() { # WORKLOAD: the ceiling's median closed-loop calls/s
  python3 - "$RESULTS" "$1" <<'EOF'
import glob, json, statistics, sys
results, workload = sys.argv[1:]
runs = [json.load(open(p))["throughput"] for p in glob.glob(f"{results}/ceiling.{workload}.closed*.json")]
print(statistics.median(runs) if runs else 0)
EOF
}

for workload in $OPEN_WORKLOADS; do
  ceiling=$(median_throughput "$workload")
  if [[ $ceiling == 0 ]]; then
    # Not measured closed loop in this run: saturate the ceiling once to find its rate.
    measure ceiling "$workload" "closed1" --duration "$DURATION"
    ceiling=$(median_throughput "$workload")
  fi
  for fraction in $OPEN_FRACTIONS; do
    rate=$(python3 -c "print(round($ceiling * $fraction))")
    echo "== open loop: $workload at $rate calls/s ($fraction of the ceiling's $(python3 -c "print(round($ceiling))"))" >&2
    for ((run = 1; run <= RUNS; run++)); do
      measure_pair "$workload" "open$fraction-$run" "$run" --duration "$DURATION" --rate "$rate"
    done
  done
done

# The cross-check by an independent client: h2load sends one fixed, pre-encoded request per
# workload (the first request tollgate-load would send: a workload's keys are then all hot),
# with a deadline as tollgate-load's calls (its default --timeout) and Envoy's have. Pairs
# of runs as in closed loop (ABBA), H2LOAD_RUNS pairs; the table shows medians.
H2LOAD_LINES=()
if [[ $H2LOAD_REQUESTS -gt 0 ]]; then
  if command -v h2load >/dev/null; then
    streams=$(((CONCURRENCY + CONNECTIONS - 1) / CONNECTIONS))
    : >"$WORK/h2load.runs"
    for workload in $H2LOAD_WORKLOADS; do
      "$BIN/tollgate-load" --workload "$workload" --dump-request "$WORK/request.bin"
      echo "== h2load cross-check: $workload, $H2LOAD_RUNS pairs of $H2LOAD_REQUESTS calls, $CONNECTIONS connections x $streams streams" >&2
      for ((run = 1; run <= H2LOAD_RUNS; run++)); do
        order=(tollgate ceiling)
        ((run % 2)) || order=(ceiling tollgate)
        for server in "${order[@]}"; do
          if [[ $server == tollgate ]]; then pid=$TG_PID port=$TG_PORT; else pid=$CEIL_PID port=$CEIL_PORT; fi
          before=$(cpu_ticks "$pid")
          "${PIN_LOAD[@]}" h2load -n "$H2LOAD_REQUESTS" -c "$CONNECTIONS" -m "$streams" \
            -H 'content-type: application/grpc' -H 'te: trailers' -H 'grpc-timeout: 5S' \
            -d "$WORK/request.bin" \
            "http://127.0.0.1:$port/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit" \
            >"$WORK/h2load.txt" 2>&1 || true
          after=$(cpu_ticks "$pid")
          # One line per run: workload, server, pair, calls/s, CPU µs per call, 2xx answers, calls.
          python3 - "$WORK/h2load.txt" "$workload" "$server" "$run" "$((after - before))" "$(getconf CLK_TCK)" \
            >>"$WORK/h2load.runs" <<'EOF'
import re, sys
path, workload, server, run, ticks, hz = sys.argv[1:]
text = open(path).read()
rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
codes = re.search(r"status codes: (\d+) 2xx", text)
done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", text)
if not (rps and codes and done and int(done.group(1))):
    # One failed h2load run must not throw away the tables measured before it: skip it.
    last = text.strip().splitlines()[-1] if text.strip() else "empty"
    print(f"run.sh: h2load run skipped, output not understood ({server}): {last}", file=sys.stderr)
    sys.exit(0)
calls = int(done.group(1))
print(workload, server, run, rps.group(1), int(ticks) / int(hz) * 1e6 / calls, codes.group(1), calls)
EOF
          tail -n 1 "$WORK/h2load.runs" | awk -v w="$workload" -v s="$server" -v r="$run" '$1 == w && $2 == s && $3 == r {printf "   %-9s h2load %-18s pair %s  %10.0f calls/s  CPU %5.2f µs/call\n", $2, $1, $3, $4, $5}' >&2
        done
      done
    done
    mapfile -t H2LOAD_LINES < <(python3 - "$WORK/h2load.runs" "$H2LOAD_WORKLOADS" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    workload, server, run, rps, cpu, ok, calls = line.split()
    runs[workload, server][run] = (float(rps), float(cpu), int(ok), int(calls))
for workload in sys.argv[2].split():
    t, c = runs[workload, "tollgate"], runs[workload, "ceiling"]
    pairs = sorted(set(t) & set(c))
    if not pairs:
        print(f"| {workload} | no complete pair of h2load runs: skipped | | | |")
        continue
    for server, r in (("tollgate", t), ("ceiling", c)):
        r = [r[p] for p in pairs]
        print(f"| {workload} | {server} | {statistics.median(x[0] for x in r):,.0f} "
              f"| {statistics.median(x[1] for x in r):.2f} | {sum(x[2] for x in r)} of {sum(x[3] for x in r)} |")
    throughput = [t[p][0] / c[p][0] for p in pairs]
    cpu = [t[p][1] / c[p][1] for p in pairs]
    print(f"| {workload} | Tollgate / ceiling | {statistics.median(throughput):.1%} "
          f"({min(throughput):.0%}–{max(throughput):.0%}) "
          f"| {statistics.median(cpu):.2f}x ({min(cpu):.2f}–{max(cpu):.2f}x) | |")
EOF
)
  else
    H2LOAD_LINES+=("h2load not installed (Debian: apt-get install nghttp2-client): cross-check skipped")
  fi
fi

echo >&2
python3 - "$RESULTS" "$WORKLOADS" "$OPEN_WORKLOADS" "$OPEN_FRACTIONS" <<'EOF'
import glob, json, statistics, sys
results, workloads = sys.argv[1], sys.argv[2].split()
open_workloads, open_fractions = sys.argv[3].split(), sys.argv[4].split()

def runs(server, workload, mode):
    return [json.load(open(p)) for p in sorted(glob.glob(f"{results}/{server}.{workload}.{mode}*.json"))]

def cpu_us(r):
    return r["cpu_secs"] * 1e6 / r["total_calls"] if r["total_calls"] else float("nan")

def med(xs):
    return statistics.median(xs) if xs else float("nan")

print("| workload | Tollgate ops/s | ceiling ops/s | ratio | Tollgate CPU µs/call | ceiling CPU µs/call | CPU ratio | per-pair CPU ratios | Tollgate p50/p99 µs | ceiling p50/p99 µs | server core busy (T / C) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for w in workloads:
    t, c = runs("tollgate", w, "closed"), runs("ceiling", w, "closed")
    if not t or not c:
        continue
    # Ratios are medians of the per-run ratios: runs are interleaved, so each pair saw the
    # same machine.
    ratio = med([a["throughput"] / b["throughput"] for a, b in zip(t, c)])
    cpu_ratios = [cpu_us(a) / cpu_us(b) for a, b in zip(t, c)]
    lat = lambda rs, q: med([r["latency"][q] for r in rs])
    # How full the server's core was: CPU seconds per second of the run (connect and warmup
    # included). Near 100%, the server is the bottleneck; well under, the load generator is.
    busy = lambda rs: med([r["cpu_secs"] / r["wall_secs"] for r in rs])
    print(f"| {w} | {med([r['throughput'] for r in t]):,.0f} | {med([r['throughput'] for r in c]):,.0f} "
          f"| {ratio:.1%} | {med([cpu_us(r) for r in t]):.2f} | {med([cpu_us(r) for r in c]):.2f} "
          f"| {med(cpu_ratios):.2f}x | {min(cpu_ratios):.2f}–{max(cpu_ratios):.2f}x "
          f"| {lat(t, 'p50_us'):.0f} / {lat(t, 'p99_us'):.0f} "
          f"| {lat(c, 'p50_us'):.0f} / {lat(c, 'p99_us'):.0f} | {busy(t):.0%} / {busy(c):.0%} |")

rows = [(w, f, runs("tollgate", w, f"open{f}-"), runs("ceiling", w, f"open{f}-"))
        for w in open_workloads for f in open_fractions]
rows = [row for row in rows if row[2] and row[3]]
if rows:
    print()
    print("Open loop at fractions of the ceiling's closed-loop throughput (latency from each call's intended start):")
    print()
    print("| workload | fraction | offered calls/s | Tollgate p50/p99/p99.9 µs | ceiling p50/p99/p99.9 µs | Tollgate / ceiling CPU µs/call | CPU ratio | load generator send lag p99 µs (Tollgate / ceiling) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for w, f, t, c in rows:
        lat = lambda rs, q: med([r["latency"][q] for r in rs])
        lag = lambda rs: med([r["send_lag"]["p99_us"] for r in rs])
        cpu_ratio = med([cpu_us(a) / cpu_us(b) for a, b in zip(t, c)])
        print(f"| {w} | {f} | {t[0]['rate']:,.0f} | {lat(t, 'p50_us'):.0f} / {lat(t, 'p99_us'):.0f} / {lat(t, 'p99.9_us'):.0f} "
              f"| {lat(c, 'p50_us'):.0f} / {lat(c, 'p99_us'):.0f} / {lat(c, 'p99.9_us'):.0f} "
              f"| {med([cpu_us(r) for r in t]):.2f} / {med([cpu_us(r) for r in c]):.2f} | {cpu_ratio:.2f}x "
              f"| {lag(t):.0f} / {lag(c):.0f} |")
EOF
if [[ ${#H2LOAD_LINES[@]} -gt 0 ]]; then
  echo
  if [[ ${H2LOAD_LINES[0]} == "|"* ]]; then
    echo "h2load cross-check (medians of $H2LOAD_RUNS pairs; the ratios are medians of the per-pair ratios, with their range; h2load sends one fixed request per workload, so its keys are all hot, and sees HTTP status only: answers are verified by tollgate-load above):"
    echo
    echo "| workload | server | h2load calls/s | server CPU µs/call | HTTP 2xx |"
    echo "|---|---|---:|---:|---:|"
  fi
  printf '%s\n' "${H2LOAD_LINES[@]}"
fi
echo
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr); $PINNING."
if ((REPEATED > 0 || KEPT_DISTURBED > 0)); then
  echo "Disturbed runs: $REPEATED repeated, $KEPT_DISTURBED kept after $RETRIES retries (neither side kept its core ${BUSY_FLOOR} busy)."
fi
echo "Settings: DURATION=$DURATION WARMUP=$WARMUP RUNS=$RUNS CONNECTIONS=$CONNECTIONS CONCURRENCY=$CONCURRENCY KEYS=$KEYS RULES=$RULES WILDCARDS=$WILDCARDS OPEN_FRACTIONS=\"$OPEN_FRACTIONS\"; medians of $RUNS runs; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
