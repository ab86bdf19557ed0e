# -*- test-case-name: tests.unit.test_passthrough_devices,tests.integration.test_usb_gpu_devices -*-
"""The kernel's device uevents (NETLINK_KOBJECT_UEVENT), read in the reactor.

Opened only while some running container has a usb device. Only privileged
senders (the kernel, root in this network namespace) may broadcast on this
family, so what arrives is trusted as the host's own news.
"""

import socket

from twisted.internet import abstract
from twisted.logger import Logger

from lxdtx.device import usb

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
_BUFFER = 1 << 20


class _Reader(abstract.FileDescriptor):
    """The netlink socket as a reactor reader."""

    def __init__(self, reactor, sock, deliver):
        super().__init__(reactor)
        self.sock = sock
        self.deliver = deliver

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ENOBUFS: events were lost; the next ones still count
                return
            self.deliver(data)

    def connectionLost(self, reason):
        self.sock.close()


class UeventListener:
    """Calls `on_usb(action, UsbDevice)` for each USB device added or removed on the host."""

    log = Logger()

    def __init__(self, reactor, on_usb):
        self.reactor = reactor
        self.on_usb = on_usb
        self._reader = None

    def listen(self, wanted):
        """Open the socket when `wanted`, close it when not."""
        if wanted and self._reader is None:
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK
                                     | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
                sock.bind((0, KERNEL_GROUP))
            except OSError as e:
                self.log.warn("Cannot follow USB hotplug (uevents): {error}", error=e)
                return
            self._reader = _Reader(self.reactor, sock, self._received)
            self._reader.startReading()
        elif not wanted and self._reader is not None:
            self._reader.stopReading()
            self._reader.connectionLost(None)
            self._reader = None

    def _received(self, data):
        parsed = usb.parse_uevent(data)
        if parsed is not None:
            self.on_usb(*parsed)
