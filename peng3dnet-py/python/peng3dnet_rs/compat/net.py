"""``peng3dnet.net.Server`` and ``peng3dnet.net.Client`` of the original (0.1.3a0), for
pingable servers and pinging clients.

Subclass it with :class:`peng3dnet_rs.compat.ping.PingableServerMixin` as one does the
original's; it runs a :class:`peng3dnet_rs.PingServer` underneath (on the package's own
threads: ``process_async`` and friends have nothing left to do)::

    class MyServer(ping.PingableServerMixin, net.Server):
        pingdata = {"name": "my server"}

    server = MyServer(addr=("127.0.0.1", 8080))
    server.runAsync()
    server.process_async()
    ...
    server.shutdown()

``Client`` with :class:`peng3dnet_rs.compat.ping.PingableClientMixin` and
``conntype=CONNTYPE_PING`` pings once, as the original's: ``setPingData``, ``runAsync``,
``wait_for_pong``.

Only pings are served and sent: the original's classic connections (packets, registries,
events) are not part of this package, and a ``Server`` without the mixin (or a ``Client``
without it, or of another connection type) is refused when it starts.
"""

import threading
from typing import Any, Dict, Optional, Tuple

from .. import _native
from .. import errors as _package_errors
from ._util import check_cfg, tls_from_cfg, warn_once
from .errors import TimedOutError, as_failed_ping

__all__ = ["Server", "Client", "CONNTYPE_CLASSIC", "CONNTYPE_PING"]

#: The original's connection types (``peng3dnet.constants``).
CONNTYPE_CLASSIC = "classic"
CONNTYPE_PING = "ping"

#: The client's address keys of the original's configuration, which are honoured.
CLIENT_KEYS = ("net.client.addr", "net.client.addr.host", "net.client.addr.port")

#: Time allowed to connect (the original's blocking connect had the system's).
_CONNECT_TIMEOUT = 30.0

#: The server's address keys of the original's configuration, which are honoured.
SERVER_KEYS = ("net.server.addr", "net.server.addr.host", "net.server.addr.port")


def _server_addr(addr: Any, cfg: Dict[str, Any]) -> Tuple[str, int]:
    port = cfg.get("net.server.addr.port", 8080)
    if addr is None:
        addr = cfg.get("net.server.addr")
    if addr is None:
        return (cfg.get("net.server.addr.host", "0.0.0.0"), port)
    if isinstance(addr, (tuple, list)) and len(addr) == 2:
        return (addr[0], addr[1])
    if isinstance(addr, str):
        host, sep, p = addr.rpartition(":")
        if sep and p.isdigit() and not host.endswith(":"):
            return (host.strip("[]"), int(p))
        return (addr.strip("[]"), port)
    raise TypeError("addr must be a (host, port) tuple or a 'host:port' str, not %s" % type(addr).__name__)


class Server(object):
    """A pingable server with the original's constructor and life cycle.

    ``Server(peng=None, addr=None, clientcls=None, cfg=None)``: ``addr`` as in the
    original (or the ``net.server.addr*`` keys of ``cfg``; default ``0.0.0.0:8080``);
    ``cfg``'s ``net.ssl.enabled`` with ``net.ssl.server.certfile`` and
    ``net.ssl.server.keyfile`` serve over TLS. ``peng``, ``clientcls`` and other keys are
    ignored (warned once).
    """

    def __init__(self, peng: Any = None, addr: Any = None, clientcls: Any = None, cfg: Optional[Dict[str, Any]] = None):
        if peng is not None:
            warn_once("Server(peng=...)", "there is no peng3d event system or configuration stack here")
        if clientcls is not None:
            warn_once("Server(clientcls=...)", "connections are the Rust library's, not Python objects")
        self.cfg = dict(check_cfg(cfg, SERVER_KEYS, "Server"))
        self.addr = _server_addr(addr, self.cfg)
        self.peng = peng
        self.is_client = False
        self.is_server = True
        self._lock = threading.Lock()
        self._native: Optional[_native.PingServer] = None
        self._stopped = threading.Event()
        self._seen_pingdata: Optional[Dict[str, Any]] = None

    # ---- life cycle, as the original's ----

    def bind(self) -> None:
        """Binds and starts answering (calling it again does nothing). Afterwards
        ``addr`` is the address bound (the real port when 0 was asked for)."""
        from . import ping

        with self._lock:
            if self._native is not None:
                return
            if not isinstance(self, ping.PingableServerMixin):
                raise TypeError(
                    "peng3dnet_rs.compat.net.Server serves pings only: "
                    "subclass it as class S(ping.PingableServerMixin, net.Server)"
                )
            pingdata = dict(self.pingdata)
            self._seen_pingdata = pingdata
            server = _native.PingServer(
                self.addr,
                data=pingdata,
                dynamic=self._dynamic,
                writeback=bool(ping.WRITEBACK),
                tls=tls_from_cfg(self.cfg, "server"),
            )
            server.start()
            self._native = server
            self._stopped.clear()
            self.addr = server.address

    def _dynamic(self, msg: Any, cid: int) -> Dict[str, Any]:
        data = self.getPingData(msg, cid)  # type: ignore[attr-defined]
        # pingdata is read at every ping, after getPingData, as the original does: a change
        # (assigned, in place, or by getPingData itself) is in this very pong, since the
        # static data is taken once this returns.
        pingdata = self.pingdata  # type: ignore[attr-defined]
        if pingdata != self._seen_pingdata and self._native is not None:
            snapshot = dict(pingdata)
            self._native.data = snapshot
            self._seen_pingdata = snapshot
        return data

    def initialize(self) -> None:
        """Nothing to do (no registries here); kept for scripts that call it."""

    def runAsync(self, selector: Any = None) -> None:
        """Starts serving in the background (binds if needed)."""
        self.bind()

    def runBlocking(self, selector: Any = None) -> None:
        """Serves until :meth:`shutdown` (from another thread) or Ctrl-C."""
        self.bind()
        self.join()

    def process(self, wait: bool = False, timeout: Optional[float] = None) -> None:
        """Nothing to do: pings are answered on the package's threads."""

    def process_async(self) -> None:
        """Nothing to do: pings are answered on the package's threads."""

    def process_forever(self) -> None:
        """Waits until :meth:`shutdown` (pings are answered on the package's threads)."""
        self.join()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Waits until the server is shut down (at most ``timeout`` seconds); True if it
        is. Ctrl-C interrupts it."""
        if timeout is not None:
            return self._stopped.wait(timeout)
        while not self._stopped.wait(0.25):
            pass
        return True

    def shutdown(self, join: bool = True, timeout: float = 0, reason: str = "servershutdown") -> None:
        """Stops: every open connection is closed with ``servershutdown`` and waited for
        (``join``/``timeout`` are not needed: it always waits, within the library's close
        bounds). Another ``reason`` is ignored (warned once)."""
        if reason != "servershutdown":
            warn_once("Server.shutdown(reason=%r)" % (reason,), "connections are always closed with servershutdown")
        with self._lock:
            server, self._native = self._native, None
        if server is not None:
            server.stop()
        self._stopped.set()

    def stop(self) -> None:
        """:meth:`shutdown`."""
        self.shutdown()

    @property
    def running(self) -> bool:
        """Whether it is serving."""
        return self._native is not None


def _client_addr(addr: Any, cfg: Dict[str, Any]) -> Any:
    if addr is not None:
        return addr
    if cfg.get("net.client.addr") is not None:
        return cfg["net.client.addr"]
    return (cfg.get("net.client.addr.host", "localhost"), cfg.get("net.client.addr.port", 8080))


class Client(object):
    """A pinging client with the original's constructor and life cycle.

    ``Client(peng=None, addr=None, cfg=None, conntype=CONNTYPE_CLASSIC)``: subclass it
    with :class:`~peng3dnet_rs.compat.ping.PingableClientMixin` and pass
    ``conntype=CONNTYPE_PING``. ``runAsync()`` connects on a thread of its own and sends
    the ping data set by ``setPingData``; the pong is handed to ``on_pong(msg)`` if the
    instance has one, then to ``wait_for_pong``, and the connection is closed with
    ``pingcomplete``, as the original's. A failure (a refused connection, say) is raised by
    ``wait_for_pong`` at once, as a ``FailedPingError``.
    """

    def __init__(self, peng: Any = None, addr: Any = None, cfg: Optional[Dict[str, Any]] = None, conntype: str = CONNTYPE_CLASSIC):
        if peng is not None:
            warn_once("Client(peng=...)", "there is no peng3d event system or configuration stack here")
        self.cfg = dict(check_cfg(cfg, CLIENT_KEYS, "Client"))
        self.addr = _client_addr(addr, self.cfg)
        self.conntype = conntype
        self.peng = peng
        self.is_client = True
        self.is_server = False
        self._pong_condition = threading.Condition()
        self._failure: Optional[BaseException] = None
        self._session: Optional[_native.PingSession] = None
        self._closing = False
        self._thread: Optional[threading.Thread] = None
        self._connected = threading.Event()
        self._closed = threading.Event()

    def runAsync(self, selector: Any = None) -> None:
        """Connects and pings on a thread of its own."""
        self._check()
        self._thread = threading.Thread(target=self._run, name="peng3dnet_rs.compat ping client", daemon=True)
        self._thread.start()

    def runBlocking(self, selector: Any = None) -> None:
        """Connects, pings and waits for the pong on this thread."""
        self._check()
        self._run()

    def _check(self) -> None:
        from . import ping

        if self.conntype != CONNTYPE_PING or not isinstance(self, ping.PingableClientMixin):
            raise TypeError(
                "peng3dnet_rs.compat.net.Client makes ping connections only: "
                "class C(ping.PingableClientMixin, net.Client), C(peng, addr, cfg, ping.CONNTYPE_PING)"
            )
        if self._thread is not None or self._closed.is_set():
            raise RuntimeError("this client already ran; make a new one for another ping")

    def _run(self) -> None:
        sent = self._pingdata  # type: ignore[attr-defined]
        data = {k: v for k, v in sent.items() if k != "time"} if isinstance(sent, dict) else sent
        try:
            session = _native.PingSession(self.addr, data=data, timeout=_CONNECT_TIMEOUT, tls=tls_from_cfg(self.cfg, "client"))
            with self._pong_condition:
                self._session = session
                closing = self._closing
            if closing:
                session.close()
                return
            self._connected.set()
            session.send_ping()
            reply = session.wait_for_pong(None)
            # The original hands over the pong as it came: no recvtime or delay.
            msg = {k: v for k, v in reply.items() if k not in ("recvtime", "delay")}
            echo = msg.get("oldmsg")
            if isinstance(sent, dict) and sent.get("time") == "__AUTO__" and isinstance(echo, dict):
                sent["time"] = echo.get("time")  # as the original, which writes it in
            try:
                on_pong = getattr(self, "on_pong", None)
                if callable(on_pong):
                    on_pong(msg)
                self._pong(msg)  # type: ignore[attr-defined]
            finally:
                session.close()
        except _package_errors.SessionClosed:
            pass  # closed by close_connection()
        except _package_errors.PingError as exc:
            with self._pong_condition:
                self._failure = as_failed_ping(exc)
                self._pong_condition.notify_all()
        finally:
            self._closed.set()
            with self._pong_condition:
                self._pong_condition.notify_all()

    def process(self, wait: bool = False, timeout: Optional[float] = None) -> None:
        """Nothing to do: the pong is handled on the client's thread."""

    def process_async(self) -> None:
        """Nothing to do: the pong is handled on the client's thread."""

    def process_forever(self) -> None:
        """Waits until the connection is closed."""
        self.join()

    def close_connection(self, cid: Any = None, reason: Optional[str] = None) -> None:
        """Closes the connection (with ``pingcomplete``: another ``reason`` is ignored,
        warned once)."""
        if reason not in (None, "pingcomplete"):
            warn_once("Client.close_connection(reason=%r)" % (reason,), "ping connections close with pingcomplete")
        with self._pong_condition:
            self._closing = True
            session = self._session
        if session is not None:
            session.close()

    def close(self, reason: Optional[str] = None) -> None:
        """:meth:`close_connection`."""
        self.close_connection(reason=reason)

    def stop(self) -> None:
        """:meth:`close_connection`."""
        self.close_connection()

    def join(self, timeout: Optional[float] = None) -> None:
        """Waits until the client's thread ends (at most ``timeout`` seconds)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_for_connection(self, timeout: Optional[float] = None) -> None:
        """Waits until connected; ``TimedOutError`` after ``timeout`` seconds."""
        if not self._connected.wait(timeout):
            raise TimedOutError("Timed out waiting for connection")

    def wait_for_close(self, timeout: Optional[float] = None) -> None:
        """Waits until the connection is closed; ``TimedOutError`` after ``timeout``."""
        if not self._closed.wait(timeout):
            raise TimedOutError("Timed out waiting for closed connection")
