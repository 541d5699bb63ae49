"""The original's ping exceptions (``peng3dnet.errors``), for scripts that catch them.

``FailedPingError`` derives from ``TimedOutError``, a ``RuntimeError``, as in the original.
What the compatibility modules raise is both a ``FailedPingError`` and the package's
specific exception (:mod:`peng3dnet_rs.errors`): ``except errors.FailedPingError`` catches
every failed ping, as it did, and ``except peng3dnet_rs.PingTimeout`` or ``except
ConnectionRefusedError`` still tell one failure from another. The original raised
``FailedPingError("Timed out")`` after its whole timeout for a server that refuses the
connection; this package raises at once, as an exception that is a ``FailedPingError``
and a ``ConnectionRefusedError``.
"""

from typing import Dict, Type

from .. import errors as _errors

__all__ = ["TimedOutError", "FailedPingError"]


class TimedOutError(RuntimeError):
    """The original's base of time-outs."""


class FailedPingError(TimedOutError):
    """A ping failed (the original's name). What this package raises as it is also the
    specific :class:`peng3dnet_rs.PingError` subclass."""


_classes: Dict[type, type] = {}


def compat_class(cls: Type[BaseException]) -> type:
    """``cls`` (a :class:`peng3dnet_rs.PingError` subclass) that is also a
    ``FailedPingError``; one class per ``cls``, made on first use."""
    made = _classes.get(cls)
    if made is None:
        made = type(cls.__name__, (cls, FailedPingError), {"__module__": __name__, "__doc__": cls.__doc__})
        _classes[cls] = made
    return made


def as_failed_ping(exc: BaseException) -> BaseException:
    """``exc`` (a :class:`peng3dnet_rs.PingError`) as an instance of its
    :func:`compat_class`, with the same message and attributes."""
    if isinstance(exc, FailedPingError) or not isinstance(exc, _errors.PingError):
        return exc
    new = compat_class(type(exc))(*exc.args)
    new.__dict__.update(exc.__dict__)
    if isinstance(exc, OSError):  # errno lives in a slot, not in __dict__
        new.errno = exc.errno
    new.__traceback__ = exc.__traceback__
    return new
