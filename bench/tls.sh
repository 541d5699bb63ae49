#!/usr/bin/env bash
# Our server's ping figures over TLS beside plain TCP, under the same load generator.
#
#   bash bench/tls.sh [SECONDS]      (default 5 s per run, after a 1 s warm-up)
#
# Makes a throw-away self-signed certificate (openssl, ECDSA P-256) in a temporary
# directory, starts `peng3dnet serve` plain and with --tls-cert/--tls-key, and runs
# `peng3dnet-bench load` (with --tls-insecure against the TLS server: the certificate is
# self-signed) in transaction and session modes at 1 and 16 connections. Prints a
# Markdown table: throughput, p50/p99 latency, errors, and TLS/plain ratios.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-5}"
THREADS="${BENCH_THREADS:-2}"
BIN="$ROOT/target/release/peng3dnet"
BENCH="$ROOT/target/release/peng3dnet-bench"

command -v openssl >/dev/null || { echo "error: openssl is needed to make the test certificate" >&2; exit 1; }
echo "==> cargo build --release" >&2
cargo build --release --quiet -p peng3dnet-cli -p peng3dnet-bench

DIR="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$DIR/key.pem" -out "$DIR/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null

# start NAME ARGS...: starts a server, sets ADDR to its address.
start() {
    local out="$DIR/$1.out"
    shift
    "$BIN" serve --bind 127.0.0.1:0 "$@" >"$out" 2>/dev/null &
    PIDS+=("$!")
    for _ in $(seq 100); do
        if grep -q "listening on" "$out"; then
            ADDR="$(sed -n 's/^listening on //p' "$out")"
            return 0
        fi
        sleep 0.05
    done
    echo "error: server did not start" >&2
    exit 1
}
start plain
PLAIN="$ADDR"
start tls --tls-cert "$DIR/cert.pem" --tls-key "$DIR/key.pem"
TLS="$ADDR"

field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "| mode | conns | plain ops/s | TLS ops/s | TLS/plain | plain p50/p99 ms | TLS p50/p99 ms | errors (plain/TLS) |"
echo "|---|---:|---:|---:|---:|---|---|---|"
for mode in transaction session; do
    for conns in 1 16; do
        p="$("$BENCH" load "$PLAIN" --mode "$mode" -c "$conns" -t "$THREADS" -d "$SECS" --warmup 1 --json || true)"
        t="$("$BENCH" load "$TLS" --tls-insecure --mode "$mode" -c "$conns" -t "$THREADS" -d "$SECS" --warmup 1 --json || true)"
        pr="$(echo "$p" | field 'round(d["ops_per_s"])')"
        tr="$(echo "$t" | field 'round(d["ops_per_s"])')"
        pl="$(echo "$p" | field '"%.3f/%.3f" % (d["latency_ms"]["p50"], d["latency_ms"]["p99"])')"
        tl="$(echo "$t" | field '"%.3f/%.3f" % (d["latency_ms"]["p50"], d["latency_ms"]["p99"])')"
        pe="$(echo "$p" | field 'd["errors_total"]')"
        te="$(echo "$t" | field 'd["errors_total"]')"
        ratio="$(python3 -c "print('%.2f' % ($tr / $pr if $pr else 0))")"
        echo "| $mode | $conns | $pr | $tr | $ratio | $pl | $tl | $pe/$te |"
    done
done
