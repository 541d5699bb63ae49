"""Interoperability with the pure-Python reference, both ways."""

import asyncio
import threading
import time

import peng3dnet_rs
from helpers import ref_ping

VERSION_INFO = {"version": "0.1.3a0", "release": "0.1.3", "protoversion": 2}


def test_reference_pings_our_server(reference):
    seen = []
    lock = threading.Lock()

    def dynamic(msg, cid):
        with lock:
            seen.append((msg, cid))
        return {"clients": 1, "echo_x": msg.get("x")}

    data = {"name": "rust-server", "motd": "hi", "blob": b"\x00\xff"}
    with peng3dnet_rs.PingServer(("127.0.0.1", 0), data=data, dynamic=dynamic) as server:
        replies = ref_ping(reference, server.port, {"x": 7, "who": "python"}, count=2)
        stats = server.stats

    assert len(replies) == 2
    for reply in replies:
        assert reply["name"] == "rust-server"
        assert reply["motd"] == "hi"
        assert reply["blob"] == {"$bytes": "00ff"}  # bytes arrive as bytes
        assert reply["clients"] == 1
        assert reply["echo_x"] == 7
        assert reply["oldmsg"]["x"] == 7
        assert reply["oldmsg"]["who"] == "python"
        assert reply["peng3dnet"] == VERSION_INFO
        # The reference adds these from our echo of its time.
        assert isinstance(reply["recvtime"], float)
        assert 0 <= reply["delay"] < 5
    # The callback saw what the reference sent, with its own time, and an int client id.
    assert len(seen) == 2
    for msg, cid in seen:
        assert msg["x"] == 7 and msg["who"] == "python"
        assert isinstance(msg["time"], float) and abs(msg["time"] - time.time()) < 60
        assert isinstance(cid, int) and cid >= 1
    assert seen[0][1] != seen[1][1], "each ping is its own connection"
    assert stats["pings"] == 2


def test_we_ping_the_reference_server(ref_server):
    before = time.time()
    reply = peng3dnet_rs.ping_server(("127.0.0.1", ref_server), data={"x": 5, "who": "rust"}, timeout=5)
    after = time.time()
    assert reply["name"] == "ref-server"
    assert reply["motd"] == "hello"
    assert reply["echo_x"] == 5
    assert isinstance(reply["clients"], int) and reply["clients"] >= 1
    assert reply["peng3dnet"] == VERSION_INFO
    assert reply["oldmsg"]["x"] == 5 and reply["oldmsg"]["who"] == "rust"
    assert before <= reply["oldmsg"]["time"] <= after
    assert before <= reply["recvtime"] <= after
    assert isinstance(reply["delay"], float) and 0 <= reply["delay"] <= after - before


def test_we_ping_the_reference_server_by_string_address(ref_server):
    reply = peng3dnet_rs.ping_server("127.0.0.1:%d" % ref_server, timeout=5)
    assert reply["name"] == "ref-server"
    assert reply["echo_x"] is None  # we sent no "x"


def test_values_round_trip_through_the_reference(ref_server):
    sent = {
        "s": "héllo ✓",
        "b": b"\x00\x01\xff",
        "i": -12345,
        "big": 2**64 - 1,
        "f": 1.5,
        "t": True,
        "n": None,
        "l": [1, "two", [3.0, False]],
        "m": {"k": {"deep": [None]}},
    }
    echo = peng3dnet_rs.ping_server(("127.0.0.1", ref_server), data=sent, timeout=5)["oldmsg"]
    for key, value in sent.items():
        assert echo[key] == value
        assert type(echo[key]) is type(value), key


def test_async_ping_of_the_reference_server(ref_server):
    async def main():
        return await peng3dnet_rs.ping_server_async(("127.0.0.1", ref_server), data={"x": 9}, timeout=5)

    reply = asyncio.run(main())
    assert reply["name"] == "ref-server" and reply["echo_x"] == 9


def test_ping_many_of_the_reference_server(ref_server):
    targets = [("127.0.0.1", ref_server)] * 6
    results = list(peng3dnet_rs.ping_many(targets, data={"x": 1}, timeout=5, concurrency=2))
    assert sorted(r.index for r in results) == list(range(6))
    for r in results:
        assert r.ok, r.error
        assert r.target == ("127.0.0.1", ref_server)
        assert r.reply["name"] == "ref-server" and r.reply["echo_x"] == 1
