"""Type stubs of the native module (re-exported by ``peng3dnet_rs``)."""

import sys
from os import PathLike
from typing import Any, Awaitable, Callable, Dict, Iterable, Iterator, AsyncIterator, Optional, Tuple, Union

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

if sys.version_info >= (3, 10):
    from typing import TypeAlias
else:
    from typing_extensions import TypeAlias

from typing import TypedDict

#: ``"host:port"`` (``"host"`` alone means port 8080, IPv6 as ``"[::1]:8080"``) or the
#: seed's ``(host, port)`` tuple.
Address: TypeAlias = Union[str, Tuple[str, int]]

#: What msgpack carries: dict, list, tuple, str, bytes, bytearray, int (64-bit), float,
#: bool and None, nested.
Data: TypeAlias = Dict[Any, Any]

_Path: TypeAlias = Union[str, "PathLike[str]"]

class ClientTlsOptions(TypedDict, total=False):
    """``tls=`` of the client functions, as a dict."""

    #: PEM file of the CA certificates that the server's certificate must chain to
    #: (without it, the system's roots).
    ca: _Path
    #: PEM client certificate chain (with ``key`` and ``ca``).
    cert: _Path
    #: PEM private key of the client certificate.
    key: _Path
    #: Name the certificate must carry, instead of the address's host.
    server_name: str
    #: Accept any certificate (self-signed test servers only).
    insecure: bool

class ServerTlsOptions(TypedDict, total=False):
    """``tls=`` of :class:`PingServer`."""

    #: PEM certificate chain (required).
    cert: _Path
    #: PEM private key (required).
    key: _Path
    #: PEM CA file for client certificates: clients may present one signed by it.
    client_ca: _Path
    #: Clients must present one (needs ``client_ca``).
    require_client_cert: bool

#: ``None``/``False``: plain TCP (as the reference). ``True``: TLS verified against the
#: system's roots. ``"insecure"``: TLS without verification. Or a dict.
ClientTls: TypeAlias = Union[None, bool, str, ClientTlsOptions]

#: Protocol version spoken (2).
PROTOCOL_VERSION: int
#: Version of the reference that this implements on the wire (``"0.1.3a0"``).
REFERENCE_VERSION: str

def ping_server(
    addr: Address,
    data: Optional[Data] = None,
    timeout: float = 10.0,
    tls: ClientTls = None,
) -> Dict[str, Any]:
    """Pings a peng3dnet server once (the seed's ``pingServer``).

    Connects, sends ``data`` (a dict; ``time`` and ``seq`` are set for you), waits for the
    pong and closes with ``pingcomplete``, all within ``timeout`` seconds. Returns the
    server's dict (its static and dynamic data, ``peng3dnet`` version info, ``oldmsg``:
    the echo of the ping) plus ``recvtime`` (Unix seconds) and ``delay`` (round trip in
    seconds). Releases the GIL while waiting; Ctrl-C interrupts it.

    Raises a :class:`~peng3dnet_rs.errors.PingError` subclass if the ping fails,
    ``TypeError``/``ValueError``/``OverflowError`` for bad arguments.
    """

def ping_server_async(
    addr: Address,
    data: Optional[Data] = None,
    timeout: float = 10.0,
    tls: ClientTls = None,
) -> Awaitable[Dict[str, Any]]:
    """The awaitable behind ``peng3dnet_rs.ping_server_async`` (needs a running event
    loop when called; use the coroutine function ``peng3dnet_rs.ping_server_async``)."""

def ping_many(
    targets: Iterable[Address],
    data: Optional[Data] = None,
    timeout: float = 10.0,
    tls: ClientTls = None,
    concurrency: int = 64,
) -> PingMany:
    """Pings every target, at most ``concurrency`` at a time, and yields a
    :class:`PingResult` for each as it completes (not in input order). Iterate with
    ``for`` or ``async for``. Failures are results, not exceptions.
    """

class PingResult:
    """One target's outcome in :func:`ping_many`."""

    #: The target as it was given.
    @property
    def target(self) -> Address: ...
    #: Its position among the targets.
    @property
    def index(self) -> int: ...
    #: The reply (as :func:`ping_server` returns it), or ``None`` if the ping failed.
    @property
    def reply(self) -> Optional[Dict[str, Any]]: ...
    #: The exception (not raised), or ``None`` if the ping succeeded.
    @property
    def error(self) -> Optional[BaseException]: ...
    #: True if the server answered.
    @property
    def ok(self) -> bool: ...
    def result(self) -> Dict[str, Any]:
        """The reply, or raises the ping's error."""

class PingMany(Iterator[PingResult], AsyncIterator[PingResult]):
    """Results of :func:`ping_many` in completion order."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> PingResult: ...
    def __aiter__(self) -> Self: ...
    def __anext__(self) -> Awaitable[PingResult]: ...
    def close(self) -> None:
        """Cancels the pings still running; iteration then ends after what already came."""
    #: How many targets were given.
    @property
    def total(self) -> int: ...

class PingServer:
    """A pingable peng3dnet server answering on background threads.

    ``addr`` is where to listen (port 0 picks a free port; see :attr:`address`).
    ``data`` is the static dict every pong carries (the seed's ``pingdata``).
    ``dynamic(msg, client_id)`` is called for every ping with the ping's dict and the
    connection's id, and returns a dict merged into the pong (the seed's
    ``getPingData``). It runs on one of the server's 8 callback threads, never on a network
    thread, and the ping waits for it at most ``callback_timeout`` seconds (default 1.0):
    a later answer is dropped and the pong sent with the static data only, with a warning
    on the ``peng3dnet_rs`` logger (at most one per 10 s). If it raises (or returns
    something that is not a dict), the error is logged on that logger and the pong is sent
    with the static data.
    ``writeback`` echoes the ping under ``oldmsg`` (the seed's ``WRITEBACK``).

    The pong merges, each later source winning: ``oldmsg``, the dynamic data, the static
    data, ``peng3dnet`` (version info) and ``servertiming`` (the server's timestamps).
    """

    def __init__(
        self,
        addr: Address,
        data: Optional[Data] = None,
        dynamic: Optional[Callable[[Dict[str, Any], int], Optional[Data]]] = None,
        *,
        writeback: bool = True,
        tls: Optional[ServerTlsOptions] = None,
        callback_timeout: float = 1.0,
    ) -> None: ...
    def start(self) -> Self:
        """Binds and starts answering; returns the server. ``OSError`` if the address
        cannot be bound, ``RuntimeError`` if already running."""
    def stop(self) -> None:
        """Stops accepting, closes open connections with ``servershutdown`` and waits
        until they are gone. Pings waiting for ``dynamic`` are answered with the static
        data at once: a callable that never returns does not hold it up (its call is
        abandoned). Does nothing if not running."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...
    #: Whether the server is running.
    @property
    def running(self) -> bool: ...
    #: ``(host, port)`` listened on; ``RuntimeError`` if not running.
    @property
    def address(self) -> Tuple[str, int]: ...
    #: Port listened on; ``RuntimeError`` if not running.
    @property
    def port(self) -> int: ...
    #: The static data (a copy); assign a dict to change it, also while running.
    @property
    def data(self) -> Dict[Any, Any]: ...
    @data.setter
    def data(self, value: Optional[Data]) -> None: ...
    #: Whether pings are echoed under ``oldmsg``.
    @property
    def writeback(self) -> bool: ...
    #: Seconds a ping waits for ``dynamic`` before the static data answers it alone.
    @property
    def callback_timeout(self) -> float: ...
    #: Counters: ``accepted``, ``refused``, ``pings``, ``connected`` (zeros when stopped).
    @property
    def stats(self) -> Dict[str, int]: ...

class PingSession:
    """One connection, many pings: the seed's ``PingableClientMixin`` (``setPingData``,
    ``wait_for_pong``) without its one-ping-per-connection limit.

    Connects at once (resolving, TCP, TLS and the hello within ``timeout``) and raises a
    :class:`~peng3dnet_rs.errors.PingError` subclass if it cannot. ``data`` is the dict
    sent with every ping (``time`` and ``seq`` are set per ping); ``timeout`` is also the
    time a ping is allowed when its call gives none. Every reply is the server's dict plus
    this ping's ``recvtime`` and ``delay``.

    The GIL is released while a call waits and Ctrl-C interrupts it (a pong it waited for
    is kept for the next call). Several threads may share a session: their calls take
    turns, each ``ping()`` gets its own pong, and a call that cannot get its turn within
    its timeout raises ``PingTimeout`` (``phase`` ``"waiting for the session"``). A timeout
    leaves the session open; an error that ends the connection (the server closing:
    ``ClosedByServer`` with its ``reason``) closes it, and later calls raise
    :class:`~peng3dnet_rs.errors.SessionClosed` saying why.
    """

    def __init__(
        self,
        addr: Address,
        data: Optional[Data] = None,
        timeout: float = 10.0,
        tls: ClientTls = None,
    ) -> None: ...
    def set_ping_data(self, data: Optional[Data]) -> None:
        """Sets the data of later pings (the seed's ``setPingData``)."""
    def ping(self, data: Optional[Data] = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Sends a ping and waits for its pong. ``data`` replaces the session's data for
        this ping only; ``timeout`` bounds the whole call (``None``: the session's)."""
    def send_ping(self, data: Optional[Data] = None, timeout: Optional[float] = None) -> int:
        """Sends a ping without waiting for its pong; returns its sequence number."""
    def wait_for_pong(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Waits up to ``timeout`` seconds (``None``: without limit) for the pong of the
        last ping. Returns at once if it already came, and the same pong again until the
        next ping (as the seed's). ``PingTimeout`` if it does not come in time (the
        session stays open); ``RuntimeError`` if no ping was sent."""
    def close(self) -> None:
        """Closes with ``pingcomplete``; calls waiting in other threads raise
        ``SessionClosed``. Closing again does nothing."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...
    #: Whether the session is closed (by ``close()`` or an error that ended it).
    @property
    def closed(self) -> bool: ...
    #: ``(ip, port)`` of the server that answered.
    @property
    def peer(self) -> Tuple[str, int]: ...
    #: Seconds a ping is allowed when its call gives no timeout.
    @property
    def timeout(self) -> float: ...

class AsyncPingSession:
    """:class:`PingSession` for asyncio.

    Does not connect in the constructor: ``await session.connect()`` (which returns the
    session) or ``async with AsyncPingSession(addr) as session:``. The methods return
    awaitables with the results of :class:`PingSession`'s; tasks of a loop may share a
    session (their calls take turns). Cancelling a call gives it up; a pong it waited for
    is kept for the next.
    """

    def __init__(
        self,
        addr: Address,
        data: Optional[Data] = None,
        timeout: float = 10.0,
        tls: ClientTls = None,
    ) -> None: ...
    def connect(self) -> Awaitable[Self]:
        """Connects; ``RuntimeError`` if already connected or connecting."""
    def set_ping_data(self, data: Optional[Data]) -> Awaitable[None]: ...
    def ping(self, data: Optional[Data] = None, timeout: Optional[float] = None) -> Awaitable[Dict[str, Any]]: ...
    def send_ping(self, data: Optional[Data] = None, timeout: Optional[float] = None) -> Awaitable[int]: ...
    def wait_for_pong(self, timeout: Optional[float] = None) -> Awaitable[Dict[str, Any]]: ...
    def close(self) -> Awaitable[None]: ...
    def __aenter__(self) -> Awaitable[Self]: ...
    def __aexit__(self, *exc: object) -> Awaitable[None]: ...
    #: Whether the session is closed (or failed to connect).
    @property
    def closed(self) -> bool: ...
    #: ``(ip, port)`` of the server that answered; ``None`` before connecting.
    @property
    def peer(self) -> Optional[Tuple[str, int]]: ...
