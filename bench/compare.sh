#!/usr/bin/env bash
# Compares our server with the Python reference and the floor under one load generator.
#
#   bash bench/compare.sh [--quick] [--repeat N] [--no-reference] [--no-memory]
#                         [--no-throughput] [--out DIR]
#
# 1. builds the release binary (cargo build --release);
# 2. for each mode (transaction, session) and concurrency (1, 16, 256, and 1000 for ours
#    and the floor), runs `peng3dnet-bench load` against, one after another, a fresh instance
#    of: our server (`peng3dnet serve --bind 127.0.0.1:0`), the Python reference
#    (tests/interop/ref_server.py in .venv-ref) and the floor (`peng3dnet-bench floor`), each
#    for the same duration after the same warm-up, with the server's CPU time sampled;
#    with --repeat N, each run is repeated N times and the median (by throughput) kept;
# 3. measures the resident memory (VmRSS) of our server (and of the floor) before and
#    after 10,000 idle established ping connections (`bench --mode idle`);
# 4. prints a table of throughput, latency and errors, with the ratios ours/reference and
#    ours/floor, and writes it with every raw JSON result under the output directory
#    (default target/bench).
#
# --quick: 3 s runs after 0.5 s warm-up, concurrency 1, 16 and 256 only, 2,000 idle
# connections. Environment: BENCH_THREADS (load threads, default 2), BENCH_DURATION and
# BENCH_WARMUP (seconds), IDLE_CONNECTIONS. Every wait is bounded: a server that stops
# answering (the reference at 16 connections and more) costs errors, not a hang.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
REPEAT=1
REFERENCE=1
MEMORY=1
THROUGHPUT=1
OUT="$ROOT/target/bench"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --repeat) REPEAT="$2"; shift ;;
        --no-reference) REFERENCE=0 ;;
        --no-memory) MEMORY=0 ;;
        --no-throughput) THROUGHPUT=0 ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 3 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    DURATION="${BENCH_DURATION:-3}"
    WARMUP="${BENCH_WARMUP:-0.5}"
    CONCURRENCY="1 16 256"
    IDLE="${IDLE_CONNECTIONS:-2000}"
else
    DURATION="${BENCH_DURATION:-10}"
    WARMUP="${BENCH_WARMUP:-1}"
    CONCURRENCY="1 16 256 1000"
    IDLE="${IDLE_CONNECTIONS:-10000}"
fi
THREADS="${BENCH_THREADS:-2}"
MODES="transaction session"
REF_MAX_CONCURRENCY=256

# Many sockets: raise the soft limit on open files to the hard limit (servers and the
# load generator inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((IDLE + 200)) ]; then
    echo "warning: ulimit -n is $NOFILE; idle connections reduced to $((NOFILE - 200))" >&2
    IDLE=$((NOFILE - 200))
fi

echo "==> cargo build --release"
cargo build --release -p peng3dnet-cli -p peng3dnet-bench
BIN="$ROOT/target/release/peng3dnet"
BENCH="$ROOT/target/release/peng3dnet-bench"
REF_PY="$ROOT/.venv-ref/bin/python"
if [ "$REFERENCE" = 1 ] && ! PYGLET_SHADOW_WINDOW=0 "$REF_PY" -c 'import peng3dnet' >/dev/null 2>&1; then
    echo "warning: no reference in .venv-ref (run bash scripts/test.sh once); skipping it" >&2
    REFERENCE=0
fi

mkdir -p "$OUT/runs"
rm -f "$OUT"/runs/*.json
LOG="$OUT/servers.log"
: > "$LOG"

SERVER_PID=""
SERVER_ADDR=""
REF_FIFO="$OUT/ref.stdin"

# start_server ours|reference|floor: starts a fresh server on a free port of 127.0.0.1,
# sets SERVER_PID and SERVER_ADDR.
start_server() {
    local name="$1" out="$OUT/server.out"
    : > "$out"
    case "$name" in
        ours)
            # Every load connection comes from 127.0.0.1: the per-address cap (64 by
            # default) would refuse most of the 256 and 1000 runs with serverfull.
            "$BIN" serve --bind 127.0.0.1:0 --max-connections-per-addr 0 > "$out" 2>> "$LOG" &
            SERVER_PID=$!
            ;;
        floor)
            "$BENCH" floor --bind 127.0.0.1:0 > "$out" 2>> "$LOG" &
            SERVER_PID=$!
            ;;
        reference)
            # The reference runs until its stdin closes: give it a FIFO we hold open.
            rm -f "$REF_FIFO"
            mkfifo "$REF_FIFO"
            PYGLET_SHADOW_WINDOW=0 "$REF_PY" tests/interop/ref_server.py --port 0 \
                < "$REF_FIFO" > "$out" 2>> "$LOG" &
            SERVER_PID=$!
            exec 9> "$REF_FIFO"
            ;;
    esac
    local line=""
    for _ in $(seq 1 200); do
        line="$(head -n 1 "$out" 2>/dev/null || true)"
        [ -n "$line" ] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
        sleep 0.05
    done
    case "$line" in
        "listening on "*) SERVER_ADDR="${line#listening on }" ;;
        "READY "*) SERVER_ADDR="127.0.0.1:${line#READY }" ;;
        *) echo "error: $name server did not start (see $LOG)" >&2; stop_server; return 1 ;;
    esac
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    exec 9>&- 2>/dev/null || true
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    rm -f "$REF_FIFO"
}
trap stop_server EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average$(uptime | sed 's/.*load average//')"
echo "==> settings: ${DURATION} s per run after ${WARMUP} s warm-up, ${THREADS} load thread(s), repeat ${REPEAT}"
uptime > "$OUT/uptime-before.txt"

# run_one SERVER MODE CONCURRENCY REPEAT_INDEX
run_one() {
    local server="$1" mode="$2" conc="$3" rep="$4"
    local file="$OUT/runs/$mode-c$conc-$server-$rep.json"
    if ! start_server "$server"; then
        echo "{\"server\": \"$server\", \"failed\": \"server did not start\"}" > "$file"
        return
    fi
    local limit
    limit=$(python3 -c "print(int($DURATION + $WARMUP + 30))")
    if timeout "$limit" "$BENCH" load "$SERVER_ADDR" --mode "$mode" -c "$conc" -t "$THREADS" \
        -d "$DURATION" --warmup "$WARMUP" --timeout 5 --server-pid "$SERVER_PID" --json \
        > "$file.tmp" 2>> "$LOG" || [ -s "$file.tmp" ]; then
        python3 - "$file.tmp" "$file" "$server" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
r["server"] = sys.argv[3]
json.dump(r, open(sys.argv[2], "w"))
EOF
    else
        echo "{\"server\": \"$server\", \"failed\": \"load generator did not finish\"}" > "$file"
    fi
    rm -f "$file.tmp"
    stop_server
    python3 - "$file" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if "failed" in r:
    print(f"    {r['server']:>9}: FAILED ({r['failed']})")
else:
    l = r["latency_ms"] or {}
    print(f"    {r['server']:>9}: {r['ops_per_s']:>10.1f}/s  p50 {l.get('p50', '-')}  p99 {l.get('p99', '-')} ms  "
          f"errors {r['errors_total']}  server cpu {r.get('server_cpu_us_per_op')} us/op")
EOF
    sleep 0.5
}

[ "$THROUGHPUT" = 1 ] || MODES=""
for mode in $MODES; do
    for conc in $CONCURRENCY; do
        for rep in $(seq 1 "$REPEAT"); do
            echo "==> $mode, $conc connections (run $rep of $REPEAT)"
            run_one ours "$mode" "$conc" "$rep"
            if [ "$REFERENCE" = 1 ] && [ "$conc" -le "$REF_MAX_CONCURRENCY" ]; then
                run_one reference "$mode" "$conc" "$rep"
            fi
            run_one floor "$mode" "$conc" "$rep"
        done
    done
done

# Memory per idle connection.
: > "$OUT/memory.txt"
if [ "$MEMORY" = 1 ]; then
    for server in ours floor; do
        echo "==> memory: $server with $IDLE idle connections"
        start_server "$server"
        sleep 0.5
        before=$(rss_kib "$SERVER_PID")
        err="$OUT/idle-$server.err"
        "$BENCH" load "$SERVER_ADDR" --mode idle -c "$IDLE" -d 60 --ramp 256 --timeout 10 \
            > "$OUT/idle-$server.out" 2> "$err" &
        BENCH_PID=$!
        established=""
        for _ in $(seq 1 600); do
            if grep -q '^ESTABLISHED' "$err" 2>/dev/null; then
                established=$(awk '/^ESTABLISHED/ {print $2}' "$err")
                break
            fi
            sleep 0.1
        done
        sleep 2
        after=$(rss_kib "$SERVER_PID")
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
        stop_server
        if [ -z "$established" ] || [ "$established" = 0 ]; then
            echo "$server idle failed: see $err" | tee -a "$OUT/memory.txt"
            continue
        fi
        python3 - "$server" "$before" "$after" "$established" "$IDLE" <<'EOF' | tee -a "$OUT/memory.txt"
import sys
server, before, after, est, asked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
per = (after - before) / est
print(f"{server}: VmRSS {before} KiB -> {after} KiB with {est} of {asked} idle connections: "
      f"{per:.2f} KiB per connection")
EOF
    done
fi
uptime > "$OUT/uptime-after.txt"

echo
python3 - "$OUT" <<'EOF' | tee "$OUT/results.md"
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for path in glob.glob(os.path.join(out, "runs", "*.json")):
    mode, conc, server, _ = os.path.basename(path)[:-5].split("-")
    runs.setdefault((mode, int(conc[1:]), server), []).append(json.load(open(path)))

def pick(key):
    rs = runs.get(key, [])
    ok = [r for r in rs if "failed" not in r]
    if not ok:
        return rs[0] if rs else None
    ok.sort(key=lambda r: r["ops_per_s"])
    return ok[len(ok) // 2]   # the median run by throughput

def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"

modes = sorted({k[0] for k in runs}, key=["transaction", "session"].index)
concs = sorted({k[1] for k in runs})
print("| mode | conns | server | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU us/op |")
print("|---|---:|---|---:|---:|---:|---:|---:|---|---:|")
summary = []
for mode in modes:
    for c in concs:
        got = {}
        for server in ("ours", "reference", "floor"):
            r = pick((mode, c, server))
            if r is None:
                continue
            got[server] = r
            if "failed" in r:
                print(f"| {mode} | {c} | {server} | failed: {r['failed']} | | | | | | |")
                continue
            l = r["latency_ms"] or {}
            errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
            cpu = r.get("server_cpu_us_per_op")
            print(f"| {mode} | {c} | {server} | {r['ops_per_s']:.0f} | {l.get('p50', '-')} | {l.get('p90', '-')} | "
                  f"{l.get('p99', '-')} | {l.get('max', '-')} | {errs} | {cpu if cpu is not None else '-'} |")
        summary.append((mode, c, got))
print()
print("| mode | conns | ours/reference ops/s | ours/floor ops/s | ours/floor p99 | ours errors |")
print("|---|---:|---:|---:|---:|---:|")
for mode, c, got in summary:
    def val(s, f):
        r = got.get(s)
        if not r or "failed" in r:
            return None
        return f(r)
    ops = lambda r: r["ops_per_s"]
    p99 = lambda r: (r["latency_ms"] or {}).get("p99")
    print(f"| {mode} | {c} | {ratio(val('ours', ops), val('reference', ops))} | "
          f"{ratio(val('ours', ops), val('floor', ops))} | {ratio(val('ours', p99), val('floor', p99))} | "
          f"{val('ours', lambda r: r['errors_total'])} |")
mem = os.path.join(out, "memory.txt")
if os.path.exists(mem) and os.path.getsize(mem):
    print()
    for line in open(mem):
        print(f"- {line.strip()}")
EOF
echo
echo "load average before: $(cat "$OUT/uptime-before.txt")"
echo "load average after:  $(cat "$OUT/uptime-after.txt")"
echo "raw results: $OUT/runs/*.json; table: $OUT/results.md"
