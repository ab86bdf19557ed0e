"""Subnet helpers: picking a free `auto` subnet, overlap checks, ranges and routes."""

import ipaddress
import itertools

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.network import addresses

net = ipaddress.ip_network


def sequence(*values):
    """A randbelow stand-in returning `values` in turn (deterministic subnet picks)."""
    it = itertools.cycle(values)
    return lambda bound: next(it) % bound


class PickTests(SynchronousTestCase):
    """`pick_free` avoids host routes and other networks, ignoring default routes."""

    def test_first_free(self):
        """A candidate overlapping nothing is taken as it is."""
        self.assertEqual(addresses.pick_free(4, [], sequence(7, 9)), "10.7.9.1/24")

    def test_skips_taken(self):
        """Candidates inside taken networks (a /16 route, another /24) are skipped."""
        taken = [net("10.7.0.0/16"), net("10.8.9.0/24"), net("0.0.0.0/0")]
        self.assertEqual(addresses.pick_free(4, taken, sequence(7, 1, 8, 9, 8, 10)), "10.8.10.1/24")

    def test_default_route_ignored(self):
        """A default route (prefix 0) overlaps everything and is not counted."""
        self.assertEqual(addresses.pick_free(4, [net("0.0.0.0/0")], sequence(1, 2)), "10.1.2.1/24")

    def test_ipv6(self):
        """IPv6 picks are fd42:X:Y:Z::1/64 and check IPv6 networks only."""
        taken = [net("fd42:1:2:3::/64"), net("10.0.0.0/8")]
        self.assertEqual(addresses.pick_free(6, taken, sequence(1, 2, 3, 1, 2, 4)), "fd42:1:2:4::1/64")

    def test_exhausted(self):
        """When every attempt is taken the error asks for manual configuration."""
        with self.assertRaises(ValueError) as raised:
            addresses.pick_free(4, [net("10.0.0.0/8")], sequence(1), attempts=5)
        self.assertIn("manual configuration required", str(raised.exception))


class OverlapTests(SynchronousTestCase):
    """`overlapping` finds the clashing network of the same family."""

    def test_overlaps(self):
        """Containing, contained and equal networks overlap; other families do not."""
        taken = [net("fd42::/64"), net("10.1.0.0/16")]
        self.assertEqual(addresses.overlapping(net("10.1.2.0/24"), taken), net("10.1.0.0/16"))
        self.assertEqual(addresses.overlapping(net("10.0.0.0/8"), taken), net("10.1.0.0/16"))
        self.assertIsNone(addresses.overlapping(net("10.2.0.0/24"), taken))
        self.assertIsNone(addresses.overlapping(net("10.2.0.0/24"), [net("::/0"), net("0.0.0.0/0")]))


class ParseTests(SynchronousTestCase):
    """Address keys, DHCP ranges and routes."""

    def test_interface_and_subnet(self):
        """`none`, `auto` and "" have no subnet; CIDRs do."""
        for value in ("", "none", "auto"):
            self.assertIsNone(addresses.subnet(value))
        self.assertEqual(addresses.subnet("10.0.3.1/24"), net("10.0.3.0/24"))

    def test_host(self):
        """host() counts from the start, or back from the broadcast address."""
        self.assertEqual(str(addresses.host(net("10.0.3.0/24"), 2)), "10.0.3.2")
        self.assertEqual(str(addresses.host(net("10.0.3.0/24"), -2)), "10.0.3.254")
        self.assertEqual(str(addresses.host(net("fd42::/64"), -1)), "fd42::ffff:ffff:ffff:ffff")

    def test_ranges(self):
        """Ranges parse per family; reversed or malformed ones are refused."""
        self.assertEqual(addresses.parse_ranges("10.0.0.5-10.0.0.9, 10.0.0.20-10.0.0.20", 4),
                         [(ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("10.0.0.9")),
                          (ipaddress.ip_address("10.0.0.20"), ipaddress.ip_address("10.0.0.20"))])
        for bad in ("10.0.0.5", "10.0.0.9-10.0.0.5", "a-b", "fd42::1-fd42::2"):
            self.assertRaises(ValueError, addresses.parse_ranges, bad, 4)

    def test_routes(self):
        """Routes must be networks in CIDR notation of the right family."""
        self.assertEqual(addresses.parse_routes("10.1.0.0/16,10.2.0.0/24", 4), [net("10.1.0.0/16"), net("10.2.0.0/24")])
        for bad in ("10.1.0.1/16", "10.1.0.0", "fd42::/64", ""):
            self.assertRaises(ValueError, addresses.parse_routes, bad, 4)
