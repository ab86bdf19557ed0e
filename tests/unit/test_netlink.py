"""Netlink state read: the `network` section of a container's state, read from a real namespace."""

import ctypes
import os
import threading

from pyroute2 import IPRoute
from twisted.trial.unittest import SkipTest, SynchronousTestCase

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


class NamespaceTests(SynchronousTestCase):
    """interfaces(pid) in a network namespace of the test's own: a thread that leaves the
    host's namespace, makes veth pairs there and keeps the namespace alive until the end."""

    def setUp(self):
        self.ready, self.done, self.found = threading.Event(), threading.Event(), {}
        thread = threading.Thread(target=self._namespace)
        thread.start()
        self.addCleanup(thread.join, 30)
        self.addCleanup(self.done.set)
        self.ready.wait(30)
        if "error" in self.found:
            raise SkipTest(f"no network namespace of our own: {self.found['error']}")

    def _namespace(self):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(netlink.CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            with IPRoute() as ipr:
                ipr.link("add", ifname=b"\xffx", kind="veth", peer=b"\xfex")
                ipr.link("add", ifname="v0", kind="veth", peer="v1")
                ipr.link("set", index=ipr.link_lookup(ifname="v0")[0], state="up", mtu=1400)
                ipr.addr("add", index=ipr.link_lookup(ifname="v0")[0], address="192.0.2.7", prefixlen=24)
            self.found["tid"] = threading.get_native_id()
        except OSError as e:
            self.found["error"] = e
        finally:
            self.ready.set()
        self.done.wait(30)

    def test_veth(self):
        """A veth pair: both ends, typed, sized, addressed; the one brought up is up once its peer is."""
        state = netlink.interfaces(self.found["tid"])
        self.assertEqual((state["v0"]["type"], state["v0"]["mtu"], state["v1"]["mtu"]), ("broadcast", 1400, 1500))
        self.assertEqual(state["v1"]["state"], "down")
        self.assertEqual(state["v0"]["addresses"],
                         [{"family": "inet", "address": "192.0.2.7", "netmask": "24", "scope": "global"}])
        self.assertRegex(state["v0"]["hwaddr"], "^([0-9a-f]{2}:){5}[0-9a-f]{2}$")

    def test_names_alike_once_decoded(self):
        """Two names that both decode to U+FFFD x: the first shows so, the second by its bytes."""
        state = netlink.interfaces(self.found["tid"])
        self.assertIn("\ufffdx", state)
        self.assertEqual(len({"\\xffx", "\\xfex"} & set(state)), 1)
        self.assertEqual(len(state), 5)  # lo, both ends of both pairs
