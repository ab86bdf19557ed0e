# -*- test-case-name: tests.unit.test_network_tunnels -*-
"""Tunnel links of a bridge from its `tunnel.NAME.*` keys (vxlan, gre).

Each tunnel `T` of network `N` is the link `N-T`, enslaved to the bridge. A
tunnel whose keys are incomplete is skipped, not refused: `lxc network set`
sends one key per request, so a half-written tunnel is a normal state.
"""

from lxdtx.network import schema

DEFAULT_GROUP = "239.0.0.1"


def link_name(network, tunnel):
    return f"{network}-{tunnel}"


def spec(network, tunnel, config, default_interface=None):
    """(kind, pyroute2 attributes) of one tunnel, or None when its keys are incomplete.

    `default_interface`: the interface of the default route, for multicast vxlan
    without `tunnel.NAME.interface`.
    """
    def get(key):
        return config.get(f"tunnel.{tunnel}.{key}", "")

    protocol, local, remote = get("protocol"), get("local"), get("remote")
    if protocol == "gre":
        if not local or not remote:
            return None
        return "gretap", {"gre_local": local, "gre_remote": remote}
    if protocol != "vxlan":
        return None
    attrs = {"vxlan_id": int(get("id") or 0)}
    if local and remote:
        attrs.update(vxlan_local=local, vxlan_group=remote)
    else:
        device = get("interface") or default_interface
        if not device:
            raise ValueError(f"No interface for the multicast vxlan tunnel {tunnel}: "
                             f"set tunnel.{tunnel}.interface")
        attrs.update(vxlan_group=get("group") or DEFAULT_GROUP, vxlan_link=device)
        if local:
            attrs["vxlan_local"] = local
    if get("port"):
        attrs["vxlan_port"] = int(get("port"))
    return "vxlan", attrs


def specs(network, config, default_interface=None):
    """{link name: (kind, attributes)} of every complete tunnel."""
    result = {}
    for tunnel in schema.tunnels(config):
        found = spec(network, tunnel, config, default_interface)
        if found is not None:
            result[link_name(network, tunnel)] = found
    return result


def needs_default_interface(config):
    """Whether some vxlan tunnel is multicast without an explicit interface."""
    for tunnel in schema.tunnels(config):
        prefix = f"tunnel.{tunnel}."
        protocol, local, remote, interface = (config.get(prefix + key, "") for key in
                                              ("protocol", "local", "remote", "interface"))
        if protocol == "vxlan" and not (local and remote) and not interface:
            return True
    return False
