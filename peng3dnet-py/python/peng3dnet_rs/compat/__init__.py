"""Drop-in modules for scripts written for the original peng3dnet 0.1.3a0.

A script that pings servers or serves pings with the original's own names keeps working
with only its import line changed::

    import peng3dnet.net as net, peng3dnet.ext.ping as ping          # the original
    import peng3dnet_rs.compat.net as net, peng3dnet_rs.compat.ping as ping  # this package

- :mod:`peng3dnet_rs.compat.ping`: ``pingServer``, ``WRITEBACK``, ``PingableServerMixin``
  (``pingdata``, ``getPingData``), ``PingableClientMixin`` (``setPingData``,
  ``wait_for_pong``) and ``errors`` (so ``ping.errors.FailedPingError`` works as it does
  in the original module).
- :mod:`peng3dnet_rs.compat.net`: ``Server`` (``runAsync``, ``process_async``,
  ``shutdown``...) and ``Client`` (``runAsync``, ``close_connection``...), enough to run
  a pingable server or a pinging client.
- :mod:`peng3dnet_rs.compat.errors`: ``FailedPingError`` and its base ``TimedOutError``.
  Every failure of these modules is also an instance of the package's specific exception
  (``PingTimeout``, ``ConnectionRefused``, ...), so new code can be more precise.

Arguments the original accepts but this package cannot honour (``peng``, ``clientcls``,
configuration keys it has no use for) are ignored with one :class:`CompatWarning` each,
naming what is ignored.
"""

from ._util import CompatWarning

__all__ = ["CompatWarning"]
