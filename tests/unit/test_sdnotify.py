"""sd_notify: the datagram reaches $NOTIFY_SOCKET (path or abstract), and nothing without it."""

import os
import socket
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from lxdtx import sdnotify


class NotifyTests(SynchronousTestCase):
    """One datagram per state, as systemd reads it."""

    def receiver(self, address):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(address)
        sock.settimeout(5)
        return sock

    def test_path_socket(self):
        """A socket path gets the state as one datagram."""
        directory = tempfile.mkdtemp(prefix="lxdtx-notify-", dir="/var/tmp")
        path = os.path.join(directory, "notify")
        self.addCleanup(os.rmdir, directory)
        self.addCleanup(os.unlink, path)
        sock = self.receiver(path)
        self.assertTrue(sdnotify.notify("READY=1", {"NOTIFY_SOCKET": path}))
        self.assertEqual(sock.recv(100), b"READY=1")

    def test_abstract_socket(self):
        """`@name` is the abstract socket `\\0name`."""
        name = f"lxdtx-notify-test-{os.getpid()}"
        sock = self.receiver("\0" + name)
        self.assertTrue(sdnotify.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name}))
        self.assertEqual(sock.recv(100), b"STOPPING=1")

    def test_without_systemd(self):
        """No $NOTIFY_SOCKET: nothing is sent; an unreachable one is logged, not raised."""
        self.assertFalse(sdnotify.notify("READY=1", {}))
        self.assertFalse(sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify"}))
