# -*- test-case-name: tests.unit.test_sdnotify -*-
"""sd_notify(3) without libsystemd: tell the service manager the daemon is ready or stopping.

systemd passes the socket in $NOTIFY_SOCKET (a path, or an abstract name written
with a leading `@`); one datagram per state change. Outside systemd it does nothing.
"""

import os
import socket

from twisted.logger import Logger

log = Logger()


def notify(state, environ=os.environ):
    """Send `state` (e.g. "READY=1") to $NOTIFY_SOCKET; True when it was sent."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)  # a full queue drops the message rather than stall the reactor
        sock.sendto(state.encode(), address)
        return True
    except OSError as e:
        log.warn("Could not notify the service manager ({state}): {error}", state=state, error=e)
        return False
    finally:
        sock.close()
