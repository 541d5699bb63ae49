"""``peng3dnet.net.Server`` of the original (0.1.3a0), for pingable servers.

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

Only pings are served: the original's classic connections (packets, registries, events)
are not part of this package, and a ``Server`` without the mixin is refused when it
starts.
"""

import threading
from typing import Any, Dict, Optional, Tuple

from .. import _native
from ._util import check_cfg, tls_from_cfg, warn_once

__all__ = ["Server"]

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
