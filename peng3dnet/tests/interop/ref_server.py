#!/usr/bin/env python3
"""Reference peng3dnet server used by the Rust interoperability tests.

Usage: ref_server.py [--port N]     (N = 0, the default, picks a free port)

Runs the Python peng3dnet 0.1.3a0 server on 127.0.0.1 with the ping extension,
prints exactly one line ``READY <port>`` on stdout once it listens, and shuts
down when stdin reaches EOF. Everything else goes to stderr.

Application packets (registered in this order, so ids 64 and 65):
  interop:msg  reply on the same name: {"echo", "repacked", "types"}
  interop:big  same, plus "blob" (16 KiB of bytes) and "text" (10000 chars),
               so the reply is over the 8 KiB threshold and travels compressed.

Needs PYGLET_SHADOW_WINDOW=0 in the environment (peng3dnet imports pyglet).
"""

import argparse
import os
import sys
import threading

os.environ.setdefault("PYGLET_SHADOW_WINDOW", "0")

import msgpack  # noqa: E402
import peng3dnet.net  # noqa: E402
import peng3dnet.packet  # noqa: E402
from peng3dnet.ext.ping import PingableServerMixin  # noqa: E402

PACKET_NAMES = ("interop:msg", "interop:big")
BIG_BLOB = bytes(range(256)) * 64
BIG_TEXT = "y" * 10000


def log(*args):
    print("[ref_server]", *args, file=sys.stderr, flush=True)


def build_reply(msg, big):
    reply = {
        "echo": msg,
        "repacked": msgpack.packb(msg, use_bin_type=True),
        "types": {k: type(v).__name__ for k, v in msg.items()} if isinstance(msg, dict) else {},
    }
    if big:
        reply["blob"] = BIG_BLOB
        reply["text"] = BIG_TEXT
    return reply


class EchoPacket(peng3dnet.packet.Packet):
    """A plain packet: answers every message on the same packet name."""

    def __init__(self, reg, peer, name, big):
        super().__init__(reg, peer)
        self.name = name
        self.big = big

    def receive(self, msg, cid=None):
        if cid is None:
            return  # only the server side answers
        try:
            self.peer.send_message(self.name, build_reply(msg, self.big), cid)
        except Exception as exc:  # keep the server alive, report on stderr
            log("failed to answer %s for client %s: %r" % (self.name, cid, exc))


class LoggingClientOnServer(peng3dnet.net.ClientOnServer):
    def on_close(self, reason=None):
        log("client %s (%s) closed: reason %r" % (self.cid, self.conntype, reason))


class RefServer(PingableServerMixin, peng3dnet.net.Server):
    pingdata = {"name": "ref-server", "motd": "hello"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Registered here, once: the reference's initialize() (run by
        # runBlocking) never marks itself done, so a _reg_packets_* hook would
        # register twice if initialize() were also called by hand. Automatic
        # ids start at 64 whatever the internal packets (fixed ids) do.
        for name in PACKET_NAMES:
            self.register_packet(name, EchoPacket(self.registry, self, name, name == "interop:big"))

    def getPingData(self, msg, cid):
        return {"clients": len(self.clients), "echo_x": msg.get("x") if isinstance(msg, dict) else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    args = parser.parse_args()

    server = RefServer(addr=("127.0.0.1", args.port), clientcls=LoggingClientOnServer)
    ids = {name: server.registry.getInt(name) for name in PACKET_NAMES}
    if ids != {"interop:msg": 64, "interop:big": 65}:
        log("unexpected packet ids: %r" % ids)
        sys.exit(2)

    # bind() is idempotent: calling it here (runBlocking calls it again, as a
    # no-op) lets us read the real port when port 0 was asked for. The
    # reference never updates server.addr, so ask the socket.
    server.bind()
    port = server.sock.getsockname()[1]
    server.runAsync()
    server.process_async()

    sys.stdout.write("READY %d\n" % port)
    sys.stdout.flush()
    log("listening on 127.0.0.1:%d" % port)

    # Block until the parent closes our stdin (or dies).
    stdin_done = threading.Event()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            stdin_done.set()

    threading.Thread(target=watch_stdin, name="stdin watcher", daemon=True).start()
    try:
        stdin_done.wait()
    except KeyboardInterrupt:
        pass

    log("stdin closed, shutting down")
    try:
        server.shutdown(join=True, timeout=2)
    except Exception as exc:
        log("error during shutdown: %r" % exc)
    sys.stdout.flush()
    sys.stderr.flush()
    # The reference's threads are daemons, but skip interpreter teardown so a
    # thread stuck in select() can never keep us alive.
    os._exit(0)


if __name__ == "__main__":
    main()
