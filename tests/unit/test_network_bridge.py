"""Pure parts of bridge set-up: Open vSwitch commands and what a config asks of the kernel."""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.network import bridge
from lxdtx.network.networks import unmanaged_type


class BridgeTests(SynchronousTestCase):
    """Commands and wanted state."""

    def test_ovs_commands(self):
        """Open vSwitch bridges and ports are made idempotently."""
        self.assertEqual(bridge.ovs_add_bridge("br0"), ["ovs-vsctl", "--may-exist", "add-br", "br0"])
        self.assertEqual(bridge.ovs_delete_bridge("br0"), ["ovs-vsctl", "--if-exists", "del-br", "br0"])
        self.assertEqual(bridge.ovs_add_port("br0", "eth1"), ["ovs-vsctl", "--may-exist", "add-port", "br0", "eth1"])
        self.assertEqual(bridge.ovs_delete_port("br0", "eth1"), ["ovs-vsctl", "--if-exists", "del-port", "br0", "eth1"])
        self.assertTrue(bridge.is_ovs({"bridge.driver": "openvswitch"}))
        self.assertFalse(bridge.is_ovs({}))

    def test_wanted(self):
        """Addresses, routes (only for families with an address) and ports from the config."""
        config = {"ipv4.address": "10.0.3.1/24", "ipv6.address": "none", "ipv4.routes": "10.9.0.0/16",
                  "ipv6.routes": "fd43::/64", "bridge.external_interfaces": "eth1, eth2,"}
        self.assertEqual(bridge.wanted_addresses(config), [ipaddress.ip_interface("10.0.3.1/24")])
        self.assertEqual(bridge.wanted_routes(config), [ipaddress.ip_network("10.9.0.0/16")])
        self.assertEqual(bridge.external_interfaces(config), ["eth1", "eth2"])

    def test_unmanaged_types(self):
        """Host interfaces are typed from their link kind."""
        link = {"loopback": False, "kind": None}
        self.assertEqual(unmanaged_type({**link, "loopback": True}), "loopback")
        self.assertEqual(unmanaged_type(link), "physical")
        self.assertEqual(unmanaged_type({**link, "kind": "bridge"}), "bridge")
        self.assertEqual(unmanaged_type({**link, "kind": "bond"}), "bond")
        self.assertEqual(unmanaged_type({**link, "kind": "vlan"}), "vlan")
        self.assertEqual(unmanaged_type({**link, "kind": "veth"}), "unknown")
