"""ping_many: every target once, results as they come, bounded concurrency, cancellation."""

import asyncio
import gc
import time

import pytest

import peng3dnet_rs
from helpers import FakeServer, drain, free_port

LOCAL = ("127.0.0.1", 0)


def test_mixed_targets_each_yield_one_result():
    with peng3dnet_rs.PingServer(LOCAL, data={"name": "a"}) as server:
        refused = ("127.0.0.1", free_port())
        by_string = "127.0.0.1:%d" % server.port
        targets = [server.address, refused, "host:notaport", by_string]
        many = peng3dnet_rs.ping_many(targets, timeout=5)
        assert many.total == 4
        results = {r.index: r for r in many}
    assert sorted(results) == [0, 1, 2, 3]
    assert results[0].ok and results[0].reply["name"] == "a"
    assert results[3].ok and results[3].target == by_string
    assert isinstance(results[1].error, peng3dnet_rs.ConnectionRefused)
    assert results[1].reply is None and results[1].target == refused
    assert isinstance(results[2].error, peng3dnet_rs.ResolveError)
    assert results[0].result()["name"] == "a"
    with pytest.raises(peng3dnet_rs.ConnectionRefused):
        results[1].result()
    assert "ok=False" in repr(results[1]) and "ConnectionRefused" in repr(results[1])


def test_results_come_as_they_complete():
    """A fast target's result comes before a slow one's, whatever the input order."""
    with FakeServer(drain) as silent, peng3dnet_rs.PingServer(LOCAL) as server:
        many = peng3dnet_rs.ping_many([silent.address, server.address], timeout=1, concurrency=2)
        first = next(many)
        second = next(many)
        with pytest.raises(StopIteration):
            next(many)
    assert (first.index, first.ok) == (1, True)
    assert second.index == 0 and isinstance(second.error, peng3dnet_rs.PingTimeout)


def test_concurrency_is_bounded():
    """4 silent targets, 2 at a time, 0.4 s each: at least two rounds."""
    with FakeServer(drain, connections=4) as silent:
        start = time.monotonic()
        results = list(peng3dnet_rs.ping_many([silent.address] * 4, timeout=0.4, concurrency=2))
        elapsed = time.monotonic() - start
    assert len(results) == 4
    assert all(isinstance(r.error, peng3dnet_rs.PingTimeout) for r in results)
    assert elapsed >= 0.75


@pytest.mark.parametrize("how", ["close", "drop"])
def test_close_or_drop_cancels_what_is_running(how):
    with FakeServer(drain, connections=3) as silent:
        many = peng3dnet_rs.ping_many([silent.address] * 3, timeout=30, concurrency=3)
        assert silent.wait_accepted(3)
        start = time.monotonic()
        if how == "close":
            many.close()
            assert list(many) == []
        else:
            del many
            gc.collect()
        # Every connection gets closed: the fake's drains all end, long before the timeout.
        assert silent.join(timeout=10) == [True, True, True]
        assert time.monotonic() - start < 10


def test_async_iteration():
    async def main():
        with peng3dnet_rs.PingServer(LOCAL, data={"n": 2}) as server:
            return [r async for r in peng3dnet_rs.ping_many([server.address] * 5, timeout=5)]

    results = asyncio.run(main())
    assert sorted(r.index for r in results) == [0, 1, 2, 3, 4]
    assert all(r.ok and r.reply["n"] == 2 for r in results)


def test_bad_arguments():
    with pytest.raises(ValueError, match="concurrency"):
        peng3dnet_rs.ping_many(["127.0.0.1:1"], concurrency=0)
    with pytest.raises(TypeError):
        peng3dnet_rs.ping_many(["127.0.0.1:1", 5])
    with pytest.raises(TypeError):
        peng3dnet_rs.ping_many(5)
    assert list(peng3dnet_rs.ping_many([])) == []
