"""nftables rule text of networks and nics: what each key turns on and off."""

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.network import firewall

V4 = {"ipv4.address": "10.0.3.1/24"}


class NetworkRuleTests(SynchronousTestCase):
    """Rules of a network's own table."""

    def chains(self, config, running=True):
        return {chain: rules for chain, (_, rules) in firewall.network_chains("br0", config, running).items()}

    def test_defaults(self):
        """DHCP/DNS accepted, forwarding accepted both ways, no NAT unless asked."""
        chains = self.chains(V4)
        self.assertEqual(chains["forward"], ['iifname "br0" meta nfproto ipv4 accept',
                                             'oifname "br0" meta nfproto ipv4 accept'])
        self.assertIn('iifname "br0" meta nfproto ipv4 udp dport { 53, 67 } accept', chains["input"])
        self.assertIn('iifname "br0" meta nfproto ipv4 tcp dport 53 accept', chains["input"])
        self.assertIn('oifname "br0" meta nfproto ipv4 udp sport { 53, 67 } accept', chains["output"])
        self.assertNotIn("postrouting", chains)

    def test_nat(self):
        """ipv4.nat / ipv6.nat masquerade traffic leaving the subnet."""
        chains = self.chains({**V4, "ipv4.nat": "true", "ipv6.address": "fd42::1/64", "ipv6.nat": "true"})
        self.assertEqual(chains["postrouting"], ["ip saddr 10.0.3.0/24 ip daddr != 10.0.3.0/24 masquerade",
                                                 "ip6 saddr fd42::/64 ip6 daddr != fd42::/64 masquerade"])

    def test_firewall_off(self):
        """ipv4.firewall=false drops the forward rules only: NAT and DHCP/DNS stay."""
        chains = self.chains({**V4, "ipv4.firewall": "false", "ipv4.nat": "true"})
        self.assertNotIn("forward", chains)
        self.assertIn("postrouting", chains)
        self.assertIn('iifname "br0" meta nfproto ipv4 udp dport { 53, 67 } accept', chains["input"])

    def test_routing_off(self):
        """ipv4.routing=false drops forwarding (while the firewall is on)."""
        chains = self.chains({**V4, "ipv4.routing": "false"})
        self.assertEqual(chains["forward"], ['iifname "br0" meta nfproto ipv4 drop',
                                             'oifname "br0" meta nfproto ipv4 drop'])

    def test_ipv6(self):
        """IPv6 gets DHCPv6 and neighbour discovery rules."""
        chains = self.chains({"ipv6.address": "fd42::1/64"})
        self.assertIn('iifname "br0" meta nfproto ipv6 udp dport { 53, 547 } accept', chains["input"])
        self.assertTrue(any("nd-router-solicit" in rule for rule in chains["input"]))
        self.assertTrue(any("nd-router-advert" in rule for rule in chains["output"]))

    def test_no_dnsmasq(self):
        """Without dnsmasq there are no DHCP/DNS rules; without addresses no table at all."""
        chains = self.chains(V4, running=False)
        self.assertNotIn("input", chains)
        self.assertEqual(self.chains({}), {})

    def test_script(self):
        """The script replaces the table in one transaction; removal is idempotent."""
        script = firewall.network_script("br0", {**V4, "ipv4.nat": "true"})
        lines = script.splitlines()
        self.assertEqual(lines[:3], ["table inet lxdtx-br0", "delete table inet lxdtx-br0", "table inet lxdtx-br0 {"])
        self.assertIn("\tchain postrouting {", lines)
        self.assertIn("\t\ttype nat hook postrouting priority 100; policy accept;", lines)
        self.assertEqual(firewall.replace_script("inet", "lxdtx-br0", {}),
                         "table inet lxdtx-br0\ndelete table inet lxdtx-br0\n")

    def test_quoting(self):
        """Interface names are quoted in rules."""
        chains = self.chains({"ipv4.address": "10.0.3.1/24"})
        self.assertTrue(all('"br0"' in rule for rules in chains.values() for rule in rules))
        self.assertEqual(firewall._quote('a"b'), '"a\\"b"')


class MacFilterTests(SynchronousTestCase):
    """security.mac_filtering in a bridge-family table per nic."""

    def test_rules(self):
        """Ethernet and ARP source MACs other than the nic's are dropped, on input and forward."""
        script = firewall.mac_filter_script("veth1234", "00:16:3E:01:02:03")
        self.assertTrue(script.startswith("table bridge lxdtx-mac-veth1234\ndelete table bridge lxdtx-mac-veth1234\n"))
        self.assertEqual(script.count('iifname "veth1234" ether saddr != 00:16:3e:01:02:03 drop'), 2)
        self.assertEqual(script.count('iifname "veth1234" arp saddr ether != 00:16:3e:01:02:03 drop'), 2)
        self.assertIn("type filter hook forward priority 0;", script)
