"""msgpack values to Python and back, and Ctrl-C during a blocking ping."""

import _thread
import math
import time

import msgpack
import pytest

import peng3dnet_rs
from helpers import HELLO, FakeServer, drain, frame, read_frame

LOCAL = ("127.0.0.1", 0)


@pytest.fixture(scope="module")
def echo_server():
    with peng3dnet_rs.PingServer(LOCAL) as server:
        yield server


def echo(server, data):
    return peng3dnet_rs.ping_server(server.address, data=data, timeout=5)["oldmsg"]


def test_python_types_map_to_msgpack_types(echo_server):
    got = echo(echo_server, {
        "tuple": (1, "a"),
        "bytearray": bytearray(b"\x00\x01"),
        "min": -(2**63),
        "max": 2**64 - 1,
        "inf": math.inf,
        "unicode": "日本語 ✓",
        "empty": {},
        "int_keys": {1: "one", -2: "minus two"},
        "nested": [[[]]],
    })
    assert got["tuple"] == [1, "a"]  # msgpack has one sequence type
    assert got["bytearray"] == b"\x00\x01" and type(got["bytearray"]) is bytes
    assert got["min"] == -(2**63) and got["max"] == 2**64 - 1
    assert got["inf"] == math.inf
    assert got["unicode"] == "日本語 ✓"
    assert got["empty"] == {}
    assert got["int_keys"] == {1: "one", -2: "minus two"}
    assert got["nested"] == [[[]]]


def test_nan_and_bool_keep_their_types(echo_server):
    got = echo(echo_server, {"nan": math.nan, "t": True, "f": False, "zero": 0})
    assert math.isnan(got["nan"])
    assert got["t"] is True and got["f"] is False
    assert got["zero"] == 0 and type(got["zero"]) is int


def test_odd_msgpack_from_a_server():
    """What msgpack can carry but Python dicts and str cannot hold as such."""
    pong = (
        b"\x84"
        + msgpack.packb("bad_utf8") + b"\xa2\xff\xfe"  # a str that is not UTF-8
        + msgpack.packb("ext") + msgpack.packb(msgpack.ExtType(5, b"xyz"))
        + msgpack.packb("array_key") + b"\x81" + msgpack.packb([1, 2]) + msgpack.packb("v")
        + msgpack.packb("f32") + b"\xca\x3f\xc0\x00\x00"  # float32 1.5
    )

    def server(conn):
        conn.sendall(frame(1, HELLO))
        read_frame(conn)
        read_frame(conn)
        conn.sendall((len(pong) + 6).to_bytes(4, "big") + (65).to_bytes(4, "big") + b"\x00\x00" + pong)
        return drain(conn)

    with FakeServer(server) as fake:
        reply = peng3dnet_rs.ping_server(fake.address, timeout=5)
    assert reply["bad_utf8"] == b"\xff\xfe"
    assert reply["ext"] == (5, b"xyz")
    assert reply["array_key"] == {(1, 2): "v"}
    assert reply["f32"] == 1.5
    assert "oldmsg" not in reply and reply["delay"] >= 0


def test_ctrl_c_interrupts_a_blocking_ping():
    def interrupt(conn):
        _thread.interrupt_main()  # as if Ctrl-C was pressed while the ping waits
        return drain(conn)

    with FakeServer(interrupt) as fake:
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            peng3dnet_rs.ping_server(fake.address, timeout=30)
        assert time.monotonic() - start < 10
        assert fake.join() == [True]  # the connection was closed, not leaked
