# -*- test-case-name: tests.unit.test_devices -*-
"""`nic` devices: their keys per nictype."""

import re

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_any, is_bit_rate, is_bool, is_int64, is_ipv4, is_ipv6, is_mac
from lxdtx.device.keys import check_keys

NICTYPES = ("bridged", "macvlan", "p2p", "physical", "sriov")


def _is_vlan(value):
    if not value.isdigit() or not 0 < int(value) < 4095:
        raise ValueError(f"Invalid VLAN ID: {value}")


def _is_ifname(value):
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,15}", value):
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
    "parent": is_any,
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
ALLOWED = {
    "bridged": _COMMON | {"parent", "host_name", "limits.ingress", "limits.egress", "limits.max",
                          "ipv4.address", "ipv6.address", "security.mac_filtering",
                          "maas.subnet.ipv4", "maas.subnet.ipv6"},
    "macvlan": _COMMON | {"parent", "vlan", "host_name", "maas.subnet.ipv4", "maas.subnet.ipv6"},
    "p2p": _COMMON | {"host_name", "limits.ingress", "limits.egress", "limits.max"},
    "physical": _COMMON | {"parent", "vlan", "maas.subnet.ipv4", "maas.subnet.ipv6"},
    "sriov": _COMMON | {"parent", "host_name", "maas.subnet.ipv4", "maas.subnet.ipv6"},
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


def lxc_lines(index, config, name, hwaddr, host_name):
    """liblxc lines for a `bridged` nic: a veth pair whose host end joins `parent`."""
    prefix = f"lxc.net.{index}"
    lines = [
        (f"{prefix}.type", "veth"),
        (f"{prefix}.flags", "up"),
        (f"{prefix}.link", config["parent"]),
        (f"{prefix}.name", name),
        (f"{prefix}.hwaddr", hwaddr),
        (f"{prefix}.veth.pair", host_name),
    ]
    if config.get("mtu"):
        lines.append((f"{prefix}.mtu", config["mtu"]))
    return lines
