#!/usr/bin/env bash
# What `serve --metrics` costs: our server without and with --metrics, alternating, in
# session mode (16 connections, 2 load threads, 8 s after 1 s of warm-up), ROUNDS rounds.
#   bash bench/metrics-cost.sh [ROUNDS]
# Prints per run: round, variant, pings/s, server CPU µs per ping, p50 ms.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release -q -p peng3dnet-cli -p peng3dnet-bench
B="$ROOT/target/release"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT
date -u; uptime
for round in $(seq "${1:-4}"); do
  for variant in plain metrics; do
    extra=()
    [ "$variant" = metrics ] && extra=(--metrics 127.0.0.1:0)
    "$B/peng3dnet" serve --bind 127.0.0.1:0 "${extra[@]}" > "$OUT" 2>/dev/null &
    pid=$!
    for _ in $(seq 200); do grep -q listening "$OUT" && break; sleep 0.05; done
    addr=$(sed -n 's/^listening on //p' "$OUT")
    r=$("$B/peng3dnet-bench" load "$addr" --mode session -c 16 -t 2 -d 8 --warmup 1 \
        --timeout 5 --server-pid "$pid" --json)
    echo "$round $variant $(echo "$r" | tail -n 1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ops_per_s"], d["server_cpu_us_per_op"], d["latency_ms"]["p50"])')"
    kill -TERM "$pid"; wait "$pid" || true
  done
done
uptime
