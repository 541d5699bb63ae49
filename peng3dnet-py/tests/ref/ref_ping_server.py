#!/usr/bin/env python3
"""A pingable server of the pure-Python reference (peng3dnet 0.1.3a0), for the tests.

Usage: ref_ping_server.py     (listens on 127.0.0.1, a free port)

Prints one line ``READY <port>`` on stdout once it listens and exits when stdin reaches
EOF. Static data {"name": "ref-server", "motd": "hello"}; dynamic data
{"clients": <connections>, "echo_x": <the ping's "x">}. Needs PYGLET_SHADOW_WINDOW=0.
"""

import os
import sys

os.environ.setdefault("PYGLET_SHADOW_WINDOW", "0")

import peng3dnet.net  # noqa: E402
from peng3dnet.ext.ping import PingableServerMixin  # noqa: E402


class RefPingServer(PingableServerMixin, peng3dnet.net.Server):
    pingdata = {"name": "ref-server", "motd": "hello"}

    def getPingData(self, msg, cid):
        return {"clients": len(self.clients), "echo_x": msg.get("x") if isinstance(msg, dict) else None}


def main():
    server = RefPingServer(addr=("127.0.0.1", 0))
    server.bind()  # idempotent; lets us read the port before runAsync
    port = server.sock.getsockname()[1]
    server.runAsync()
    server.process_async()
    sys.stdout.write("READY %d\n" % port)
    sys.stdout.flush()
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except KeyboardInterrupt:
        pass
    # The reference's threads can sit in select(); leave without interpreter teardown.
    os._exit(0)


if __name__ == "__main__":
    main()
