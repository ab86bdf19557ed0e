# -*- test-case-name: tests.integration.test_networks -*-
"""Managed networks: documents of kind `network` paired with their bridge, firewall and dnsmasq.

Every change goes through `_apply`, which brings the kernel side of one network
to a config (see `bridge`, `firewall`, `dnsmasq`), changing only what differs.
Create, update, rename and delete register undo steps, so a failure leaves no
link, rule, process or document behind, and a refused update leaves the network
as it was.
"""

import os
import shutil

from twisted.internet import defer, threads
from twisted.logger import Logger

from lxdtx import errors, faults
from lxdtx.config.schema import ConfigError
from lxdtx.network import addresses, bridge, dnsmasq, firewall, leases, links, schema
from lxdtx.network.links import run_in_thread
from lxdtx.network.maas import Maas
from lxdtx.network.nics import Nics
from lxdtx.revert import Reverter
from lxdtx.state import ABSENT, Delete, Put

KIND = "network"
TYPE = "bridge"

CREATE_RECORDED = faults.point("network.create.recorded")
CREATE_APPLIED = faults.point("network.create.applied")
DELETE_COMMITTED = faults.point("network.delete.committed")
_USES_PARENT = ("bridged", "macvlan", "physical", "sriov")


def writable(name, value):
    """What a network's ETag covers."""
    return [name, True, TYPE, value.get("description", ""), value.get("config", {})]


def unmanaged_type(link):
    """The API `type` of a host interface."""
    if link["loopback"]:
        return "loopback"
    kind = link["kind"]
    if kind in ("bridge", "openvswitch"):
        return "bridge"
    if kind in ("vlan", "bond"):
        return kind
    if kind is None:
        return "physical"
    return "unknown"


class Networks:
    """Every managed network of one daemon, and the host interfaces next to them."""

    log = Logger()

    def __init__(self, daemon):
        self.daemon = daemon
        self.store = daemon.store
        self.reactor = daemon.reactor
        self.root = daemon.path("networks")
        self.alias = f"lxdtx:{daemon.dir}"
        self._dnsmasq = {}  # name -> dnsmasq.Supervisor
        self._locks = {}
        self._hosts_locks = {}  # per network: entries computed and written in turn
        self._hosts_files = dnsmasq.HostsFiles()
        self._reserved = set()
        self.nics = Nics(self)
        self.maas = Maas(daemon.config)

    # -- reading -------------------------------------------------------------------
    def names(self):
        return self.store.names(KIND)

    def is_managed(self, name):
        return self.store.exists(KIND, name)

    def get(self, name):
        doc = self.store.get(KIND, name)
        if doc is None:
            raise errors.NotFound(f"Network '{name}' not found")
        return doc

    def directory(self, name):
        return schema.state_dir(self.daemon.dir, name)

    def _all_nic_users(self, override=None, everywhere=False):
        """{parent: [(container, device name, device, container config)]} of every container's nics:
        this member's containers, or with `everywhere` those of every cluster member (`used_by`).

        `override`: (container, expanded config, expanded devices) not committed yet
        (a container starting or being updated), used instead of its document; with
        (container, None, None) the container is left out (it is being deleted).
        """
        found = {}
        instances = getattr(self.daemon, "instances", None)
        if instances is None:
            return found
        from lxdtx.instance.model import is_local

        # Another cluster member's containers use its own bridge of that name.
        expanded = {doc.name: instances.records.expanded(doc.value) for doc in self.store.list("container")
                    if everywhere or is_local(self.daemon, doc.value)}
        if override is not None:
            expanded[override[0]] = (override[1], override[2])
            if override[1] is None:
                del expanded[override[0]]
        for container in sorted(expanded):
            config, devices = expanded[container]
            for dev, device in sorted(devices.items()):
                if device.get("type") != "nic" or device.get("nictype") not in _USES_PARENT:
                    continue
                if not device.get("parent"):
                    continue
                if device.get("nictype") != "bridged" and device.get("vlan"):
                    continue  # it uses the VLAN interface `parent.vlan`, not the parent itself
                found.setdefault(device["parent"], []).append((container, dev, device, config))
        return found

    def nic_users(self, name, override=None):
        """[(container, device name, device, container config)] of nics whose parent is `name`."""
        return self._all_nic_users(override).get(name, [])

    def used_by(self, name, users=None):
        users = self._all_nic_users(everywhere=True) if users is None else users
        return sorted({container for container, _, _, _ in users.get(name, [])})

    def render(self, name, value, users=None, target=None):
        """A managed network as the API shows it; in a cluster the shared config, or with
        `target` (a member document) that member's (lxdtx.cluster.networks)."""
        from lxdtx.cluster import onall

        config, status, locations = value.get("config", {}), "Created", ["none"]
        if onall.clustered(self.daemon):
            status, locations = onall.status(value), onall.locations(self.daemon, value)
            if target is not None:
                config = onall.member_config(value, target.value["id"])
        return {
            "name": name, "description": value.get("description", ""), "config": config,
            "managed": True, "type": TYPE,
            "used_by": [f"/1.0/containers/{c}" for c in self.used_by(name, users)],
            "status": status, "locations": locations,
        }

    def render_unmanaged(self, link, users=None):
        return {
            "name": link["name"], "description": "", "config": {}, "managed": False,
            "type": unmanaged_type(link),
            "used_by": [f"/1.0/containers/{c}" for c in self.used_by(link["name"], users)],
            "status": "", "locations": None,
        }

    async def everything(self):
        """[(name, API object)] of every managed network and host interface, sorted by name."""
        users = self._all_nic_users(everywhere=True)
        found = {link["name"]: self.render_unmanaged(link, users) for link in await run_in_thread(links.links)}
        for doc in self.store.list(KIND):
            found[doc.name] = self.render(doc.name, doc.value, users)
        return sorted(found.items())

    async def lookup(self, name, target=None):
        """The API object of a managed network or host interface (404 otherwise)."""
        doc = self.store.get(KIND, name)
        if doc is not None:
            return self.render(name, doc.value, target=target), writable(name, doc.value)
        link = await run_in_thread(links.link, name)
        if link is None:
            raise errors.NotFound(f"Network '{name}' not found")
        rendered = self.render_unmanaged(link)
        return rendered, [name, False, rendered["type"], "", {}]

    # -- helpers ----------------------------------------------------------------------
    def _lock(self, name):
        return self._locks.setdefault(name, defer.DeferredLock())

    def _taken_subnets(self, exclude_network=None):
        """Subnets of the other managed networks."""
        taken = []
        for doc in self.store.list(KIND):
            if doc.name == exclude_network:
                continue
            for key in ("ipv4.address", "ipv6.address"):
                found = addresses.subnet(doc.value.get("config", {}).get(key, ""))
                if found is not None:
                    taken.append(found)
        return taken

    async def _resolve_addresses(self, name, config):
        """Replace `auto` subnets; refuse subnets overlapping host routes or other networks."""
        exclude = {name, *bridge.external_interfaces(config)}
        host = await run_in_thread(bridge.host_subnets, exclude)
        others = self._taken_subnets(exclude_network=name)
        for version in (4, 6):
            key = f"ipv{version}.address"
            if config.get(key) == "auto":
                try:
                    config[key] = addresses.pick_free(version, host + others)
                except ValueError as e:
                    raise errors.BadRequest(str(e)) from None
                continue
            wanted = addresses.subnet(config.get(key, ""))
            if wanted is None:
                continue
            clash = addresses.overlapping(wanted, others)
            if clash is not None:
                owner = next(doc.name for doc in self.store.list(KIND)
                             if clash in [addresses.subnet(doc.value["config"].get(k, ""))
                                          for k in ("ipv4.address", "ipv6.address")])
                raise ConfigError([(key, f"Invalid value for network configuration key \"{key}\": "
                                         f"subnet {wanted} overlaps {clash} of network \"{owner}\"")])
            clash = addresses.overlapping(wanted, host)
            if clash is not None:
                raise ConfigError([(key, f"Invalid value for network configuration key \"{key}\": "
                                         f"subnet {wanted} overlaps the host route to {clash}")])
        return config

    # -- the kernel side -------------------------------------------------------------------
    async def _apply(self, name, config, old_config=None):
        """Bring network `name` to `config` (old_config: what is applied now, if anything)."""
        directory = self.directory(name)
        await threads.deferToThread(os.makedirs, directory, 0o711, True)
        if old_config is not None and (schema.get(old_config, "bridge.driver") != schema.get(config, "bridge.driver")):
            await self._teardown(name, old_config)
            old_config = None
        await bridge.ensure_link(name, config, self.alias)
        await bridge.configure(name, config, old_config)
        running = dnsmasq.needed(config)
        await firewall.apply_network(name, config, dnsmasq_running=running)
        await self._run_dnsmasq(name, config)

    async def _run_dnsmasq(self, name, config):
        directory = self.directory(name)
        supervisor = self._dnsmasq.get(name)
        if not dnsmasq.needed(config):
            if supervisor is not None:
                await supervisor.stop()
                del self._dnsmasq[name]
            await dnsmasq.end_stale(directory, name, self.reactor)
            return
        argv = dnsmasq.argv(name, config, directory, dnsmasq.unprivileged_user())
        raw_changed = await threads.deferToThread(self._write_raw, directory, config)
        await self.refresh_hosts(name, config=config, reload=False)
        if supervisor is not None and supervisor.argv == argv and supervisor.running and not raw_changed:
            supervisor.reload()
            return
        if supervisor is not None:
            await supervisor.stop()
            del self._dnsmasq[name]
        await dnsmasq.end_stale(directory, name, self.reactor)
        supervisor = dnsmasq.Supervisor(name, argv, directory, self.reactor)
        await supervisor.start()
        self._dnsmasq[name] = supervisor

    @staticmethod
    def _write_raw(directory, config):
        path = os.path.join(directory, dnsmasq.RAW)
        try:
            with open(path) as f:
                before = f.read()
        except FileNotFoundError:
            before = None
        dnsmasq.write_raw(directory, config)
        return before is not None and before != config.get("raw.dnsmasq", "") + "\n"

    async def _teardown(self, name, config):
        """Remove dnsmasq, the firewall table, tunnels and the bridge; each step is idempotent."""
        supervisor = self._dnsmasq.pop(name, None)
        if supervisor is not None:
            await supervisor.stop()
        await dnsmasq.end_stale(self.directory(name), name, self.reactor)
        await firewall.remove_network(name)
        await bridge.remove_tunnels(name)
        link = await run_in_thread(links.link, name)
        if link is not None and link.get("alias") == self.alias:
            await bridge.remove_link(name, config)

    def dnsmasq_pid(self, name):
        supervisor = self._dnsmasq.get(name)
        return supervisor.pid if supervisor else None

    # -- static DHCP entries ----------------------------------------------------------------
    def _host_entries(self, name, config, override=None):
        dns_mode = schema.get(config, "dns.mode")
        entries = {}
        for container, dev, device, cconfig in self.nic_users(name, override):
            if device.get("nictype") != "bridged":
                continue
            hwaddr = device.get("hwaddr") or cconfig.get(f"volatile.{dev}.hwaddr", "")
            entries.setdefault(container, []).append(
                (hwaddr, device.get("ipv4.address", ""), device.get("ipv6.address", "")))
        return {c: dnsmasq.host_lines(c, nics, dns_mode) for c, nics in entries.items()}

    async def refresh_hosts(self, name, config=None, reload=True, override=None):
        """Rewrite the static DHCP entries of network `name`; dnsmasq re-reads them on change."""
        if config is None:
            doc = self.store.get(KIND, name)
            if doc is None:
                return
            config = doc.value["config"]
        if not dnsmasq.needed(config):
            return
        # Computed from the store and written in a thread: unserialized, an older view
        # could be written after a newer one and bring back a deleted container's entry.
        async with self._hosts_locks.setdefault(name, defer.DeferredLock()):
            entries = self._host_entries(name, config, override)
            changed = await threads.deferToThread(self._hosts_files.write, self.directory(name), entries)
        supervisor = self._dnsmasq.get(name)
        if changed and reload and supervisor is not None:
            supervisor.reload()

    # -- containers changing -------------------------------------------------------------------
    def _managed_parents(self, *expanded):
        return sorted({d["parent"] for item in expanded if item for d in item[1].values()
                       if d.get("type") == "nic" and d.get("nictype") == "bridged"
                       and self.is_managed(d.get("parent", ""))})

    async def container_changed(self, name, before, after):
        """A container is created (`before` None) or changed: MAAS, static DHCP entries.

        Called before the change is committed, with the expanded (config, devices).
        """
        await self.maas.container_changed(name, before, after)
        for network in self._managed_parents(before, after):
            await self.refresh_hosts(network, override=(name, *after))

    async def container_committed(self, name, expanded):
        """A change announced by `container_changed` is committed: entries from the store now
        (one rewritten from the store in between may have left the new one out)."""
        for network in self._managed_parents(expanded):
            await self.refresh_hosts(network)

    async def container_renamed(self, name, new_name, expanded):
        await self.maas.container_renamed(name, new_name, expanded)

    async def container_deleted(self, name, expanded):
        await self.maas.container_deleted(name, expanded)
        for network in self._managed_parents(expanded):
            await self.refresh_hosts(network, override=(name, None, None))

    # -- lifecycle ---------------------------------------------------------------------------
    async def restore_all(self):
        """Daemon start: bring every network up again, reusing what survived (links, leases)."""
        from lxdtx.cluster.onall import local_config, made_here

        for doc in self.store.list(KIND):
            if not made_here(self.daemon, doc.value):
                continue  # a cluster's network still being made, or not made on this member
            config = local_config(self.daemon, doc.value)
            try:
                await self._apply(doc.name, config, old_config=config)
            except Exception as e:
                self.log.error("Failed to bring up network {network}: {error}", network=doc.name, error=e)
        await self._forget_stale_filters()
        if self.names():  # (pyroute2 stays unloaded in daemons without networks)
            await self._forget_orphans()

    async def _forget_orphans(self):
        """Bridges of daemons whose state directory is gone (killed test daemons): link, rules, dnsmasq.

        Only links carrying our alias `lxdtx:DIR` with DIR missing are touched, and only
        the dnsmasq whose pid file lives under that DIR and serves that link.
        """
        for link in await run_in_thread(links.links):
            alias = link.get("alias") or ""
            if not alias.startswith("lxdtx:") or alias == self.alias:
                continue
            state_dir = alias[len("lxdtx:"):]
            if not os.path.isabs(state_dir) or await threads.deferToThread(os.path.exists, state_dir):
                continue
            name = link["name"]
            self.log.info("Removing network {network} left by the vanished daemon of {dir}", network=name,
                          dir=state_dir)
            await dnsmasq.end_orphan(state_dir, name, self.reactor)
            await firewall.remove_network(name)
            await bridge.remove_tunnels(name)
            await run_in_thread(links.delete, name)

    async def _forget_stale_filters(self):
        """MAC filter tables of nics whose host end is gone (containers that stopped while we were down)."""
        prefix = firewall.mac_table_name("")
        for family, table in await firewall.tables():
            if family != "bridge" or not table.startswith(prefix):
                continue
            host = table[len(prefix):]
            if not await run_in_thread(links.exists, host):
                await firewall.remove_mac_filter(host)

    async def stop_all_dnsmasq(self):
        """End every dnsmasq this daemon supervises (a start that failed)."""
        supervisors, self._dnsmasq = self._dnsmasq, {}
        for supervisor in supervisors.values():
            await supervisor.stop()

    async def stop_supervising(self):
        """Daemon stop (SIGTERM): dnsmasq keeps serving; only our supervision ends."""
        for supervisor in self._dnsmasq.values():
            supervisor.detach()

    async def _check_free_name(self, name, conflict=errors.BadRequest):
        if self.store.exists(KIND, name) or name in self._reserved or await run_in_thread(links.exists, name):
            raise conflict("The network already exists")

    async def create(self, name, description="", config=None, net_type=""):
        schema.check_name(name)
        if net_type not in ("", None, TYPE):
            raise errors.BadRequest(f"Only '{TYPE}' type networks can be created")
        if not isinstance(description, str):
            raise errors.BadRequest("description must be a string")
        config = config or {}
        if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
            raise errors.BadRequest("config must be a map of strings")
        await self._forget_orphans()  # a vanished daemon's bridge may hold the name or the subnet
        await self._check_free_name(name)
        config = schema.creation_defaults(config, schema.host_has_ipv6())
        schema.validate(name, config)
        self._reserved.add(name)
        try:
            async with self._lock(name):
                config = await self._resolve_addresses(name, config)
                # Killed before the row is committed, the next start removes the bridge and
                # all that came with it (`settle`); an exception does it at once.
                async with self.daemon.journal.begin("network.create", name) as intent:
                    await intent.will("network", name=name, config=config)
                    CREATE_RECORDED()
                    await self._apply(name, config)
                    CREATE_APPLIED()
                    value = {"description": description, "config": config, "type": TYPE}
                    await self.store.commit([Put(KIND, name, value, expect=ABSENT), intent.done()])
        finally:
            self._reserved.discard(name)
        self.log.info("Created network {network}", network=name)

    async def _teardown_new(self, name, config):
        await self._teardown(name, config)

    async def settle(self, name, config):
        """A step of an interrupted change: network `name` without a row goes from the host
        (in a cluster: without a row that says `Created` with this member's keys)."""
        from lxdtx.cluster.onall import made_here

        doc = self.store.get(KIND, name)
        if doc is None or not made_here(self.daemon, doc.value):
            await self._teardown(name, config)
            await self._remove_directory(name)

    def _remove_directory(self, name):
        return threads.deferToThread(shutil.rmtree, self.directory(name), True)

    async def update(self, name, config, description=None, revision=None):
        """Replace a network's config (PUT semantics; the caller merged for PATCH)."""
        if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
            raise errors.BadRequest("config must be a map of strings")
        if description is not None and not isinstance(description, str):
            raise errors.BadRequest("description must be a string")
        async with self._lock(name):
            doc = self.get(name)
            if revision is not None and doc.revision != revision:
                raise errors.PreconditionFailed("The network changed while the request was prepared")
            config = {k: v for k, v in config.items() if v != ""}
            from lxdtx.cluster import networks as cluster_networks
            from lxdtx.cluster import onall

            clustered = onall.clustered(self.daemon)
            own = {}
            if clustered:  # the shared config: a member's own keys stay as they are
                own = (doc.value.get("members") or {}).get(self.daemon.cluster.member_id, {})
                for key in sorted(config):
                    if key in cluster_networks.NODE_SPECIFIC and config[key] != own.get(key, ""):
                        raise errors.BadRequest(f"node-specific config key {key} can't be changed")
                config = {k: v for k, v in config.items() if k not in cluster_networks.NODE_SPECIFIC}
            schema.validate(name, {**config, **own})
            config = await self._resolve_addresses(name, config)
            old = doc.value["config"]
            value = dict(doc.value, config=config)
            if description is not None:
                value["description"] = description
            if value == doc.value:
                return
            try:
                if config != old:
                    await self._apply(name, {**config, **own}, old_config={**old, **own})
                    if clustered:  # every member's bridge too
                        await onall.apply_on_others(self.daemon, cluster_networks.UPDATE_LOCAL.format(name),
                                                    {"config": config}, {"config": old})
                await self.store.commit([Put(KIND, name, value, expect=doc.revision)])
            except Exception:
                old, config = {**old, **own}, {**config, **own}
                try:
                    await self._apply(name, old, old_config=config)
                except Exception as e:
                    self.log.error("Could not restore network {network} after a failed update: {error}",
                                   network=name, error=e)
                raise

    async def rename(self, name, new_name):
        from lxdtx.cluster.onall import clustered

        if clustered(self.daemon):
            raise errors.BadRequest("Renaming a network is not supported in a cluster")
        schema.check_name(new_name)
        async with self._lock(name):
            doc = self.get(name)
            if self.used_by(name):
                raise errors.BadRequest("The network is currently in use")
            if self.store.exists(KIND, new_name) or new_name in self._reserved or \
                    await run_in_thread(links.exists, new_name):
                raise errors.Conflict(f"Network \"{new_name}\" already exists")
            config = doc.value["config"]
            schema.validate(new_name, config)
            self._reserved.add(new_name)
            try:
                async with Reverter() as revert:
                    await self._teardown(name, config)
                    revert.add(self._apply, name, config)
                    await threads.deferToThread(_move, self.directory(name), self.directory(new_name))
                    revert.add(threads.deferToThread, _move, self.directory(new_name), self.directory(name))
                    revert.add(self._teardown_new, new_name, config)
                    await self._apply(new_name, config)
                    await self.store.commit([Delete(KIND, name, expect=doc.revision),
                                             Put(KIND, new_name, doc.value, expect=ABSENT)])
                    revert.success()
            finally:
                self._reserved.discard(new_name)

    async def delete(self, name):
        async with self._lock(name):
            doc = self.get(name)
            if self.used_by(name):
                raise errors.BadRequest("The network is currently in use")
            from lxdtx.cluster import networks as cluster_networks
            from lxdtx.cluster.onall import clustered

            if clustered(self.daemon):
                await cluster_networks.delete(self.daemon, name, doc)
                return
            config = doc.value["config"]
            # The row goes first, with the intent to remove the rest: finished by the next
            # start if we are killed half way.
            async with self.daemon.journal.begin("network.delete", name, finish=True) as intent:
                await self.store.commit([Delete(KIND, name, expect=doc.revision),
                                         intent.record("network", name=name, config=config)])
                DELETE_COMMITTED()
                await self.settle(name, config)
        self.log.info("Deleted network {network}", network=name)

    # -- leases ------------------------------------------------------------------------------
    async def leases(self, name):
        doc = self.store.get(KIND, name)
        if doc is None:
            raise errors.NotFound(f"Network '{name}' not found")
        statics = []
        for container, dev, device, cconfig in self.nic_users(name):
            if device.get("nictype") != "bridged":
                continue
            hwaddr = device.get("hwaddr") or cconfig.get(f"volatile.{dev}.hwaddr", "")
            statics += leases.static(container, hwaddr, device.get("ipv4.address", ""),
                                     device.get("ipv6.address", ""))
        path = os.path.join(self.directory(name), dnsmasq.LEASES)
        text = await threads.deferToThread(_read, path)
        if text is None:
            raise errors.BadRequest("No lease file for network")
        return leases.merge(statics, text)


def _move(source, target):
    if os.path.exists(source):
        os.rename(source, target)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
