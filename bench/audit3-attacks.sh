#!/usr/bin/env bash
# The third security audit's attacks on a release `serve`, with the figures after the fix:
#   bash bench/audit3-attacks.sh [PATH_TO_peng3dnet]
# 1. 2,000 connections each closing with its own reason (one forging an exposition line):
#    /metrics size and server RSS before and after, and whether the forged line appears.
# 2. One host opening 1,000 connections at once under the default limits: how many the
#    server holds, and whether a second host (127.0.0.2) is still answered.
# 3. Under a 1,200-descriptor limit, 1,500 idle connections to /metrics and 1,500 to the
#    server from 127.0.0.1: how many of 4 pings a victim on 127.0.0.2 gets answered.
# Needs python3 (stdlib only) and prlimit (util-linux).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$ROOT/target/release/peng3dnet}"
echo "date: $(date -u)"; echo "load: $(cat /proc/loadavg)"; echo "binary: $BIN"

start() { # start LIMIT -> sets PID ADDR METRICS
    local out; out=$(mktemp)
    prlimit --nofile="$1:$1" "$BIN" serve --bind 127.0.0.1:0 --metrics 127.0.0.1:0 >"$out" 2>/dev/null &
    PID=$!
    for _ in $(seq 100); do grep -q "metrics on" "$out" && break; sleep 0.05; done
    ADDR=$(sed -n 's/^listening on //p' "$out"); METRICS=$(sed -n 's|^metrics on http://\(.*\)/metrics$|\1|p' "$out")
}
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$1/status"; }

python_attack() { python3 - "$@" <<'PY'
import socket, struct, sys, time
mode, addr = sys.argv[1], sys.argv[2]
host, port = addr.rsplit(":", 1); port = int(port)
def mp_str(b):
    return (bytes([0xdb]) + struct.pack(">I", len(b)) + b)
def closeconn(reason):
    body = b"\x81" + b"\xa6reason" + mp_str(reason.encode())
    return struct.pack(">IIH", 6 + len(body), 16, 0) + body
def ping_ok(source):
    s = socket.create_connection((host, port), timeout=3, source_address=(source, 0))
    try:
        head = s.recv(8)
        if len(head) < 8 or struct.unpack(">I", head[4:8])[0] != 1:
            return False
        return True
    except OSError:
        return False
    finally:
        s.close()
if mode == "reasons":
    forged = 'x"} 1\npeng3dnet_connections_open{type="ping"} 99999'
    for i in range(2000):
        s = socket.create_connection((host, port))
        s.recv(64)
        s.sendall(closeconn(forged if i == 0 else "reason-%d-%s" % (i, "z" * 40)))
        s.close()
elif mode == "one-host":
    held, served = [], 0
    for i in range(1000):
        s = socket.create_connection((host, port)); s.settimeout(3)
        head = s.recv(8)
        if len(head) == 8 and struct.unpack(">I", head[4:8])[0] == 1:
            served += 1
        held.append(s)
    print("one host: %d of 1000 connections served; 127.0.0.2 answered: %s" % (served, ping_ok("127.0.0.2")))
elif mode == "fds":
    mhost, mport = sys.argv[3].rsplit(":", 1)
    held = []
    for i in range(1500):
        held.append(socket.create_connection((mhost, int(mport))))
    for i in range(1500):
        held.append(socket.create_connection((host, port)))
    ok = sum(ping_ok("127.0.0.2") for _ in range(4))
    print("fds: victim on 127.0.0.2 answered %d of 4 (hello within 3 s)" % ok)
PY
}

start 20000
before=$(curl -s "http://$METRICS/metrics" | wc -c); rss_before=$(rss $PID)
python_attack reasons "$ADDR"
sleep 1
body=$(curl -s "http://$METRICS/metrics")
echo "reasons: /metrics $before -> $(printf %s "$body" | wc -c) bytes; RSS $rss_before -> $(rss $PID); forged line present: $(printf %s "$body" | grep -c '^peng3dnet_connections_open{type="ping"} 99999' || true)"
echo "reasons: $(printf %s "$body" | grep '^peng3dnet_closes_total{reason="other"')"
kill $PID; wait $PID 2>/dev/null || true

start 20000
python_attack one-host "$ADDR"
kill $PID; wait $PID 2>/dev/null || true

start 1200
python_attack fds "$ADDR" "$METRICS"
kill $PID; wait $PID 2>/dev/null || true
