#!/usr/bin/env python3
"""Pings a server with the pure-Python reference's pingServer (peng3dnet 0.1.3a0).

Usage: ref_ping_client.py PORT DATA_JSON [COUNT]

Pings 127.0.0.1:PORT COUNT times (default 1) with the decoded DATA_JSON and prints one
line of JSON: {"ok": true, "replies": [...]} or {"ok": false, "error": "..."}. Byte
strings are written as {"$bytes": "<hex>"} so the caller can check types. Always exits
by itself. Needs PYGLET_SHADOW_WINDOW=0.
"""

import json
import os
import sys
import threading

os.environ.setdefault("PYGLET_SHADOW_WINDOW", "0")

from peng3dnet.ext.ping import pingServer  # noqa: E402


def tagged(value):
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, dict):
        return {str(k): tagged(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tagged(v) for v in value]
    return value


def finish(result, code):
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(code)


def main():
    port = int(sys.argv[1])
    data = json.loads(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    watchdog = threading.Timer(60.0, lambda: finish({"ok": False, "error": "watchdog: 60 s"}, 1))
    watchdog.daemon = True
    watchdog.start()
    replies = []
    try:
        for _ in range(count):
            replies.append(tagged(pingServer(addr=("127.0.0.1", port), data=dict(data), timeout=5)))
    except Exception as exc:
        finish({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}, 1)
    finish({"ok": True, "replies": replies}, 0)


if __name__ == "__main__":
    main()
