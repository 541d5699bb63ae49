"""PingServer: the dynamic callable runs off the network threads, under a deadline.

A callable that blocks or is slow must not stall the server: other pings are answered
with the static data once ``callback_timeout`` passes, new connections get their hello,
``stop()`` returns, and the late answers are logged without flooding the log.
"""

import logging
import socket
import threading
import time

import pytest

import peng3dnet_rs
from helpers import frame, read_frame

LOCAL = ("127.0.0.1", 0)
STATIC = {"name": "static"}

# What a loaded two-core machine may add to the deadline: waking the waiting ping,
# writing the pong, the client reading it.
SLACK = 0.5

# Long enough for anything that is not stuck.
BOUND = 15


class Records(logging.Handler):
    """Keeps the records of the package's logger; lets a test wait for them."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []
        self.cond = threading.Condition()

    def emit(self, record):
        with self.cond:
            self.records.append(record)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.records), timeout)

    def messages(self):
        with self.cond:
            return [r.getMessage() for r in self.records]


@pytest.fixture
def records():
    logger = logging.getLogger("peng3dnet_rs")
    handler = Records()
    old_level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def blocking_callable():
    """A callable that blocks until ``release`` is set; ``entered`` is set once called."""
    entered = threading.Event()
    release = threading.Event()

    def dynamic(msg, cid):
        entered.set()
        release.wait()
        return {"late": True}

    return dynamic, entered, release


def within(seconds, what, fn, *args, **kwargs):
    """Runs ``fn`` on a thread; its result, or a test failure if it does not return within
    ``seconds`` (a stalled server must fail the test, not hang it)."""
    outcome = {}

    def run():
        try:
            outcome["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(seconds)
    if runner.is_alive():
        pytest.fail("%s did not return within %s s" % (what, seconds))
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def assert_static_only(reply):
    assert reply["name"] == "static"
    assert "late" not in reply


def test_a_blocked_callback_stalls_neither_pings_nor_hellos_nor_stop(records):
    dynamic, entered, release = blocking_callable()
    server = peng3dnet_rs.PingServer(LOCAL, data=STATIC, dynamic=dynamic)  # default deadline
    deadline = 1.0
    server.start()
    try:
        # The first ping's callable blocks: its pong comes at the deadline, static only.
        first = within(BOUND, "the first ping", peng3dnet_rs.ping_server, server.address, timeout=BOUND)
        assert entered.is_set()
        assert_static_only(first)
        assert first["delay"] < deadline + SLACK

        # Ten other clients at once, while that call is still blocked.
        results = within(
            BOUND,
            "ten other pings",
            lambda: list(peng3dnet_rs.ping_many([server.address] * 10, concurrency=10, timeout=BOUND)),
        )
        assert len(results) == 10
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        for r in results:
            assert_static_only(r.reply)
            assert r.reply["delay"] < deadline + SLACK

        # A new connection gets its hello.
        with socket.create_connection(server.address, timeout=BOUND) as conn:
            hello = read_frame(conn)
            assert hello is not None and hello[0] == 1

        # Eleven late answers, one warning (rate-limited), naming the deadline.
        assert records.wait_for(lambda rs: len(rs) >= 1, BOUND), "no warning was logged"
        late = [m for m in records.messages() if "static data" in m]
        assert len(late) == 1, late
        assert "callback_timeout" in late[0]
        assert all(r.levelno == logging.WARNING for r in records.records)

        # stop() returns although the callable still blocks (its call is abandoned).
        within(BOUND, "stop() while the callable blocks", server.stop)
        assert not server.running
    finally:
        release.set()
        server.stop()


@pytest.mark.parametrize(
    "kwargs", [{}, {"callback_timeout": 60.0}], ids=["default-deadline", "deadline-60s"]
)
def test_stop_returns_while_a_ping_waits_for_a_blocked_callback(kwargs):
    """stop() does not wait for the deadline: the waiting ping is released at once."""
    dynamic, entered, release = blocking_callable()
    server = peng3dnet_rs.PingServer(LOCAL, data=STATIC, dynamic=dynamic, **kwargs)
    server.start()
    try:
        with socket.create_connection(server.address, timeout=BOUND) as conn:
            assert read_frame(conn)[0] == 1  # hello
            conn.sendall(frame(2, {"conntype": "ping"}))
            conn.sendall(frame(64, {"time": time.time(), "seq": 1}))
            assert entered.wait(BOUND), "the callable was not called"
            # A shorter bound than the 60 s deadline: stop() must not wait for it.
            within(10, "stop() while a ping waits for the callable", server.stop)
            # The ping got a pong with the static data, or the connection was closed.
            frames = []
            while True:
                got = read_frame(conn)
                if got is None:
                    break
                frames.append(got)
                if got[0] == 16:
                    break
            for pid, body in frames:
                assert pid in (16, 65), frames
                if pid == 65:
                    assert_static_only(body)
            assert frames and frames[-1] == (16, {"reason": "servershutdown"}), frames
    finally:
        release.set()
        server.stop()


def test_a_50ms_callback_under_40_clients_keeps_pings_within_the_deadline():
    """40 clients pinging at once a server whose callable takes 50 ms (it waits, as a
    query would): no ping waits for it longer than the deadline, each pong carries either
    its dynamic data or the static data alone, and the callable runs on several threads."""
    timeout = 0.25
    lock = threading.Lock()
    threads = set()

    def dynamic(msg, cid):
        with lock:
            threads.add(threading.get_ident())
        time.sleep(0.05)  # the callable's own work, not a synchronisation
        return {"dynamic": True}

    server = peng3dnet_rs.PingServer(LOCAL, data=STATIC, dynamic=dynamic, callback_timeout=timeout)
    replies = []
    with server:
        for _ in range(3):
            results = list(
                peng3dnet_rs.ping_many([server.address] * 40, concurrency=40, timeout=BOUND)
            )
            assert len(results) == 40
            assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
            replies += [r.reply for r in results]
    delays = sorted(r["delay"] for r in replies)
    assert delays[-1] < timeout + SLACK, delays[-5:]
    assert all(r["name"] == "static" for r in replies)
    answered = sum(1 for r in replies if r.get("dynamic") is True)
    assert answered >= 1
    assert len(threads) > 1, "the callable ran on one thread only"


def test_callback_timeout_default_and_validation():
    assert peng3dnet_rs.PingServer(LOCAL).callback_timeout == 1.0
    assert peng3dnet_rs.PingServer(LOCAL, callback_timeout=0.5).callback_timeout == 0.5
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="callback_timeout"):
            peng3dnet_rs.PingServer(LOCAL, callback_timeout=bad)


def test_a_quick_callback_still_answers_with_its_data():
    with peng3dnet_rs.PingServer(
        LOCAL, data=STATIC, dynamic=lambda m, c: {"seen": m.get("x")}, callback_timeout=5
    ) as server:
        reply = peng3dnet_rs.ping_server(server.address, data={"x": 7})
        # Restartable: the callable is called again after stop() and start().
        server.stop()
        server.start()
        again = peng3dnet_rs.ping_server(server.address, data={"x": 8})
    assert reply["seen"] == 7 and reply["name"] == "static"
    assert again["seen"] == 8
