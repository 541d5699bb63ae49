#!/usr/bin/env bash
# Our server behind HAProxy (PROXY protocol v2) beside direct, under the same load generator.
#
#   bash bench/haproxy.sh [SECONDS]      (default 5 s per run, after a 1 s warm-up)
#
# Starts, on loopback: one `peng3dnet serve` pinned to one core (taskset -c 0) for the
# direct figures; three `peng3dnet serve --proxy-protocol --proxy-trusted 127.0.0.1`
# behind `haproxy` (TCP mode, round robin, send-proxy-v2, health checks), with a config
# written to a temporary directory; and one more proxied server alone behind HAProxy
# (1 backend), to see the balancer's own cost. Runs `peng3dnet-bench load` in transaction
# (full: connect, hello, ping, pong, close) and session modes. Prints a Markdown table:
# throughput, p50/p99 latency, errors. Needs haproxy (bash scripts/ensure-debian-packages.sh
# haproxy) and python3 (to read the JSON).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-5}"
THREADS="${BENCH_THREADS:-2}"
CONNS="${BENCH_CONNS:-16}"
BIN="$ROOT/target/release/peng3dnet"
BENCH="$ROOT/target/release/peng3dnet-bench"
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
[ -x "$HAPROXY" ] || { echo "error: haproxy not found (bash scripts/ensure-debian-packages.sh haproxy)" >&2; exit 1; }
echo "==> cargo build --release" >&2
cargo build --release --quiet -p peng3dnet-cli -p peng3dnet-bench

DIR="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

# start NAME ARGS...: starts a server, sets ADDR to its address.
start() {
    local out="$DIR/$1.out"
    shift
    "$@" >"$out" 2>/dev/null &
    PIDS+=("$!")
    for _ in $(seq 100); do
        if grep -q "listening on" "$out"; then
            ADDR="$(sed -n 's/^listening on //p' "$out")"
            return 0
        fi
        sleep 0.05
    done
    echo "error: server $1 did not start" >&2
    exit 1
}
PIN=()
command -v taskset >/dev/null && PIN=(taskset -c 0)
start direct "${PIN[@]}" "$BIN" serve --bind 127.0.0.1:0
DIRECT="$ADDR"
BACKENDS=()
for i in 1 2 3 4; do
    start "b$i" "$BIN" serve --bind 127.0.0.1:0 --proxy-protocol --proxy-trusted 127.0.0.1
    BACKENDS+=("$ADDR")
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
FRONT3="$(free_port)"
FRONT1="$(free_port)"
cat >"$DIR/haproxy.cfg" <<CFG
global
    maxconn 4000
    nbthread 1
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend three
    bind 127.0.0.1:$FRONT3
    default_backend three
frontend one
    bind 127.0.0.1:$FRONT1
    default_backend one
backend three
    balance roundrobin
    server s1 ${BACKENDS[0]} send-proxy-v2 check check-send-proxy inter 1s
    server s2 ${BACKENDS[1]} send-proxy-v2 check check-send-proxy inter 1s
    server s3 ${BACKENDS[2]} send-proxy-v2 check check-send-proxy inter 1s
backend one
    server s4 ${BACKENDS[3]} send-proxy-v2 check check-send-proxy inter 1s
CFG
"$HAPROXY" -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 &
PIDS+=("$!")
up=""
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$FRONT3") 2>/dev/null; then up=1; break; fi
    sleep 0.05
done
[ -n "$up" ] || { echo "error: haproxy did not start:" >&2; cat "$DIR/haproxy.log" >&2; exit 1; }

field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "| mode | conns | path | ops/s | p50/p99 ms | errors |"
echo "|---|---:|---|---:|---|---:|"
for mode in transaction session; do
    for path in "direct (1 server, 1 core)=$DIRECT" "HAProxy -> 1 server=127.0.0.1:$FRONT1" "HAProxy -> 3 servers=127.0.0.1:$FRONT3"; do
        name="${path%%=*}"
        target="${path#*=}"
        r="$("$BENCH" load "$target" --mode "$mode" -c "$CONNS" -t "$THREADS" -d "$SECS" --warmup 1 --json || true)"
        if ! echo "$r" | field 'd["latency_ms"]["p50"]' >/dev/null 2>&1; then
            echo "error: $name, $mode: no measurement: $r" >&2
            cat "$DIR/haproxy.log" >&2
            exit 1
        fi
        ops="$(echo "$r" | field 'round(d["ops_per_s"])')"
        lat="$(echo "$r" | field '"%.3f/%.3f" % (d["latency_ms"]["p50"], d["latency_ms"]["p99"])')"
        err="$(echo "$r" | field 'd["errors_total"]')"
        echo "| $mode | $CONNS | $name | $ops | $lat | $err |"
    done
done
