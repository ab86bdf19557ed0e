"""Tunnel links from `tunnel.NAME.*` keys."""

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.network import tunnels


class TunnelTests(SynchronousTestCase):
    """What kind of link each tunnel becomes, with which attributes."""

    def test_vxlan_unicast(self):
        """local and remote: a point-to-point vxlan; id and port pass through."""
        config = {"tunnel.t.protocol": "vxlan", "tunnel.t.local": "192.0.2.1", "tunnel.t.remote": "192.0.2.2",
                  "tunnel.t.id": "42", "tunnel.t.port": "4789"}
        self.assertEqual(tunnels.specs("br0", config), {"br0-t": ("vxlan", {
            "vxlan_id": 42, "vxlan_local": "192.0.2.1", "vxlan_group": "192.0.2.2", "vxlan_port": 4789})})

    def test_vxlan_multicast(self):
        """Without a remote: the group (default 239.0.0.1) on `interface`, else the default route's."""
        config = {"tunnel.t.protocol": "vxlan", "tunnel.t.interface": "eth1"}
        self.assertEqual(tunnels.spec("br0", "t", config), ("vxlan", {
            "vxlan_id": 0, "vxlan_group": "239.0.0.1", "vxlan_link": "eth1"}))
        config = {"tunnel.t.protocol": "vxlan", "tunnel.t.group": "239.1.1.1"}
        self.assertTrue(tunnels.needs_default_interface(config))
        self.assertEqual(tunnels.spec("br0", "t", config, default_interface="eth0")[1]["vxlan_link"], "eth0")
        self.assertRaises(ValueError, tunnels.spec, "br0", "t", config)

    def test_gre(self):
        """gre: a gretap (ethernet over GRE) between local and remote; incomplete keys are skipped."""
        config = {"tunnel.g.protocol": "gre", "tunnel.g.local": "192.0.2.1", "tunnel.g.remote": "192.0.2.2",
                  "tunnel.h.protocol": "gre", "tunnel.h.local": "192.0.2.1", "tunnel.i.local": "192.0.2.1"}
        self.assertEqual(tunnels.specs("br0", config), {
            "br0-g": ("gretap", {"gre_local": "192.0.2.1", "gre_remote": "192.0.2.2"})})
        self.assertFalse(tunnels.needs_default_interface(config))
