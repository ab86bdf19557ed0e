# -*- test-case-name: tests.unit.test_checkpoint -*-
"""The veth nics of a container restored by CRIU (bridged and p2p nics).

liblxc's restore asks CRIU to make each veth pair itself (`--external
veth[eth0]:HOST@BRIDGE`), from inside the container's user namespace: the kernel
refuses that (netlink answers EPERM: the host end goes into a namespace the container's
root has no CAP_NET_ADMIN over). So the pair is made here first, as the daemon's root:
the host end named as liblxc's config says (`lxc.net.N.veth.pair`), not on its bridge
yet, and a temporary peer, which CRIU's privileged helper moves into the restored network
namespace under the container's name, index, MTU and MAC (`--external
netdev[eth0]:PEER`, given through a config file of this restore's own). CRIU then joins
the host end to the bridge named in liblxc's option and brings it up (a host end already
on its bridge makes that fail with EBUSY). The container's addresses and routes come back
from the images.
"""

import os
import secrets

from lxdtx.network import links

VETH_TYPES = ("bridged", "p2p")
CONFIG_NAME = "criu-restore-net.conf"


class Veth:
    """One veth nic of liblxc's config: its name in the container, host end, bridge, MTU."""

    def __init__(self, name, host, link=None, mtu=None):
        self.name = name
        self.host = host
        self.link = link
        self.mtu = mtu
        self.peer = "lxdtxr" + secrets.token_hex(4)


def keep_host_names(config, devices):
    """`devices` with each veth nic's host end named as the container's row says
    (`volatile.DEV.host_name`, from the start before the dump): the restored container
    keeps the name its row, MAC filter and limits know it by."""
    kept = dict(devices)
    for dev, device in devices.items():
        host = config.get(f"volatile.{dev}.host_name")
        if device.get("type") == "nic" and device.get("nictype") in VETH_TYPES and host and not device.get("host_name"):
            kept[dev] = {**device, "host_name": host}
    return kept


def veths(lines):
    """The veth nics of a container's liblxc lines ((key, value) pairs), in their order."""
    found = {}
    for key, value in lines:
        parts = key.split(".")
        if len(parts) < 4 or parts[:2] != ["lxc", "net"] or not parts[2].isdigit():
            continue
        found.setdefault(int(parts[2]), {})[".".join(parts[3:])] = value
    return [Veth(item["name"], item["veth.pair"], item.get("link"), item.get("mtu"))
            for _, item in sorted(found.items())
            if item.get("type") == "veth" and item.get("veth.pair") and item.get("name")]


def config_text(base_path, nics):
    """The CRIU config of this restore: the prefix's own options, then one external per nic."""
    try:
        with open(base_path) as f:
            base = f.read()
    except FileNotFoundError:
        base = ""
    if base and not base.endswith("\n"):
        base += "\n"
    return base + "".join(f"external netdev[{n.name}]:{n.peer}\n" for n in nics)


def prepare(nics, directory, env):
    """Make each nic's pair and write the restore's config into `directory` (the dump's);
    returns the environment to restore with. Blocking (netlink): run in a thread. A failure
    removes the pairs made so far."""
    made = []
    try:
        for n in nics:
            mtu = n.mtu
            if not mtu and n.link:
                parent = links.link(n.link)
                mtu = parent["mtu"] if parent else None
            extra = {"mtu": int(mtu)} if mtu else {}
            links.create(n.host, "veth", peer={"ifname": n.peer, **extra}, **extra)
            made.append(n)
        path = os.path.join(directory, CONFIG_NAME)
        with open(path, "w") as f:
            f.write(config_text(env["CRIU_CONFIG_FILE"], nics))
    except BaseException:
        remove(made)
        raise
    return {**env, "CRIU_CONFIG_FILE": path}


def remove(nics):
    """After a failed restore: the pairs go (their peer, if CRIU never moved it, with them)."""
    for n in nics:
        try:
            links.delete(n.host)
        except links.LinkError:
            pass
