"""tc commands of nic limits."""

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.network import limits


class LimitTests(SynchronousTestCase):
    """Ingress is shaped on the host end's root qdisc, egress policed on its ingress qdisc."""

    def test_rates(self):
        """limits.max covers both directions unless one is given."""
        self.assertEqual(limits.rates({"limits.max": "10Mbit", "limits.egress": "1Gbit"}), (10**7, 10**9))
        self.assertEqual(limits.rates({}), (None, None))

    def test_commands(self):
        """The exact tc invocations."""
        self.assertEqual(limits.commands("veth1", {"limits.ingress": "10Mbit", "limits.egress": "2Mbit"}), [
            ["tc", "qdisc", "add", "dev", "veth1", "root", "handle", "1:0", "htb", "default", "10"],
            ["tc", "class", "add", "dev", "veth1", "parent", "1:0", "classid", "1:10", "htb", "rate", "10000000bit"],
            ["tc", "qdisc", "add", "dev", "veth1", "ingress", "handle", "ffff:0"],
            ["tc", "filter", "add", "dev", "veth1", "parent", "ffff:0", "protocol", "all", "u32", "match", "u32",
             "0", "0", "police", "rate", "2000000bit", "burst", "1024k", "mtu", "64kb", "drop", "flowid", ":1"],
        ])
        self.assertEqual(limits.commands("veth1", {}), [])
        self.assertEqual(limits.clear_commands("veth1"), [["tc", "qdisc", "del", "dev", "veth1", "root"],
                                                          ["tc", "qdisc", "del", "dev", "veth1", "ingress"]])
        self.assertTrue(limits.has_limits({"limits.max": "1kbit"}))
        self.assertFalse(limits.has_limits({"limits.max": ""}))
