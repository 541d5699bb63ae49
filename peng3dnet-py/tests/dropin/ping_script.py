#!/usr/bin/env python3
"""A script written for the original peng3dnet 0.1.3a0 only, against its documented API
(peng3dnet.net.Server and Client, peng3dnet.ext.ping: pingServer, PingableServerMixin,
pingdata, getPingData, PingableClientMixin, setPingData, wait_for_pong, CONNTYPE_PING,
WRITEBACK, errors.FailedPingError). The tests run it as it is, with the
original, and with only its import line changed, with peng3dnet_rs.compat.

Usage:
  ping_script.py serve PORT     serves pings on 127.0.0.1:PORT; prints READY, then
                                STOPPED once stdin reaches EOF and the server is shut down
  ping_script.py ping PORT      pings 127.0.0.1:PORT three times; prints one JSON line
  ping_script.py fail PORT      pings a port where nothing answers; prints one JSON line
  ping_script.py mixin PORT     pings 127.0.0.1:PORT with PingableClientMixin (setPingData,
                                runAsync, wait_for_pong, on_pong); prints one JSON line
"""

import json
import os
import sys
import threading

os.environ.setdefault("PYGLET_SHADOW_WINDOW", "0")

import peng3dnet.net as net, peng3dnet.ext.ping as ping  # noqa: E401,E402  (the import line)


class DemoServer(ping.PingableServerMixin, net.Server):
    pingdata = {"name": "dropin-server", "motd": "static"}
    count = 0

    def getPingData(self, msg, cid):
        self.count += 1
        if msg.get("rename"):
            self.pingdata = {"name": msg["rename"], "motd": "static"}
        return {"count": self.count, "echo_x": msg.get("x"), "cid_is_int": isinstance(cid, int)}


def serve(port):
    server = DemoServer(addr=("127.0.0.1", port))
    server.bind()
    server.runAsync()
    server.process_async()
    print("READY", flush=True)
    for _ in sys.stdin:
        pass
    server.shutdown()
    print("STOPPED", flush=True)


def summary(reply):
    return {
        "keys": sorted(reply),
        "oldmsg_keys": sorted(reply["oldmsg"]),
        "name": reply["name"],
        "motd": reply["motd"],
        "count": reply["count"],
        "echo_x": reply["echo_x"],
        "cid_is_int": reply["cid_is_int"],
        "oldmsg_x": reply["oldmsg"]["x"],
        "delay_ok": isinstance(reply["delay"], float) and 0 <= reply["delay"] < 5,
        "recvtime_ok": isinstance(reply["recvtime"], float),
        "version": reply["peng3dnet"]["version"],
    }


def do_ping(port):
    results = []
    for data in ({"x": 1}, {"x": 2, "rename": "renamed"}, {"x": 3}):
        sent = dict(data)
        reply = ping.pingServer(addr=("127.0.0.1", port), data=sent, timeout=5.0)
        result = summary(reply)
        result["time_written_back"] = isinstance(sent.get("time"), float)
        results.append(result)
    print(json.dumps({"writeback": ping.WRITEBACK, "results": results}), flush=True)


def do_fail(port):
    try:
        ping.pingServer(addr=("127.0.0.1", port), timeout=1.0)
        outcome = {"failed": False}
    except ping.errors.FailedPingError as exc:
        outcome = {"failed": True, "runtime_error": isinstance(exc, RuntimeError)}
    print(json.dumps(outcome), flush=True)


class PingClient(ping.PingableClientMixin, net.Client):
    pass


def do_mixin(port):
    seen = {}
    client = PingClient(None, ("127.0.0.1", port), {}, ping.CONNTYPE_PING)
    client.on_pong = lambda msg: seen.setdefault("on_pong_keys", sorted(msg))
    data = {"x": 7, "time": "__AUTO__"}
    client.setPingData(data)
    client.runAsync()
    client.process_async()
    msg = client.wait_for_pong(5.0)
    again = client.wait_for_pong(0.01)  # already there: at once, the same pong
    print(json.dumps({
        "keys": sorted(msg),
        "name": msg["name"],
        "echo_x": msg["echo_x"],
        "count": msg["count"],
        "same_again": again is msg,
        "on_pong_keys": seen.get("on_pong_keys"),
        "time_written_back": isinstance(data["time"], float),
    }), flush=True)


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    # The original's threads can outlive main(): leave without the interpreter's teardown.
    watchdog = threading.Timer(60.0, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    {"serve": serve, "ping": do_ping, "fail": do_fail, "mixin": do_mixin}[mode](port)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
