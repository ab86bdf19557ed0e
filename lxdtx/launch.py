# -*- test-case-name: tests.integration.test_daemon_process -*-
"""`lxdtx daemon`: twistd for lxdtx, with the TLS libraries loaded only once HTTPS is used.

Twisted's TCP module imports pyOpenSSL (and with it cryptography and
libcrypto, about 11 MB resident) as soon as the reactor is imported, for
STARTTLS on plain connections, which lxdtx never does. Importing the reactor
while pyOpenSSL is hidden leaves that out; the HTTPS listener brings the TLS
machinery in when `core.https_address` is set (`twisted.protocols.tls`).
"""

import importlib
import sys


def install_reactor_without_tls():
    """Import (install) the default reactor without importing pyOpenSSL."""
    if "twisted.internet.reactor" in sys.modules or "OpenSSL" in sys.modules:
        return
    sys.modules["OpenSSL"] = None  # makes `import OpenSSL` fail for the reactor's optional STARTTLS
    try:
        importlib.import_module("twisted.internet.reactor")  # importing installs it
    finally:
        del sys.modules["OpenSSL"]


def main(argv):
    """Run `twistd -n --pidfile= lxdtx ARGS` in this process."""
    install_reactor_without_tls()
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", "-n", "--pidfile=", "lxdtx", *argv]
    run()
