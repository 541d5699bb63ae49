"""Exceptions raised by peng3dnet_rs.

Every failed ping raises a subclass of :class:`PingError`. Where a built-in exception
means the same thing, the class derives from it too, so ``except TimeoutError`` or
``except ConnectionRefusedError`` keep working.

============================  ==============================================  =====================
exception                     when                                            also a
============================  ==============================================  =====================
``ResolveError``              the address is malformed or does not resolve
``ConnectFailed``             the TCP connection failed (``.address``)        ``ConnectionError``
``ConnectionRefused``         ... because it was refused                      ``ConnectionRefusedError``
``PingTimeout``               no answer in time (``.phase`` says which step)  ``TimeoutError``
``NotPeng3dnetServer``        the peer does not speak peng3dnet
``ProtocolMismatch``          the server speaks another protocol version
``ClosedByServer``            the server closed instead of answering          ``ConnectionError``
                              (``.reason``: ``"unknownconntype"``,
                              ``"serverfull"``, ... or ``None``)
``ProtocolViolation``         the server broke the protocol (``.reason``)
``TlsError``                  the TLS handshake or TLS set-up failed
``ConnectionLost``            the connection broke                            ``ConnectionError``
``SessionClosed``             a call on a ``PingSession`` that is closed
                              (by ``close()`` or by an earlier error)
============================  ==============================================  =====================
"""

from typing import Optional

__all__ = [
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


class PingError(RuntimeError):
    """A ping failed. The message says why, in words.

    A ``RuntimeError``, as the original's ``FailedPingError`` is: handlers written for it
    (``except RuntimeError``) keep catching."""

    #: The failure in one stable word, the same the CLI's ``--json`` ``kind`` and the
    #: exporter's ``probe_peng3dnet_failure_info{kind}`` use: ``"resolve"``,
    #: ``"refused"``, ``"connect"``, ``"timeout"``, ``"tls_required"``, ``"tls_not_used"``,
    #: ``"tls_certificate"``, ``"tls_client_certificate"``, ``"tls"``, ``"not_peng3dnet"``,
    #: ``"protocol_mismatch"``, ``"closed"``, ``"protocol"``, ``"io"`` or ``"other"``.
    kind: str = "other"


class ResolveError(PingError):
    """The address is malformed (a bad port, in a string or a ``(host, port)`` tuple
    alike) or its host name does not resolve."""

    #: The address as it was asked for.
    target: str = ""


class ConnectFailed(PingError, ConnectionError):
    """The TCP connection could not be made (unreachable, reset, ...)."""

    #: The socket address tried last.
    address: str = ""


class ConnectionRefused(ConnectFailed, ConnectionRefusedError):
    """The TCP connection was refused: nothing listens there."""


class PingTimeout(PingError, TimeoutError):
    """The server did not answer within the timeout."""

    #: What was being waited for: ``"resolving"``, ``"connecting"``,
    #: ``"waiting for hello"``, ``"sending ping"`` or ``"waiting for pong"``.
    phase: str = ""


class NotPeng3dnetServer(PingError):
    """The peer answered with something that is not peng3dnet."""


class ProtocolMismatch(PingError):
    """The server speaks another peng3dnet protocol version."""


class ClosedByServer(PingError, ConnectionError):
    """The server closed the connection instead of answering."""

    #: The server's close reason (``"unknownconntype"`` from a server that is not
    #: pingable, ``"serverfull"``, ``"servershutdown"``, ...), or ``None`` if it closed
    #: without giving one.
    reason: Optional[str] = None


class ProtocolViolation(PingError):
    """The server broke the protocol; the connection was closed with ``reason``."""

    #: The close reason sent to the server (``"invalidpingpacket"``, ...).
    reason: Optional[str] = None


class TlsError(PingError):
    """The TLS handshake failed (wrong CA, wrong name, a server without TLS, ...), or the
    TLS configuration could not be loaded."""


class ConnectionLost(PingError, ConnectionError):
    """The connection broke during the ping."""


class SessionClosed(PingError):
    """A call on a :class:`~peng3dnet_rs.PingSession` (or its asyncio twin) that is
    closed: by ``close()`` (also when another thread closes it while this call waits), by
    an earlier error that ended the connection (the message repeats it), or by a call that
    was interrupted while it sent a ping."""
