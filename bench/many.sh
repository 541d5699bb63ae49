#!/usr/bin/env bash
# The many-targets benchmark of BENCHMARKS.md ("Many targets at once"):
#   bash bench/many.sh [REPEAT]   (default 5)
# Builds the release binaries, starts `peng3dnet serve --bind 0.0.0.0:0`, then REPEAT times,
# alternating: the load generator's transaction mode (256 connections, 2 threads, 3 s),
# `peng3dnet-bench many` of 10,000 distinct targets through the library and through the
# CLI, all under `ulimit -n 1024`; then the mixed list (20 % closed, 10 % silent, -W 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPEAT="${1:-5}"
cargo build -q --release -p peng3dnet-cli -p peng3dnet-bench
BIN=target/release
OUT="$(mktemp)"
"$BIN/peng3dnet" serve --bind 0.0.0.0:0 >"$OUT" 2>/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -f "$OUT"' EXIT
for _ in $(seq 50); do grep -q "listening on" "$OUT" && break; sleep 0.1; done
PORT="$(head -1 "$OUT" | sed 's/.*://')"
echo "date: $(date -u)   load: $(uptime | sed 's/.*load average: //')   ulimit -n 1024"
for i in $(seq "$REPEAT"); do
    echo "--- round $i"
    sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench load 127.0.0.1:$PORT --mode transaction -c 256 -t 2 -d 3 --warmup 1" | sed -n 2p
    sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench many --port $PORT -n 10000" | sed -n '2p;$p'
    sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench many --port $PORT -n 10000 --cli $BIN/peng3dnet" | sed -n '2p;$p'
done
# The mixed list under the machine's own limit (the soft limit is raised to the hard one,
# so every silent target can wait at once), then under ulimit -n 1024.
echo "--- mixed list (20 % closed, 10 % silent), -W 2, library then CLI, ulimit -n $(ulimit -Hn) (hard)"
"$BIN/peng3dnet-bench" many --port "$PORT" -n 10000 --closed-percent 20 --silent-percent 10 -W 2
"$BIN/peng3dnet-bench" many --port "$PORT" -n 10000 --closed-percent 20 --silent-percent 10 -W 2 --cli "$BIN/peng3dnet"
echo "--- mixed list, ulimit -n 1024, library then CLI"
sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench many --port $PORT -n 10000 --closed-percent 20 --silent-percent 10 -W 2"
sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench many --port $PORT -n 10000 --closed-percent 20 --silent-percent 10 -W 2 --cli $BIN/peng3dnet"
echo "load after: $(uptime | sed 's/.*load average: //')"
