"""What the compatibility modules share: warnings about what they ignore, reading the
original's configuration keys."""

import threading
import warnings
from typing import Any, Dict, Iterable, Optional, Set

__all__ = ["CompatWarning", "warn_once", "tls_from_cfg", "check_cfg"]


class CompatWarning(UserWarning):
    """An argument or configuration key of the original that this package ignores."""


_warned: Set[str] = set()
_warned_lock = threading.Lock()


def warn_once(what: str, why: str, stacklevel: int = 3) -> None:
    """Warns once per process that ``what`` is ignored, and why."""
    with _warned_lock:
        if what in _warned:
            return
        _warned.add(what)
    warnings.warn("peng3dnet_rs.compat: %s is ignored (%s)" % (what, why), CompatWarning, stacklevel=stacklevel)


def check_cfg(cfg: Optional[Dict[str, Any]], honoured: Iterable[str], where: str) -> Dict[str, Any]:
    """The original's ``cfg`` dict (or ``{}``); warns once for each key not in ``honoured``
    (nor an SSL key, ``net.ssl.*``)."""
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise TypeError("cfg must be a dict or None, not %s" % type(cfg).__name__)
    honoured = set(honoured)
    for key in sorted(map(str, cfg)):
        if key not in honoured and not key.startswith("net.ssl."):
            warn_once(
                "%s cfg key %r" % (where, key),
                "this package has no such setting; only net.ssl.* and addresses are read",
                stacklevel=4,
            )
    return cfg


def tls_from_cfg(cfg: Dict[str, Any], side: str) -> Any:
    """The package's ``tls=`` from the original's ``net.ssl.*`` keys (``side``:
    ``"client"`` or ``"server"``); ``None`` when ``net.ssl.enabled`` is not true."""
    if not cfg.get("net.ssl.enabled", False):
        return None
    if side == "server":
        cert = cfg.get("net.ssl.server.certfile")
        key = cfg.get("net.ssl.server.keyfile")
        if cert is None or key is None:
            # As the original: without both files it serves without TLS, and says so.
            warnings.warn(
                "Potential security weakness because ssl had to be disabled "
                "(net.ssl.server.certfile and net.ssl.server.keyfile are needed)",
                CompatWarning,
                stacklevel=4,
            )
            return None
        return {"cert": cert, "key": key}
    ca = cfg.get("net.ssl.cafile") or cfg.get("net.ssl.server.certfile")
    if cfg.get("net.ssl.client.check_hostname", False) is False and "net.ssl.client.check_hostname" in cfg:
        warn_once(
            "cfg key 'net.ssl.client.check_hostname' = False",
            "the server's certificate is always checked against its name",
            stacklevel=4,
        )
    return {"ca": ca} if ca else True
