# -*- test-case-name: tests.integration.test_nics -*-
"""The host side of container nics: before and after a start, after a stop, hot add and remove.

liblxc creates the nics of a starting container from the lines of
`lxdtx.device.nic`; this module does what liblxc does not:

* before the start (`prepare`): the parent must exist, a `vlan` gets its
  `parent.vlan` interface, an `sriov` nic gets a free virtual function with its
  MAC, a physical interface's MTU and MAC are remembered, and the static DHCP
  entries of managed bridges include the nic's MAC and addresses;
* after the start (`started`): tc limits and MAC filtering on the host end;
* after the stop (`stopped`): MAC filter tables go, VLAN interfaces made for the
  container go, physical interfaces get their MTU and MAC back;
* on a running container (`apply_live`): nics added or removed are plugged in or
  out (the container end is created here and moved into the container's network
  namespace under its name, in one netlink request); limits, MAC filtering and
  static addresses change in place.

Commands inside a container's namespace run as `nsenter -t PID -n ip ...`
helpers, so the daemon never enters a namespace itself.
"""

import ipaddress
import os
import secrets

from twisted.logger import Logger

from lxdtx import errors
from lxdtx.asyncutil import ProcessError, run
from lxdtx.config.types import is_true
from lxdtx.device import nic
from lxdtx.network import addresses, bridge, firewall, limits, links, sriov
from lxdtx.network.links import run_in_thread
from lxdtx.revert import Reverter
from lxdtx.state import Delete, Put

_NIC_TYPES = ("nic", "infiniband")
# What the host looked like before a container took a nic (a VLAN interface made for it,
# a physical interface's MTU and MAC, the virtual function used), per `container/device`:
# the API allows no volatile keys for it at this level, and it must survive daemon restarts.
STATE_KIND = "nic-host-state"


def random_hwaddr():
    return "00:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def random_host_name():
    return "veth" + secrets.token_hex(4)


def _temp_name():
    return "lxdtx" + secrets.token_hex(4)


def _is_nic(device):
    return bool(device) and device.get("type") in _NIC_TYPES


def _hwaddr(dev, device, config):
    return device.get("hwaddr") or config.get(f"volatile.{dev}.hwaddr", "")


def _host_name(dev, config):
    return config.get(f"volatile.{dev}.host_name", "")


def only_live_changes(old, new):
    """Whether a nic changed only in keys a running container takes in place."""
    keys = set(old) | set(new)
    return all(old.get(k) == new.get(k) or k in nic.LIVE_KEYS for k in keys)


async def in_container(pid, *args):
    """`ip ARGS` inside the network namespace of process `pid`."""
    try:
        await run(["nsenter", "-t", str(pid), "-n", "ip", *args])
    except ProcessError as e:
        raise errors.InternalError(f"Failed to run 'ip {' '.join(args)}' in the container: {e}") from None


class Nics:
    """Host-side work around the nics of containers (see the module docstring)."""

    log = Logger()

    def __init__(self, networks):
        self.networks = networks
        self.store = networks.store

    def _state(self, container, dev):
        return self.store.value(STATE_KIND, f"{container}/{dev}", {})

    async def _save_state(self, container, states):
        changes = [Put(STATE_KIND, f"{container}/{dev}", state) for dev, state in sorted(states.items()) if state]
        await self.store.commit(changes)

    async def _forget_state(self, container, dev):
        if self.store.exists(STATE_KIND, f"{container}/{dev}"):
            await self.store.commit([Delete(STATE_KIND, f"{container}/{dev}")])

    # -- checks -----------------------------------------------------------------------
    async def _check_parent(self, dev, device):
        parent = device["parent"]
        if not await run_in_thread(links.exists, parent):
            raise errors.BadRequest(f"Parent device '{parent}' of nic \"{dev}\" doesn't exist")

    def _check_static_addresses(self, dev, device):
        parent = device.get("parent", "")
        if not self.networks.is_managed(parent):
            return
        config = self.networks.get(parent).value["config"]
        for version in (4, 6):
            wanted = device.get(f"ipv{version}.address")
            if not wanted:
                continue
            own = addresses.interface(config.get(f"ipv{version}.address", ""))
            if own is None:
                raise errors.BadRequest(f"Device \"{dev}\": network \"{parent}\" has no IPv{version} subnet "
                                        f"for ipv{version}.address {wanted}")
            address = ipaddress.ip_address(wanted)
            if address not in own.network or address == own.ip:
                raise errors.BadRequest(f"Device \"{dev}\": ipv{version}.address {wanted} is not a free address "
                                        f"of network \"{parent}\" ({own.network})")

    # -- before and after a start ------------------------------------------------------------
    async def prepare(self, container, config, devices, all_devices=None):
        """Get the host ready for the nics of a container about to start; returns volatile keys.

        `all_devices`: the container's whole expanded set when `devices` is only part of it
        (a nic plugged in), for the static DHCP entries of the container's other nics.
        """
        volatile = {}
        states = {}
        managed = set()
        taken_vfs = set()
        async with Reverter() as revert:
            for dev, device in sorted(devices.items()):
                if not _is_nic(device):
                    continue
                nictype = device.get("nictype")
                if device.get("type") == "nic" and not _hwaddr(dev, device, config):
                    volatile[f"volatile.{dev}.hwaddr"] = random_hwaddr()
                hwaddr = _hwaddr(dev, device, {**config, **volatile})
                if nictype == "p2p":
                    continue
                state = states.setdefault(dev, {})
                if nictype in ("macvlan", "physical") and device.get("vlan"):
                    state.update(await self._ensure_vlan(dev, device, revert))
                else:
                    await self._check_parent(dev, device)
                if nictype == "bridged":
                    self._check_static_addresses(dev, device)
                    if self.networks.is_managed(device["parent"]):
                        managed.add(device["parent"])
                elif nictype == "physical":
                    state.update(await self._remember(nic.vlan_link(device)))
                elif nictype == "sriov":
                    vf_name, vf_state = await self._pick_vf(dev, device, hwaddr, taken_vfs)
                    volatile[f"volatile.{dev}.host_name"] = vf_name
                    state.update(vf_state)
                    state.update(await self._remember(vf_name))
            merged = {**config, **volatile}
            for network in sorted(managed):
                await self.networks.refresh_hosts(network, override=(container, merged, all_devices or devices))
            await self._save_state(container, states)
            revert.success()
        return volatile

    async def _ensure_vlan(self, dev, device, revert):
        """The `parent.vlan` interface (`network_vlan`, `network_vlan_physical`), made if missing."""
        await self._check_parent(dev, device)
        name = nic.vlan_link(device)
        if await run_in_thread(links.exists, name):
            return {}
        try:
            await run_in_thread(links.create, name, "vlan", link=device["parent"], vlan_id=int(device["vlan"]))
            revert.add(run_in_thread, links.delete, name)
            await run_in_thread(links.configure, name, up=True)
        except links.LinkError as e:
            raise errors.BadRequest(f"Failed to create the VLAN interface for nic \"{dev}\": {e}") from None
        return {"created": name}

    async def _remember(self, interface):
        """The MTU and MAC an interface had before a container took it."""
        found = await run_in_thread(links.link, interface)
        if found is None:
            return {}
        return {"mtu": found["mtu"], "hwaddr": found["address"] or ""}

    async def _pick_vf(self, dev, device, hwaddr, taken):
        parent = device["parent"]
        try:
            index, name = await run_in_thread(sriov.pick, parent, taken)
        except (sriov.SriovError, OSError) as e:
            raise errors.BadRequest(errors.describe(e)) from None
        taken.add(name)
        if hwaddr and device.get("type") == "nic":
            try:
                await run(sriov.set_mac_argv(parent, index, hwaddr))
            except ProcessError as e:
                raise errors.InternalError(f"Failed to set the MAC of virtual function {index} of {parent}: {e}")
        return name, {"vf": index}

    async def started(self, container, config, devices):
        """After liblxc started the container: limits and MAC filtering on the host ends."""
        for dev, device in sorted(devices.items()):
            if not _is_nic(device) or device.get("nictype") not in ("bridged", "p2p"):
                continue
            host = _host_name(dev, config)
            if not host:
                continue
            if limits.has_limits(device):
                try:
                    await limits.apply(host, device)
                except limits.LimitError as e:
                    raise errors.BadRequest(str(e)) from None
            if device.get("nictype") == "bridged" and is_true(device.get("security.mac_filtering")):
                await firewall.apply_mac_filter(host, _hwaddr(dev, device, config))

    async def stopped(self, container, config, devices):
        """After the container stopped: undo what `prepare` and `started` did on the host."""
        for dev, device in sorted(devices.items()):
            if not _is_nic(device):
                continue
            try:
                await self._release(dev, device, config, self._state(container, dev))
                await self._forget_state(container, dev)
            except Exception as e:
                self.log.warn("Cleaning up nic {dev} of {container} failed: {error}",
                              dev=dev, container=container, error=e)

    async def _release(self, dev, device, config, state):
        nictype = device.get("nictype")
        if nictype == "bridged" and is_true(device.get("security.mac_filtering")) and _host_name(dev, config):
            await firewall.remove_mac_filter(_host_name(dev, config))
        if nictype in ("physical", "sriov"):
            interface = nic.vlan_link(device) if nictype == "physical" else _host_name(dev, config)
            if interface and state and await run_in_thread(links.exists, interface):
                await run_in_thread(links.configure, interface, mtu=state.get("mtu") or None,
                                    address=state.get("hwaddr") or None)
        if state.get("created"):
            await run_in_thread(links.delete, state["created"])

    # -- a running container ---------------------------------------------------------------------
    async def apply_live(self, container, pid, old_devices, new_devices, config):
        """Carry nic changes to a running container; returns volatile keys of added nics."""
        volatile = {}
        removed, added = [], []
        for dev in sorted(set(old_devices) | set(new_devices)):
            old, new = old_devices.get(dev), new_devices.get(dev)
            if old == new or not (_is_nic(old) or _is_nic(new)):
                continue
            if _is_nic(old) and _is_nic(new) and only_live_changes(old, new):
                await self._update_live(container, dev, old, new, config, new_devices)
                continue
            if _is_nic(old):
                removed.append((dev, old))
            if _is_nic(new):
                added.append((dev, new))
        for dev, device in removed:
            await self.hot_remove(container, pid, dev, device, config)
        for dev, device in added:
            volatile.update(await self.hot_add(container, pid, dev, device, {**config, **volatile}, new_devices))
        return volatile

    async def _update_live(self, container, dev, old, new, config, devices):
        host = _host_name(dev, config)
        if any(old.get(k) != new.get(k) for k in ("limits.ingress", "limits.egress", "limits.max")) and host:
            try:
                await limits.apply(host, new)
            except limits.LimitError as e:
                raise errors.BadRequest(str(e)) from None
        if old.get("security.mac_filtering") != new.get("security.mac_filtering") and host:
            if is_true(new.get("security.mac_filtering")):
                await firewall.apply_mac_filter(host, _hwaddr(dev, new, config))
            else:
                await firewall.remove_mac_filter(host)
        if any(old.get(k) != new.get(k) for k in ("ipv4.address", "ipv6.address")):
            self._check_static_addresses(dev, new)
            if self.networks.is_managed(new.get("parent", "")):
                await self.networks.refresh_hosts(new["parent"], override=(container, config, devices))

    async def hot_add(self, container, pid, dev, device, config, devices):
        """Plug a nic into a running container; returns its volatile keys."""
        if device.get("type") == "infiniband":
            raise errors.BadRequest(f"InfiniBand device \"{dev}\" can't be added to a running container")
        used = {config.get(f"volatile.{d}.name") for d in devices if d != dev} - {None, ""}
        used |= {d.get("name") for name, d in devices.items() if name != dev and d.get("name")}
        ifname = device.get("name") or config.get(f"volatile.{dev}.name") or \
            next(f"eth{i}" for i in range(64) if f"eth{i}" not in used)
        if ifname in used:
            raise errors.BadRequest(f"Interface name \"{ifname}\" of nic \"{dev}\" is taken in the container")
        volatile = {f"volatile.{dev}.name": ifname}
        volatile.update(await self.prepare(container, config, {dev: device}, devices))
        merged = {**config, **volatile}
        hwaddr = _hwaddr(dev, device, merged)
        if hwaddr:
            volatile[f"volatile.{dev}.hwaddr"] = hwaddr
        nictype = device["nictype"]
        async with Reverter() as revert:
            revert.add(self.stopped, container, merged, {dev: device})
            try:
                if nictype in ("bridged", "p2p"):
                    host = device.get("host_name") or random_host_name()
                    volatile[f"volatile.{dev}.host_name"] = host
                    await self._plug_veth(pid, device, host, ifname, hwaddr, revert)
                    await self.started(container, {**merged, **volatile}, {dev: device})
                elif nictype == "macvlan":
                    temp = _temp_name()
                    attrs = {"link": nic.vlan_link(device), "macvlan_mode": "bridge", "address": hwaddr}
                    if device.get("mtu"):
                        attrs["mtu"] = int(device["mtu"])
                    await run_in_thread(links.create, temp, "macvlan", **attrs)
                    revert.add(run_in_thread, links.delete, temp)
                    await run_in_thread(links.move_to_netns, temp, pid, ifname, True)
                else:  # physical, sriov
                    interface = nic.vlan_link(device) if nictype == "physical" else merged[f"volatile.{dev}.host_name"]
                    await run_in_thread(links.configure, interface, mtu=device.get("mtu") or None,
                                        address=device.get("hwaddr") if nictype == "physical" else None, up=False)
                    await run_in_thread(links.move_to_netns, interface, pid, ifname, True)
            except links.LinkError as e:
                raise errors.BadRequest(f"Failed to add nic \"{dev}\": {e}") from None
            revert.success()
        return volatile

    async def _plug_veth(self, pid, device, host, ifname, hwaddr, revert):
        temp = _temp_name()
        parent = device.get("parent") if device["nictype"] == "bridged" else None
        mtu = device.get("mtu")
        if not mtu and parent:
            found = await run_in_thread(links.link, parent)
            mtu = found["mtu"] if found else None
        peer = {"ifname": temp, "address": hwaddr}
        if mtu:
            peer["mtu"] = int(mtu)
        await run_in_thread(links.create, host, "veth", peer=peer, **({"mtu": int(mtu)} if mtu else {}))
        revert.add(run_in_thread, links.delete, host)
        if parent:
            found = await run_in_thread(links.link, parent)
            if found and found["kind"] == "openvswitch":
                await run(bridge.ovs_add_port(parent, host))
                await run_in_thread(links.configure, host, up=True)
            else:
                await run_in_thread(links.configure, host, master=parent, up=True)
        else:
            await run_in_thread(links.configure, host, up=True)
        await run_in_thread(links.move_to_netns, temp, pid, ifname, True)

    async def hot_remove(self, container, pid, dev, device, config):
        """Unplug a nic from a running container."""
        if device.get("type") == "infiniband":
            raise errors.BadRequest(f"InfiniBand device \"{dev}\" can't be removed from a running container")
        nictype = device["nictype"]
        ifname = device.get("name") or config.get(f"volatile.{dev}.name", "")
        if nictype in ("bridged", "p2p"):
            host = _host_name(dev, config)
            if host:
                await run_in_thread(links.delete, host)  # the container end goes with it
        elif nictype == "macvlan":
            if ifname:
                await in_container(pid, "link", "del", "dev", ifname)
        else:
            interface = nic.vlan_link(device) if nictype == "physical" else _host_name(dev, config)
            if ifname and interface:
                await in_container(pid, "link", "set", "dev", ifname, "down")
                await in_container(pid, "link", "set", "dev", ifname, "netns", str(os.getpid()), "name", interface)
        await self.stopped(container, config, {dev: device})
