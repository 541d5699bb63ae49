"""Helpers of the tests: the reference as a subprocess, raw fake servers speaking bytes."""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

REF_DIR = Path(__file__).parent / "ref"
REF_PYTHON = os.environ.get("PENG3DNET_REF_PYTHON", sys.executable)
REF_ENV = dict(os.environ, PYGLET_SHADOW_WINDOW="0")


def ref_ping(reference, port, data, count=1):
    """Pings 127.0.0.1:port with the reference's pingServer; returns its decoded replies."""
    done = subprocess.run(
        [reference, str(REF_DIR / "ref_ping_client.py"), str(port), json.dumps(data), str(count)],
        capture_output=True,
        text=True,
        env=REF_ENV,
        timeout=90,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, "reference client printed nothing; stderr:\n%s" % done.stderr[-2000:]
    result = json.loads(lines[-1])
    assert result["ok"], "reference client failed: %s" % result.get("error")
    return result["replies"]


# ---- raw peers speaking bytes, for the error cases ----

HELLO = {"version": "0.1.3a0", "protoversion": 2}


def frame(pid, body):
    import msgpack

    payload = msgpack.packb(body, use_bin_type=True)
    return struct.pack(">IIH", len(payload) + 6, pid, 0) + payload


def read_frame(conn):
    """Reads one frame; returns (id, decoded body) or None at end of stream."""
    import msgpack

    header = recv_exactly(conn, 10)
    if header is None:
        return None
    length, pid, _flags = struct.unpack(">IIH", header)
    body = recv_exactly(conn, length - 6)
    if body is None:
        return None
    return pid, msgpack.unpackb(body, raw=False)


def recv_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def drain(conn):
    """Reads until the peer closes (or 10 s pass); True if it closed."""
    conn.settimeout(10)
    try:
        while conn.recv(65536):
            pass
        return True
    except OSError:
        return False


class FakeServer:
    """Listens on 127.0.0.1; runs ``script(conn)`` in a thread for every connection.

    What a script returns (or raises) is kept in ``results`` in connection order."""

    def __init__(self, script, connections=1):
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.address = ("127.0.0.1", self.port)
        self.results = []
        self.lock = threading.Lock()
        self.accepted = 0
        self.accepted_cond = threading.Condition()
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, args=(connections,), daemon=True)
        self.acceptor.start()

    def _accept(self, connections):
        for _ in range(connections):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.accepted_cond:
                self.accepted += 1
                self.accepted_cond.notify_all()
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, conn):
        with conn:
            conn.settimeout(30)
            try:
                result = self.script(conn)
            except Exception as exc:  # reported to the test through results
                result = exc
        with self.lock:
            self.results.append(result)

    def wait_accepted(self, n, timeout=30):
        """Waits until n connections were accepted; True if they were."""
        with self.accepted_cond:
            return self.accepted_cond.wait_for(lambda: self.accepted >= n, timeout)

    def join(self, timeout=30):
        self.acceptor.join(timeout)
        for t in list(self.threads):
            t.join(timeout)
        return self.results

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def free_port():
    """A port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
