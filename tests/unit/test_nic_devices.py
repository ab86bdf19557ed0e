"""nic devices: keys per nictype and the liblxc lines of each."""

from twisted.trial.unittest import SynchronousTestCase

from lxdtx import device
from lxdtx.config.schema import ConfigError
from lxdtx.device import nic
from lxdtx.instance import devices
from lxdtx.network.nics import only_live_changes


class ValidationTests(SynchronousTestCase):
    """Which keys each nictype takes."""

    def refused(self, config):
        with self.assertRaises(ConfigError) as raised:
            device.validate({"n": {"type": "nic", **config}})
        return raised.exception.message

    def test_keys_per_type(self):
        """vlan only on macvlan/physical; limits only on bridged/p2p; static addresses only bridged."""
        self.assertIn("vlan", self.refused({"nictype": "bridged", "parent": "br0", "vlan": "10"}))
        self.assertIn("limits.max", self.refused({"nictype": "macvlan", "parent": "eth0", "limits.max": "1Mbit"}))
        self.assertIn("ipv4.address", self.refused({"nictype": "p2p", "ipv4.address": "10.0.0.1"}))
        self.assertIn("Missing parent", self.refused({"nictype": "sriov"}))
        self.assertIn("Bad nic type", self.refused({"nictype": "tap"}))
        self.assertIn("Invalid VLAN ID", self.refused({"nictype": "physical", "parent": "eth0", "vlan": "4095"}))
        self.assertIn("Invalid MTU", self.refused({"nictype": "p2p", "mtu": "10"}))
        self.assertIn("bit rate", self.refused({"nictype": "p2p", "limits.ingress": "10"}))
        self.assertIn("interface name", self.refused({"nictype": "p2p", "name": "x" * 16}))
        device.validate({"n": {"type": "nic", "nictype": "macvlan", "parent": "eth0", "vlan": "10",
                               "maas.subnet.ipv4": "s"}})

    def test_live_changes(self):
        """Limits, static addresses and MAC filtering change in place; anything else re-plugs."""
        old = {"type": "nic", "nictype": "bridged", "parent": "br0"}
        self.assertTrue(only_live_changes(old, {**old, "limits.max": "1Mbit", "ipv4.address": "10.0.0.5"}))
        self.assertFalse(only_live_changes(old, {**old, "parent": "br1"}))
        self.assertFalse(only_live_changes(old, {**old, "name": "eth5"}))


class LinesTests(SynchronousTestCase):
    """liblxc lines per nictype."""

    def lines(self, config, **kwargs):
        return nic.lxc_lines(0, config, "eth0", "00:16:3e:00:00:01", **kwargs)

    def test_bridged(self):
        """A veth whose host end joins the parent bridge."""
        self.assertEqual(self.lines({"nictype": "bridged", "parent": "br0", "mtu": "1400"}, host_name="vethX"), [
            ("lxc.net.0.type", "veth"), ("lxc.net.0.flags", "up"), ("lxc.net.0.link", "br0"),
            ("lxc.net.0.veth.pair", "vethX"), ("lxc.net.0.name", "eth0"), ("lxc.net.0.hwaddr", "00:16:3e:00:00:01"),
            ("lxc.net.0.mtu", "1400")])

    def test_p2p(self):
        """A veth with no bridge."""
        lines = self.lines({"nictype": "p2p"}, host_name="vethY")
        self.assertNotIn("lxc.net.0.link", dict(lines))
        self.assertEqual(dict(lines)["lxc.net.0.veth.pair"], "vethY")

    def test_macvlan(self):
        """macvlan in bridge mode on the parent, or on parent.vlan."""
        self.assertEqual(dict(self.lines({"nictype": "macvlan", "parent": "eth0"}))["lxc.net.0.macvlan.mode"], "bridge")
        self.assertEqual(dict(self.lines({"nictype": "macvlan", "parent": "eth0", "vlan": "10"}))["lxc.net.0.link"],
                         "eth0.10")

    def test_physical_and_sriov(self):
        """phys devices: a physical interface keeps its MAC unless asked; sriov uses the chosen VF."""
        physical = dict(self.lines({"nictype": "physical", "parent": "eth1"}))
        self.assertEqual((physical["lxc.net.0.type"], physical["lxc.net.0.link"]), ("phys", "eth1"))
        self.assertNotIn("lxc.net.0.hwaddr", physical)
        asked = dict(self.lines({"nictype": "physical", "parent": "eth1", "hwaddr": "00:16:3e:00:00:01"}))
        self.assertEqual(asked["lxc.net.0.hwaddr"], "00:16:3e:00:00:01")
        vf = dict(self.lines({"nictype": "sriov", "parent": "eth2"}, link="eth2v3"))
        self.assertEqual((vf["lxc.net.0.type"], vf["lxc.net.0.link"]), ("phys", "eth2v3"))

    def test_start_lines_names(self):
        """Explicit names are reserved first; others get the first free ethN; volatile keys are returned."""
        nics = {"a": {"type": "nic", "nictype": "p2p"}, "b": {"type": "nic", "nictype": "p2p", "name": "eth0"},
                "c": {"type": "nic", "nictype": "macvlan", "parent": "eth0"}}
        lines, volatile = devices.start_lines(None, {"volatile.c.hwaddr": "00:16:3e:00:00:09"}, nics)
        names = [value for key, value in lines if key.endswith(".name")]
        self.assertEqual(names, ["eth1", "eth0", "eth2"])
        self.assertEqual(volatile["volatile.c.hwaddr"], "00:16:3e:00:00:09")
        self.assertEqual(volatile["volatile.a.name"], "eth1")
        self.assertTrue(volatile["volatile.a.host_name"].startswith("veth"))
        self.assertNotIn("volatile.c.host_name", volatile)

    def test_start_lines_sriov(self):
        """An sriov nic uses the VF chosen before the start (volatile host_name)."""
        lines, volatile = devices.start_lines(None, {"volatile.v.host_name": "eth2v3"},
                                              {"v": {"type": "nic", "nictype": "sriov", "parent": "eth2"}})
        self.assertIn(("lxc.net.0.link", "eth2v3"), lines)
        self.assertEqual(volatile["volatile.v.host_name"], "eth2v3")
