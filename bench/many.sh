#!/usr/bin/env bash
# The many-targets benchmark of BENCHMARKS.md ("Many targets at once"):
#   bash bench/many.sh [REPEAT]   (default 5)
# Builds the release binaries, starts `peng3dnet serve --bind 0.0.0.0:0`, then REPEAT times,
# alternating: the load generator's transaction mode (256 connections, 2 threads, 3 s),
# `peng3dnet-bench many` of 10,000 distinct targets through the library and through the
# CLI, all under `ulimit -n 1024` (with FRESH=1 in the environment, each run on addresses
# no run before it used); then the mixed list (20 % closed, 10 % silent, -W 2), on
# addresses of its own.
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
echo "date: $(date -u)   load: $(uptime | sed 's/.*load average: //')   ulimit -n 1024   FRESH=${FRESH:-0}"
RATIOS="$(mktemp)"
trap 'kill $SERVER 2>/dev/null; rm -f "$OUT" "$RATIOS"' EXIT
# The per-second figure of a line ("(21657.3/s)" or "13265 targets/s").
rate() { grep -oE '[0-9.]+(/s\)| targets/s)' | grep -oE '^[0-9.]+' | head -1; }
for i in $(seq "$REPEAT"); do
    echo "--- round $i"
    load="$(sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench load 127.0.0.1:$PORT --mode transaction -c 256 -t 2 -d 3 --warmup 1" | sed -n 2p)"
    # FRESH=1: each run on addresses no run before it used (--first), the first ping of
    # a list; by default every run on the same 10,000, warm as the load generator's one.
    if [ "${FRESH:-0}" = 1 ]; then first_lib=$((20000 * i)); first_cli=$((20000 * i + 10000)); else first_lib=0; first_cli=0; fi
    lib="$(sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench many --port $PORT -n 10000 --first $first_lib" | sed -n '2p;$p')"
    cli="$(sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench many --port $PORT -n 10000 --first $first_cli --cli $BIN/peng3dnet" | sed -n '2p;$p')"
    printf '%s\n%s\n%s\n' "$load" "$lib" "$cli"
    echo "$(echo "$load" | rate) $(echo "$lib" | rate) $(echo "$cli" | rate)" >> "$RATIOS"
done
# Each round's library and CLI rates as a share of that round's load generator, and the
# medians over the rounds.
awk '{ l[NR] = 100 * $2 / $1; c[NR] = 100 * $3 / $1 }
     function median(a, n,   i, j, t) {
         for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
         return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
     }
     END {
         printf "share of the load generator, round by round: library"
         for (i = 1; i <= NR; i++) printf " %.0f%%", l[i]
         printf "; CLI"
         for (i = 1; i <= NR; i++) printf " %.0f%%", c[i]
         printf "\nmedian over %d rounds: library %.0f%%, CLI %.0f%%\n", NR, median(l, NR), median(c, NR)
     }' "$RATIOS"
# The mixed list under the machine's own limit (the soft limit is raised to the hard one,
# so every silent target can wait at once), then under ulimit -n 1024.
echo "--- mixed list (20 % closed, 10 % silent), -W 2, library then CLI, ulimit -n $(ulimit -Hn) (hard)"
MIXED=$((20000 * (REPEAT + 1)))
"$BIN/peng3dnet-bench" many --port "$PORT" -n 10000 --first "$MIXED" --closed-percent 20 --silent-percent 10 -W 2
"$BIN/peng3dnet-bench" many --port "$PORT" -n 10000 --first "$((MIXED + 10000))" --closed-percent 20 --silent-percent 10 -W 2 --cli "$BIN/peng3dnet"
echo "--- mixed list, ulimit -n 1024, library then CLI"
sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench many --port $PORT -n 10000 --first $((MIXED + 20000)) --closed-percent 20 --silent-percent 10 -W 2"
sh -c "ulimit -n 1024; exec $BIN/peng3dnet-bench many --port $PORT -n 10000 --first $((MIXED + 30000)) --closed-percent 20 --silent-percent 10 -W 2 --cli $BIN/peng3dnet"
echo "load after: $(uptime | sed 's/.*load average: //')"
