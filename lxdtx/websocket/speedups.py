# -*- test-case-name: tests.unit.test_websocket -*-
"""Autobahn, lighter: nothing here changes what goes over the wire.

At every connection Autobahn formats its whole option table (and, for clients,
the transport's details) with `pprint.pformat` for a debug message, whatever the
log level: measured, 0.6 ms of the 0.9 ms an upgrade costs the daemon, paid by
each of the five websockets of an `lxc exec`. Its module's `pformat` becomes a
lazy one: the table is formatted when a debug message is actually written.

Importing `autobahn.twisted.websocket` runs its package's `__init__`, which loads
the whole WAMP stack (cryptography, argon2) and pyOpenSSL: measured, 12.4 MiB of
the daemon's memory where the websocket modules alone take 5.7 MiB, and the daemon
maps TLS libraries only once `core.https_address` is set. So the package's module
is made without running its `__init__`, and the websocket modules are imported
without pyOpenSSL. With no pyOpenSSL Autobahn treats every transport as plain for
its transport details only: it skips parsing the peer's certificate and hashing the
TLS Finished message at each websocket's opening, which serve WAMP's channel
binding. The daemon speaks no WAMP, and decides trust from the HTTP request before
the upgrade; TLS itself is Twisted's.
"""

import importlib.util
import sys
from pprint import pformat


class _Deferred:
    """`pformat(value)`, done when first shown."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return pformat(self.value)

    __repr__ = __str__

    def __format__(self, spec):
        return format(str(self), spec)


def _timings_text(timings):
    return pformat(timings._timings)


def _is_tls_error(instance):
    """Autobahn's test, for its log messages, without importing pyOpenSSL for it."""
    ssl = sys.modules.get("OpenSSL.SSL")
    return ssl is not None and isinstance(instance, ssl.Error)


def _import_websocket_only():
    if "autobahn.twisted" not in sys.modules:
        import autobahn

        spec = importlib.util.find_spec("autobahn.twisted")
        autobahn.twisted = sys.modules["autobahn.twisted"] = importlib.util.module_from_spec(spec)
    if "OpenSSL" in sys.modules:  # already paid for: nothing to keep out
        from autobahn.twisted import resource, websocket
        return
    had_endpoints = "twisted.internet.endpoints" in sys.modules
    sys.modules["OpenSSL"] = None  # an import of it (or of OpenSSL.SSL) fails
    try:
        from autobahn import util
        from autobahn.twisted import resource, websocket  # noqa: F401
    finally:
        del sys.modules["OpenSSL"]
    util._is_tls_error = websocket._is_tls_error = _is_tls_error
    if not had_endpoints:
        # Twisted's endpoints decide at import whether TLS exists: the copy made just
        # now (kept by Autobahn's client agent, which the daemon does not use) must not
        # be the one everybody else imports.
        import twisted.internet

        del sys.modules["twisted.internet.endpoints"]
        del twisted.internet.endpoints


def install():
    _import_websocket_only()
    import autobahn.websocket.protocol as protocol

    protocol.pformat = _Deferred
    # The one caller that must hand back a str itself (timing tracking, never enabled here).
    protocol.Timings.__str__ = _timings_text
