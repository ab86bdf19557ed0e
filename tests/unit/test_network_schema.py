"""Network names and config keys: every key's validation, the rules between keys, creation defaults."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.config.schema import ConfigError
from lxdtx.network import schema


class NameTests(SynchronousTestCase):
    """Network names become interface names: 2 to 15 of [-_a-zA-Z0-9.]."""

    def test_valid(self):
        """Typical names pass."""
        for name in ("lxdbr0", "n1", "my-net_1.2", "x" * 15):
            schema.check_name(name)

    def test_invalid(self):
        """Too short, too long, slashes, spaces, dots alone, names the kernel keeps: a 400."""
        for name in ("", "a", "x" * 16, "a/b", "a b", "..", "ä1", None, "default", "all"):
            self.assertRaises(errors.BadRequest, schema.check_name, name)

    @given(st.text(min_size=2, max_size=15, alphabet="abcXYZ019-_."))
    def test_alphabet(self, name):
        """Any name of the allowed alphabet and length passes, except . and .."""
        if name not in (".", ".."):
            schema.check_name(name)


class KeyTests(SynchronousTestCase):
    """Each key's validator, with a message naming the key."""

    def refused(self, config, name="n1"):
        with self.assertRaises(ConfigError) as raised:
            schema.validate(name, config)
        return raised.exception.message

    def test_valid_config(self):
        """A config using every key passes."""
        schema.validate("n1", {
            "bridge.driver": "native", "bridge.external_interfaces": "eth1, eth2", "bridge.hwaddr": "00:16:3e:00:00:01",
            "bridge.mtu": "1500", "bridge.mode": "standard", "dns.domain": "lxd", "dns.mode": "dynamic",
            "ipv4.address": "10.0.3.1/24", "ipv4.dhcp": "true", "ipv4.dhcp.expiry": "2h",
            "ipv4.dhcp.gateway": "10.0.3.2", "ipv4.dhcp.ranges": "10.0.3.10-10.0.3.20,10.0.3.30-10.0.3.40",
            "ipv4.firewall": "false", "ipv4.nat": "yes", "ipv4.routes": "10.9.0.0/16, 10.8.0.0/24",
            "ipv4.routing": "on", "ipv6.address": "fd42::1/64", "ipv6.dhcp": "1", "ipv6.dhcp.expiry": "infinite",
            "ipv6.dhcp.ranges": "fd42::10-fd42::20", "ipv6.dhcp.stateful": "true", "ipv6.firewall": "true",
            "ipv6.nat": "false", "ipv6.routes": "fd43::/64", "ipv6.routing": "true", "raw.dnsmasq": "x=y",
            "maas.subnet.ipv4": "a", "maas.subnet.ipv6": "b", "user.anything": "goes",
            "tunnel.t.protocol": "vxlan", "tunnel.t.local": "192.0.2.1", "tunnel.t.remote": "192.0.2.2",
            "tunnel.t.port": "4789", "tunnel.t.group": "239.0.0.1", "tunnel.t.id": "16777215",
            "tunnel.t.interface": "eth0",
        })

    def test_unknown_keys(self):
        """Unknown keys, and tunnel keys of the wrong shape, are named."""
        self.assertEqual(self.refused({"colour": "red"}), "Invalid network configuration key: colour")
        self.assertEqual(self.refused({"tunnel.t.colour": "red"}), "Invalid network configuration key: tunnel.t.colour")
        self.assertEqual(self.refused({"tunnel.a.b.c": "x"}), "Invalid network configuration key: tunnel.a.b.c")
        self.assertEqual(self.refused({"fan.thing": "x"}), "Invalid network configuration key: fan.thing")

    def test_bad_values(self):
        """Bad values: the message names the key and the reason."""
        cases = {
            "ipv4.address": ["10.0.0.1", "10.0.0.300/24", "fd42::1/64", "10.0.0.0/24", "10.0.0.255/24", "auto1"],
            "ipv6.address": ["fd42::1", "10.0.0.1/24", "nonsense"],
            "ipv4.nat": ["maybe"], "ipv4.dhcp.gateway": ["10.0.0"], "ipv4.dhcp.expiry": ["soon", "1y"],
            "ipv4.dhcp.ranges": ["10.0.0.1", "10.0.0.9-10.0.0.1", "fd42::1-fd42::2"],
            "ipv6.dhcp.ranges": ["10.0.0.1-10.0.0.2"], "ipv4.routes": ["10.0.0.1/24", "10.0.0.0", "fd42::/64"],
            "ipv6.routes": ["10.0.0.0/24"], "bridge.driver": ["ovs"], "bridge.mode": ["mesh"],
            "bridge.hwaddr": ["00:16:3e"], "bridge.mtu": ["big"], "bridge.external_interfaces": ["a b", "x/y"],
            "dns.mode": ["auto"], "tunnel.t.protocol": ["ipip"], "tunnel.t.port": ["0", "65536"],
            "tunnel.t.id": ["-1", "16777216"], "tunnel.t.local": ["host"], "tunnel.t.interface": ["x" * 16],
        }
        for key, values in cases.items():
            for value in values:
                message = self.refused({key: value})
                self.assertIn(key, message, (key, value))

    def test_empty_means_unset(self):
        """An empty value passes every validator."""
        schema.validate("n1", {"ipv4.address": "", "bridge.mtu": "", "ipv4.nat": ""})

    def test_values_must_be_strings(self):
        """Non-string values and non-map configs are refused."""
        self.assertIn("must be a string", self.refused({"ipv4.nat": True}))
        self.assertRaises(errors.BadRequest, schema.validate, "n1", ["ipv4.nat"])


class RuleTests(SynchronousTestCase):
    """Rules between keys."""

    def refused(self, config, name="n1"):
        with self.assertRaises(ConfigError) as raised:
            schema.validate(name, config)
        return raised.exception.message

    def test_mtu(self):
        """MTU minimums depend on the address families; a maximum applies."""
        self.assertIn("1280", self.refused({"bridge.mtu": "1279", "ipv6.address": "fd42::1/64"}))
        schema.validate("n1", {"bridge.mtu": "1279", "ipv6.address": "none"})
        self.assertIn("68", self.refused({"bridge.mtu": "67"}))
        self.assertIn("65535", self.refused({"bridge.mtu": "65536"}))

    def test_fan(self):
        """fan mode refuses ipv4/ipv6 keys and long names; fan keys need fan mode."""
        self.assertIn("fan", self.refused({"bridge.mode": "fan", "ipv4.address": "10.0.0.1/24"}))
        self.assertIn("11 characters", self.refused({"bridge.mode": "fan"}, name="abcdefghijkl"))
        self.assertIn("'fan' mode", self.refused({"fan.type": "ipip"}))
        self.assertIn("1480", self.refused({"bridge.mode": "fan", "fan.type": "ipip", "bridge.mtu": "1500"}))
        self.assertIn("1450", self.refused({"bridge.mode": "fan", "bridge.mtu": "1460"}))
        schema.validate("n1", {"bridge.mode": "fan", "fan.underlay_subnet": "auto", "fan.type": "ipip"})

    def test_tunnel_name_length(self):
        """Network name plus tunnel name fit an interface name (`NET-TUNNEL`)."""
        self.assertIn("too long", self.refused({"tunnel.abcdefgh.protocol": "gre"}, name="abcdefg"))
        schema.validate("abcdef", {"tunnel.abcdefgh.protocol": "gre"})

    def test_tunnels_listed(self):
        """`tunnels()` names each configured tunnel once."""
        self.assertEqual(schema.tunnels({"tunnel.b.id": "1", "tunnel.a.protocol": "gre", "tunnel.b.protocol": "x",
                                         "ipv4.nat": "true"}), ["a", "b"])


class DefaultTests(SynchronousTestCase):
    """Defaults of a new network and of keys."""

    def test_creation_defaults(self):
        """ipv4 auto with NAT; ipv6 auto with NAT when the host has IPv6; explicit values win."""
        self.assertEqual(schema.creation_defaults({}, True),
                         {"ipv4.address": "auto", "ipv4.nat": "true", "ipv6.address": "auto", "ipv6.nat": "true"})
        self.assertEqual(schema.creation_defaults({}, False), {"ipv4.address": "auto", "ipv4.nat": "true"})
        self.assertEqual(schema.creation_defaults({"ipv4.address": "10.0.0.1/24", "ipv6.address": "none"}, True),
                         {"ipv4.address": "10.0.0.1/24", "ipv6.address": "none"})
        self.assertEqual(schema.creation_defaults({"ipv4.address": "auto", "ipv4.nat": "false", "x": ""}, False),
                         {"ipv4.address": "auto", "ipv4.nat": "false"})
        self.assertEqual(schema.creation_defaults({"bridge.mode": "fan"}, True),
                         {"bridge.mode": "fan", "fan.underlay_subnet": "auto"})

    def test_key_defaults(self):
        """Booleans and values read with their defaults."""
        self.assertTrue(schema.is_enabled({}, "ipv4.firewall"))
        self.assertFalse(schema.is_enabled({}, "ipv4.nat"))
        self.assertFalse(schema.is_enabled({"ipv4.dhcp": "no"}, "ipv4.dhcp"))
        self.assertEqual(schema.get({}, "ipv4.dhcp.expiry"), "1h")
        self.assertEqual(schema.get({}, "dns.domain"), "lxd")

    def test_mtu(self):
        """The bridge MTU: explicit, 1400 with tunnels, 1500 otherwise."""
        self.assertEqual(schema.mtu({}), 1500)
        self.assertEqual(schema.mtu({"tunnel.t.protocol": "vxlan"}), 1400)
        self.assertEqual(schema.mtu({"bridge.mtu": "9000", "tunnel.t.protocol": "vxlan"}), 9000)
