#!/usr/bin/env python3
"""peng3dnet_rs beside the pure-Python reference (peng3dnet 0.1.3a0): prints figures.

Usage (from the repo root, in the venv that scripts/test-python.sh makes):
    PYGLET_SHADOW_WINDOW=0 .venv-py/bin/python peng3dnet-py/bench/bench_ping.py [--pings N] [--client-pings N]

Measures, each server in a process of its own, all on 127.0.0.1:
1. a server's pings/s: N pings (default 10,000) sent by peng3dnet_rs.ping_many (one
   connection per ping, the seed's way; 2 s allowed each) at concurrency 1, 4 and 16
   (200 pings for the reference at 16, where it stops answering), against
   - the reference's PingableServerMixin server,
   - peng3dnet_rs.PingServer with static data only (no Python per ping),
   - peng3dnet_rs.PingServer with a Python dynamic callable (the GIL once per ping);
   Each 3 times (a fresh server each time), keeping the median.
2. a client's time for 1,000 pings one after another (default), against a
   peng3dnet_rs.PingServer: the reference's pingServer (100 per process: each call leaves
   two threads running, which slow a longer loop down without bound),
   peng3dnet_rs.ping_server, and peng3dnet_rs.ping_many at concurrency 16.
3. sessions, N pings (default 1,000) one after another against a peng3dnet_rs.PingServer:
   the reference's PingableClientMixin (setPingData, runAsync, wait_for_pong: its client
   closes after each pong, so every ping is a new connection; 100 per process, as above),
   peng3dnet_rs.PingSession.ping on one connection, AsyncPingSession.ping on one
   connection, and peng3dnet_rs.compat.ping.pingServer (the drop-in's cost).
   ``--sessions-only`` runs this part alone.
Prints a Markdown table, the date, the machine and its load average before and after.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve()
REF_SERVER = HERE.parent.parent / "tests" / "ref" / "ref_ping_server.py"
ENV = dict(os.environ, PYGLET_SHADOW_WINDOW="0")


def serve_rs(dynamic):
    """Runs our server until stdin closes (a worker process)."""
    import peng3dnet_rs

    def users(msg, cid):
        return {"clients": 1, "echo_x": msg.get("x")}

    server = peng3dnet_rs.PingServer(
        ("127.0.0.1", 0), data={"name": "bench", "motd": "hello"}, dynamic=users if dynamic else None
    ).start()
    print("READY %d" % server.port, flush=True)
    sys.stdin.read()
    server.stop()


def client_ref(port, count):
    """Pings one after another with the reference's pingServer; prints the seconds taken
    and the threads left running."""
    import threading

    from peng3dnet.ext.ping import pingServer

    start = time.perf_counter()
    for _ in range(count):
        reply = pingServer(addr=("127.0.0.1", port), data={"x": 1}, timeout=5)
        assert reply["name"] == "bench"
    total = time.perf_counter() - start
    print(json.dumps({"total": total, "threads": threading.active_count()}), flush=True)
    os._exit(0)  # the reference's threads linger (see the threads count)


def client_ref_mixin(port, count):
    """Pings one after another with the reference's PingableClientMixin (setPingData,
    runAsync, process_async, wait_for_pong), a new client per ping (it closes after its
    pong); prints the seconds taken."""
    import threading

    from peng3dnet import net
    from peng3dnet.constants import CONNTYPE_PING
    from peng3dnet.ext.ping import PingableClientMixin

    class Client(PingableClientMixin, net.Client):
        pass

    start = time.perf_counter()
    for _ in range(count):
        client = Client(None, ("127.0.0.1", port), {}, CONNTYPE_PING)
        client.setPingData({"x": 1, "time": "__AUTO__"})
        client.runAsync()
        client.process_async()
        assert client.wait_for_pong(5)["name"] == "bench"
    total = time.perf_counter() - start
    print(json.dumps({"total": total, "threads": threading.active_count()}), flush=True)
    os._exit(0)


def session_rows(me, port, n, per_process):
    """The session rows (part 3) against the server on ``port``."""
    import asyncio

    import peng3dnet_rs
    from peng3dnet_rs.compat import ping as compat_ping

    rows = []
    ref_total, done = 0.0, 0
    while done < n:
        chunk = min(per_process, n - done)
        out = subprocess.run(me + ["client-ref-mixin", str(port), str(chunk)], capture_output=True, text=True, env=ENV, timeout=900)
        ref_total += json.loads(out.stdout.strip().splitlines()[-1])["total"]
        done += chunk
    rows.append((
        "session: reference PingableClientMixin, wait_for_pong per ping (a connection each)",
        "%d pings, %d per process" % (n, per_process),
        "%.0f pings/s (%.2f ms each)" % (n / ref_total, ref_total / n * 1000),
        "none",
    ))

    with peng3dnet_rs.PingSession(("127.0.0.1", port), data={"x": 1}) as session:
        session.ping()  # warm-up
        t0 = time.perf_counter()
        for _ in range(n):
            session.ping(timeout=5)
        sync_time = time.perf_counter() - t0
    rows.append((
        "session: peng3dnet_rs.PingSession.ping, one connection",
        "%d pings" % n,
        "%.0f pings/s (%.3f ms each)" % (n / sync_time, sync_time / n * 1000),
        "none",
    ))

    async def run_async():
        async with peng3dnet_rs.AsyncPingSession(("127.0.0.1", port), data={"x": 1}) as session:
            await session.ping()
            t0 = time.perf_counter()
            for _ in range(n):
                await session.ping(timeout=5)
            return time.perf_counter() - t0

    async_time = asyncio.run(run_async())
    rows.append((
        "session: peng3dnet_rs.AsyncPingSession.ping, one connection",
        "%d pings" % n,
        "%.0f pings/s (%.3f ms each)" % (n / async_time, async_time / n * 1000),
        "none",
    ))

    t0 = time.perf_counter()
    for _ in range(n):
        compat_ping.pingServer(addr=("127.0.0.1", port), data={"x": 1}, timeout=5.0)
    compat_time = time.perf_counter() - t0
    rows.append((
        "client: peng3dnet_rs.compat.ping.pingServer, one after another",
        "%d pings" % n,
        "%.2f s (%.2f ms each)" % (compat_time, compat_time / n * 1000),
        "none",
    ))
    return rows


def start(cmd):
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV, text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit("server did not start: %r (%s)" % (line, cmd))
    return proc, int(line.split()[1])


def stop(proc):
    proc.stdin.close()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: Time allowed per ping under load (loopback: a healthy server answers in under 10 ms).
LOAD_TIMEOUT = 2.0
#: Pings sent to the reference at the concurrency where it stops answering.
REF_OVERLOAD_PINGS = 200


def load_server(port, pings, concurrency):
    """pings/s (answered pings over wall time) and failures of ping_many against one server."""
    import peng3dnet_rs

    list(peng3dnet_rs.ping_many([("127.0.0.1", port)] * 50, timeout=LOAD_TIMEOUT, concurrency=1))  # warm-up
    t0 = time.perf_counter()
    failed = 0
    errors = {}
    targets = [("127.0.0.1", port)] * pings
    for r in peng3dnet_rs.ping_many(targets, data={"x": 1}, timeout=LOAD_TIMEOUT, concurrency=concurrency):
        if not r.ok:
            failed += 1
            errors[type(r.error).__name__] = errors.get(type(r.error).__name__, 0) + 1
    elapsed = time.perf_counter() - t0
    return (pings - failed) / elapsed, failed, errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=10000, help="pings per server measurement (default 10000)")
    parser.add_argument("--client-pings", type=int, default=1000, help="sequential pings per client (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per server measurement; the median is kept (default 3)")
    parser.add_argument(
        "--ref-per-process",
        type=int,
        default=100,
        help="reference client pings per process (default 100): each of its pingServer calls "
        "leaves two threads running, so one process cannot do 1,000 in a row fairly",
    )
    parser.add_argument("--sessions-only", action="store_true", help="run only the session rows (part 3)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind = args.worker[0]
        if kind == "serve-rs":
            return serve_rs(dynamic=False)
        if kind == "serve-rs-dynamic":
            return serve_rs(dynamic=True)
        if kind == "client-ref":
            return client_ref(int(args.worker[1]), int(args.worker[2]))
        if kind == "client-ref-mixin":
            return client_ref_mixin(int(args.worker[1]), int(args.worker[2]))
        raise SystemExit("unknown worker %r" % kind)

    import peng3dnet_rs

    me = [sys.executable, str(HERE), "--worker"]
    load_before = os.getloadavg()
    started = datetime.now(timezone.utc)
    rows = []

    servers = [
        ("reference PingableServerMixin (Python)", [sys.executable, str(REF_SERVER)]),
        ("peng3dnet_rs.PingServer, static data", me + ["serve-rs"]),
        ("peng3dnet_rs.PingServer, Python dynamic callable", me + ["serve-rs-dynamic"]),
    ]
    for name, cmd in servers if not args.sessions_only else []:
        for concurrency in (1, 4, 16):
            pings = args.pings
            if cmd[1] == str(REF_SERVER) and concurrency > 4:
                # The reference stops answering many of them: each costs the whole timeout.
                pings = min(pings, REF_OVERLOAD_PINGS)
            runs = []
            for _ in range(args.repeat):
                proc, port = start(cmd)
                try:
                    runs.append(load_server(port, pings, concurrency))
                finally:
                    stop(proc)
            runs.sort(key=lambda run: run[0])
            rate, failed, errors = runs[len(runs) // 2]
            note = ", ".join("%s %d" % kv for kv in sorted(errors.items())) or "none"
            spread = "%.0f-%.0f" % (runs[0][0], runs[-1][0])
            rows.append(("server: " + name, "%d pings, concurrency %d" % (pings, concurrency), "%.0f pings/s (%s)" % (rate, spread), note))
            print("  %s, c=%d: %.0f pings/s, failed %d" % (name, concurrency, rate, failed), file=sys.stderr)

    proc, port = start(me + ["serve-rs"])
    try:
        n = args.client_pings
        if not args.sessions_only:
            ref_total, threads, done = 0.0, 0, 0
            while done < n:
                chunk = min(args.ref_per_process, n - done)
                out = subprocess.run(me + ["client-ref", str(port), str(chunk)], capture_output=True, text=True, env=ENV, timeout=900)
                ref = json.loads(out.stdout.strip().splitlines()[-1])
                ref_total += ref["total"]
                threads = max(threads, ref["threads"])
                done += chunk
            rows.append((
                "client: reference pingServer, one after another",
                "%d pings, %d per process" % (n, args.ref_per_process),
                "%.2f s (%.2f ms each)" % (ref_total, ref_total / n * 1000),
                "none; up to %d threads left running in a process" % threads,
            ))

            t0 = time.perf_counter()
            for _ in range(n):
                peng3dnet_rs.ping_server(("127.0.0.1", port), data={"x": 1}, timeout=5)
            rs_time = time.perf_counter() - t0
            rows.append(("client: peng3dnet_rs.ping_server, one after another", "%d pings" % n, "%.2f s (%.2f ms each)" % (rs_time, rs_time / n * 1000), "none"))

            t0 = time.perf_counter()
            results = list(peng3dnet_rs.ping_many([("127.0.0.1", port)] * n, data={"x": 1}, timeout=5, concurrency=16))
            many_time = time.perf_counter() - t0
            failed = sum(not r.ok for r in results)
            rows.append(("client: peng3dnet_rs.ping_many, concurrency 16", "%d pings" % n, "%.2f s" % many_time, "failed %d" % failed if failed else "none"))
        rows.extend(session_rows(me, port, n, args.ref_per_process))
    finally:
        stop(proc)

    load_after = os.getloadavg()
    print()
    print("| what | load | result | failures |")
    print("|---|---|---:|---|")
    for row in rows:
        print("| %s |" % " | ".join(row))
    print()
    print("- date: %s (UTC), %.0f s" % (started.strftime("%Y-%m-%d %H:%M"), (datetime.now(timezone.utc) - started).total_seconds()))
    print("- machine: %d cores (os.cpu_count), %s, Python %s" % (os.cpu_count(), platform.platform(), platform.python_version()))
    print("- load average (1/5/15 min) before: %.2f %.2f %.2f, after: %.2f %.2f %.2f" % (load_before + load_after))
    print("- command: %s" % " ".join([Path(sys.executable).name] + sys.argv))


if __name__ == "__main__":
    main()
