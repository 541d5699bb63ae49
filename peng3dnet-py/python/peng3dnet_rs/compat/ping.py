"""``peng3dnet.ext.ping`` of the original (0.1.3a0), by its own names, on this package.

Change the import line and keep the script::

    import peng3dnet.net as net, peng3dnet.ext.ping as ping                  # the original
    import peng3dnet_rs.compat.net as net, peng3dnet_rs.compat.ping as ping  # this package

    reply = ping.pingServer(addr=("example.org", 8080), data={"x": 1}, timeout=5.0)
    print(reply["name"], reply["delay"])

    class MyServer(ping.PingableServerMixin, net.Server):
        pingdata = {"name": "my server"}
        def getPingData(self, msg, cid):
            return {"you_sent": msg.get("x")}

    server = MyServer(addr=("0.0.0.0", 8080))
    server.runAsync(); server.process_async()

    class MyClient(ping.PingableClientMixin, net.Client):
        pass

    client = MyClient(None, ("example.org", 8080), {}, ping.CONNTYPE_PING)
    client.setPingData({"x": 1, "time": "__AUTO__"})
    client.runAsync(); client.process_async()
    print(client.wait_for_pong(5.0)["name"])

What differs, on purpose:

- a failure raises at once when it is known (a refused connection, a server that closes)
  instead of ``FailedPingError("Timed out")`` after the whole timeout; every failure is a
  ``FailedPingError`` and the package's specific exception (:mod:`.errors`);
- ``delay`` is measured on a monotonic clock (right even with ``WRITEBACK`` off);
- ``WRITEBACK`` is read when a server starts, not at every ping;
- ``getPingData`` runs on the server's callback threads and a ping waits for it at most
  1 s (then it is answered with ``pingdata`` only), so a slow one delays no one else;
- ``peng``, ``clientcls`` and configuration keys other than ``net.ssl.*`` and the address
  keys are ignored, with a :class:`~peng3dnet_rs.compat.CompatWarning` each.
"""

from typing import Any, Dict, Optional

from .. import _native
from .. import errors as _package_errors
from . import errors  # noqa: F401  (ping.errors.FailedPingError, as in the original)
from . import net  # noqa: F401  (ping.net, as in the original)
from ._util import check_cfg, tls_from_cfg, warn_once
from .errors import FailedPingError, TimedOutError, as_failed_ping, compat_class
from .net import CLIENT_KEYS, CONNTYPE_CLASSIC, CONNTYPE_PING, _client_addr

__all__ = [
    "WRITEBACK",
    "pingServer",
    "PingableServerMixin",
    "PingableClientMixin",
    "CONNTYPE_CLASSIC",
    "CONNTYPE_PING",
    "FailedPingError",
    "TimedOutError",
]

#: Whether a server echoes the ping back under ``oldmsg`` (read when it starts).
WRITEBACK = True

#: What ``timeout=None`` means: no limit (Ctrl-C still interrupts), as the original.
_NO_LIMIT = 365 * 24 * 3600.0


class PingableServerMixin(object):
    """Makes a :class:`peng3dnet_rs.compat.net.Server` subclass pingable, as the
    original's mixin does: ``class S(PingableServerMixin, net.Server)``.

    Each pong carries, later ones winning: the ping's echo (``oldmsg``, if ``WRITEBACK``),
    ``getPingData(msg, cid)``, ``pingdata``, and the version info. Both are read at every
    ping, so assigning ``server.pingdata`` or changing the dict in place shows in the next
    pong."""

    #: Static data of every pong (override in the subclass, or assign on the instance).
    pingdata: Dict[str, Any] = {}

    def getPingData(self, msg: Dict[str, Any], cid: int) -> Dict[str, Any]:
        """Dynamic data of one pong: ``msg`` is the ping as received, ``cid`` the client's
        id. Override it; the default adds nothing."""
        return {}


class PingableClientMixin(object):
    """Makes a :class:`peng3dnet_rs.compat.net.Client` subclass ping, as the original's
    mixin does: ``class C(PingableClientMixin, net.Client)``, made with
    ``conntype=CONNTYPE_PING``. One ping per client, as in the original (its connection
    closes after the pong); for many pings on one connection use
    :class:`peng3dnet_rs.PingSession`."""

    _pingdata: Any = None
    _pongdata: Any = None

    def setPingData(self, d: Dict[str, Any]) -> None:
        """Sets the data of the ping sent when the client connects (its ``time`` key,
        ``"__AUTO__"`` in the original's way, is set to the time sent)."""
        self._pingdata = d

    def _pong(self, data: Dict[str, Any]) -> None:
        with self._pong_condition:  # type: ignore[attr-defined]
            self._pongdata = data
            self._pong_condition.notify_all()  # type: ignore[attr-defined]

    def wait_for_pong(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Waits up to ``timeout`` seconds (``None``: without limit) for the pong and
        returns it (the server's dict as it came); at once if it already came. Raises
        ``FailedPingError`` when it does not come in time, and at once when the ping
        failed (the connection refused, ...)."""
        condition = self._pong_condition  # type: ignore[attr-defined]
        with condition:
            done = lambda: self._pongdata is not None or self._failure is not None  # type: ignore[attr-defined]  # noqa: E731
            condition.wait_for(done, timeout)
            if self._pongdata is not None:
                return self._pongdata
            if self._failure is not None:  # type: ignore[attr-defined]
                raise self._failure  # type: ignore[attr-defined]
        error = compat_class(_package_errors.PingTimeout)("Timed out")
        error.phase = "waiting for pong"
        raise error


def pingServer(
    peng: Any = None,
    addr: Any = None,
    cfg: Optional[Dict[str, Any]] = None,
    data: Optional[Dict[str, Any]] = None,
    clientcls: Any = None,
    timeout: Optional[float] = 10.0,
) -> Dict[str, Any]:
    """Pings a server once, as the original's ``pingServer``.

    ``addr``: ``(host, port)`` or ``"host:port"`` (default from ``cfg``'s
    ``net.client.addr*`` keys, else ``localhost:8080``); ``cfg``: the original's
    configuration, of which ``net.ssl.*`` (TLS) and the address keys are read; ``data``:
    the ping's dict (its ``time`` key is set to the time sent, in the caller's dict too, as
    the original does); ``timeout``: seconds (``None``: no limit).

    Returns the server's dict plus ``recvtime`` and ``delay``. Raises
    :class:`~peng3dnet_rs.compat.errors.FailedPingError` (also the package's specific
    exception) when the ping fails. ``peng`` and ``clientcls`` are ignored (warned once).
    """
    if peng is not None:
        warn_once("pingServer(peng=...)", "there is no peng3d event system or configuration stack here")
    if clientcls is not None:
        warn_once("pingServer(clientcls=...)", "the ping client is the Rust library's, not a Python class")
    cfg = check_cfg(cfg, CLIENT_KEYS, "pingServer")
    tls = tls_from_cfg(cfg, "client")
    target = _client_addr(addr, cfg)
    if data is None:
        data = {}
    sent = {k: v for k, v in data.items() if k != "time"} if isinstance(data, dict) else data
    try:
        reply = _native.ping_server(target, sent, _NO_LIMIT if timeout is None else timeout, tls)
    except _package_errors.PingError as exc:
        raise as_failed_ping(exc) from None
    if isinstance(data, dict):
        echo = reply.get("oldmsg")
        data["time"] = echo["time"] if isinstance(echo, dict) and "time" in echo else reply["recvtime"] - reply["delay"]
    return reply

