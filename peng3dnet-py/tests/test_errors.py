"""Failures: each reason raises its own exception; bad arguments raise at once."""

import asyncio
import math
import time

import pytest

import peng3dnet_rs
from peng3dnet_rs import errors
from helpers import HELLO, FakeServer, drain, frame, free_port, read_frame


def hello_then(action):
    """A fake server script: hello, read settype and ping, then ``action(conn)``."""

    def script(conn):
        conn.sendall(frame(1, HELLO))
        settype = read_frame(conn)
        ping = read_frame(conn)
        assert settype == (2, {"conntype": "ping"}), settype
        assert ping[0] == 64, ping
        return action(conn)

    return script


def test_refused():
    port = free_port()
    with pytest.raises(peng3dnet_rs.ConnectionRefused) as caught:
        peng3dnet_rs.ping_server(("127.0.0.1", port), timeout=5)
    e = caught.value
    # Catchable as the package's error and as the built-in one.
    assert isinstance(e, peng3dnet_rs.PingError)
    assert isinstance(e, ConnectionRefusedError)
    assert isinstance(e, peng3dnet_rs.ConnectFailed)
    assert e.address == "127.0.0.1:%d" % port
    assert e.errno == 111
    assert "refused" in str(e).lower()
    # The library's word for it, as the CLI's JSON says it.
    assert e.kind == "refused"


def test_timeout_waiting_for_hello():
    with FakeServer(lambda conn: drain(conn)) as fake:
        start = time.monotonic()
        with pytest.raises(peng3dnet_rs.PingTimeout) as caught:
            peng3dnet_rs.ping_server(fake.address, timeout=0.5)
        elapsed = time.monotonic() - start
        assert caught.value.phase == "waiting for hello"
        assert caught.value.kind == "timeout"
        assert isinstance(caught.value, TimeoutError)
        assert 0.45 <= elapsed < 5
        # We closed the connection behind us.
        assert fake.join() == [True]


def test_timeout_waiting_for_pong():
    with FakeServer(hello_then(drain)) as fake:
        with pytest.raises(peng3dnet_rs.PingTimeout) as caught:
            peng3dnet_rs.ping_server(fake.address, timeout=0.5)
        assert caught.value.phase == "waiting for pong"
        assert fake.join() == [True]


@pytest.mark.parametrize("reason", ["serverfull", "unknownconntype"])
def test_closed_by_server_with_reason(reason):
    def close(conn):
        conn.sendall(frame(16, {"reason": reason}))
        return drain(conn)

    with FakeServer(hello_then(close)) as fake:
        with pytest.raises(peng3dnet_rs.ClosedByServer) as caught:
            peng3dnet_rs.ping_server(fake.address, timeout=5)
        assert caught.value.reason == reason
        assert reason in str(caught.value)
        assert isinstance(caught.value, ConnectionError)
        fake.join()


def test_closed_by_server_without_reason():
    with FakeServer(hello_then(lambda conn: None)) as fake:  # closes the socket after the ping
        with pytest.raises(peng3dnet_rs.ClosedByServer) as caught:
            peng3dnet_rs.ping_server(fake.address, timeout=5)
        assert caught.value.reason is None


def test_not_a_peng3dnet_server():
    def http(conn):
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        return drain(conn)

    with FakeServer(http) as fake:
        with pytest.raises(peng3dnet_rs.NotPeng3dnetServer):
            peng3dnet_rs.ping_server(fake.address, timeout=5)
        assert fake.join() == [True]


def test_not_a_peng3dnet_server_first_packet_not_hello():
    def other(conn):
        conn.sendall(frame(65, {"surprise": 1}))
        return drain(conn)

    with FakeServer(other) as fake:
        with pytest.raises(peng3dnet_rs.NotPeng3dnetServer) as caught:
            peng3dnet_rs.ping_server(fake.address, timeout=5)
        assert "65" in str(caught.value)


def test_protocol_version_mismatch():
    def newer(conn):
        conn.sendall(frame(1, {"version": "9.9", "protoversion": 3}))
        return read_frame(conn)  # we say why we leave

    with FakeServer(newer) as fake:
        with pytest.raises(peng3dnet_rs.ProtocolMismatch):
            peng3dnet_rs.ping_server(fake.address, timeout=5)
        assert fake.join() == [(16, {"reason": "protoversionmismatch"})]


def test_protocol_violation_by_server():
    def wrong_packet(conn):
        conn.sendall(frame(70, {"not": "a pong"}))
        return read_frame(conn)

    with FakeServer(hello_then(wrong_packet)) as fake:
        with pytest.raises(peng3dnet_rs.ProtocolViolation) as caught:
            peng3dnet_rs.ping_server(fake.address, timeout=5)
        assert caught.value.reason == "invalidpingpacket"
        assert fake.join() == [(16, {"reason": "invalidpingpacket"})]


def test_unresolvable_target():
    with pytest.raises(peng3dnet_rs.ResolveError) as caught:
        peng3dnet_rs.ping_server("host:notaport", timeout=5)
    assert caught.value.target == "host:notaport"


def test_every_error_is_a_ping_error():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), peng3dnet_rs.PingError)
        assert getattr(peng3dnet_rs, name) is getattr(errors, name)


def test_async_errors_are_the_same():
    async def main():
        await peng3dnet_rs.ping_server_async(("127.0.0.1", free_port()), timeout=5)

    with pytest.raises(peng3dnet_rs.ConnectionRefused):
        asyncio.run(main())


def test_async_cancel_closes_the_connection():
    with FakeServer(drain) as fake:

        async def main():
            await asyncio.wait_for(peng3dnet_rs.ping_server_async(fake.address, timeout=30), 0.3)

        start = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(main())
        assert time.monotonic() - start < 10
        # The silent server sees our side close once the task is cancelled.
        assert fake.join() == [True]


@pytest.mark.parametrize(
    "addr, exc, text",
    [
        (5, TypeError, "not int"),
        (("127.0.0.1",), TypeError, "(host, port)"),
        (("127.0.0.1", 1, 2), TypeError, "(host, port)"),
        ((1, 80), TypeError, "host"),
        (("127.0.0.1", "80"), TypeError, "port"),
        (("127.0.0.1", True), TypeError, "port"),
    ],
)
def test_bad_address(addr, exc, text):
    with pytest.raises(exc) as caught:
        peng3dnet_rs.ping_server(addr)
    assert text in str(caught.value)


@pytest.mark.parametrize("timeout", [0, -1, math.nan, 1e300])
def test_bad_timeout(timeout):
    with pytest.raises(ValueError, match="timeout"):
        peng3dnet_rs.ping_server("127.0.0.1:1", timeout=timeout)


def test_bad_data():
    with pytest.raises(TypeError, match="data must be a dict"):
        peng3dnet_rs.ping_server("127.0.0.1:1", data=[1, 2])
    with pytest.raises(TypeError, match=r"'set' \(at data\['a'\]\[1\]\['b'\]\)"):
        peng3dnet_rs.ping_server("127.0.0.1:1", data={"a": [0, {"b": {1}}]})
    with pytest.raises(TypeError, match=r"'object'"):
        peng3dnet_rs.ping_server("127.0.0.1:1", data={object(): 1})
    with pytest.raises(OverflowError, match=r"at data\['n'\]"):
        peng3dnet_rs.ping_server("127.0.0.1:1", data={"n": 2**64})
    with pytest.raises(OverflowError):
        peng3dnet_rs.ping_server("127.0.0.1:1", data={"n": -(2**63) - 1})
    looped = {}
    looped["self"] = looped
    with pytest.raises(ValueError, match="nested"):
        peng3dnet_rs.ping_server("127.0.0.1:1", data=looped)


@pytest.mark.parametrize(
    "tls, exc",
    [
        ("yes", ValueError),
        (5, TypeError),
        ({"bogus": 1}, ValueError),
        ({"ca": "x.pem", "cert": "c.pem"}, ValueError),
        ({"cert": "c.pem", "key": "k.pem"}, ValueError),
        ({"insecure": True, "ca": "x.pem"}, ValueError),
    ],
)
def test_bad_tls_argument(tls, exc):
    with pytest.raises(exc):
        peng3dnet_rs.ping_server("127.0.0.1:1", tls=tls)


def test_missing_ca_file_is_a_tls_error(tmp_path):
    with pytest.raises(peng3dnet_rs.TlsError) as caught:
        peng3dnet_rs.ping_server("127.0.0.1:1", tls={"ca": str(tmp_path / "missing.pem")})
    assert "missing.pem" in str(caught.value)


@pytest.mark.parametrize(
    "addr, text",
    [
        (("127.0.0.1", 70000), "port 70000 is out of range"),
        ("127.0.0.1:70000", "port 70000 is out of range"),
        (("127.0.0.1", 0), "port 0"),
        ("127.0.0.1:0", "port 0"),
        (("", 80), "invalid target"),
    ],
)
def test_a_bad_port_or_host_is_one_error_whatever_the_form(addr, text):
    # One rule: a tuple's bad port raised ValueError, the same port in a string
    # ResolveError.
    with pytest.raises(peng3dnet_rs.ResolveError) as caught:
        peng3dnet_rs.ping_server(addr, timeout=5)
    assert text in str(caught.value)


def test_ping_errors_are_runtime_errors_as_the_originals_were():
    # The original's FailedPingError is a RuntimeError; handlers written for it must
    # keep catching.
    assert issubclass(peng3dnet_rs.PingError, RuntimeError)
    with pytest.raises(RuntimeError):
        peng3dnet_rs.ping_server("host:notaport", timeout=5)


def test_help_shows_the_default_timeout():
    assert "timeout=10.0" in (peng3dnet_rs.ping_server.__text_signature__ or "")
