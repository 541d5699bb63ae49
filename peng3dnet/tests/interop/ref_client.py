#!/usr/bin/env python3
"""Reference peng3dnet client used by the Rust interoperability tests.

Usage: ref_client.py --port N --mode classic|ping

Talks to a server on 127.0.0.1:N with the Python peng3dnet 0.1.3a0 and prints
exactly one line of JSON on stdout; exits 0 on success, 1 on failure.

classic  registers interop:msg and interop:big (ids 64, 65), does the classic
         handshake, sends one message of each (interop:big is over 8 KiB and
         travels compressed), expects {"echo": <what was sent>, "from": "rust"}
         back on the same packet name, closes with reason "done" and prints
         {"ok": true, "replies": 2}.
ping     calls peng3dnet.ext.ping.pingServer with data {"x": 7, "who": "python"}
         and prints the returned map (bytes as hex strings).

Every wait is bounded and the process always exits by itself.
Needs PYGLET_SHADOW_WINDOW=0 in the environment (peng3dnet imports pyglet).
"""

import argparse
import json
import math
import os
import socket
import sys
import threading
import time

os.environ.setdefault("PYGLET_SHADOW_WINDOW", "0")

import peng3dnet.net  # noqa: E402
import peng3dnet.packet  # noqa: E402
from peng3dnet.constants import CONNTYPE_CLASSIC, STATE_ACTIVE  # noqa: E402

PACKET_NAMES = ("interop:msg", "interop:big")
TIMEOUT = 10.0

SENT = {
    "interop:msg": {"n": 1, "s": "héllo", "b": b"\x00\x01\xff", "f": 1.5, "l": [1, 2, 3], "m": {"k": None}, "t": True},
    "interop:big": {"n": 2, "blob": bytes(range(256)) * 64},
}


def log(*args):
    print("[ref_client]", *args, file=sys.stderr, flush=True)


def finish(result, code):
    """Print the one JSON line and leave, whatever the reference's threads do."""
    sys.stdout.write(json.dumps(to_json(result), sort_keys=True) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def to_json(value):
    """Turns a decoded msgpack value into something json.dumps accepts."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, str):
                key = k
            elif isinstance(k, (bytes, bytearray)):
                key = bytes(k).hex()
            else:
                key = repr(k)
            out[key] = to_json(v)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return repr(value)


def strict_diff(expected, actual, path="echo"):
    """Returns None if equal with identical types everywhere, else a description.

    Plain == is not enough: in Python True == 1 == 1.0, and a str must not
    come back as bytes (or the reverse)."""
    if type(expected) is not type(actual):
        return "%s: expected %s %r, got %s %r" % (
            path, type(expected).__name__, expected, type(actual).__name__, actual)
    if isinstance(expected, dict):
        if set(expected) != set(actual):
            return "%s: expected keys %r, got %r" % (path, sorted(expected), sorted(actual))
        for k in expected:
            d = strict_diff(expected[k], actual[k], "%s.%s" % (path, k))
            if d:
                return d
        return None
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return "%s: expected %d items, got %d" % (path, len(expected), len(actual))
        for i, (e, a) in enumerate(zip(expected, actual)):
            d = strict_diff(e, a, "%s[%d]" % (path, i))
            if d:
                return d
        return None
    if expected != actual:
        return "%s: expected %r, got %r" % (path, expected, actual)
    return None


class ReplyPacket(peng3dnet.packet.Packet):
    """Records every reply the server sends on this packet name."""

    def __init__(self, reg, peer, name):
        super().__init__(reg, peer)
        self.name = name

    def receive(self, msg, cid=None):
        self.peer.record_reply(self.name, msg)


class InteropClient(peng3dnet.net.Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.replies = {}
        self.reply_cond = threading.Condition()
        self.close_reason = None
        # Registered here, once (see ref_server.py: initialize() is not
        # idempotent in the reference and runBlocking() calls it).
        for name in PACKET_NAMES:
            self.register_packet(name, ReplyPacket(self.registry, self, name))

    def record_reply(self, name, msg):
        with self.reply_cond:
            self.replies.setdefault(name, []).append(msg)
            self.reply_cond.notify_all()

    def on_close(self, reason=None):
        self.note_close(reason)

    def close_connection(self, cid=None, reason=None):
        # The reference calls on_close() for a close we start only if the
        # closeconn packet could not be written at once, so note it here too
        # (e.g. "packetregmismatch" when the registries differ).
        # Note it only once the packet is written, or the main thread could
        # exit before the server gets it.
        try:
            return super().close_connection(cid, reason)
        finally:
            self.note_close("sent:%s" % (reason,))

    def note_close(self, reason):
        with self.reply_cond:
            if self.close_reason is None:
                self.close_reason = reason
            self.reply_cond.notify_all()

    def wait_until(self, predicate, timeout):
        """Waits until predicate() or a close, at most timeout seconds."""
        deadline = time.monotonic() + timeout
        with self.reply_cond:
            while not predicate() and self.close_reason is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # Short waits: the connection state is not signalled on reply_cond.
                self.reply_cond.wait(min(left, 0.02))
            return predicate()


def close_cleanly(client, timeout):
    """Sends closeconn "done", then half-closes and reads until the server closes.

    The reference client, after writing a closeconn, never closes its socket
    (and may keep reading it from its own thread). So stop its thread, send
    our FIN ourselves and read (and drop) whatever comes until the server's
    FIN, so the server sees closeconn then a clean end of stream, never a reset."""
    deadline = time.monotonic() + timeout
    client.close_connection(reason="done")
    while client._write_buf and time.monotonic() < deadline:
        time.sleep(0.01)
    client.stop()
    if client._run_thread is not None:
        client._run_thread.join(max(0.0, min(1.0, deadline - time.monotonic())))
    sock = client.sock
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                if not sock.recv(65536):
                    return
            except TimeoutError:
                continue
    except OSError:
        return
    finally:
        try:
            sock.close()
        except OSError:
            pass


def run_classic(port):
    client = InteropClient(addr=("127.0.0.1", port), conntype=CONNTYPE_CLASSIC)
    ids = {name: client.registry.getInt(name) for name in PACKET_NAMES}
    if ids != {"interop:msg": 64, "interop:big": 65}:
        finish({"ok": False, "error": "unexpected packet ids %r" % ids}, 1)
    try:
        client.connect()
    except OSError as exc:
        finish({"ok": False, "error": "cannot connect to 127.0.0.1:%d: %s" % (port, exc)}, 1)
    client.runAsync()
    client.process_async()

    if not client.wait_until(lambda: client.remote_state == STATE_ACTIVE, TIMEOUT):
        finish({"ok": False, "error": "no handshake (waited up to %.0f s; close reason %r)" % (
            TIMEOUT, client.close_reason)}, 1)

    for name in PACKET_NAMES:
        client.send_message(name, SENT[name])

    client.wait_until(lambda: all(client.replies.get(n) for n in PACKET_NAMES), TIMEOUT)
    with client.reply_cond:
        replies = {n: list(v) for n, v in client.replies.items()}
        close_reason = client.close_reason

    error = None
    for name in PACKET_NAMES:
        got = replies.get(name)
        if not got:
            error = "no reply on %s within %.0f s (close reason %r)" % (name, TIMEOUT, close_reason)
            break
        if len(got) != 1:
            error = "%d replies on %s, expected 1" % (len(got), name)
            break
        reply = got[0]
        if not isinstance(reply, dict):
            error = "%s: reply is a %s, not a map" % (name, type(reply).__name__)
            break
        if reply.get("from") != "rust":
            error = "%s: reply[\"from\"] is %r, expected 'rust'" % (name, reply.get("from"))
            break
        if "echo" not in reply:
            error = "%s: reply has no echo" % name
            break
        diff = strict_diff(SENT[name], reply["echo"], "%s.echo" % name)
        if diff:
            error = diff
            break

    if close_reason is None:
        try:
            close_cleanly(client, 3.0)
        except Exception as exc:
            log("error while closing: %r" % exc)

    if error:
        finish({"ok": False, "error": error}, 1)
    finish({"ok": True, "replies": len(PACKET_NAMES)}, 0)


def run_ping(port):
    from peng3dnet.ext.ping import pingServer

    try:
        result = pingServer(addr=("127.0.0.1", port), data={"x": 7, "who": "python"}, timeout=5)
    except Exception as exc:
        finish({"ok": False, "error": "ping failed: %s: %s" % (type(exc).__name__, exc)}, 1)
    if not isinstance(result, dict):
        finish({"ok": False, "error": "ping returned %r" % (result,)}, 1)
    finish(result, 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="server port on 127.0.0.1")
    parser.add_argument("--mode", choices=("classic", "ping"), required=True)
    args = parser.parse_args()

    # Last resort: whatever happens, never outlive the test that started us.
    watchdog = threading.Timer(30.0, lambda: finish({"ok": False, "error": "watchdog: gave up after 30 s"}, 1))
    watchdog.daemon = True
    watchdog.start()

    try:
        if args.mode == "classic":
            run_classic(args.port)
        else:
            run_ping(args.port)
    except SystemExit:
        raise
    except BaseException as exc:
        finish({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}, 1)


if __name__ == "__main__":
    main()
