# -*- test-case-name: tests.unit.test_nic_devices -*-
"""`nic` devices: their keys per nictype, and the liblxc lines of each nictype.

What each nictype becomes in liblxc:

    bridged   a veth pair; the host end (`host_name`) joins the bridge `parent`
    p2p       a veth pair whose host end (`host_name`) stays unattached
    macvlan   a macvlan on `parent` (or on `parent.vlan` when `vlan` is set), bridge mode
    physical  the host interface `parent` (or `parent.vlan`) moved into the container
    sriov     a free virtual function of `parent`, moved into the container

The host-side work around them (VLAN interfaces, virtual functions, limits,
MAC filtering, static DHCP entries, hot plug) is in `lxdtx.network.nics`.
"""

import re

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_any, is_bit_rate, is_bool, is_int64, is_ipv4, is_ipv6, is_mac
from lxdtx.device.keys import check_keys

NICTYPES = ("bridged", "macvlan", "p2p", "physical", "sriov")
# Keys whose change a running container takes without re-plugging the nic.
LIVE_KEYS = frozenset({"limits.ingress", "limits.egress", "limits.max", "ipv4.address", "ipv6.address",
                       "security.mac_filtering", "maas.subnet.ipv4", "maas.subnet.ipv6"})


def _is_vlan(value):
    if not value.isdigit() or not 0 < int(value) < 4095:
        raise ValueError(f"Invalid VLAN ID: {value}")


def _is_ifname(value):
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,15}", value) or value in (".", ".."):
        raise ValueError(f"Invalid interface name: {value}")


def _is_mtu(value):
    is_int64(value)
    if not 68 <= int(value) <= 65535:
        raise ValueError(f"Invalid MTU: {value}")


KEYS = {
    "nictype": is_any,
    "name": _is_ifname,
    "host_name": _is_ifname,
    "hwaddr": is_mac,
    "mtu": _is_mtu,
    "parent": _is_ifname,
    "vlan": _is_vlan,
    "limits.ingress": is_bit_rate,
    "limits.egress": is_bit_rate,
    "limits.max": is_bit_rate,
    "ipv4.address": is_ipv4,
    "ipv6.address": is_ipv6,
    "security.mac_filtering": is_bool,
    "maas.subnet.ipv4": is_any,
    "maas.subnet.ipv6": is_any,
}

_COMMON = {"nictype", "name", "hwaddr", "mtu"}
_MAAS = {"maas.subnet.ipv4", "maas.subnet.ipv6"}
ALLOWED = {
    "bridged": _COMMON | _MAAS | {"parent", "host_name", "limits.ingress", "limits.egress", "limits.max",
                                  "ipv4.address", "ipv6.address", "security.mac_filtering"},
    "macvlan": _COMMON | _MAAS | {"parent", "vlan", "host_name"},
    "p2p": _COMMON | {"host_name", "limits.ingress", "limits.egress", "limits.max"},
    "physical": _COMMON | _MAAS | {"parent", "vlan"},
    "sriov": _COMMON | _MAAS | {"parent", "host_name"},
}


def validate(name, config):
    nictype = config.get("nictype", "")
    if not nictype:
        raise ConfigError([(name, "Missing nic type")])
    if nictype not in NICTYPES:
        raise ConfigError([(name, f"Bad nic type: {nictype}")])
    check_keys("nic", name, config, KEYS, ALLOWED[nictype])
    if nictype != "p2p" and not config.get("parent"):
        raise ConfigError([(name, f"Missing parent for {nictype} type nic")])


def vlan_link(config):
    """The host interface a macvlan/physical nic uses: `parent`, or `parent.vlan` with a VLAN."""
    if config.get("vlan"):
        return f"{config['parent']}.{config['vlan']}"
    return config["parent"]


def lxc_lines(index, config, name, hwaddr, host_name=None, link=None):
    """liblxc lines of one nic; `link` overrides the host interface (a chosen virtual function)."""
    nictype = config.get("nictype")
    prefix = f"lxc.net.{index}"
    if nictype in ("bridged", "p2p"):
        lines = [(f"{prefix}.type", "veth"), (f"{prefix}.flags", "up")]
        if nictype == "bridged":
            lines.append((f"{prefix}.link", config["parent"]))
        lines.append((f"{prefix}.veth.pair", host_name))
    elif nictype == "macvlan":
        lines = [(f"{prefix}.type", "macvlan"), (f"{prefix}.flags", "up"),
                 (f"{prefix}.macvlan.mode", "bridge"), (f"{prefix}.link", link or vlan_link(config))]
    elif nictype in ("physical", "sriov"):
        lines = [(f"{prefix}.type", "phys"), (f"{prefix}.flags", "up"),
                 (f"{prefix}.link", link or vlan_link(config))]
    else:
        raise ValueError(f"Bad nic type: {nictype}")
    lines.append((f"{prefix}.name", name))
    # A physical interface keeps its own MAC unless one is asked for.
    if hwaddr and (nictype != "physical" or config.get("hwaddr")):
        lines.append((f"{prefix}.hwaddr", hwaddr))
    if config.get("mtu"):
        lines.append((f"{prefix}.mtu", config["mtu"]))
    return lines
