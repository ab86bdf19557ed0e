# -*- test-case-name: tests.unit.test_storage_drivers -*-
"""The `zfs` driver: a dataset per container, image and custom volume.

The zpool is `zfs.pool_name` (default: the pool name), made on a loop file of
`size` under `<state>/disks` or a block device given as `source`; `source` may
also name an existing zpool or dataset to use. Datasets live under
`<pool>/containers`, `/images`, `/custom`; snapshots are ZFS snapshots
`@snapshot-<name>`. Images are unpacked once and snapshotted `@readonly`;
containers are clones of that. Copies inside the pool are clones too
(`zfs.clone_copy`, default) or full `zfs send | zfs receive` copies.

ZFS rolls back only to the latest snapshot: restoring an older one needs
`volume.zfs.remove_snapshots` (or the volume's `zfs.remove_snapshots`), which
lets the newer ones go. `size` is a `quota`, or a `refquota` with
`zfs.use_refquota`. A dataset that clones depend on cannot be destroyed: it is
renamed under `<pool>/deleted` and goes with its last clone.
"""

import os
import secrets
import shlex

from lxdtx import errors
from lxdtx.config.types import is_any, is_bool, is_size, is_true, parse_size
from lxdtx.storage import mounts
from lxdtx.storage.driver import VOLUME_DIRS, Driver, Info, fill_source, is_snapshot
from lxdtx.storage.errors import NotSupported

_DATASET_DIRS = {"container": "containers", "image": "images", "custom": "custom"}


class ZfsDriver(Driver):
    """Datasets, snapshots and clones of one zpool (or dataset)."""

    info = Info("zfs", optimized_images=True, fast_snapshots=True, fast_copies=True, quotas=True,
                restore_latest_only=True)
    keys = {"size": is_size, "zfs.pool_name": is_any, "zfs.clone_copy": is_bool,
            "volume.zfs.remove_snapshots": is_bool, "volume.zfs.use_refquota": is_bool, "volume.size": is_size}
    # The reference lists `rsync_bwlimit` (sic): `rsync.bwlimit` is not changeable on zfs.
    changeable = frozenset({"rsync_bwlimit", "volume.zfs.remove_snapshots", "volume.zfs.use_refquota",
                            "zfs.clone_copy"})
    volume_keys = {"size": is_size, "zfs.remove_snapshots": is_bool, "zfs.use_refquota": is_bool}
    volume_changeable = frozenset({"size", "zfs.remove_snapshots", "zfs.use_refquota"})

    @classmethod
    def missing(cls):
        if not mounts.kernel_has_filesystem("zfs"):
            return ("the kernel has no zfs filesystem (/proc/filesystems lists no zfs; "
                    f"{mounts.module_note('zfs')})")
        for tool in ("zpool", "zfs"):
            if mounts.which(tool) is None:
                return f"{tool} is not installed (zfsutils-linux, in Debian contrib)"
        return None

    @classmethod
    async def version(cls, run):
        try:
            with open("/sys/module/zfs/version") as f:
                return f.read().strip()
        except OSError:
            return ""

    # -- names -----------------------------------------------------------------------
    @property
    def zpool(self):
        """The dataset everything lives under (a zpool, or a dataset inside one)."""
        return self.config.get("zfs.pool_name") or self.pool

    def dataset(self, vol_type, name):
        if vol_type == "container" and is_snapshot(name):
            container, snapshot = name.split("/", 1)
            return f"{self.zpool}/containers/{container}@snapshot-{snapshot}"
        return f"{self.zpool}/{_DATASET_DIRS[vol_type]}/{name}"

    # -- pool ------------------------------------------------------------------------
    def fill_defaults(self, config):
        config = super().fill_defaults(config)
        # A `source` that is not a path names an existing zpool or dataset.
        return fill_source(config, "zfs.pool_name", self.pool, self.loop_file,
                           mounts.default_loop_size(self.state_dir))

    def _owns_zpool(self):
        return self.config.get("source", "").startswith("/")

    def create_argvs(self):
        """Commands creating the zpool (or dataset) and our top-level datasets."""
        argvs = []
        source = self.config.get("source", "")
        if self._owns_zpool():
            argvs.append(["zpool", "create", "-f", "-m", "none", "-O", "compression=on", self.zpool, source])
        else:
            argvs.append(["zfs", "create", "-p", "-o", "mountpoint=none", self.zpool])
        for sub in ("containers", "images", "custom", "deleted"):
            argvs.append(["zfs", "create", "-p", "-o", "mountpoint=none", f"{self.zpool}/{sub}"])
        return argvs

    async def create(self):
        made_file = False
        try:
            made_file = await self.make_loop_file()
            for argv in self.create_argvs():
                if argv[:2] == ["zfs", "create"] and argv[-1] == self.zpool:
                    code, _, _ = await self.run(["zfs", "list", "-H", self.zpool], check=False)
                    if code == 0:
                        continue  # an existing dataset is welcome when named by `source`
                await self.run(argv)
            for sub in VOLUME_DIRS.values():
                await self.in_thread(os.makedirs, os.path.join(self.mount_point, sub), 0o711, True)
        except BaseException:
            if self._owns_zpool():
                await self.run(["zpool", "destroy", "-f", self.zpool], check=False)
            if made_file:
                await self.in_thread(mounts.remove_file, self.loop_file)
            raise

    async def mount(self):
        code, _, _ = await self.run(["zpool", "list", "-H", self.zpool.split("/")[0]], check=False)
        if code == 0:
            return False
        argv = ["zpool", "import"]
        if self.config.get("source") == self.loop_file:
            argv += ["-d", os.path.dirname(self.loop_file)]
        await self.run(argv + [self.zpool.split("/")[0]])
        return True

    async def unmount(self):
        if self._owns_zpool():
            await self.run(["zpool", "export", self.zpool], check=False)
            return True
        return False

    async def delete(self):
        if self._owns_zpool():
            await self.run(["zpool", "destroy", "-f", self.zpool])
        else:
            await self.run(["zfs", "destroy", "-r", self.zpool])
        if self.config.get("source") == self.loop_file:
            await self.in_thread(mounts.remove_file, self.loop_file)

    async def usage(self):
        _, out, _ = await self.run(["zfs", "get", "-Hp", "-o", "value", "used,available", self.zpool])
        used, available = (int(x) for x in out.decode().split()[:2])
        return {"space": {"used": used, "total": used + available}, "inodes": {"used": 0, "total": 0}}

    # -- helpers ---------------------------------------------------------------------
    def _flag(self, volume_key, pool_key, vol_type, name):
        config = self.lookup_volume(vol_type, name.split("/")[0])
        return is_true(config.get(volume_key) or self.config.get(pool_key) or "")

    def may_remove_snapshots(self, vol_type="container", name=""):
        return self._flag("zfs.remove_snapshots", "volume.zfs.remove_snapshots", vol_type, name)

    async def _exists(self, dataset):
        code, _, _ = await self.run(["zfs", "list", "-H", "-t", "all", dataset], check=False)
        return code == 0

    async def _mount_dataset(self, vol_type, name):
        path = self.mount_path(vol_type, name)
        if await self.in_thread(mounts.is_mounted, path):
            return False
        await self.in_thread(os.makedirs, path, 0o711, True)
        if vol_type == "container" and is_snapshot(name):
            await self.run(["mount", "-t", "zfs", "-o", "ro", self.dataset(vol_type, name), path])
        else:
            await self.run(["zfs", "mount", self.dataset(vol_type, name)])
        return True

    def _new_dataset_options(self, vol_type, name):
        return ["-o", f"mountpoint={self.mount_path(vol_type, name)}", "-o", "canmount=noauto"]

    async def _destroy(self, dataset):
        """Destroy a dataset and its snapshots; with dependent clones, park it under deleted/."""
        code, _, err = await self.run(["zfs", "destroy", "-r", dataset], check=False)
        if code == 0:
            return
        if b"dependent clones" not in err and b"has dependent" not in err:
            raise errors.InternalError(f"Failed to destroy {dataset}: {err.decode().strip()}")
        parked = f"{self.zpool}/deleted/{secrets.token_hex(8)}"
        await self.run(["zfs", "rename", dataset, parked])
        await self.run(["zfs", "set", "mountpoint=none", parked])

    # -- volumes ---------------------------------------------------------------------
    async def create_volume(self, vol_type, name, config):
        dataset = self.dataset(vol_type, name)
        await self.run(["zfs", "create", "-p", *self._new_dataset_options(vol_type, name), dataset])
        try:
            if (config or {}).get("size"):
                await self._set_size(dataset, config["size"], config)
            await self._mount_dataset(vol_type, name)
        except BaseException:
            await self._destroy(dataset)
            raise
        return self.mount_path(vol_type, name)

    async def ensure_image(self, fingerprint, unpack):
        dataset = self.dataset("image", fingerprint)
        if await self._exists(f"{dataset}@readonly"):
            return
        if await self._exists(dataset):
            await self._destroy(dataset)  # a half-made image of an earlier crash
        await self.create_volume("image", fingerprint, {})
        try:
            await unpack(self.mount_path("image", fingerprint))
            await self.run(["zfs", "unmount", dataset])
            await self.run(["zfs", "snapshot", f"{dataset}@readonly"])
            await self.run(["zfs", "set", "readonly=on", dataset])
        except BaseException:
            await self._destroy(dataset)
            raise

    async def create_from_image(self, name, fingerprint, unpack, config):
        await self.ensure_image(fingerprint, unpack)
        dataset = self.dataset("container", name)
        await self.run(["zfs", "clone", "-p", *self._new_dataset_options("container", name),
                        f"{self.dataset('image', fingerprint)}@readonly", dataset])
        try:
            await self._mount_dataset("container", name)
        except BaseException:
            await self._destroy(dataset)
            raise
        return self.mount_path("container", name)

    async def mount_volume(self, vol_type, name):
        return await self._mount_dataset(vol_type, name)

    async def unmount_volume(self, vol_type, name):
        path = self.mount_path(vol_type, name)
        if not await self.in_thread(mounts.is_mounted, path):
            return False
        await self.run(["umount", path])
        return True

    async def delete_volume(self, vol_type, name):
        await self.unmount_volume(vol_type, name)
        dataset = self.dataset(vol_type, name)
        if await self._exists(dataset):
            if "@" in dataset:
                code, _, _err = await self.run(["zfs", "destroy", dataset], check=False)
                if code != 0:
                    # Clones (copies) depend on it: hide it under another name until they go.
                    await self.run(["zfs", "rename", dataset, dataset.replace("@snapshot-", "@deleted-")
                                    + "-" + secrets.token_hex(4)])
            else:
                await self._destroy(dataset)
        await self.in_thread(mounts.rmdir_if_empty, self.mount_path(vol_type, name))
        if vol_type == "container":
            await self.in_thread(mounts.rmdir_if_empty, self.snapshots_dir(name.split("/")[0]))

    async def rename_volume(self, vol_type, name, new_name):
        await self.unmount_volume(vol_type, name)
        old, new = self.dataset(vol_type, name), self.dataset(vol_type, new_name)
        await self.run(["zfs", "rename", old, new])
        if "@" not in new:
            await self.run(["zfs", "set", f"mountpoint={self.mount_path(vol_type, new_name)}", new])
            await self.in_thread(mounts.rmdir_if_empty, self.mount_path(vol_type, name))
            if vol_type == "container":
                await self.in_thread(mounts.rename_dir, self.snapshots_dir(name), self.snapshots_dir(new_name))
            await self._mount_dataset(vol_type, new_name)

    async def create_snapshot(self, name, snapshot):
        await self.run(["zfs", "snapshot", self.dataset("container", f"{name}/{snapshot}")])

    async def restore_snapshot(self, name, snapshot):
        """Roll back to the snapshot, which must be the newest (the caller dropped later ones)."""
        await self.unmount_volume("container", name)
        await self.run(["zfs", "rollback", self.dataset("container", f"{name}/{snapshot}")])
        await self._mount_dataset("container", name)

    async def copy_volume(self, vol_type, name, new_name, config=None):
        source = self.dataset(vol_type, name)
        target = self.dataset(vol_type, new_name)
        if vol_type == "container" and is_snapshot(new_name):
            # Copying a snapshot to a snapshot: a full copy of the source snapshot's data, then snapshot it.
            raise NotSupported("ZFS snapshots are copied through their container")
        origin = source if "@" in source else f"{source}@copy-{secrets.token_hex(8)}"
        if "@" not in source:
            await self.run(["zfs", "snapshot", origin])
        clone = self.config.get("zfs.clone_copy", "") == "" or is_true(self.config["zfs.clone_copy"])
        try:
            if clone:
                await self.run(["zfs", "clone", "-p", *self._new_dataset_options(vol_type, new_name), origin, target])
            else:
                await self.run(self.send_receive_argv(origin, target))
                await self.run(["zfs", "set", f"mountpoint={self.mount_path(vol_type, new_name)}", target])
                await self.run(["zfs", "set", "canmount=noauto", target])
        finally:
            if not clone and "@" not in source:
                await self.run(["zfs", "destroy", origin], check=False)
        try:
            if (config or {}).get("size"):
                await self._set_size(target, config["size"], config)
            await self._mount_dataset(vol_type, new_name)
        except BaseException:
            await self._destroy(target)
            raise

    @staticmethod
    def send_receive_argv(origin, target):
        return ["sh", "-c", f"zfs send {shlex.quote(origin)} | zfs receive {shlex.quote(target)}"]

    async def image_volumes(self):
        _, out, _ = await self.run(["zfs", "list", "-H", "-o", "name", "-d", "1", f"{self.zpool}/images"],
                                   check=False)
        prefix = f"{self.zpool}/images/"
        return sorted(n[len(prefix):] for n in out.decode().split() if n.startswith(prefix))

    async def delete_image(self, fingerprint):
        await self.delete_volume("image", fingerprint)

    # -- sizes -----------------------------------------------------------------------
    def size_argv(self, dataset, size, use_refquota):
        number = parse_size(size) if size else 0
        prop = "refquota" if use_refquota else "quota"
        return ["zfs", "set", f"{prop}={number if number else 'none'}", dataset]

    async def _set_size(self, dataset, size, config=None):
        use_ref = is_true((config or {}).get("zfs.use_refquota") or self.config.get("volume.zfs.use_refquota") or "")
        await self.run(self.size_argv(dataset, size, use_ref))

    async def set_quota(self, vol_type, name, size):
        config = self.lookup_volume(vol_type, name)
        await self._set_size(self.dataset(vol_type, name), size, config)

    async def volume_usage(self, vol_type, name):
        _, out, _ = await self.run(["zfs", "get", "-Hp", "-o", "value", "used", self.dataset(vol_type, name)])
        return int(out.decode().split()[0])
