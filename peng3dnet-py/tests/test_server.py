"""PingServer: data, the dynamic callable, errors in it, start/stop, the GIL."""

import gc
import logging
import socket
import subprocess
import threading
import time

import pytest

import peng3dnet_rs
from helpers import REF_DIR, REF_ENV, drain, frame, free_port, read_frame

LOCAL = ("127.0.0.1", 0)


def test_static_and_dynamic_data_merge_in_the_seed_order():
    calls = []

    def dynamic(msg, cid):
        calls.append((msg, cid))
        # "name" collides with the static data, which wins (as in the seed).
        return {"name": "dynamic", "visits": len(calls)}

    with peng3dnet_rs.PingServer(LOCAL, data={"name": "static", "motd": "m"}, dynamic=dynamic) as server:
        first = peng3dnet_rs.ping_server(server.address, data={"q": [1, 2]})
        second = peng3dnet_rs.ping_server(server.address)
    assert first["name"] == "static" and first["motd"] == "m"
    assert first["visits"] == 1 and second["visits"] == 2
    assert first["oldmsg"]["q"] == [1, 2]
    assert first["peng3dnet"]["protoversion"] == peng3dnet_rs.PROTOCOL_VERSION == 2
    assert first["peng3dnet"]["version"] == peng3dnet_rs.REFERENCE_VERSION
    msg, cid = calls[0]
    assert msg["q"] == [1, 2] and isinstance(msg["time"], float)
    assert isinstance(cid, int) and calls[1][1] != cid


def test_data_can_change_while_running():
    with peng3dnet_rs.PingServer(LOCAL, data={"motd": "old"}) as server:
        assert peng3dnet_rs.ping_server(server.address)["motd"] == "old"
        server.data = {"motd": "new", "extra": b"\x01"}
        assert server.data == {"motd": "new", "extra": b"\x01"}
        reply = peng3dnet_rs.ping_server(server.address)
        assert reply["motd"] == "new" and reply["extra"] == b"\x01"
        with pytest.raises(TypeError):
            server.data = ["not", "a", "dict"]
        with pytest.raises(TypeError):
            server.data = {"bad": {1, 2}}
        assert server.data["motd"] == "new"  # unchanged by the failed assignments


def test_writeback_off_leaves_out_the_echo():
    with peng3dnet_rs.PingServer(LOCAL, data={"a": 1}, writeback=False) as server:
        assert server.writeback is False
        reply = peng3dnet_rs.ping_server(server.address, data={"x": 1})
    assert "oldmsg" not in reply
    assert reply["a"] == 1
    assert reply["delay"] >= 0  # measured on our clock, not from the echo


@pytest.mark.parametrize(
    "behaviour, exc_type",
    [
        (lambda msg, cid: 1 / 0, ZeroDivisionError),
        (lambda msg, cid: ["not", "a", "dict"], TypeError),
        (lambda msg, cid: {"unsendable": object()}, TypeError),
        (lambda msg, cid: peng3dnet_rs.ping_server("127.0.0.1:1"), RuntimeError),
    ],
    ids=["raises", "returns-a-list", "returns-unsendable", "blocks-on-a-ping"],
)
def test_a_failing_callable_is_logged_and_the_pong_still_sent(caplog, behaviour, exc_type):
    with caplog.at_level(logging.ERROR, logger="peng3dnet_rs"):
        with peng3dnet_rs.PingServer(LOCAL, data={"name": "still here"}, dynamic=behaviour) as server:
            reply = peng3dnet_rs.ping_server(server.address, data={"x": 1}, timeout=5)
    assert reply["name"] == "still here"
    assert reply["oldmsg"]["x"] == 1
    assert set(reply) == {"name", "oldmsg", "peng3dnet", "servertiming", "recvtime", "delay"}
    records = [r for r in caplog.records if r.name == "peng3dnet_rs"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info[0] is exc_type
    assert "static data" in records[0].getMessage()


def test_a_callable_returning_none_adds_nothing(caplog):
    with caplog.at_level(logging.ERROR, logger="peng3dnet_rs"):
        with peng3dnet_rs.PingServer(LOCAL, data={"a": 1}, dynamic=lambda m, c: None) as server:
            reply = peng3dnet_rs.ping_server(server.address)
    assert reply["a"] == 1
    assert not [r for r in caplog.records if r.name == "peng3dnet_rs"]


def test_dynamic_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        peng3dnet_rs.PingServer(LOCAL, dynamic=42)


def test_start_stop_and_context_manager():
    server = peng3dnet_rs.PingServer(LOCAL, data={"n": 1})
    assert not server.running
    with pytest.raises(RuntimeError):
        server.address
    assert server.start() is server
    assert server.running
    port = server.port
    assert server.address == ("127.0.0.1", port)
    assert "running" in repr(server)
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    assert peng3dnet_rs.ping_server(server.address)["n"] == 1
    server.stop()
    assert not server.running
    server.stop()  # idempotent
    with pytest.raises(peng3dnet_rs.ConnectionRefused):
        peng3dnet_rs.ping_server(("127.0.0.1", port), timeout=5)
    # Restartable.
    with server:
        assert server.running
        assert peng3dnet_rs.ping_server(server.address)["n"] == 1
    assert not server.running


def test_context_manager_stops_on_exception():
    server = peng3dnet_rs.PingServer(LOCAL)
    with pytest.raises(KeyError):
        with server:
            port = server.port
            raise KeyError("boom")
    assert not server.running
    with pytest.raises(peng3dnet_rs.ConnectionRefused):
        peng3dnet_rs.ping_server(("127.0.0.1", port), timeout=5)


def test_stop_closes_open_connections_with_servershutdown():
    with peng3dnet_rs.PingServer(LOCAL) as server:
        conn = socket.create_connection(server.address, timeout=10)
        with conn:
            assert read_frame(conn)[0] == 1  # hello
            conn.sendall(frame(2, {"conntype": "ping"}))
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            assert read_frame(conn) == (16, {"reason": "servershutdown"})
            conn.close()
            stopper.join(15)
            assert not stopper.is_alive(), "stop() did not return after the client left"
    assert not server.running


def test_bind_conflict_is_an_oserror():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = peng3dnet_rs.PingServer(("127.0.0.1", port))
        with pytest.raises(OSError) as caught:
            server.start()
        assert caught.value.errno == 98  # EADDRINUSE
        assert str(port) in str(caught.value)
        assert not server.running


def test_string_address_and_stats():
    with peng3dnet_rs.PingServer("127.0.0.1:0") as server:
        for _ in range(3):
            peng3dnet_rs.ping_server("127.0.0.1:%d" % server.port)
        stats = server.stats
    assert stats["accepted"] == 3 and stats["pings"] == 3
    assert server.stats == {"accepted": 0, "refused": 0, "pings": 0, "connected": 0}


def test_callbacks_run_while_the_main_thread_runs_python(reference):
    """The server holds no GIL of its own: a ping from another process is answered (with
    the Python callable) while this thread keeps running Python code."""
    calls = []
    with peng3dnet_rs.PingServer(LOCAL, data={"name": "busy"}, dynamic=lambda m, c: calls.append(c) or {"ok": 1}) as server:
        proc = subprocess.Popen(
            [reference, str(REF_DIR / "ref_ping_client.py"), str(server.port), "{}", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=REF_ENV,
            text=True,
        )
        spins = 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            spins += 1  # pure Python work, never blocking
        out, _ = proc.communicate(timeout=30)
    assert '"ok": true' in out, out
    assert len(calls) == 3
    assert spins > 0


def test_many_in_process_pings_with_a_python_callable():
    """Our client (GIL released while waiting) against our server (GIL taken per ping)
    in one process: would deadlock if either held the GIL while waiting."""
    count = {"n": 0}

    def dynamic(msg, cid):
        count["n"] += 1
        return {"i": msg.get("i")}

    with peng3dnet_rs.PingServer(LOCAL, dynamic=dynamic) as server:
        results = list(peng3dnet_rs.ping_many([server.address] * 100, data={"i": 3}, concurrency=16, timeout=20))
    assert len(results) == 100
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert all(r.reply["i"] == 3 for r in results)
    assert count["n"] == 100


def test_a_server_dropped_while_running_stops():
    server = peng3dnet_rs.PingServer(LOCAL).start()
    port = server.port
    del server
    gc.collect()
    # Shutdown runs in the background once dropped; the port stops answering.
    deadline = time.monotonic() + 10
    while True:
        try:
            peng3dnet_rs.ping_server(("127.0.0.1", port), timeout=2)
        except peng3dnet_rs.ConnectionRefused:
            break
        assert time.monotonic() < deadline, "the dropped server still answers"
