# -*- test-case-name: tests.integration.test_networks -*-
"""Links, addresses and routes of this network namespace, through pyroute2 (netlink).

Every function here blocks: call them through `run_in_thread` (or from code
already in a thread). pyroute2 is imported on first use, in the worker thread,
so daemons without networks never pay for it. No function forks: operations
inside a container's namespace go through `nsenter` helpers (see `nics`).
"""

import errno
import ipaddress
import os

from twisted.internet import threads

PROTO_KERNEL, PROTO_BOOT, PROTO_STATIC = 2, 3, 4
_MAIN_TABLE = 254


class LinkError(Exception):
    """A netlink request failed; the message says what was asked and why it failed."""


def run_in_thread(fn, *args, **kwargs):
    """A Deferred firing with fn(*args, **kwargs) run in the reactor's thread pool."""
    return threads.deferToThread(fn, *args, **kwargs)


def _ipr():
    from pyroute2 import IPRoute

    return IPRoute()


def _netlink_error():
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError


def _fail(what, exc):
    code = getattr(exc, "code", None)
    reason = os.strerror(code) if code else str(exc)
    raise LinkError(f"{what}: {reason}") from exc


def _index(ipr, name):
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise LinkError(f"Interface {name} not found")
    return found[0]


def _describe(ipr, link, names=None):
    info = link.get(("linkinfo", "kind")) if link.get("linkinfo") else None
    master = link.get("master")
    return {
        "name": link.get("ifname"),
        "index": link["index"],
        "kind": info,
        "master": (names or {}).get(master) if master else None,
        "mtu": link.get("mtu"),
        "address": link.get("address"),
        "alias": link.get("ifalias"),
        "up": bool(link["flags"] & 1),
        "loopback": bool(link["flags"] & 8),
    }


def links():
    """Every link of this namespace: name, index, kind, master, mtu, address, alias, up, loopback."""
    with _ipr() as ipr:
        raw = list(ipr.get_links())
        names = {link["index"]: link.get("ifname") for link in raw}
        return [_describe(ipr, link, names) for link in raw]


def link(name):
    """The description of one link, or None when there is none by that name."""
    for item in links():
        if item["name"] == name:
            return item
    return None


def exists(name):
    with _ipr() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def create(name, kind, **attrs):
    """Create a link (`kind` bridge, veth, vxlan, gretap, macvlan, vlan...) with pyroute2 attributes.

    `link` / `vxlan_link` may be given as interface names; they are resolved to indexes.
    """
    with _ipr() as ipr:
        for key in ("link", "vxlan_link"):
            if isinstance(attrs.get(key), str):
                attrs[key] = _index(ipr, attrs[key])
        try:
            ipr.link("add", ifname=name, kind=kind, **attrs)
        except _netlink_error() as e:
            if e.code == errno.EOPNOTSUPP or "Unknown device type" in str(e):
                raise LinkError(f"Failed to create {kind} interface {name}: the kernel has no {kind} support") from e
            _fail(f"Failed to create {kind} interface {name}", e)


def delete(name):
    """Remove a link; nothing happens when it is already gone."""
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return False
        try:
            ipr.link("del", index=found[0])
        except _netlink_error() as e:
            if e.code == errno.ENODEV:
                return False
            _fail(f"Failed to delete interface {name}", e)
        return True


def configure(name, *, mtu=None, address=None, up=None, master=None, alias=None):
    """Change a link: MTU, MAC address, state, bridge (master name, or "" to leave it), alias."""
    with _ipr() as ipr:
        index = _index(ipr, name)
        changes = {}
        if mtu is not None:
            changes["mtu"] = int(mtu)
        if address is not None:
            changes["address"] = address
        if alias is not None:
            changes["ifalias"] = alias
        if master is not None:
            changes["master"] = _index(ipr, master) if master else 0
        try:
            if changes:
                ipr.link("set", index=index, **changes)
            if up is not None:
                ipr.link("set", index=index, state="up" if up else "down")
        except _netlink_error() as e:
            _fail(f"Failed to configure interface {name} ({', '.join(changes) or 'state'})", e)


def ports(bridge):
    """Names of the links enslaved to `bridge`."""
    return sorted(item["name"] for item in links() if item["master"] == bridge)


def addresses(name, scope_global=True):
    """The addresses of a link as ip_interface objects (only global scope by default)."""
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return []
        result = []
        for msg in ipr.get_addr(index=found[0]):
            if scope_global and msg["scope"] != 0:
                continue
            result.append(ipaddress.ip_interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}"))
        return result


def add_address(name, value):
    """Add an address given as `ip/prefix`; adding one that exists is not an error."""
    found = ipaddress.ip_interface(value)
    with _ipr() as ipr:
        index = _index(ipr, name)
        try:
            ipr.addr("add", index=index, address=str(found.ip), prefixlen=found.network.prefixlen)
        except _netlink_error() as e:
            if e.code != errno.EEXIST:
                _fail(f"Failed to add address {value} to {name}", e)


def delete_address(name, value):
    found = ipaddress.ip_interface(value)
    with _ipr() as ipr:
        index = _index(ipr, name)
        try:
            ipr.addr("del", index=index, address=str(found.ip), prefixlen=found.network.prefixlen)
        except _netlink_error() as e:
            if e.code not in (errno.EADDRNOTAVAIL, errno.ENOENT):
                _fail(f"Failed to remove address {value} from {name}", e)


def routes(name=None, version=None, proto=None):
    """[(network, interface name, proto)] of the main table, optionally for one link/family/proto."""
    with _ipr() as ipr:
        names = {item["index"]: item.get("ifname") for item in ipr.get_links()}
        result = []
        families = {4: [2], 6: [10], None: [2, 10]}[version]
        for family in families:
            for msg in ipr.get_routes(family=family, table=_MAIN_TABLE):
                if msg["type"] != 1:  # unicast routes only
                    continue
                if proto is not None and msg["proto"] != proto:
                    continue
                oif = names.get(msg.get("RTA_OIF"))
                if name is not None and oif != name:
                    continue
                dst = msg.get("RTA_DST") or ("0.0.0.0" if family == 2 else "::")
                result.append((ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False), oif, msg["proto"]))
        return result


def add_route(name, network, proto=PROTO_STATIC):
    """Route `network` to link `name` (replacing a route to the same destination)."""
    found = ipaddress.ip_network(network)
    with _ipr() as ipr:
        index = _index(ipr, name)
        try:
            ipr.route("replace", dst=str(found), oif=index, proto=proto,
                      family=2 if found.version == 4 else 10)
        except _netlink_error() as e:
            _fail(f"Failed to add route {network} to {name}", e)


def delete_route(name, network):
    found = ipaddress.ip_network(network)
    with _ipr() as ipr:
        found_index = ipr.link_lookup(ifname=name)
        if not found_index:
            return
        try:
            ipr.route("del", dst=str(found), oif=found_index[0], family=2 if found.version == 4 else 10)
        except _netlink_error() as e:
            if e.code not in (errno.ESRCH, errno.ENOENT):
                _fail(f"Failed to remove route {network} from {name}", e)


def move_to_netns(name, pid, new_name=None, up=False):
    """Move a link into the network namespace of process `pid`, renaming it on the way.

    The kernel renames (and with `up`, brings it up) while moving, so the new name
    never has to be free on this side.
    """
    with _ipr() as ipr:
        index = _index(ipr, name)
        attrs = {"net_ns_pid": int(pid)}
        if new_name:
            attrs["ifname"] = new_name
        if up:
            attrs["state"] = "up"
        try:
            ipr.link("set", index=index, **attrs)
        except _netlink_error() as e:
            _fail(f"Failed to move interface {name} into the namespace of process {pid}", e)
