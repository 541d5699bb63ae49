"""peng3dnet_rs.compat: the original's names (pingServer, WRITEBACK, FailedPingError,
PingableServerMixin with pingdata and getPingData, net.Server) on this package."""

import inspect
import time
import warnings

import pytest

import peng3dnet_rs
from peng3dnet_rs.compat import CompatWarning, _util
from peng3dnet_rs.compat import errors as compat_errors
from peng3dnet_rs.compat import net, ping
from helpers import HELLO, FakeServer, drain, free_port, read_frame
from test_tls import certs  # noqa: F401  (the fixture)

LOCAL = ("127.0.0.1", 0)


@pytest.fixture(autouse=True)
def fresh_warnings_and_writeback():
    """Each test sees the warn-once state and WRITEBACK as a new process would."""
    _util._warned.clear()
    yield
    _util._warned.clear()
    ping.WRITEBACK = True


class Demo(ping.PingableServerMixin, net.Server):
    pingdata = {"name": "demo", "motd": "hi"}

    def getPingData(self, msg, cid):
        return {"cid": cid, "x": msg.get("x"), "name": "loses to pingdata"}


@pytest.fixture
def demo():
    server = Demo(addr=LOCAL)
    server.runAsync()
    server.process_async()
    yield server
    server.shutdown()


def test_the_seeds_signatures():
    sig = inspect.signature(ping.pingServer)
    assert list(sig.parameters) == ["peng", "addr", "cfg", "data", "clientcls", "timeout"]
    assert sig.parameters["timeout"].default == 10.0
    assert all(sig.parameters[p].default is None for p in ["peng", "addr", "cfg", "data", "clientcls"])
    assert list(inspect.signature(net.Server).parameters) == ["peng", "addr", "clientcls", "cfg"]
    assert list(inspect.signature(ping.PingableServerMixin.getPingData).parameters) == ["self", "msg", "cid"]
    assert ping.PingableServerMixin.pingdata == {} and ping.PingableServerMixin().getPingData({}, 1) == {}
    assert ping.WRITEBACK is True
    # As in the original module, errors and net are reachable through ping.
    assert ping.errors.FailedPingError is compat_errors.FailedPingError is ping.FailedPingError
    assert ping.net is net


def test_ping_server_returns_the_seeds_dict_and_writes_the_time_back(demo):
    data = {"x": 4}
    reply = ping.pingServer(addr=demo.addr, data=data, timeout=5.0)
    assert reply["name"] == "demo" and reply["motd"] == "hi"  # pingdata wins over getPingData
    assert reply["x"] == 4 and isinstance(reply["cid"], int)
    assert reply["oldmsg"]["x"] == 4
    assert {"recvtime", "delay", "peng3dnet", "oldmsg"} <= set(reply)
    assert 0 <= reply["delay"] < 5
    # The original sets the caller's data["time"] to the time sent.
    assert data["time"] == reply["oldmsg"]["time"]
    # Its other address forms: "host:port", and the cfg's client address keys.
    assert ping.pingServer(addr="%s:%d" % demo.addr)["name"] == "demo"
    host, port = demo.addr
    cfg = {"net.client.addr.host": host, "net.client.addr.port": port}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these keys are honoured: no warning
        assert ping.pingServer(cfg=cfg, timeout=None)["name"] == "demo"  # None: no limit


def test_pingdata_and_getpingdata_behave_as_the_mixins(demo):
    assert ping.pingServer(addr=demo.addr)["motd"] == "hi"
    demo.pingdata = {"name": "demo", "motd": "assigned"}
    assert ping.pingServer(addr=demo.addr)["motd"] == "assigned"
    demo.pingdata["motd"] = "changed in place"
    assert ping.pingServer(addr=demo.addr)["motd"] == "changed in place"

    class Plain(ping.PingableServerMixin, net.Server):
        pingdata = {"only": "static"}

    plain = Plain(addr=LOCAL)
    plain.runAsync()
    try:
        reply = ping.pingServer(addr=plain.addr)
    finally:
        plain.shutdown()
    assert reply["only"] == "static" and "x" not in reply


def test_writeback_is_read_when_a_server_starts():
    ping.WRITEBACK = False
    server = Demo(addr=LOCAL)
    server.runAsync()
    try:
        reply = ping.pingServer(addr=server.addr, data={"x": 1})
    finally:
        server.shutdown()
    assert "oldmsg" not in reply and reply["x"] == 1 and reply["delay"] >= 0


def test_failures_are_failed_ping_errors_and_the_packages_own():
    with pytest.raises(ping.errors.FailedPingError) as caught:
        ping.pingServer(addr=("127.0.0.1", free_port()), timeout=5)
    e = caught.value
    assert isinstance(e, compat_errors.TimedOutError) and isinstance(e, RuntimeError)
    assert isinstance(e, peng3dnet_rs.ConnectionRefused) and isinstance(e, ConnectionRefusedError)
    assert e.errno == 111 and "refused" in str(e)

    with FakeServer(lambda conn: drain(conn)) as fake:  # connects, never says hello
        start = time.monotonic()
        with pytest.raises(ping.errors.FailedPingError) as caught:
            ping.pingServer(addr=fake.address, timeout=0.3)
        assert time.monotonic() - start < 5
    assert isinstance(caught.value, peng3dnet_rs.PingTimeout) and isinstance(caught.value, TimeoutError)
    assert caught.value.phase == "waiting for hello"


def test_ignored_arguments_warn_once_naming_what_is_ignored(demo):
    with pytest.warns(CompatWarning) as record:
        for _ in range(3):
            ping.pingServer(peng=object(), addr=demo.addr, clientcls=object, cfg={"net.events.enable": True})
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 3, messages  # once each, not three times
    assert any("peng=" in m for m in messages)
    assert any("clientcls=" in m for m in messages)
    assert any("'net.events.enable'" in m for m in messages)
    with pytest.warns(CompatWarning, match="Server\\(peng=") as record:
        Demo(peng=object(), addr=LOCAL)
    assert len(record) == 1


def test_tls_from_the_original_ssl_keys(certs):  # noqa: F811
    cfg = {"net.ssl.enabled": True, "net.ssl.server.certfile": str(certs["cert"]), "net.ssl.server.keyfile": str(certs["key"])}
    server = Demo(addr=LOCAL, cfg=cfg)
    server.runAsync()
    try:
        reply = ping.pingServer(addr=server.addr, cfg={"net.ssl.enabled": True, "net.ssl.cafile": str(certs["ca"])})
        assert reply["name"] == "demo"
        with pytest.raises(ping.errors.FailedPingError):  # plain TCP to a TLS server
            ping.pingServer(addr=server.addr, timeout=2)
    finally:
        server.shutdown()


def test_the_server_life_cycle():
    server = Demo(addr=("127.0.0.1", 0))
    assert not server.running
    server.bind()
    server.bind()  # idempotent, as the original's
    assert server.running and server.addr[1] != 0
    assert ping.pingServer(addr=server.addr)["name"] == "demo"
    assert not server.join(0.01)
    server.shutdown()
    assert server.join(0.01) and not server.running
    with pytest.raises(peng3dnet_rs.ConnectionRefused):
        ping.pingServer(addr=server.addr, timeout=5)

    with pytest.raises(TypeError, match="PingableServerMixin"):
        net.Server(addr=LOCAL).runAsync()  # only pings are served here


def test_run_blocking_serves_until_shutdown_from_another_thread():
    import threading

    server = Demo(addr=LOCAL)
    runner = threading.Thread(target=server.runBlocking)
    runner.start()
    while not server.running:  # bind() happens on the runner's thread
        runner.join(0.01)
    assert ping.pingServer(addr=server.addr, timeout=5)["name"] == "demo"
    with pytest.warns(CompatWarning, match="reason='bye'"):
        server.shutdown(reason="bye")
    runner.join(10)
    assert not runner.is_alive()


def test_interop_our_compat_client_and_the_reference_server(ref_server):
    reply = ping.pingServer(addr=("127.0.0.1", ref_server), data={"x": 9})
    assert reply["name"] == "ref-server" and reply["echo_x"] == 9


class PingClient(ping.PingableClientMixin, net.Client):
    pass


def test_the_client_mixin_pings_once_and_closes(demo):
    client = PingClient(None, demo.addr, {}, ping.CONNTYPE_PING)
    data = {"x": 3, "time": "__AUTO__"}
    client.setPingData(data)
    client.runAsync()
    client.wait_for_connection(5)
    msg = client.wait_for_pong(5)
    assert msg["name"] == "demo" and msg["x"] == 3 and msg["oldmsg"]["x"] == 3
    assert "delay" not in msg and "recvtime" not in msg  # the pong as it came, as the original
    assert client.wait_for_pong(0.001) is msg
    assert data["time"] == msg["oldmsg"]["time"]
    client.wait_for_close(5)  # closed after the pong, as the original's
    with pytest.raises(RuntimeError, match="already ran"):
        client.runAsync()


def test_the_client_mixins_failures_are_failed_ping_errors():
    client = PingClient(None, ("127.0.0.1", free_port()), {}, ping.CONNTYPE_PING)
    client.setPingData({})
    client.runAsync()
    start = time.monotonic()
    with pytest.raises(ping.errors.FailedPingError) as caught:
        client.wait_for_pong(30)
    assert time.monotonic() - start < 10  # at once, not after the 30 s
    assert isinstance(caught.value, ConnectionRefusedError)

    def hello_only(conn):
        from helpers import frame

        conn.sendall(frame(1, HELLO))
        return drain(conn)

    with FakeServer(hello_only) as fake:
        client = PingClient(None, fake.address, {}, ping.CONNTYPE_PING)
        client.setPingData({"x": 1})
        client.runAsync()
        with pytest.raises(ping.errors.FailedPingError, match="Timed out") as caught:
            client.wait_for_pong(0.3)
        assert isinstance(caught.value, peng3dnet_rs.PingTimeout)
        with pytest.warns(CompatWarning, match="reason='bye'"):
            client.close_connection(reason="bye")
        client.wait_for_close(5)
        assert fake.join() == [True]


def test_only_ping_clients():
    with pytest.raises(TypeError, match="ping connections only"):
        PingClient(None, ("127.0.0.1", 1), {}).runAsync()  # the classic conntype
    with pytest.raises(TypeError, match="ping connections only"):
        net.Client(None, ("127.0.0.1", 1), {}, ping.CONNTYPE_PING).runAsync()
