# -*- test-case-name: tests.unit.test_network_schema -*-
"""Network names and config keys: validation, defaults, and the rules between keys.

Keys follow the reference (`config-keys.md` section 4); `user.*` keys are free and
`tunnel.NAME.KEY` keys are checked as `tunnel.TARGET.KEY`. Where the reference
accepts anything but the value ends up in dnsmasq or the kernel (ranges, routes,
expiry, bridge.hwaddr), the value is checked here so a bad one gets a 400 that
names the key instead of a failure half way through setting the network up.
"""

import ipaddress
import os
import re

from lxdtx import errors
from lxdtx.config.schema import ConfigError, Key, Schema
from lxdtx.config.types import is_any, is_bool, is_int64, is_mac, one_of, parse_int64
from lxdtx.network import addresses

_NAME = re.compile(r"[-_a-zA-Z0-9.]{2,15}")
_IFNAME = re.compile(r"[-_a-zA-Z0-9.:@]{1,15}")
_EXPIRY = re.compile(r"(\d+[smhdw]?|infinite)")
TUNNEL_KEYS = ("protocol", "local", "remote", "port", "group", "id", "interface")


# Interface names the kernel refuses: its per-interface sysctl trees have entries of these names.
_RESERVED = ("default", "all")


def check_name(name):
    """400 unless `name` may name a network (it becomes the bridge's interface name)."""
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("No name provided")
    if name in (".", "..") or not _NAME.fullmatch(name):
        raise errors.BadRequest(
            f"Invalid network name \"{name}\": 2 to 15 letters, digits, '-', '_' or '.'")
    if name in _RESERVED:
        raise errors.BadRequest(f"Invalid network name \"{name}\": reserved by the kernel (/proc/sys/net/*/conf/{name})")


def is_ifname(value):
    if value in (".", "..") or not _IFNAME.fullmatch(value) or "/" in value:
        raise ValueError(f"Invalid interface name: {value}")


def _is_ifname_list(value):
    for entry in value.split(","):
        entry = entry.strip()
        try:
            is_ifname(entry)
        except ValueError:
            raise ValueError(f"Invalid interface name '{entry}'") from None


def _address_key(version):
    def check(value):
        if value in ("none", "auto"):
            return
        try:
            found = ipaddress.ip_interface(value)
        except ValueError:
            raise ValueError(f"Invalid IPv{version} CIDR: {value}") from None
        if found.version != version or "/" not in value:
            raise ValueError(f"Invalid IPv{version} CIDR: {value}")
        network = found.network
        if found.ip == network.network_address and network.num_addresses > 2:
            raise ValueError(f"Not a usable IPv{version} address: {value}")
        if version == 4 and found.ip == network.broadcast_address and network.num_addresses > 2:
            raise ValueError(f"Not a usable IPv4 address: {value}")

    return check


def _is_ipv4(value):
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"Invalid IPv4 address: {value}") from None


def _is_network_v4(value):
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError:
        raise ValueError(f"Invalid IPv4 network: {value}") from None
    if "/" not in value:
        raise ValueError(f"Invalid IPv4 network: {value}")
    return network


def _is_underlay(value):
    if value != "auto":
        _is_network_v4(value)


def _ranges(version):
    return lambda value: addresses.parse_ranges(value, version)


def _routes(version):
    return lambda value: addresses.parse_routes(value, version)


def _is_expiry(value):
    if not _EXPIRY.fullmatch(value):
        raise ValueError(f"Invalid lease time: {value} (a number of seconds with an optional "
                         "s/m/h/d/w suffix, or 'infinite')")


def _is_port(value):
    port = parse_int64(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"Invalid port: {value}")


def _is_vni(value):
    vni = parse_int64(value)
    if not 0 <= vni < (1 << 24):
        raise ValueError(f"Invalid VXLAN id: {value} (0 to 16777215)")


_BOOL = Key(is_bool)

KEYS = {
    "bridge.driver": Key(one_of("native", "openvswitch"), "native"),
    "bridge.external_interfaces": Key(_is_ifname_list),
    "bridge.hwaddr": Key(is_mac),
    "bridge.mtu": Key(is_int64),
    "bridge.mode": Key(one_of("standard", "fan"), "standard"),
    "dns.domain": Key(is_any, "lxd"),
    "dns.mode": Key(one_of("dynamic", "managed", "none"), "managed"),
    "fan.overlay_subnet": Key(_is_network_v4, "240.0.0.0/8"),
    "fan.type": Key(one_of("vxlan", "ipip"), "vxlan"),
    "fan.underlay_subnet": Key(_is_underlay),
    "ipv4.address": Key(_address_key(4)),
    "ipv4.dhcp": Key(is_bool, "true"),
    "ipv4.dhcp.expiry": Key(_is_expiry, "1h"),
    "ipv4.dhcp.gateway": Key(_is_ipv4),
    "ipv4.dhcp.ranges": Key(_ranges(4)),
    "ipv4.firewall": Key(is_bool, "true"),
    "ipv4.nat": Key(is_bool, "false"),
    "ipv4.routes": Key(_routes(4)),
    "ipv4.routing": Key(is_bool, "true"),
    "ipv6.address": Key(_address_key(6)),
    "ipv6.dhcp": Key(is_bool, "true"),
    "ipv6.dhcp.expiry": Key(_is_expiry, "1h"),
    "ipv6.dhcp.ranges": Key(_ranges(6)),
    "ipv6.dhcp.stateful": Key(is_bool, "false"),
    "ipv6.firewall": Key(is_bool, "true"),
    "ipv6.nat": Key(is_bool, "false"),
    "ipv6.routes": Key(_routes(6)),
    "ipv6.routing": Key(is_bool, "true"),
    "maas.subnet.ipv4": Key(is_any),
    "maas.subnet.ipv6": Key(is_any),
    "raw.dnsmasq": Key(is_any),
}

_TUNNEL_RULES = {
    "protocol": Key(one_of("gre", "vxlan")),
    "local": Key(_is_ipv4),
    "remote": Key(_is_ipv4),
    "port": Key(_is_port),
    "group": Key(_is_ipv4),
    "id": Key(_is_vni),
    "interface": Key(is_ifname),
}

SCHEMA = Schema(
    KEYS,
    patterns=[(r"user\..+", Key(is_any))]
    + [(rf"tunnel\.[^.]+\.{key}", rule) for key, rule in _TUNNEL_RULES.items()],
    unknown="Invalid network configuration key: {key}",
)

MESSAGE = "Invalid value for network configuration key \"{key}\": {reason}"


def get(config, key):
    """A key's value or its default."""
    return SCHEMA.get(config, key)


def is_enabled(config, key):
    """A boolean key read with its default."""
    return get(config, key).lower() in ("true", "1", "yes", "on")


def tunnels(config):
    """Names of the tunnels configured, sorted."""
    return sorted({key.split(".")[1] for key in config if key.startswith("tunnel.") and key.count(".") == 2})


def validate(name, config):
    """Raise ConfigError (400) naming the first bad key; checks the rules between keys too."""
    if not isinstance(config, dict):
        raise errors.BadRequest("config must be a map of strings")
    SCHEMA.validate(config, MESSAGE)
    fan = config.get("bridge.mode") == "fan"
    if fan and len(name) > 11:
        raise ConfigError([("bridge.mode",
                            "Network name too long to use with the FAN (must be 11 characters or less)")])
    for key in sorted(config):
        if config[key] == "":
            continue
        if fan and key.startswith(("ipv4.", "ipv6.")):
            raise ConfigError([(key, f"IPv{key[3]} configuration may not be set when in 'fan' mode ({key})")])
        if not fan and key.startswith("fan."):
            raise ConfigError([(key, f"FAN configuration may only be set when in 'fan' mode ({key})")])
    for tunnel in tunnels(config):
        if len(name) + len(tunnel) > 14:
            raise ConfigError([(f"tunnel.{tunnel}", f"Network name too long for tunnel interface: {name}-{tunnel}")])
    mtu = config.get("bridge.mtu", "")
    if mtu:
        value = int(mtu)
        if config.get("ipv6.address", "") not in addresses.NONE_VALUES and value < 1280:
            raise ConfigError([("bridge.mtu", "The minimum MTU for an IPv6 network is 1280")])
        if value < 68:
            raise ConfigError([("bridge.mtu", "The minimum MTU for an IPv4 network is 68")])
        if value > 65535:
            raise ConfigError([("bridge.mtu", "The maximum MTU is 65535")])
        if fan and config.get("fan.type") == "ipip" and value > 1480:
            raise ConfigError([("bridge.mtu", "Maximum MTU for an IPIP FAN bridge is 1480")])
        if fan and config.get("fan.type") != "ipip" and value > 1450:
            raise ConfigError([("bridge.mtu", "Maximum MTU for a VXLAN FAN bridge is 1450")])


def host_has_ipv6():
    """Whether new networks get IPv6 by default (IPv6 enabled in this network namespace)."""
    try:
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6") as f:
            return f.read().strip() == "0"
    except OSError:
        return False


def creation_defaults(config, ipv6_available):
    """The config of a new network with the reference's defaults filled in (a new dict)."""
    config = {k: v for k, v in config.items() if v != ""}
    if config.get("bridge.mode") == "fan":
        config.setdefault("fan.underlay_subnet", "auto")
        return config
    config.setdefault("ipv4.address", "auto")
    if config["ipv4.address"] == "auto":
        config.setdefault("ipv4.nat", "true")
    if "ipv6.address" not in config and ipv6_available:
        config["ipv6.address"] = "auto"
    if config.get("ipv6.address") == "auto":
        config.setdefault("ipv6.nat", "true")
    return config


def mtu(config):
    """The bridge MTU: `bridge.mtu`, else 1400 with tunnels (room for their headers), else 1500."""
    if config.get("bridge.mtu"):
        return int(config["bridge.mtu"])
    if tunnels(config):
        return 1400
    if config.get("bridge.mode") == "fan":
        return 1480 if config.get("fan.type") == "ipip" else 1450
    return 1500


def state_dir(root, name):
    return os.path.join(root, "networks", name)
