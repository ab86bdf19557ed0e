# -*- test-case-name: tests.unit.test_network_firewall -*-
"""nftables rules for managed networks and nics, in tables of our own.

Each managed network `N` owns the table `inet lxdtx-N`; each nic with
`security.mac_filtering` owns `bridge lxdtx-mac-H` (H: its host-side name).
Nothing else is ever touched. A table is replaced in one `nft -f -`
transaction (create if missing, delete, create again with its rules), so a
change never leaves a moment without rules, and removing one is idempotent.

What a network's table holds (the reference's rules, iptables → nftables):

* DHCP and DNS to and from the bridge are accepted whenever dnsmasq runs,
  whatever `ipvX.firewall` says (`network_firewall_filtering`);
* forwarding from and to the bridge is accepted (`ipvX.routing` true) or
  dropped (false) only while `ipvX.firewall` is true;
* `ipvX.nat`: traffic from the subnet leaving it is masqueraded.
"""

from lxdtx import errors
from lxdtx.asyncutil import ProcessError, run
from lxdtx.network import addresses, schema

PREFIX = "lxdtx-"
NFT = "nft"


class FirewallError(Exception):
    """nft refused a rule set; the message carries nft's explanation."""


def table_name(network):
    return f"{PREFIX}{network}"


def mac_table_name(host_name):
    return f"{PREFIX}mac-{host_name}"


def _quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def network_chains(name, config, dnsmasq_running=True):
    """{chain: (hook line, [rules])} for network `name`; only chains that have rules."""
    dev = _quote(name)
    chains = {"input": [], "output": [], "forward": [], "postrouting": []}
    families = []
    for version, family, icmp in ((4, "ipv4", None), (6, "ipv6", "icmpv6")):
        net = addresses.subnet(config.get(f"ipv{version}.address", ""))
        if net is None:
            continue
        families.append((version, family, net))
        if dnsmasq_running:
            dhcp_server, _dhcp_client = (67, 68) if version == 4 else (547, 546)
            chains["input"] += [
                f"iifname {dev} meta nfproto {family} udp dport {{ 53, {dhcp_server} }} accept",
                f"iifname {dev} meta nfproto {family} tcp dport 53 accept",
            ]
            chains["output"] += [
                f"oifname {dev} meta nfproto {family} udp sport {{ 53, {dhcp_server} }} accept",
                f"oifname {dev} meta nfproto {family} tcp sport 53 accept",
            ]
            if icmp:
                chains["input"].append(f"iifname {dev} icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, "
                                       "nd-neighbor-advert } accept")
                chains["output"].append(f"oifname {dev} icmpv6 type {{ nd-router-advert, nd-neighbor-solicit, "
                                        "nd-neighbor-advert } accept")
        if schema.is_enabled(config, f"ipv{version}.firewall"):
            verdict = "accept" if schema.is_enabled(config, f"ipv{version}.routing") else "drop"
            chains["forward"] += [
                f"iifname {dev} meta nfproto {family} {verdict}",
                f"oifname {dev} meta nfproto {family} {verdict}",
            ]
        if schema.is_enabled(config, f"ipv{version}.nat"):
            ip = "ip" if version == 4 else "ip6"
            chains["postrouting"].append(f"{ip} saddr {net} {ip} daddr != {net} masquerade")
    hooks = {
        "input": "type filter hook input priority 0; policy accept;",
        "output": "type filter hook output priority 0; policy accept;",
        "forward": "type filter hook forward priority 0; policy accept;",
        "postrouting": "type nat hook postrouting priority 100; policy accept;",
    }
    return {chain: (hooks[chain], rules) for chain, rules in chains.items() if rules}


def _table_text(family, table, chains):
    lines = [f"table {family} {table} {{"]
    for chain, (hook, rules) in chains.items():
        lines.append(f"\tchain {chain} {{")
        lines.append(f"\t\t{hook}")
        lines += [f"\t\t{rule}" for rule in rules]
        lines.append("\t}")
    lines.append("}")
    return lines


def replace_script(family, table, chains):
    """The nft script that atomically replaces (or, with no chains, removes) one table."""
    lines = [f"table {family} {table}", f"delete table {family} {table}"]
    if chains:
        lines += _table_text(family, table, chains)
    return "\n".join(lines) + "\n"


def network_script(name, config, dnsmasq_running=True):
    return replace_script("inet", table_name(name), network_chains(name, config, dnsmasq_running))


def mac_filter_chains(host_name, hwaddr):
    """Frames entering the bridge from a nic's host end must carry its MAC (also inside ARP)."""
    dev, mac = _quote(host_name), hwaddr.lower()
    rules = [f"iifname {dev} ether saddr != {mac} drop",
             f"iifname {dev} arp saddr ether != {mac} drop"]
    return {
        "input": ("type filter hook input priority 0; policy accept;", rules),
        "forward": ("type filter hook forward priority 0; policy accept;", rules),
    }


def mac_filter_script(host_name, hwaddr):
    return replace_script("bridge", mac_table_name(host_name), mac_filter_chains(host_name, hwaddr))


async def apply(script):
    """Run one nft transaction."""
    try:
        await run([NFT, "-f", "-"], stdin=script.encode())
    except ProcessError as e:
        raise FirewallError(f"Failed to apply firewall rules: {e}") from None
    except OSError as e:
        raise FirewallError(f"Failed to run nft: {errors.describe(e)}") from None


async def apply_network(name, config, dnsmasq_running=True):
    await apply(network_script(name, config, dnsmasq_running))


async def remove_network(name):
    await apply(replace_script("inet", table_name(name), {}))


async def apply_mac_filter(host_name, hwaddr):
    await apply(mac_filter_script(host_name, hwaddr))


async def remove_mac_filter(host_name):
    await apply(replace_script("bridge", mac_table_name(host_name), {}))


async def tables():
    """[(family, name)] of every nft table of ours in this network namespace."""
    try:
        _, out, _ = await run([NFT, "list", "tables"])
    except (ProcessError, OSError):
        return []
    found = []
    for line in out.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table" and parts[2].startswith(PREFIX):
            found.append((parts[1], parts[2]))
    return found
