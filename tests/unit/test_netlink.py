"""Netlink state read: the `network` section of a container's state, read from a real namespace."""

import os

from pyroute2 import IPRoute
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.instance import netlink


class InterfaceNameTests(SynchronousTestCase):
    """Interface names as LXD's JSON shows them."""

    def test_nul_terminated(self):
        """The kernel's NUL and what follows it are dropped."""
        self.assertEqual(netlink.interface_name(b"eth0\0junk"), "eth0")

    def test_not_utf8(self):
        """Bytes that are not UTF-8 become U+FFFD."""
        self.assertEqual(netlink.interface_name(b"e\xfft\0"), "e\ufffdt")


class InterfacesTests(SynchronousTestCase):
    """interfaces(pid) reads links and addresses of the pid's network namespace."""

    def setUp(self):
        self.state = netlink.interfaces(os.getpid())

    def test_loopback(self):
        """The loopback is up, typed and addressed as LXD reports it."""
        lo = self.state["lo"]
        self.assertEqual((lo["type"], lo["state"], lo["hwaddr"]), ("loopback", "up", "00:00:00:00:00:00"))
        self.assertIn({"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"},
                      lo["addresses"])
        self.assertEqual(set(lo["counters"]), {"bytes_received", "bytes_sent", "packets_received", "packets_sent"})

    def test_same_links_as_pyroute2(self):
        """The links and MTUs match what pyroute2 reads from the kernel independently."""
        with IPRoute() as ipr:
            theirs = {link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_MTU") for link in ipr.get_links()}
        self.assertEqual({name: value["mtu"] for name, value in self.state.items()}, theirs)
