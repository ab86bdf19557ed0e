"""The leases endpoint's data: dnsmasq's lease file and static nic addresses."""

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.network import leases

LEASES = """\
1795847667 00:16:3e:42:db:11 10.93.61.50 * 01:00:16:3e:42:db:11
1795847667 00:16:3e:80:d4:49 10.93.61.111 c2 01:00:16:3e:80:d4:49
duid 00:01:00:01:32:9d:24:3b:d6:3a:06:00:6b:34
1795847700 1234 fd42::99 c3 00:01:00:01:2b:3c:4d:5e:00:16:3e:aa:bb:cc
1795847700 1235 fd42::98 c4 00:03:00:01:00:16:3e:dd:ee:ff
1795847700 1236 fd42::97 c5 00:02:00:00:ab:11:aa:bb
"""


class LeaseTests(SynchronousTestCase):
    """Parsing and merging."""

    def test_dynamic(self):
        """IPv4 lines carry the MAC; IPv6 ones take it from a link-layer DUID; `*` is no hostname."""
        self.assertEqual(leases.dynamic(LEASES), [
            {"hostname": "", "hwaddr": "00:16:3e:42:db:11", "address": "10.93.61.50", "type": "dynamic"},
            {"hostname": "c2", "hwaddr": "00:16:3e:80:d4:49", "address": "10.93.61.111", "type": "dynamic"},
            {"hostname": "c3", "hwaddr": "00:16:3e:aa:bb:cc", "address": "fd42::99", "type": "dynamic"},
            {"hostname": "c4", "hwaddr": "00:16:3e:dd:ee:ff", "address": "fd42::98", "type": "dynamic"},
            {"hostname": "c5", "hwaddr": "", "address": "fd42::97", "type": "dynamic"},
        ])

    def test_static(self):
        """A nic's ipv4.address and ipv6.address are static leases named after the container."""
        self.assertEqual(leases.static("c1", "00:16:3e:00:00:01", "10.0.3.5", ""),
                         [{"hostname": "c1", "hwaddr": "00:16:3e:00:00:01", "address": "10.0.3.5", "type": "static"}])
        self.assertEqual(len(leases.static("c1", "m", "10.0.3.5", "fd42::5")), 2)
        self.assertEqual(leases.static("c1", "m", "", ""), [])

    def test_merge(self):
        """Static leases come first; a dynamic lease of a static address is not repeated."""
        statics = leases.static("c1", "00:16:3e:42:db:11", "10.93.61.50", "")
        merged = leases.merge(statics, LEASES)
        self.assertEqual(merged[0]["type"], "static")
        self.assertEqual([lease["address"] for lease in merged].count("10.93.61.50"), 1)
        self.assertEqual(len(merged), 5)

    def test_garbage(self):
        """Short or empty lines are skipped."""
        self.assertEqual(leases.dynamic("\n\nnonsense\n1 2 3\n"), [])
