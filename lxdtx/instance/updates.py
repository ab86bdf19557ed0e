# -*- test-case-name: tests.integration.test_containers,tests.integration.test_disk_devices -*-
"""Changes to a container's config and devices (its own or through a profile), applied live
to a running container where that can be done: cgroup limits, disks, unix devices,
proxies, nics, block io throttles."""

import os

from twisted.internet import threads

from lxdtx import device, errors, hostinfo
from lxdtx.fsutil import read_text
from lxdtx.instance import cgroups, disklimits, model, proxies
from lxdtx.instance import devices as devices_rt
from lxdtx.instance.blockdisks import is_block_source
from lxdtx.instance.runtime import STOPPED
from lxdtx.instance.unixdevices import is_unix
from lxdtx.state import Put

KIND = model.KIND


def _disks(devices):
    return {n: c for n, c in devices.items() if c.get("type") == "disk"}


class ConfigUpdates:
    """`PUT`/`PATCH` of a container and profile changes reaching the containers using it."""

    def __init__(self, instances):
        self._i = instances  # lxdtx.instance.lifecycle.Instances: its records, locks, runtime, devices

    async def profile_changing(self, profile, old, new):
        """Check every user's new expanded state; apply live changes to running users."""
        for name in self._i.records.profile_users(profile):
            doc = self._i.records.get(name)
            before = self._i.records.expanded(doc.value)
            profiles = [new if p == profile else self._i.store.value("profile", p) or {}
                        for p in doc.value.get("profiles", [])]
            after = model.expand(doc.value, profiles)
            self._i.validate_expanded(*after)
            if not model.is_local(self._i.daemon, doc.value):
                continue  # its cluster member applies it (lxdtx.cluster.notify)
            if self._i.records.status(name) != STOPPED:
                volatile = await self.apply_live(name, before, after)
                if volatile:  # nics plugged in: their MACs and names
                    doc.value["config"].update(volatile)
                    await self._i.save(name, doc.value, doc.revision)
            await self._i.daemon.networks.container_changed(name, before, after)

    async def update(self, name, body, revision):
        """Replace the writable state (PUT semantics; the caller merged for PATCH)."""
        async with self._i.locks.hold(name, "update"):
            doc = self._i.records.get(name)
            if revision is not None and doc.revision != revision:
                raise errors.PreconditionFailed("The container changed while the request was prepared")
            value = doc.value
            config = dict(body["config"])
            # Volatile keys stay the daemon's unless the request sets them explicitly.
            for key, item in value["config"].items():
                if key.startswith("volatile.") and key not in config:
                    config[key] = item
            profiles = body["profiles"]
            await self._i.validate_new(config=config, devices=body["devices"], profiles=profiles)
            new = dict(value, config=config, devices=body["devices"], profiles=profiles,
                       ephemeral=body["ephemeral"], description=body["description"])
            if body.get("architecture"):
                model.check_architecture(body["architecture"])
                new["architecture"] = body["architecture"]
            before = self._i.records.expanded(value)
            after = self._i.records.expanded(new)
            if self._i.records.status(name) != STOPPED:
                config.update(await self.apply_live(name, before, after) or {})
            old_size = (device.disk.root_device(before[1])[1] or {}).get("size") or ""
            new_size = (device.disk.root_device(after[1])[1] or {}).get("size") or ""
            if old_size != new_size:
                await self._i.daemon.pools.apply_root_size(value["pool"], name, new_size)
            config.update(devices_rt.fill_volatile(config, after[1]))  # MACs of nics added while stopped
            await self._i.daemon.networks.container_changed(name, before, self._i.records.expanded(new))
            await self._i.store.commit([Put(KIND, name, new, expect=doc.revision)])
            await self._i.daemon.networks.container_committed(name, self._i.records.expanded(new))
        self._i.events.lifecycle("container-updated", f"/1.0/containers/{name}")

    async def apply_live(self, name, before, after):
        """Carry a config/devices change to a running container where that can be done live."""
        old_config, old_devices = before
        new_config, new_devices = after
        pid = self._i.runtime.init_pid(name)
        if pid is None:
            return
        writes = cgroups.live_updates(old_config, new_config, self._i.layout, os.cpu_count() or 1,
                                      hostinfo.memory()["total"])
        await threads.deferToThread(self._write_cgroups, name, writes)
        disks_changed = _disks(old_devices) != _disks(new_devices)
        version = disklimits.version_of(self._i.layout)
        if disks_changed and version is not None:
            # Worked out before anything is plugged: limits that cannot apply refuse the change.
            doc = self._i.records.get(name)
            limits = await threads.deferToThread(self.disk_limits, name, doc.value, new_devices)
        for dev_name in sorted(set(old_devices) | set(new_devices)):
            old, new = old_devices.get(dev_name), new_devices.get(dev_name)
            if old == new:
                continue
            for gone in [old] if old else []:
                if gone.get("type") == "disk" and gone.get("path") != "/":
                    await devices_rt.hot_remove_disk(pid, gone)
                    await self._i.block_disks.unmount(name, dev_name)
                elif is_unix(gone):
                    await self._i.unix_devices.hot_remove(name, pid, dev_name, gone)
                elif gone.get("type") == "proxy":
                    await proxies.stop(self._i.log_dir(name), dev_name)
            for added in [new] if new else []:
                if added.get("type") == "disk" and added.get("path") != "/":
                    await devices_rt.prepare_volumes(self._i.daemon.pools, {dev_name: added},
                                                     self._i.current_idmap(new_config))
                    staged = None
                    if await threads.deferToThread(is_block_source, added):
                        staged = await self._i.block_disks.mount(name, dev_name, added)
                    try:
                        await devices_rt.hot_add_disk(self._i.daemon.pools, pid, added, staged)
                    except Exception:
                        if staged:
                            await self._i.block_disks.unmount(name, dev_name)
                        raise
                elif added.get("type") == "proxy":
                    await proxies.start(self._i.log_dir(name), pid, dev_name, added)
                elif is_unix(added):
                    await self._i.unix_devices.hot_add(name, pid, dev_name, added, self._i.current_idmap(new_config),
                                                    new_devices)
        self._i.unix_devices.watch(name, new_devices)
        if disks_changed and version is not None:
            await threads.deferToThread(self._write_disk_limits, name, limits, version)
        await self._i.daemon.devlxd.apply_live(pid, old_config, new_config)
        # Nics plugged in or out; returns the volatile keys (MAC, name) of new ones.
        volatile = await self._i.daemon.networks.nics.apply_live(name, pid, old_devices, new_devices, new_config)
        self._i.daemon.devlxd.changed(name, before, after)
        return volatile

    def disk_limits(self, name, value, devices):
        """Blocking: the block io limits of a container's disk devices (disklimits)."""
        def source_of(config):
            try:
                found = devices_rt.disk_source(self._i.daemon.pools, config)
            except errors.ApiError:
                return None
            return found and found[0]

        rootfs = os.path.join(self._i.container_dir(value, name), "rootfs")
        return disklimits.block_limits(devices, rootfs, source_of)

    def _write_disk_limits(self, name, limits, version):
        """Blocking: bring a running container's block io throttles to `limits`."""
        def read_file(filename):
            path = self._i.layout.file_path(name, filename)
            return read_text(path) if path else None

        now = disklimits.current(read_file, version)
        self._write_cgroups(name, disklimits.live_files(now, limits, version))

    def _write_cgroups(self, name, writes):
        for filename, value in writes:
            path = self._i.layout.file_path(name, filename)
            if path is None:
                continue
            try:
                with open(path, "w") as f:
                    f.write(str(value))
            except OSError as e:
                raise errors.BadRequest(f"Failed to set {filename}={value}: {e.strerror}")
