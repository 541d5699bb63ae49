"""PingSession and AsyncPingSession: one connection, many pings (the seed's
PingableClientMixin: setPingData, wait_for_pong)."""

import _thread
import asyncio
import queue
import threading
import time

import pytest

import peng3dnet_rs
from helpers import HELLO, FakeServer, drain, frame, free_port, read_frame

LOCAL = ("127.0.0.1", 0)


class HeldPongs:
    """A fake server's script: hello, then for every ping a pong sent only when the test
    calls ``release()``; ``sent`` gets the ping's body once its pong is on the wire.
    Returns the frames read after the last ping (the client's closeconn)."""

    def __init__(self):
        self.permits = threading.Semaphore(0)
        self.sent = queue.Queue()
        self.pings = queue.Queue()

    def release(self, n=1):
        for _ in range(n):
            self.permits.release()

    def __call__(self, conn):
        conn.sendall(frame(1, HELLO))
        assert read_frame(conn) == (2, {"conntype": "ping"})
        while True:
            got = read_frame(conn)
            if got is None or got[0] != 64:
                rest = [got] if got is not None else []
                drain(conn)
                return rest
            self.pings.put(got[1])
            self.permits.acquire()
            conn.sendall(frame(65, {"oldmsg": got[1], "name": "held"}))
            self.sent.put(got[1])


def test_many_pings_on_one_connection_each_with_its_delay_and_recvtime():
    with peng3dnet_rs.PingServer(LOCAL, data={"name": "s"}) as server:
        with peng3dnet_rs.PingSession(server.address, data={"x": 1}) as session:
            replies = [session.ping() for _ in range(5)]
            assert not session.closed
            assert session.peer == server.address
        assert session.closed
        stats = server.stats
    assert stats["accepted"] == 1 and stats["pings"] == 5
    assert [r["oldmsg"]["seq"] for r in replies] == [0, 1, 2, 3, 4]
    assert all(r["name"] == "s" and r["oldmsg"]["x"] == 1 for r in replies)
    recvtimes = [r["recvtime"] for r in replies]
    assert recvtimes == sorted(recvtimes) and len(set(recvtimes)) == 5
    for r in replies:
        # The delay of this ping, not of the session: at most its own send-to-receive.
        assert 0 < r["delay"] <= r["recvtime"] - r["oldmsg"]["time"] + 0.01
        assert r["delay"] < 1


def test_set_ping_data_changes_later_pings_and_ping_data_only_that_one():
    with peng3dnet_rs.PingServer(LOCAL) as server:
        with peng3dnet_rs.PingSession(server.address, data={"a": 1}) as session:
            first = session.ping()
            session.set_ping_data({"b": 2})
            second = session.ping()
            one_off = session.ping(data={"c": 3})
            after = session.ping()
            with pytest.raises(TypeError):
                session.set_ping_data(["not", "a", "dict"])
            still = session.ping()
    echo = lambda r: {k: v for k, v in r["oldmsg"].items() if k not in ("time", "seq")}
    assert [echo(r) for r in (first, second, one_off, after, still)] == [
        {"a": 1}, {"b": 2}, {"c": 3}, {"b": 2}, {"b": 2}
    ]


def test_wait_for_pong_returns_at_once_when_the_pong_already_came_and_again_until_the_next_ping():
    held = HeldPongs()
    with FakeServer(held) as fake:
        with peng3dnet_rs.PingSession(fake.address, timeout=5) as session:
            seq = session.send_ping(data={"k": "v"})
            held.release()
            assert held.sent.get(timeout=5)["seq"] == seq  # the pong is on its way
            start = time.monotonic()
            first = session.wait_for_pong(timeout=2)
            again = session.wait_for_pong(timeout=0.001)  # no wait at all: the same pong
            assert time.monotonic() - start < 1
            assert first == again and first["oldmsg"]["k"] == "v" and first["name"] == "held"
            assert "recvtime" in first and "delay" in first
        frames = fake.join()
    assert frames == [[(16, {"reason": "pingcomplete"})]]


def test_wait_for_pong_none_waits_past_the_session_timeout_until_the_pong():
    held = HeldPongs()
    with FakeServer(held) as fake:
        with peng3dnet_rs.PingSession(fake.address, timeout=0.2) as session:
            session.send_ping()
            result = queue.Queue()
            waiter = threading.Thread(target=lambda: result.put(session.wait_for_pong(None)))
            waiter.start()
            waiter.join(1.0)  # five times the session's timeout
            assert waiter.is_alive(), "wait_for_pong(None) gave up: %r" % (result.queue,)
            held.release()
            waiter.join(5)
            assert not waiter.is_alive()
            assert result.get_nowait()["name"] == "held"


def test_ctrl_c_interrupts_wait_for_pong_none_and_the_pong_is_still_collected():
    held = HeldPongs()
    with FakeServer(held) as fake:
        with peng3dnet_rs.PingSession(fake.address, timeout=5) as session:
            session.send_ping(data={"n": 7})
            held.pings.get(timeout=5)
            threading.Timer(0.2, _thread.interrupt_main).start()
            start = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                session.wait_for_pong(None)
            assert time.monotonic() - start < 5
            assert not session.closed
            held.release()
            assert session.wait_for_pong(5)["oldmsg"]["n"] == 7


def test_the_gil_is_released_while_waiting():
    held = HeldPongs()
    with FakeServer(held) as fake:
        with peng3dnet_rs.PingSession(fake.address, timeout=5) as session:
            session.send_ping()
            held.pings.get(timeout=5)
            outcome = queue.Queue()

            def wait():
                try:
                    outcome.put(session.wait_for_pong(3))
                except Exception as exc:
                    outcome.put(exc)

            waiter = threading.Thread(target=wait)
            waiter.start()
            # Python keeps running here (0.5 s of bytecode) while the other thread waits;
            # had the wait kept the GIL, this loop and the fake server's thread would
            # stand still and the wait would end in PingTimeout after its 3 s.
            spins, until = 0, time.monotonic() + 0.5
            while time.monotonic() < until:
                spins += 1
            held.release()
            waiter.join(10)
            result = outcome.get_nowait()
    assert isinstance(result, dict) and result["name"] == "held", result
    assert spins > 1000


def test_a_timeout_leaves_the_session_open_and_the_late_pong_is_skipped():
    held = HeldPongs()
    with FakeServer(held) as fake:
        with peng3dnet_rs.PingSession(fake.address, timeout=5) as session:
            with pytest.raises(peng3dnet_rs.PingTimeout) as caught:
                session.ping(data={"i": 0}, timeout=0.3)
            assert caught.value.phase == "waiting for pong"
            assert isinstance(caught.value, TimeoutError) and not session.closed
            held.release(2)  # the late pong of ping 0, then the pong of ping 1
            reply = session.ping(data={"i": 1}, timeout=5)
            assert reply["oldmsg"]["i"] == 1 and reply["oldmsg"]["seq"] == 1


def test_the_servers_close_reason_is_raised_and_later_calls_say_the_session_is_closed():
    def one_pong_then_shutdown(conn):
        conn.sendall(frame(1, HELLO))
        read_frame(conn)
        conn.sendall(frame(65, {"oldmsg": read_frame(conn)[1]}))
        conn.sendall(frame(16, {"reason": "servershutdown"}))  # as a server that stops
        return drain(conn)

    with FakeServer(one_pong_then_shutdown) as fake:
        session = peng3dnet_rs.PingSession(fake.address)
        assert session.ping()["oldmsg"]["seq"] == 0
        with pytest.raises(peng3dnet_rs.ClosedByServer) as caught:
            session.ping(timeout=5)
        assert fake.join() == [True]
    assert caught.value.reason == "servershutdown"
    assert isinstance(caught.value, ConnectionError)
    assert session.closed
    with pytest.raises(peng3dnet_rs.SessionClosed, match="servershutdown"):
        session.ping()
    with pytest.raises(peng3dnet_rs.SessionClosed):
        session.wait_for_pong(1)
    session.close()  # closing a closed session does nothing


def test_closing_from_another_thread_ends_a_wait_without_limit():
    held = HeldPongs()
    with FakeServer(held) as fake:
        session = peng3dnet_rs.PingSession(fake.address)
        session.send_ping()
        held.pings.get(timeout=5)
        threading.Timer(0.2, session.close).start()
        start = time.monotonic()
        with pytest.raises(peng3dnet_rs.SessionClosed):
            session.wait_for_pong(None)
        assert time.monotonic() - start < 5
        assert session.closed
        held.release()
        frames = fake.join()
    assert frames == [[(16, {"reason": "pingcomplete"})]]


def test_several_threads_share_one_session_without_mixing_pongs():
    with peng3dnet_rs.PingServer(LOCAL) as server:
        with peng3dnet_rs.PingSession(server.address) as session:
            results = queue.Queue()

            def worker(t):
                for i in range(25):
                    reply = session.ping(data={"t": t, "i": i}, timeout=10)
                    results.put((t, i, reply["oldmsg"]))

            threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        stats = server.stats
    got = list(results.queue)
    assert len(got) == 200
    # Each thread got the pong of its own ping, and every ping had its own sequence number.
    assert all(echo["t"] == t and echo["i"] == i for t, i, echo in got)
    assert sorted(echo["seq"] for _, _, echo in got) == list(range(200))
    assert stats["accepted"] == 1 and stats["pings"] == 200


def test_a_waiter_in_another_thread_gets_the_same_pong():
    held = HeldPongs()
    with FakeServer(held) as fake:
        with peng3dnet_rs.PingSession(fake.address) as session:
            session.send_ping(data={"only": 1})
            held.pings.get(timeout=5)
            got = queue.Queue()
            waiters = [threading.Thread(target=lambda: got.put(session.wait_for_pong(10))) for _ in range(3)]
            for w in waiters:
                w.start()
            held.release()
            for w in waiters:
                w.join(10)
    replies = list(got.queue)
    assert len(replies) == 3 and all(r == replies[0] for r in replies)
    assert replies[0]["oldmsg"]["only"] == 1


def test_set_ping_data_does_not_wait_for_a_call_in_flight():
    held = HeldPongs()
    with FakeServer(held) as fake:
        with peng3dnet_rs.PingSession(fake.address, data={"v": 1}) as session:
            session.send_ping()
            held.pings.get(timeout=5)
            waiter = threading.Thread(target=lambda: session.wait_for_pong(10))
            waiter.start()
            start = time.monotonic()
            session.set_ping_data({"v": 2})  # the waiter holds the session: no matter
            assert time.monotonic() - start < 1
            held.release(2)
            waiter.join(10)
            assert session.ping(timeout=5)["oldmsg"]["v"] == 2


def test_a_call_waiting_for_a_busy_session_times_out_clearly():
    held = HeldPongs()
    with FakeServer(held) as fake:
        with peng3dnet_rs.PingSession(fake.address) as session:
            first = queue.Queue()
            holder = threading.Thread(target=lambda: first.put(session.ping(data={"who": "holder"}, timeout=10)))
            holder.start()
            # Its ping reached the server: the holder has the session until its pong.
            assert held.pings.get(timeout=5)["who"] == "holder"
            start = time.monotonic()
            with pytest.raises(peng3dnet_rs.PingTimeout) as caught:
                session.ping(data={"who": "late"}, timeout=0.3)
            assert caught.value.phase == "waiting for the session"
            assert "another call" in str(caught.value)
            assert 0.25 <= time.monotonic() - start < 5
            held.release()
            holder.join(10)
            assert first.get_nowait()["oldmsg"]["who"] == "holder"
            assert held.pings.empty()  # the late ping was never sent


def test_misuse_and_connect_failures():
    with pytest.raises(peng3dnet_rs.ConnectionRefused):
        peng3dnet_rs.PingSession(("127.0.0.1", free_port()), timeout=5)
    with pytest.raises(ValueError):
        peng3dnet_rs.PingSession("127.0.0.1:1", timeout=0)
    with pytest.raises(TypeError):
        peng3dnet_rs.PingSession(42)
    with peng3dnet_rs.PingServer(LOCAL) as server:
        with peng3dnet_rs.PingSession(server.address) as session:
            with pytest.raises(RuntimeError, match="no ping was sent"):
                session.wait_for_pong(1)
            with pytest.raises(ValueError):
                session.wait_for_pong(-1)
            assert "open" in repr(session)
        assert "closed" in repr(session)
        with pytest.raises(peng3dnet_rs.SessionClosed, match="closed"):
            session.ping()


def test_sessions_against_the_reference_server(ref_server):
    with peng3dnet_rs.PingSession(("127.0.0.1", ref_server), data={"x": 5}) as session:
        first = session.ping()
        session.set_ping_data({"x": 6})
        second = session.ping()
    assert first["name"] == second["name"] == "ref-server"
    assert (first["echo_x"], second["echo_x"]) == (5, 6)
    assert first["oldmsg"]["seq"] == 0 and second["oldmsg"]["seq"] == 1


# ---- asyncio ----


def test_async_session_pings_sets_data_and_waits():
    async def main(address):
        async with peng3dnet_rs.AsyncPingSession(address, data={"a": 1}) as session:
            first = await session.ping()
            await session.set_ping_data({"b": 2})
            seq = await session.send_ping()
            pong = await session.wait_for_pong(5)
            again = await session.wait_for_pong(0.001)
            one_off = await session.ping(data={"c": 3})
            # Tasks of one loop share the session; each gets its own pong.
            many = await asyncio.gather(*(session.ping(data={"i": i}) for i in range(20)))
        return first, seq, pong, again, one_off, many, session

    with peng3dnet_rs.PingServer(LOCAL) as server:
        first, seq, pong, again, one_off, many, session = asyncio.run(main(server.address))
        assert server.stats["accepted"] == 1
    assert first["oldmsg"]["a"] == 1 and seq == 1
    assert pong["oldmsg"]["b"] == 2 and pong["oldmsg"]["seq"] == 1 and again == pong
    assert one_off["oldmsg"]["c"] == 3 and "b" not in one_off["oldmsg"]
    assert [r["oldmsg"]["i"] for r in many] == list(range(20))
    assert session.closed


def test_async_cancelled_wait_keeps_the_pong_and_errors_are_the_packages():
    held = HeldPongs()

    async def main(address):
        session = await peng3dnet_rs.AsyncPingSession(address).connect()
        await session.send_ping(data={"n": 1})
        task = asyncio.ensure_future(session.wait_for_pong(None))
        await asyncio.sleep(0)  # let it start waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        held.release()
        reply = await session.wait_for_pong(5)
        with pytest.raises(peng3dnet_rs.PingTimeout):
            await session.ping(timeout=0.2)
        held.release()  # its pong, so that the fake server reads our closeconn at once
        await session.close()
        with pytest.raises(peng3dnet_rs.SessionClosed):
            await session.ping()
        return reply

    with FakeServer(held) as fake:
        reply = asyncio.run(main(fake.address))
    assert reply["oldmsg"]["n"] == 1


def test_async_session_before_connect_and_when_refused():
    async def main():
        session = peng3dnet_rs.AsyncPingSession(("127.0.0.1", free_port()), timeout=5)
        assert not session.closed and session.peer is None
        with pytest.raises(peng3dnet_rs.SessionClosed, match="not connected"):
            await session.ping()
        with pytest.raises(peng3dnet_rs.ConnectionRefused):
            await session.connect()
        assert session.closed
        with pytest.raises(peng3dnet_rs.SessionClosed, match="could not connect"):
            await session.ping()
        with pytest.raises(RuntimeError, match="already"):
            await session.connect()

    asyncio.run(main())
