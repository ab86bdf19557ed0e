# -*- test-case-name: tests.integration.test_networks -*-
"""The kernel side of a managed bridge: the link, its MTU and MAC, ports, addresses, routes, tunnels.

Every step compares what is there with what the config asks for and changes only
the difference, so a live change (or a daemon restart) never drops addresses,
ports or tunnels that stay: containers keep their connectivity.

A bridge created here carries the alias `lxdtx:<state dir>`; an existing link
without it belongs to someone else and is never adopted or removed.
"""

import shutil

from lxdtx import errors
from lxdtx.asyncutil import ProcessError, run
from lxdtx.network import addresses, links, schema, sysctl, tunnels
from lxdtx.network.links import run_in_thread

OVS = "ovs-vsctl"
_TUNNEL_KINDS = ("vxlan", "gretap", "gre", "dummy")


class BridgeError(Exception):
    """The bridge could not be brought to its config; the message says which part failed."""


class BridgeRefused(BridgeError, errors.BadRequest):
    """The config asks for something this host cannot or must not do (a 400, not a failure)."""

    def __init__(self, message):
        errors.BadRequest.__init__(self, message)


# -- Open vSwitch -------------------------------------------------------------------
def ovs_installed():
    return shutil.which(OVS) is not None


def ovs_add_bridge(name):
    return [OVS, "--may-exist", "add-br", name]


def ovs_delete_bridge(name):
    return [OVS, "--if-exists", "del-br", name]


def ovs_add_port(bridge, port):
    return [OVS, "--may-exist", "add-port", bridge, port]


def ovs_delete_port(bridge, port):
    return [OVS, "--if-exists", "del-port", bridge, port]


async def _ovs(argv):
    try:
        await run(argv)
    except ProcessError as e:
        raise BridgeError(str(e)) from None


def is_ovs(config):
    return schema.get(config, "bridge.driver") == "openvswitch"


# -- helpers --------------------------------------------------------------------------
def external_interfaces(config):
    value = config.get("bridge.external_interfaces", "")
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def wanted_addresses(config):
    found = []
    for key in ("ipv4.address", "ipv6.address"):
        value = addresses.interface(config.get(key, ""))
        if value is not None:
            found.append(value)
    return found


def wanted_routes(config):
    found = []
    for version in (4, 6):
        if config.get(f"ipv{version}.address", "") in addresses.NONE_VALUES:
            continue
        value = config.get(f"ipv{version}.routes", "")
        if value:
            found += addresses.parse_routes(value, version)
    return found


def _default_interface():
    for network, oif, _ in links.routes(version=4):
        if network.prefixlen == 0 and oif:
            return oif
    return None


# -- the link -------------------------------------------------------------------------
async def ensure_link(name, config, alias):
    """Create the bridge, or check that the existing link is ours. Returns True if created."""
    if is_ovs(config) and not ovs_installed():
        raise BridgeRefused("Open vSwitch isn't installed on this system (no ovs-vsctl)")
    if config.get("bridge.mode") == "fan":
        raise BridgeRefused("bridge.mode \"fan\" needs the Ubuntu FAN kernel patches (vxlan/ipip fan-map), "
                          "which this kernel lacks")
    existing = await run_in_thread(links.link, name)
    if existing is not None:
        if existing.get("alias") != alias:
            raise BridgeRefused(f"Interface \"{name}\" already exists and is not a network of this daemon")
        return False
    if is_ovs(config):
        await _ovs(ovs_add_bridge(name))
    else:
        try:
            await run_in_thread(links.create, name, "bridge")
        except links.LinkError as e:
            raise BridgeError(str(e)) from None
    try:
        await run_in_thread(links.configure, name, alias=alias)
    except links.LinkError as e:
        await remove_link(name, config)
        raise BridgeError(str(e)) from None
    return True


async def remove_link(name, config):
    if is_ovs(config) and ovs_installed():
        await _ovs(ovs_delete_bridge(name))
    await run_in_thread(links.delete, name)


# -- configuration -----------------------------------------------------------------------
async def configure(name, config, old_config=None):
    """Bring link settings, ports, addresses, routes, sysctls and tunnels to `config`."""
    try:
        await _configure(name, config, old_config or {})
    except BridgeError:
        raise
    except ValueError as e:  # a config the kernel side cannot follow (a multicast tunnel without interface)
        raise BridgeRefused(str(e)) from None
    except (links.LinkError, OSError) as e:
        raise BridgeError(errors.describe(e)) from None


async def _configure(name, config, old_config):
    mtu = schema.mtu(config)
    await run_in_thread(links.configure, name, mtu=mtu, address=config.get("bridge.hwaddr") or None, up=True)
    await _ports(name, config, old_config)
    v6 = config.get("ipv6.address", "") not in addresses.NONE_VALUES
    if v6:
        await run_in_thread(sysctl.prepare_ipv6_bridge, name)
    await _addresses(name, config)
    await _routes(name, config)
    if config.get("ipv4.address", "") not in addresses.NONE_VALUES and schema.is_enabled(config, "ipv4.routing"):
        await run_in_thread(sysctl.enable_ipv4_forwarding)
    if v6 and schema.is_enabled(config, "ipv6.routing"):
        await run_in_thread(sysctl.enable_ipv6_forwarding)
    await _tunnels(name, config, old_config, mtu)


async def _ports(name, config, old_config):
    wanted = external_interfaces(config)
    for port in external_interfaces(old_config):
        if port in wanted:
            continue
        if is_ovs(config):
            await _ovs(ovs_delete_port(name, port))
        elif await run_in_thread(links.exists, port):
            await run_in_thread(links.configure, port, master="")
    for port in wanted:
        found = await run_in_thread(links.link, port)
        if found is None:
            continue  # the reference skips missing interfaces (they may appear later)
        if found["master"] == name:
            continue
        used = [a for a in await run_in_thread(links.addresses, port) if not a.ip.is_link_local]
        if used:
            raise BridgeRefused(f"Only unconfigured network interfaces can be bridged: {port} has {used[0]}")
        if is_ovs(config):
            await _ovs(ovs_add_port(name, port))
        else:
            await run_in_thread(links.configure, port, master=name, up=True)


async def _addresses(name, config):
    wanted = wanted_addresses(config)
    current = await run_in_thread(links.addresses, name)
    for address in current:
        if address not in wanted and not address.ip.is_link_local:
            await run_in_thread(links.delete_address, name, str(address))
    for address in wanted:
        if address not in current:
            await run_in_thread(links.add_address, name, str(address))


async def _routes(name, config):
    wanted = wanted_routes(config)
    current = [network for network, _, _ in await run_in_thread(links.routes, name, None, links.PROTO_STATIC)]
    for network in current:
        if network not in wanted:
            await run_in_thread(links.delete_route, name, str(network))
    for network in wanted:
        if network not in current:
            await run_in_thread(links.add_route, name, str(network))


async def _tunnels(name, config, old_config, mtu):
    default = None
    if tunnels.needs_default_interface(config):
        default = await run_in_thread(_default_interface)
    wanted = tunnels.specs(name, config, default)
    previous = tunnels.specs(name, old_config, default) if old_config else {}
    for item in await run_in_thread(links.links):
        link_name = item["name"]
        if not _is_tunnel_of(name, item):
            continue
        if link_name not in wanted or wanted[link_name] != previous.get(link_name):
            await run_in_thread(links.delete, link_name)
    for link_name, (kind, attrs) in wanted.items():
        if not await run_in_thread(links.exists, link_name):
            await run_in_thread(links.create, link_name, kind, **attrs)
        if is_ovs(config):
            await _ovs(ovs_add_port(name, link_name))
            await run_in_thread(links.configure, link_name, mtu=mtu, up=True)
        else:
            await run_in_thread(links.configure, link_name, mtu=mtu, master=name, up=True)


def _is_tunnel_of(name, item):
    """Whether a link is (or was) one of network `name`'s tunnels: never another network's bridge."""
    return (item["name"].startswith(f"{name}-") and item["kind"] in _TUNNEL_KINDS
            and item["master"] in (name, "ovs-system", None))


async def remove_tunnels(name):
    for item in await run_in_thread(links.links):
        if _is_tunnel_of(name, item):
            await run_in_thread(links.delete, item["name"])


def host_subnets(exclude=()):
    """Networks routed on this host, except default routes and those via links in `exclude`."""
    found = []
    for network, oif, _ in links.routes():
        if network.prefixlen == 0 or oif in exclude:
            continue
        if network.version == 6 and network.is_link_local:
            continue
        if network.is_multicast:
            continue
        found.append(network)
    return found

