# -*- test-case-name: tests.integration.test_containers -*-
"""Containers: create, start, stop, restart, freeze, update, rename, delete, shutdown, autostart.

Every state change of one container runs under its operation lock. Each
multi-step change registers undo steps, so a failure leaves no volume, row,
link or config behind.
"""

import functools
import os
import shutil
import sys

from twisted.internet import defer, threads
from twisted.logger import Logger

from lxdtx import architectures, device, errors, faults, hostinfo, statedir, timeutil
from lxdtx.config import container as container_config
from lxdtx.config.types import is_true, parse_int64
from lxdtx.exec.seeds import Seeds
from lxdtx.fsutil import read_text
from lxdtx.instance import cgroups, checkpoint, checkpointnet, disklimits, lxcconf, model, proxies, settle, templates
from lxdtx.instance import devices as devices_rt
from lxdtx.instance import idmap as idmaps
from lxdtx.instance.blockdisks import BlockDisks
from lxdtx.instance.fileagents import FileAgents
from lxdtx.instance.idmapped import IdmappedMounts
from lxdtx.instance.liblxc import Liblxc
from lxdtx.instance.oplock import OperationLocks
from lxdtx.instance.publish import UNSHIFTED_MARKER, PublishSource
from lxdtx.instance.records import InstanceRecords
from lxdtx.instance.runtime import (
    FROZEN,
    RUNNING,
    STOPPED,
    Runtime,
    cgroup_prefixes,
    scope_of,
)
from lxdtx.instance.settle import state as settle_state
from lxdtx.instance.snapshots import Snapshots
from lxdtx.instance.state import NetnsThreads
from lxdtx.instance.unixdevices import UnixDevices
from lxdtx.instance.updates import ConfigUpdates
from lxdtx.revert import Reverter
from lxdtx.state import ABSENT, Delete, Put

KIND = model.KIND
CREATE_RECORDED = faults.point("container.create.recorded")
CREATE_VOLUME = faults.point("container.create.volume")
CREATE_LINKED = faults.point("container.create.linked")
CREATE_COMMITTED = faults.point("container.create.committed")
DELETE_COMMITTED = faults.point("container.delete.committed")
DELETE_SNAPSHOTS = faults.point("container.delete.snapshots")
DELETE_VOLUME = faults.point("container.delete.volume")
RENAME_RECORDED = faults.point("container.rename.recorded")
RENAME_MOVED = faults.point("container.rename.moved")
RENAME_LINKED = faults.point("container.rename.linked")
RENAME_COMMITTED = faults.point("container.rename.committed")
IMPORT_RECORDED = faults.point("container.import.recorded")
IMPORT_VOLUMES = faults.point("container.import.volumes")
STATEFUL_DUMPED = faults.point("container.stateful_stop.dumped")
STATEFUL_RESTORED = faults.point("container.stateful_start.restored")

_STOPHOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "stophook.py")


class Instances:
    """All containers of one daemon."""

    log = Logger()

    def __init__(self, daemon):
        self.daemon = daemon
        self.store = daemon.store
        self.events = daemon.events
        self.lxcpath = daemon.path("lxc")
        self.log_root = daemon.path("logs")
        self.liblxc = Liblxc(self.lxcpath, self.log_root)
        self.criu = checkpoint.Criu()
        self.idmapped = IdmappedMounts()
        self.runtime = Runtime()
        self.records = InstanceRecords(daemon.store, self.runtime, daemon)
        self.seeds = Seeds(daemon.reactor, self.lxcpath)
        self.file_agents = FileAgents(daemon.reactor)
        self.locks = OperationLocks(daemon.reactor)
        self.netns_threads = NetnsThreads(daemon.reactor)
        self.updates = ConfigUpdates(self)
        self.snapshots = Snapshots(self)
        self._reserved = set()  # names being created
        self.allocation = None  # the host's subuid/subgid range for root
        self.layout = None  # cgroup layout
        from lxdtx.instance.backups import Backups

        self.backups = Backups(self)
        # Where host device information (USB, DRM) is read: sysfs, unless pointed at a tree
        # describing devices this host does not have (the tests do so).
        self.unix_devices = UnixDevices(self, sys_root=os.environ.get("LXDTX_HOST_SYSFS") or "/sys")
        self.block_disks = BlockDisks(daemon.path("disks"))

    async def setup(self):
        """Read host facts once at daemon start (blocking reads, done in a thread)."""
        self.allocation = await threads.deferToThread(idmaps.ensure_allocation)
        self.layout = await threads.deferToThread(cgroups.detect)
        self.cgroup_prefix, self.monitor_prefix = cgroup_prefixes(scope_of(self.daemon.dir))
        self.layout.payload_prefix = self.cgroup_prefix
        self.runtime.layout = self.layout

    # -- paths -----------------------------------------------------------
    def list_snapshots(self, name, recursion):
        """Snapshot URLs (or objects with recursion) of a container, oldest first."""
        return self.snapshots.list(name, recursion)

    def snapshot_dirs(self, name):
        """[(snapshot name, directory)] of a container, oldest first (for backups)."""
        return self.snapshots.dirs(name)

    def container_dir(self, value, name):
        return self.daemon.pools.driver(value["pool"]).mount_path("container", name)

    def log_dir(self, name):
        return os.path.join(self.log_root, name)

    def state_dir(self, name, pool):
        """Where `lxc stop --stateful` keeps the container's CRIU dump: with its volume."""
        return os.path.join(self.daemon.pools.driver(pool).mount_path("container", name), "state")

    async def file_agent(self, name):
        """The file agent of container `name`: inside it while it runs, else over its rootfs."""
        value = self.records.get(name).value
        idmap = value["config"].get("volatile.last_state.idmap", "")
        init = self.runtime.init(name)
        if init is not None:
            return await self.file_agents.for_running(name, *init, idmap)
        await self.daemon.pools.driver(value["pool"]).mount_volume("container", name)
        rootfs = os.path.join(self.container_dir(value, name), "rootfs")
        return await self.file_agents.for_rootfs(name, rootfs, idmap)

    # -- validation --------------------------------------------------------
    def validate_expanded(self, config, devices):
        container_config.check_combinations(config)
        device.validate(devices, expanded=True)
        root, root_config = device.disk.root_device(devices)
        if root is None:
            raise errors.BadRequest("No root device could be found: add a disk device with path \"/\"")
        if not self.store.exists("pool", root_config.get("pool", "")):
            raise errors.BadRequest(f"Storage pool \"{root_config.get('pool')}\" of the root disk doesn't exist")
        return root_config

    async def validate_new(self, *, config, devices, profiles):
        """Validate a container's own and expanded state; returns the root disk config."""
        if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
            raise errors.BadRequest("config must be a map of strings")
        container_config.validate(config)
        device.validate(devices)
        if len(set(profiles)) != len(profiles):
            raise errors.BadRequest("Duplicate profiles in request")
        values = self.records.profile_values(profiles)
        expanded_config, expanded_devices = model.expand({"config": config, "devices": devices}, values)
        root = self.validate_expanded(expanded_config, expanded_devices)
        if expanded_config.get("raw.lxc"):
            await threads.deferToThread(lxcconf.validate_raw_lxc, expanded_config["raw.lxc"])
        return root

    # -- create ------------------------------------------------------------
    def reserve(self, name):
        if self.store.exists(KIND, name) or name in self._reserved:
            raise errors.Conflict(f"Container '{name}' already exists")
        self._reserved.add(name)

    def release(self, name):
        self._reserved.discard(name)

    async def create(self, name, *, architecture, config, devices, profiles, ephemeral, description,
                     image=None, op=None):
        """Create a container (from an image fingerprint, or empty); the name must be reserved."""
        try:
            async with self.locks.hold(name, "create"):
                await self._create(name, architecture, config, devices, profiles, ephemeral,
                                   description, image, op)
        finally:
            self.release(name)
        self.events.lifecycle("container-created", f"/1.0/containers/{name}")

    async def _create(self, name, architecture, config, devices, profiles, ephemeral, description, image, op):
        root = await self.validate_new(config=config, devices=devices, profiles=profiles)
        pool = root["pool"]
        driver = self.daemon.pools.driver(pool)
        config = dict(config)
        await self.check_volume_free(pool, name)
        # The intent goes first: killed at any point before the row is committed, the next
        # start removes what was made (`settle.container`); an exception does it at once.
        async with self.daemon.journal.begin("container.create", name) as intent, Reverter() as revert:
            await intent.will("container", name=name, pool=pool)
            CREATE_RECORDED()
            if image is not None:
                images = self.daemon.images
                info = images.get(image)
                path = await driver.create_from_image(name, image, functools.partial(_unpack_guarded, images, image),
                                                      {})
                config.setdefault("volatile.base_image", image)
                for key, value in (info.get("properties") or {}).items():
                    config.setdefault(f"image.{key}", str(value))
                architecture = architecture or info.get("architecture")
                await images.mark_used(image)
            else:
                path = await driver.create_volume("container", name, {})
                await threads.deferToThread(os.makedirs, os.path.join(path, "rootfs"), 0o755, True)
            if root.get("size"):
                await self.daemon.pools.apply_root_size(pool, name, root["size"])
            CREATE_VOLUME()
            architecture = architecture or architectures.host()
            model.check_architecture(architecture)

            value = model.new_document(
                architecture=architecture, config=config, devices=devices, profiles=profiles,
                ephemeral=ephemeral, description=description, pool=pool, location=model.here(self.daemon))
            expanded_config, expanded_devices = self.records.expanded(value)
            config.update(devices_rt.fill_volatile(config, expanded_devices))
            config["volatile.apply_template"] = "create"
            await self._shift_rootfs(name, value, expanded_config, path)

            await threads.deferToThread(self.make_links, name, path)
            CREATE_LINKED()
            await self.daemon.networks.container_changed(name, None, self.records.expanded(value))
            revert.add(self.daemon.networks.container_deleted, name, self.records.expanded(value))
            await self.store.commit([
                Put(KIND, name, value, expect=ABSENT),
                self.daemon.pools.volume_changes(pool, "container", name, {"config": {}, "description": ""},
                                                 expect=ABSENT),
                intent.done(),
            ])
            revert.success()
            CREATE_COMMITTED()
        await self.daemon.networks.container_committed(name, self.records.expanded(value))

    async def check_volume_free(self, pool, name):
        """Refuse a new container volume whose place in the pool is taken: what an interrupted
        change then finds there is its own, to keep or remove (`settle`)."""
        path = self.daemon.pools.driver(pool).mount_path("container", name)
        if await threads.deferToThread(os.path.lexists, path):
            raise errors.Conflict(f"Volume of container '{name}' already exists on pool '{pool}'")

    def make_links(self, name, path):
        """The paths of a container whose volume now exists at `path` (root's alone until it starts)."""
        statedir.guard_container_root(path)
        os.makedirs(os.path.join(self.lxcpath, name), mode=0o700, exist_ok=True)
        os.makedirs(self.log_dir(name), mode=0o700, exist_ok=True)
        links = self.daemon.path("containers")
        os.makedirs(links, mode=0o711, exist_ok=True)
        link = os.path.join(links, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(path, link)

    def remove_links(self, name):
        def remove():
            shutil.rmtree(os.path.join(self.lxcpath, name), ignore_errors=True)
            shutil.rmtree(self.log_dir(name), ignore_errors=True)
            shutil.rmtree(self.unix_devices.node_dir(name), ignore_errors=True)
            link = os.path.join(self.daemon.path("containers"), name)
            if os.path.lexists(link):
                os.unlink(link)

        return threads.deferToThread(remove)

    # -- id maps -----------------------------------------------------------
    def _other_isolated_maps(self, name):
        maps = []
        for doc in self.store.list(KIND):
            if doc.name == name:
                continue
            config, _ = self.records.expanded(doc.value)
            if is_true(config.get("security.idmap.isolated", "")):
                text = doc.value["config"].get("volatile.idmap.next") or doc.value["config"].get("volatile.last_state.idmap")
                if text:
                    maps.append(idmaps.IdMap.from_json(text))
        return maps

    @staticmethod
    def current_idmap(config):
        """The id map a running container runs with (None: privileged)."""
        return idmaps.running_map(config)

    def _next_idmap(self, name, value, expanded_config):
        """The id map the container should run with (None: privileged)."""
        return idmaps.compute(expanded_config, self.allocation, self._other_isolated_maps(name))

    async def _shift_rootfs(self, name, value, expanded_config, path):
        """Make the on-disk ownership fit the next id map, recording both in volatile keys;
        returns (the map the container runs with, the map its files are shifted to).

        Where the volume's filesystem takes an idmapped mount the files stay unshifted
        (disk map None) and liblxc idmaps the rootfs: nothing is walked, however large
        the image. CRIU-checkpointable containers keep shifted files (CRIU restores
        no idmapped mount), as does every container where the kernel refuses.
        """
        config = value["config"]
        try:
            new_map, base = self._next_idmap(name, value, expanded_config)
        except ValueError as e:
            raise errors.BadRequest(str(e))
        disk_map = new_map
        if new_map is not None and not checkpoint.stateful(expanded_config) and \
                await self.idmapped.supported(path):
            disk_map = None
        old_text = config.get("volatile.last_state.idmap")
        old_map = idmaps.IdMap.from_json(old_text) if old_text else None
        if config.pop(UNSHIFTED_MARKER, None) and old_map is not None:
            await threads.deferToThread(idmaps.shift_tree, os.path.join(path, "rootfs"), old_map, None)
            old_map = None
        new_text = new_map.to_json() if new_map else "[]"
        disk_text = disk_map.to_json() if disk_map else "[]"
        if (old_map.to_json() if old_map else "[]") != disk_text:
            await threads.deferToThread(idmaps.shift_tree, os.path.join(path, "rootfs"), old_map, disk_map)
        config["volatile.idmap.next"] = new_text
        config["volatile.idmap.current"] = new_text
        config["volatile.idmap.base"] = str(base or 0)
        config["volatile.last_state.idmap"] = disk_text
        return new_map, disk_map

    # -- start -------------------------------------------------------------
    async def start(self, name, stateful=False):
        async with self.locks.hold(name, "start"):
            await self.start_locked(name, stateful)

    async def start_locked(self, name, stateful=False):
        doc = self.records.get(name)
        await self.file_agents.stopped(name)  # one over the rootfs: the container gets its own
        status = self.records.status(name)
        if status == RUNNING:
            raise errors.BadRequest("The container is already running")
        if status == FROZEN:
            raise errors.BadRequest("The container is frozen")
        if stateful and not doc.value.get("stateful"):
            raise errors.BadRequest("Container has no existing state to restore")
        if stateful:
            await self._restore_state(name, doc)
            return
        if doc.value.get("stateful"):  # started afresh: the saved state is of no more use
            doc = await self._drop_state(name, doc)
        value = doc.value
        config, devs = self.records.expanded(value)
        try:
            self.validate_expanded(config, devs)
        except ValueError as e:
            raise errors.BadRequest(str(e))
        driver = self.daemon.pools.driver(value["pool"])
        await driver.mount_volume("container", name)
        path = driver.mount_path("container", name)
        own = value["config"]

        idmap, disk_map = await self._shift_rootfs(name, value, config, path)
        config, devs = self.records.expanded(value)
        await devices_rt.prepare_volumes(self.daemon.pools, devs, idmap)
        nic_volatile = await self.daemon.networks.nics.prepare(name, config, devs)
        own.update(nic_volatile)
        config.update(nic_volatile)
        version = disklimits.version_of(self.layout)
        if version is not None:
            limits = await threads.deferToThread(self.updates.disk_limits, name, value, devs)
        staged = await self.block_disks.mount_all(name, devs)
        try:
            lines, volatile = devices_rt.start_lines(self.daemon.pools, config, devs,
                                                     unprivileged=idmap is not None, staged=staged,
                                                     devices_key=self.layout.config_key("devices.allow"))
            if version is not None:
                lines += [(self.layout.config_key(f), v) for f, v in disklimits.start_files(limits, version)]
            lines += await self.unix_devices.start_lines(name, devs, idmap)  # last: it makes host nodes
        except BaseException:
            await self.block_disks.unmount_all(name)
            raise
        own.update(volatile)
        trigger = own.pop("volatile.apply_template", None)
        uid = idmap.host_uid(0) if idmap else 0
        # liblxc reaches the rootfs as the container's root: let it (and only it) in.
        await threads.deferToThread(statedir.guard_container_root, path, uid)
        context = self._template_context(name, value, config)
        # Rendered files belong to the container's root as the disk holds its ids.
        disk_uid = disk_map.host_uid(0) if disk_map else 0
        disk_gid = disk_map.host_gid(0) if disk_map else 0
        for when in ([trigger] if trigger else []) + ["start"]:
            await threads.deferToThread(templates.apply, path, when, context, disk_uid, disk_gid)

        await threads.deferToThread(self._write_config, name, path, config, idmap, lines,
                                    idmap is not None and disk_map is None)
        self.runtime.forget(name)
        await threads.deferToThread(self._remove_stale_cgroups, name)
        try:
            await self.liblxc.start(name)
        except BaseException:
            await threads.deferToThread(self._remove_stale_cgroups, name)
            await self.unix_devices.stopped(name)
            await self.block_disks.unmount_all(name)
            raise
        try:
            await self.daemon.networks.nics.started(name, {**config, **own}, devs)
            await proxies.start_all(self.log_dir(name), self.runtime.init_pid(name), devs)
        except Exception:
            await self.liblxc.stop(name, force=True)
            await proxies.stop_all(self.log_dir(name), devs)
            await self.unix_devices.stopped(name)
            await self.block_disks.unmount_all(name)
            raise
        self.unix_devices.watch(name, devs)
        own["volatile.last_state.power"] = "RUNNING"
        value["last_used_at"] = timeutil.now()
        await self.save(name, value, doc.revision)
        self.events.lifecycle("container-started", f"/1.0/containers/{name}")

    def _template_context(self, name, value, config):
        return {
            "container": {
                "name": name, "architecture": value.get("architecture"),
                "privileged": "true" if is_true(config.get("security.privileged", "")) else "false",
                "ephemeral": "true" if value.get("ephemeral") else "false",
            },
            "config": config,
            "devices": self.records.expanded(value)[1],
        }

    def _cgroup_dirs(self, prefix, name):
        """The directories `prefix + name` in each cgroup hierarchy (those that exist)."""
        dirs = (os.path.join(parent, prefix + name) for parent in self.layout.parents)
        return [d for d in dirs if os.path.isdir(d)]

    def payload_cgroup_dirs(self, name):
        """The container's cgroup directory in each hierarchy (those that exist)."""
        return self._cgroup_dirs(self.cgroup_prefix, name)

    def _remove_stale_cgroups(self, name):
        """Empty cgroups an aborted start left behind: with explicit cgroup names
        liblxc refuses to start while they exist (it only renames its default ones)."""
        for top in self._cgroup_dirs(self.cgroup_prefix, name) + self._cgroup_dirs(self.monitor_prefix, name):
            for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
                try:
                    os.rmdir(directory)
                except OSError:
                    break  # processes still in it: not stale

    def remove_cgroups(self, name):
        """Blocking: remove the container's empty cgroups; True when none is left."""
        self._remove_stale_cgroups(name)
        return not (self._cgroup_dirs(self.cgroup_prefix, name) + self._cgroup_dirs(self.monitor_prefix, name))

    def _write_config(self, name, path, config, idmap, device_lines, idmapped_rootfs=False):
        log_dir = self.log_dir(name)
        lxc_dir = os.path.join(self.lxcpath, name)
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
        os.makedirs(lxc_dir, mode=0o700, exist_ok=True)
        hook = f"{sys.executable} -I -S {_STOPHOOK} {self.daemon.dir}"
        devlxd = self.daemon.devlxd.mount_line(config)
        seccomp_path = os.path.join(lxc_dir, "seccomp")
        rendered = lxcconf.render(
            name, rootfs=os.path.join(path, "rootfs"), log_dir=log_dir, config=config, idmap=idmap,
            device_lines=([devlxd] if devlxd else []) + device_lines + [
                ("lxc.hook.post-stop", hook),
                # Cgroups named per daemon: two daemons' containers never share one.
                ("lxc.cgroup.dir.monitor", self.monitor_prefix + name),
                ("lxc.cgroup.dir.container", self.cgroup_prefix + name),
            ], layout=self.layout,
            apparmor=hostinfo.apparmor_enabled(), host_cpus=os.cpu_count() or 1,
            host_memory=hostinfo.memory()["total"], seccomp_path=seccomp_path,
            checkpointable=checkpoint.stateful(config), idmapped_rootfs=idmapped_rootfs,
        )
        if rendered.seccomp:
            with open(seccomp_path, "w") as f:
                f.write(rendered.seccomp)
        config_path = self.liblxc.config_path(name)
        with open(config_path + ".new", "w") as f:
            f.write(rendered.text)
        os.replace(config_path + ".new", config_path)

    async def save(self, name, value, revision):
        """Write back a container document changed by the daemon (volatile keys, timestamps)."""
        try:
            await self.store.commit([Put(KIND, name, value, expect=revision)])
        except errors.PreconditionFailed:
            # Someone edited the container meanwhile: merge our volatile keys into theirs.
            doc = self.records.get(name)
            for key, item in value["config"].items():
                if key.startswith("volatile."):
                    doc.value["config"][key] = item
            doc.value["last_used_at"] = value.get("last_used_at", doc.value.get("last_used_at"))
            await self.store.commit([Put(KIND, name, doc.value, expect=doc.revision)])

    # -- checkpoint/restore ----------------------------------------------------
    async def checkpoint_problem(self, name, value):
        """Why the running container can't be dumped by CRIU now, or None."""
        reason = await self.criu.problem()
        if reason is not None:
            return reason
        reason = checkpoint.problem_with(*self.records.expanded(value))
        if reason is not None:
            return reason
        text = await threads.deferToThread(read_text, self.liblxc.config_path(name)) or ""
        if "\nlxc.console.path = none\n" not in text:
            return "The container can't be checkpointed: it was started before migration.stateful was set; restart it"
        return None

    async def dump(self, name, directory, stop=True, parent=None):
        """CRIU-dump the running container into a fresh `directory` (root's alone); with
        `stop` it is stopped once dumped and the daemon forgets its runtime state. `parent`:
        a pre-copy's last pre-dump, relative to `directory`."""
        await threads.deferToThread(_fresh_dir, directory)
        if self.records.status(name) == FROZEN:
            await self.liblxc.unfreeze(name)
        if stop:
            self.seeds.forget(name)
            self.file_agents.forget(name)
        await self.liblxc.checkpoint(name, directory, self.criu.env("dump"), stop=stop, parent=parent)
        if stop:
            await self.seeds.stopped(name)
            await self.file_agents.stopped(name)
            self.runtime.forget(name)
            await threads.deferToThread(self._remove_stale_cgroups, name)

    async def restore_from(self, name, value, directory):
        """Bring the stopped container back from the CRIU dump in `directory`: its config is
        written as for a start, but nothing is shifted or templated (the dump's processes
        hold the files as they are)."""
        config, devs = self.records.expanded(value)
        reason = await self.criu.problem() or checkpoint.problem_with(config, devs)
        if reason is not None:
            raise errors.BadRequest(reason)
        driver = self.daemon.pools.driver(value["pool"])
        await driver.mount_volume("container", name)
        path = driver.mount_path("container", name)
        text = value["config"].get("volatile.last_state.idmap") or "[]"
        idmap = idmaps.IdMap.from_json(text) if text != "[]" else None
        await devices_rt.prepare_volumes(self.daemon.pools, devs, idmap)
        nic_volatile = await self.daemon.networks.nics.prepare(name, config, devs)
        value["config"].update(nic_volatile)
        config.update(nic_volatile)
        lines, volatile = devices_rt.start_lines(self.daemon.pools, config,
                                                 checkpointnet.keep_host_names(config, devs),
                                                 devices_key=self.layout.config_key("devices.allow"))
        value["config"].update(volatile)
        uid = idmap.host_uid(0) if idmap else 0
        await threads.deferToThread(statedir.guard_container_root, path, uid)
        # CRIU reads some images once it is the container's root: the dump is its own.
        await threads.deferToThread(_own_tree, directory, uid, idmap.host_gid(0) if idmap else 0)
        await threads.deferToThread(self._write_config, name, path, config, idmap, lines)
        self.runtime.forget(name)
        await threads.deferToThread(self._remove_stale_cgroups, name)
        veths = checkpointnet.veths(lines)
        env = await threads.deferToThread(checkpointnet.prepare, veths, directory, self.criu.env("restore"))
        try:
            await self.liblxc.restore(name, directory, env)
        except BaseException:
            await threads.deferToThread(checkpointnet.remove, veths)
            await threads.deferToThread(self._remove_stale_cgroups, name)
            raise
        try:
            await self.daemon.networks.nics.started(name, {**config, **value["config"]}, devs)
        except Exception:
            await self.liblxc.stop(name, force=True)
            raise

    async def stopped_by_migration(self, name):
        """The container went live to another server and is stopped here."""
        doc = self.store.get(KIND, name)
        if doc is not None:
            doc.value["config"]["volatile.last_state.power"] = "STOPPED"
            await self.save(name, doc.value, doc.revision)
        self.events.lifecycle("container-stopped", f"/1.0/containers/{name}")

    async def _restore_state(self, name, doc):
        """`lxc start` of a container stopped with `--stateful`: restored from its dump, which
        goes once the row says it is running again."""
        pool = doc.value["pool"]
        # Killed once it runs again, the next start drops the dump and clears `stateful`.
        async with self.daemon.journal.begin("container.stateful_start", name, finish=True) as intent:
            await intent.will("state", name=name, pool=pool)
            await self.restore_from(name, doc.value, self.state_dir(name, pool))
            STATEFUL_RESTORED()
            await threads.deferToThread(shutil.rmtree, self.state_dir(name, pool), True)
            doc = self.records.get(name)
            doc.value["stateful"] = False
            doc.value["config"]["volatile.last_state.power"] = "RUNNING"
            doc.value["last_used_at"] = timeutil.now()
            await self.store.commit([Put(KIND, name, doc.value, expect=doc.revision), intent.done()])
        self.events.lifecycle("container-started", f"/1.0/containers/{name}")

    async def _drop_state(self, name, doc):
        pool = doc.value["pool"]
        async with self.daemon.journal.begin("container.state_drop", name, finish=True) as intent:
            doc.value["stateful"] = False
            await self.store.commit([Put(KIND, name, doc.value, expect=doc.revision),
                                     intent.record("state", name=name, pool=pool)])
            await settle_state(self, name, pool)
        return self.records.get(name)

    async def _stop_stateful(self, name):
        doc = self.records.get(name)
        if self.records.status(name) == STOPPED:
            raise errors.BadRequest("The container is already stopped")
        reason = await self.checkpoint_problem(name, doc.value)
        if reason is not None:
            raise errors.BadRequest(reason)
        pool = doc.value["pool"]
        # Recorded first: killed before the row says `stateful`, the next start drops the dump.
        async with self.daemon.journal.begin("container.stateful_stop", name) as intent:
            await intent.will("state", name=name, pool=pool)
            await self.dump(name, self.state_dir(name, pool), stop=True)
            STATEFUL_DUMPED()
            doc = self.records.get(name)
            doc.value["stateful"] = True
            doc.value["config"]["volatile.last_state.power"] = "STOPPED"
            await self.store.commit([Put(KIND, name, doc.value, expect=doc.revision), intent.done()])

    # -- stop ----------------------------------------------------------------
    async def stop(self, name, timeout=-1, force=False, stateful=False):
        async with self.locks.hold(name, "stop"):
            if stateful:
                await self._stop_stateful(name)
            else:
                await self.stop_locked(name, timeout, force)
        if stateful:  # kept as it was, ephemeral or not: it comes back with `lxc start`
            self.events.lifecycle("container-stopped", f"/1.0/containers/{name}")
        else:
            await self._after_stop(name, deliberate=True)

    async def stop_locked(self, name, timeout, force):
        self.records.get(name)
        status = self.records.status(name)
        if status == STOPPED:
            raise errors.BadRequest("The container is already stopped")
        if status == FROZEN:
            await self.liblxc.unfreeze(name)
        force = force or timeout == 0
        self.seeds.forget(name)
        self.file_agents.forget(name)
        try:
            await self.liblxc.stop(name, timeout=timeout, force=force)
        except errors.ApiError:
            if self.records.status(name) != STOPPED:
                if not force:
                    raise errors.InternalError("Failed to shutdown container: timeout reached")
                raise
        # Its zygote holds the container's namespaces until it has reaped the last command.
        await self.seeds.stopped(name)
        await self.file_agents.stopped(name)
        self.runtime.forget(name)
        self._remove_stale_cgroups(name)  # should liblxc have found the seed still in them
        await self.unix_devices.stopped(name)
        await self.block_disks.unmount_all(name)

    async def _after_stop(self, name, deliberate):
        """Bookkeeping once a container stopped: last state, ephemeral removal, event."""
        doc = self.store.get(KIND, name)
        if doc is None:
            return
        if deliberate:
            doc.value["config"]["volatile.last_state.power"] = "STOPPED"
            await self.save(name, doc.value, doc.revision)
        self.events.lifecycle("container-stopped" if deliberate else "container-shutdown",
                              f"/1.0/containers/{name}")
        if doc.value.get("ephemeral"):
            await self.delete(name)

    async def on_stop(self, name):
        """liblxc's post-stop hook: the container stopped, maybe on its own."""
        await self.seeds.stopped(name)  # before its network goes: the zygote holds its namespaces
        await self.file_agents.stopped(name)
        doc = self.store.get(KIND, name)
        if doc is not None:
            config, devices = self.records.expanded(doc.value)
            await self.daemon.networks.nics.stopped(name, config, devices)
            await proxies.stop_all(self.log_dir(name), devices)
        await self.unix_devices.stopped(name)
        await self.block_disks.unmount_all(name)
        if self.locks.action(name) is not None or not self.store.exists(KIND, name):
            return  # an operation of ours is stopping or deleting it and does the bookkeeping
        self.daemon.reactor.callLater(0.1, lambda: defer.Deferred.fromCoroutine(self._stopped_itself(name)))

    async def _stopped_itself(self, name):
        if self.locks.action(name) is not None or self.records.status(name) != STOPPED:
            return
        self.runtime.forget(name)
        self._remove_stale_cgroups(name)  # should liblxc have found the seed still in them
        await self._after_stop(name, deliberate=False)

    async def restart(self, name, timeout=-1, force=False):
        async with self.locks.hold(name, "restart"):
            await self.stop_locked(name, timeout, force)
            await self.start_locked(name)

    async def freeze(self, name):
        async with self.locks.hold(name, "freeze"):
            self.records.get(name)
            status = self.records.status(name)
            if status == STOPPED:
                raise errors.BadRequest("The container isn't running")
            if status == FROZEN:
                raise errors.BadRequest("The container is already frozen")
            await self.liblxc.freeze(name)
        self.events.lifecycle("container-paused", f"/1.0/containers/{name}")

    async def unfreeze(self, name):
        async with self.locks.hold(name, "unfreeze"):
            self.records.get(name)
            if self.records.status(name) != FROZEN:
                raise errors.BadRequest("The container is not frozen")
            await self.liblxc.unfreeze(name)
        self.events.lifecycle("container-resumed", f"/1.0/containers/{name}")

    # -- delete / rename -----------------------------------------------------
    async def delete(self, name):
        async with self.locks.hold(name, "delete"):
            doc = self.records.get(name)
            if self.records.status(name) != STOPPED:
                raise errors.BadRequest("container is running")
            await self.file_agents.stopped(name)
            value = doc.value
            pool = value["pool"]
            driver = self.daemon.pools.driver(pool)
            snapshots = [n for n in self.store.names(model.SNAPSHOT_KIND) if n.startswith(name + "/")]
            # The rows go first, with the intent to remove what they owned: from then on
            # the delete is finished, by the next start if not by us.
            async with self.daemon.journal.begin("container.delete", name, finish=True) as intent:
                changes = [Delete(KIND, name),
                           self.daemon.pools.volume_changes(pool, "container", name),
                           intent.record("container", name=name, pool=pool)]
                changes += [Delete(model.SNAPSHOT_KIND, s) for s in snapshots]
                changes += [self.daemon.pools.volume_changes(pool, "container", s) for s in snapshots]
                await self.store.commit(changes)
                DELETE_COMMITTED()
                await self.daemon.networks.container_deleted(name, self.records.expanded(value))
                await driver.delete_container(name, snapshots)
                DELETE_SNAPSHOTS()
                DELETE_VOLUME()
                await settle.container(self, name, pool)  # the paths and backups
            self.runtime.forget(name)
            self.daemon.devlxd.forget(name)
        self.events.lifecycle("container-deleted", f"/1.0/containers/{name}")

    async def rename(self, name, new_name):
        model.check_name(new_name)
        self.reserve(new_name)
        try:
            async with self.locks.hold(name, "rename"):
                doc = self.records.get(name)
                if self.records.status(name) != STOPPED:
                    raise errors.BadRequest("Renaming of running container not allowed")
                await self.file_agents.stopped(name)
                value = doc.value
                pool = value["pool"]
                driver = self.daemon.pools.driver(pool)
                # Killed before the commit, the next start renames the volume back and
                # puts the paths where the row says (`settle.rename`); an exception does it at once.
                await self.check_volume_free(pool, new_name)
                async with self.daemon.journal.begin("container.rename", name) as intent, Reverter() as revert:
                    await intent.will("rename", name=name, new_name=new_name, pool=pool)
                    RENAME_RECORDED()
                    await driver.rename_volume("container", name, new_name)
                    RENAME_MOVED()
                    await self.remove_links(name)
                    await threads.deferToThread(self.make_links, new_name, driver.mount_path("container", new_name))
                    RENAME_LINKED()
                    value["config"]["volatile.apply_template"] = "rename"
                    await self.daemon.networks.container_renamed(name, new_name, self.records.expanded(value))
                    revert.add(self.daemon.networks.container_renamed, new_name, name, self.records.expanded(value))
                    volume = self.daemon.pools.volume(pool, "container", name)
                    await self.store.commit([
                        Delete(KIND, name, expect=doc.revision),
                        Put(KIND, new_name, value, expect=ABSENT),
                        self.daemon.pools.volume_changes(pool, "container", name),
                        self.daemon.pools.volume_changes(pool, "container", new_name,
                                                         volume.value if volume else {"config": {}}),
                        *self.snapshots.rename_changes(name, new_name, pool),
                        intent.done(),
                    ])
                    revert.success()
                    RENAME_COMMITTED()
                await self.backups.rename_all(name, new_name)
                self.daemon.devlxd.forget(name)
        finally:
            self.release(new_name)
        self.events.lifecycle("container-renamed", f"/1.0/containers/{name}", {"new_name": new_name})

    # -- import ------------------------------------------------------------------
    async def import_container(self, *, stage, index, backup, pool=None, name=None, received=False):
        """Create a container from an unpacked backup (`stage` holds `container/`, `snapshots/`;
        with `received`, volumes the pool's driver received from an optimized backup)."""
        source = backup.get("container") or {}
        name = name or source.get("name") or index.get("name")
        model.check_name(name)
        pool = pool or index.get("pool") or ""
        if not self.store.exists("pool", pool):
            raise errors.BadRequest(f"Storage pool \"{pool}\" doesn't exist")
        profiles = [p for p in (source.get("profiles") or []) if isinstance(p, str)]
        config = {k: str(v) for k, v in (source.get("config") or {}).items()}
        devices = source.get("devices") or {}
        self.records.profile_values(profiles)
        container_config.validate(config)
        device.validate(devices)
        self.reserve(name)
        try:
            async with self.locks.hold(name, "import"):
                driver = self.daemon.pools.driver(pool)
                await self.check_volume_free(pool, name)
                async with self.daemon.journal.begin("container.import", name) as intent, Reverter() as revert:
                    await intent.will("container", name=name, pool=pool)
                    IMPORT_RECORDED()
                    path = await driver.import_volume("container", name, os.path.join(stage, "container"),
                                                      received=received)
                    value = model.new_document(
                        architecture=source.get("architecture") or architectures.host(),
                        config=config, devices=devices, profiles=profiles,
                        ephemeral=bool(source.get("ephemeral")), description=source.get("description") or "",
                        pool=pool, location=model.here(self.daemon))
                    value["created_at"] = source.get("created_at") or value["created_at"]
                    await threads.deferToThread(self.make_links, name, path)
                    changes = [Put(KIND, name, value, expect=ABSENT),
                               self.daemon.pools.volume_changes(pool, "container", name,
                                                                {"config": {}, "description": ""}, expect=ABSENT)]
                    snapshots = [s for s in index.get("snapshots") or [] if isinstance(s, str)]
                    changes += await self.snapshots.import_all(name, pool, stage, snapshots,
                                                               backup.get("snapshots") or [], revert, received)
                    IMPORT_VOLUMES()
                    await self.store.commit(changes + [intent.done()])
                    revert.success()
        finally:
            self.release(name)
        self.events.lifecycle("container-created", f"/1.0/containers/{name}")
        return name

    # -- publish ---------------------------------------------------------------
    def publish_source(self, name, snapshot=None):
        """`async with instances.publish_source(name) as directory:` for `POST /1.0/images`.

        The container must be stopped (a snapshot is copied instead); it stays
        locked while the image is packed. The directory holds `metadata.yaml`,
        `templates/` and `rootfs/` with the ownership an image has (container
        ids, not shifted host ids).
        """
        return PublishSource(self, name, snapshot)

def _own_tree(path, uid, gid):
    """chown a dump directory and its files (no links are followed; CRIU writes none).

    Readable by all too: now and then CRIU's restored root task opens an image (seen:
    timens-0.img) under credentials that are not yet the container root's, and fails with
    EACCES. It opens them by the directory's fd; the container root above it lets no one but
    its owner through, so no one else reaches them."""
    os.lchown(path, uid, gid)
    os.chmod(path, 0o711)
    for entry in os.scandir(path):
        os.lchown(entry.path, uid, gid)
        if entry.is_file(follow_symlinks=False):
            os.chmod(entry.path, 0o644)


def _fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)


def _int(value, default=0):
    try:
        return parse_int64(value) if value else default
    except ValueError:
        return default


async def _unpack_guarded(images, fingerprint, target):
    """Unpack an image into a new volume that no host user can enter meanwhile: an image
    holds setuid files, and a file opened during the unpack would stay open."""
    await threads.deferToThread(statedir.guard_container_root, target)
    await images.unpack(fingerprint, target)
