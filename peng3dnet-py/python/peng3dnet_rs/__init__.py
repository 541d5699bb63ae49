"""peng3dnet_rs: the ping extension of peng3dnet, for Python, backed by Rust.

A drop-in for the client and server halves of ``peng3dnet.ext.ping`` (peng3dnet 0.1.3a0),
on the wire byte for byte the same protocol, with the speed and the limits of the Rust
library underneath:

>>> import peng3dnet_rs
>>> with peng3dnet_rs.PingServer(("127.0.0.1", 0), data={"name": "demo"}) as server:
...     reply = peng3dnet_rs.ping_server(server.address, data={"hello": 1})
>>> reply["name"], reply["oldmsg"]["hello"]
('demo', 1)

- :func:`ping_server` is the seed's ``pingServer``: one ping, the server's dict plus
  ``recvtime`` and ``delay``; :func:`ping_server_async` the same for asyncio;
  :func:`ping_many` many targets at once, results as they come (``for`` or ``async for``).
- :class:`PingSession` is the seed's ``PingableClientMixin``: one connection, many
  pings (``set_ping_data``, ``ping``, ``send_ping``, ``wait_for_pong``);
  :class:`AsyncPingSession` the same for asyncio.
- :class:`PingServer` is the seed's ``PingableServerMixin`` on a ``Server``: ``data`` is
  its ``pingdata``, ``dynamic`` its ``getPingData``; it answers on background threads and
  holds no GIL while idle.
- Failures raise subclasses of :class:`PingError` (see :mod:`peng3dnet_rs.errors`).
- :mod:`peng3dnet_rs.compat` holds the original's own names (``pingServer``,
  ``PingableServerMixin``, ``FailedPingError``...) for scripts written for it.
"""

from typing import TYPE_CHECKING, Any, Dict, Optional

from ._native import (
    PROTOCOL_VERSION,
    REFERENCE_VERSION,
    AsyncPingSession,
    PingMany,
    PingResult,
    PingServer,
    PingSession,
    ping_many,
    ping_server,
)
from ._native import ping_server_async as _ping_server_async
from .errors import (
    ClosedByServer,
    ConnectFailed,
    ConnectionLost,
    ConnectionRefused,
    NotPeng3dnetServer,
    PingError,
    PingTimeout,
    ProtocolMismatch,
    ProtocolViolation,
    ResolveError,
    SessionClosed,
    TlsError,
)


if TYPE_CHECKING:  # names that exist only in the stubs
    from ._native import Address, ClientTls, Data


async def ping_server_async(
    addr: "Address",
    data: "Optional[Data]" = None,
    timeout: float = 10.0,
    tls: "ClientTls" = None,
) -> Dict[str, Any]:
    """:func:`ping_server` for asyncio: ``await ping_server_async(addr, ...)``.

    The ping runs on the package's own threads, not on the event loop; cancelling the
    awaiting task closes the connection.
    """
    return await _ping_server_async(addr, data, timeout, tls)


__all__ = [
    "PROTOCOL_VERSION",
    "REFERENCE_VERSION",
    "PingMany",
    "PingResult",
    "PingServer",
    "PingSession",
    "AsyncPingSession",
    "ping_many",
    "ping_server",
    "ping_server_async",
    "PingError",
    "ResolveError",
    "ConnectFailed",
    "ConnectionRefused",
    "PingTimeout",
    "NotPeng3dnetServer",
    "ProtocolMismatch",
    "ClosedByServer",
    "ProtocolViolation",
    "TlsError",
    "ConnectionLost",
    "SessionClosed",
]
