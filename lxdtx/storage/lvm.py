# -*- test-case-name: tests.unit.test_storage_drivers -*-
"""The `lvm` driver: a logical volume with a filesystem per container, image and custom volume.

The volume group is `lvm.vg_name` (default: the pool name), made on a loop file
of `size` under `<state>/disks`, on a block device given as `source`, or an
existing volume group named by `source`. With `lvm.use_thinpool` (default) every
volume is a thin volume of `lvm.thinpool_name` (default `LXDThinPool`): images
are unpacked once and containers, copies and snapshots are thin snapshots.
Without it volumes are plain LVs of their `size` and copies go through rsync.

LV names follow LXD: `<type>_<name>` with `-` doubled and a snapshot's `/`
turned into `-` (`containers_c1-snap0`), so they never collide.
"""

import os

from lxdtx import errors
from lxdtx.config.types import is_any, is_bool, is_size, is_true, parse_size
from lxdtx.storage import block, mounts
from lxdtx.storage.driver import Driver, Info, fill_source, is_snapshot, tool_output

DEFAULT_THINPOOL = "LXDThinPool"
_PREFIX = {"container": "containers", "image": "images", "custom": "custom"}


def lv_name(vol_type, name):
    return f"{_PREFIX[vol_type]}_{name.replace('-', '--').replace('/', '-')}"


def parse_lv_name(lv):
    """(type, name) of an LV name made by `lv_name`, or None."""
    prefix, sep, rest = lv.partition("_")
    types = {v: k for k, v in _PREFIX.items()}
    if not sep or prefix not in types:
        return None
    out, i = [], 0
    while i < len(rest):
        if rest[i] == "-":
            if rest[i + 1:i + 2] == "-":
                out.append("-")
                i += 2
                continue
            out.append("/")
        else:
            out.append(rest[i])
        i += 1
    return types[prefix], "".join(out)


def _mib(size_bytes):
    """LVM sizes in MiB, rounded up to whole extents of 4 MiB."""
    mib = (size_bytes + (1 << 20) - 1) >> 20
    return f"{(mib + 3) // 4 * 4}m"


class LvmDriver(block.BlockVolumes, Driver):
    """Logical volumes in one volume group, thin-provisioned by default."""

    info = Info("lvm", optimized_images=True, block_backing=True, fast_snapshots=True, fast_copies=True,
                quotas=True, copies_snapshots=True)
    keys = {"size": is_size, "lvm.vg_name": is_any, "lvm.thinpool_name": is_any, "lvm.use_thinpool": is_bool,
            "volume.size": is_size, **block.POOL_KEYS}
    changeable = frozenset({"lvm.thinpool_name", "lvm.vg_name", "volume.block.filesystem",
                            "volume.block.mount_options", "volume.size"})
    volume_keys = {"size": is_size, **block.VOLUME_KEYS}
    volume_changeable = frozenset({"block.mount_options", "size"})

    @classmethod
    def missing(cls):
        if not mounts.kernel_has_misc_device("device-mapper"):
            return ("the kernel has no device-mapper (/proc/misc lists no device-mapper; "
                    f"{mounts.module_note('dm_mod')})")
        if mounts.which("lvm") is None:
            return "the LVM tools are not installed (lvm2)"
        return None

    @classmethod
    async def version(cls, run):
        out = await tool_output(run, ["lvm", "version"])
        for line in out.splitlines():
            if "LVM version" in line:
                return line.split(":", 1)[1].strip().split()[0]
        return ""

    # -- names ---------------------------------------------------------------------
    @property
    def vg(self):
        return self.config.get("lvm.vg_name") or self.pool

    @property
    def thin(self):
        """The thin pool's name, or None for plain LVs."""
        if self.config.get("lvm.use_thinpool") and not is_true(self.config["lvm.use_thinpool"]):
            return None
        return self.config.get("lvm.thinpool_name") or DEFAULT_THINPOOL

    def device_path(self, vol_type, name):
        return f"/dev/{self.vg}/{lv_name(vol_type, name)}"

    def _lv(self, vol_type, name):
        return f"{self.vg}/{lv_name(vol_type, name)}"

    # -- pool --------------------------------------------------------------------
    def fill_defaults(self, config):
        config = super().fill_defaults(config)
        if config.get("lvm.use_thinpool") and not is_true(config["lvm.use_thinpool"]):
            if config.get("lvm.thinpool_name"):
                raise errors.BadRequest("lvm.use_thinpool may not be false while lvm.thinpool_name is set")
        else:
            config.setdefault("lvm.thinpool_name", DEFAULT_THINPOOL)
        # A `source` that is not a path names an existing volume group.
        return fill_source(config, "lvm.vg_name", self.pool, self.loop_file,
                           mounts.default_loop_size(self.state_dir))

    def _owns_vg(self):
        return self.config.get("source", "").startswith("/")

    async def _loop_device(self, attach):
        """The loop device of our file (attached when asked and not yet)."""
        _, out, _ = await self.run(["losetup", "-j", self.loop_file], check=False)
        for line in out.decode().splitlines():
            if line.strip():
                return line.split(":", 1)[0].strip()
        if not attach:
            return None
        _, out, _ = await self.run(["losetup", "--show", "-f", self.loop_file])
        return out.decode().strip()

    async def _physical_device(self):
        source = self.config.get("source", "")
        if source == self.loop_file:
            return await self._loop_device(attach=True)
        return source

    def create_argvs(self, device):
        """Commands making the volume group (and thin pool) on `device` (None: existing VG)."""
        argvs = []
        if device is not None:
            argvs += [["pvcreate", "-y", device], ["vgcreate", self.vg, device]]
        if self.thin:
            argvs.append(["lvcreate", "-Wy", "--yes", "--type", "thin-pool", "-l", "100%FREE",
                          "-n", self.thin, self.vg])
        return argvs

    async def create(self):
        made_file = False
        try:
            made_file = await self.make_loop_file()
            if self._owns_vg():
                device = await self._physical_device()
            else:
                await self.run(["vgs", self.vg])  # must exist
                device = None
            for argv in self.create_argvs(device):
                if argv[0] == "lvcreate" and device is None:
                    code, _, _ = await self.run(["lvs", f"{self.vg}/{self.thin}"], check=False)
                    if code == 0:
                        continue  # an existing VG may bring its thin pool along
                await self.run(argv)
            await self.in_thread(os.makedirs, self.mount_point, 0o711, True)
        except BaseException:
            if self._owns_vg():
                await self.run(["vgremove", "-f", self.vg], check=False)
                device = await self._physical_device() if made_file else self.config.get("source")
                if device:
                    await self.run(["pvremove", "-f", device], check=False)
            if made_file:
                loop = await self._loop_device(attach=False)
                if loop:
                    await self.run(["losetup", "-d", loop], check=False)
                await self.in_thread(mounts.remove_file, self.loop_file)
            raise

    async def mount(self):
        if self.config.get("source") == self.loop_file:
            await self._loop_device(attach=True)
        await self.run(["vgchange", "-ay", self.vg])
        return True

    async def _unmount_all(self):
        def points():
            prefix = os.path.realpath(self.mount_point).rstrip("/") + "/"
            return sorted((p for p in mounts.mount_points() if p.startswith(prefix)), key=len, reverse=True)

        for point in await self.in_thread(points):
            await self.run(["umount", point])

    async def unmount(self):
        await self._unmount_all()
        await self.run(["vgchange", "-an", self.vg], check=False)
        if self.config.get("source") == self.loop_file:
            loop = await self._loop_device(attach=False)
            if loop:
                await self.run(["losetup", "-d", loop], check=False)
        return True

    async def delete(self):
        await self._unmount_all()
        if self._owns_vg():
            device = await self._physical_device()
            await self.run(["vgremove", "-f", self.vg])
            await self.run(["pvremove", "-f", device], check=False)
        elif self.thin:
            await self.run(["lvremove", "-f", f"{self.vg}/{self.thin}"], check=False)
        if self.config.get("source") == self.loop_file:
            loop = await self._loop_device(attach=False)
            if loop:
                await self.run(["losetup", "-d", loop], check=False)
            await self.in_thread(mounts.remove_file, self.loop_file)

    async def update(self, changed):
        if "lvm.vg_name" in changed:
            await self.run(["vgrename", self.vg, changed["lvm.vg_name"]])
            self.config = dict(self.config, **{"lvm.vg_name": changed["lvm.vg_name"]})
        if "lvm.thinpool_name" in changed and self.thin:
            await self.run(["lvrename", self.vg, self.thin, changed["lvm.thinpool_name"]])

    async def usage(self):
        _, out, _ = await self.run(["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_size,vg_free",
                                    self.vg])
        size, free = (int(float(x)) for x in out.decode().split()[:2])
        return {"space": {"used": size - free, "total": size}, "inodes": {"used": 0, "total": 0}}

    # -- volumes -------------------------------------------------------------------
    def lvcreate_argv(self, vol_type, name, size_bytes):
        lv = lv_name(vol_type, name)
        if self.thin:
            return ["lvcreate", "-Wy", "--yes", "--thin", "-n", lv, "--virtualsize", _mib(size_bytes),
                    f"{self.vg}/{self.thin}"]
        return ["lvcreate", "-Wy", "--yes", "-n", lv, "-L", _mib(size_bytes), self.vg]

    def snapshot_argv(self, source_type, source, vol_type, name, readonly):
        """A snapshot LV: thin snapshots need no size and are activated (`-kn`)."""
        argv = ["lvcreate", "-s", "-n", lv_name(vol_type, name)]
        if self.thin:
            argv += ["-kn"]
        else:
            argv += ["-L", _mib(self.volume_size(self.lookup_volume(source_type, source.split("/")[0])))]
        argv += ["-pr" if readonly else "-prw", self._lv(source_type, source)]
        return argv

    async def create_volume(self, vol_type, name, config):
        await self.run(self.lvcreate_argv(vol_type, name, self.volume_size(config)))
        try:
            await self.format_block(vol_type, name, config)
            await self.mount_block(vol_type, name)
        except BaseException:
            await self.delete_volume(vol_type, name)
            raise
        return self.mount_path(vol_type, name)

    async def ensure_image(self, fingerprint, unpack):
        code, _, _ = await self.run(["lvs", self._lv("image", fingerprint)], check=False)
        if code == 0:
            return
        await self.create_volume("image", fingerprint, {})
        try:
            await unpack(self.mount_path("image", fingerprint))
            await self.unmount_block("image", fingerprint)
            await self.run(["lvchange", "-pr", self._lv("image", fingerprint)])
        except BaseException:
            await self.delete_volume("image", fingerprint)
            raise

    async def create_from_image(self, name, fingerprint, unpack, config):
        if not self.thin:
            path = await self.create_volume("container", name, config)
            try:
                await unpack(path)
            except BaseException:
                await self.delete_volume("container", name)
                raise
            return path
        await self.ensure_image(fingerprint, unpack)
        await self.run(self.snapshot_argv("image", fingerprint, "container", name, readonly=False))
        try:
            await self.new_uuid("container", name)
            await self.mount_block("container", name)
        except BaseException:
            await self.delete_volume("container", name)
            raise
        return self.mount_path("container", name)

    async def mount_volume(self, vol_type, name):
        return await self.mount_block(vol_type, name, readonly=vol_type == "container" and is_snapshot(name))

    async def unmount_volume(self, vol_type, name):
        return await self.unmount_block(vol_type, name)

    async def delete_volume(self, vol_type, name):
        await self.unmount_block(vol_type, name)
        code, _, _ = await self.run(["lvs", self._lv(vol_type, name)], check=False)
        if code == 0:
            await self.run(["lvremove", "-f", self._lv(vol_type, name)])
        path = self.mount_path(vol_type, name)
        await self.in_thread(mounts.rmdir_if_empty, path)
        if vol_type == "container":
            await self.in_thread(mounts.rmdir_if_empty, self.snapshots_dir(name.split("/")[0]))

    async def _snapshot_lvs(self, container):
        """Snapshot names of a container, from the LVs of the group."""
        _, out, _ = await self.run(["lvs", "--noheadings", "-o", "lv_name", self.vg], check=False)
        found = []
        for lv in out.decode().split():
            parsed = parse_lv_name(lv)
            if parsed and parsed[0] == "container" and parsed[1].startswith(container + "/"):
                found.append(parsed[1].split("/", 1)[1])
        return found

    async def rename_volume(self, vol_type, name, new_name):
        await self.unmount_block(vol_type, name)
        moves = [(name, new_name)]
        if vol_type == "container" and not is_snapshot(name):
            moves += [(f"{name}/{s}", f"{new_name}/{s}") for s in await self._snapshot_lvs(name)]
        for old, new in moves:
            await self.unmount_block(vol_type, old)
            await self.run(["lvrename", self.vg, lv_name(vol_type, old), lv_name(vol_type, new)])
            await self.in_thread(mounts.rmdir_if_empty, self.mount_path(vol_type, old))
        if vol_type == "container":
            await self.in_thread(mounts.rmdir_if_empty, self.snapshots_dir(name.split("/")[0]))
        await self.mount_volume(vol_type, new_name)

    async def create_snapshot(self, name, snapshot):
        await self.run(self.snapshot_argv("container", name, "container", f"{name}/{snapshot}", readonly=True))

    async def restore_snapshot(self, name, snapshot):
        if not self.thin:
            return await super().restore_snapshot(name, snapshot)
        # A fresh writable thin snapshot of the snapshot replaces the volume.
        await self.unmount_block("container", name)
        old = f"{name}.restoring"
        await self.run(["lvrename", self.vg, lv_name("container", name), lv_name("container", old)])
        try:
            await self.run(self.snapshot_argv("container", f"{name}/{snapshot}", "container", name, readonly=False))
        except BaseException:
            await self.run(["lvrename", self.vg, lv_name("container", old), lv_name("container", name)])
            await self.mount_block("container", name)
            raise
        await self.run(["lvremove", "-f", self._lv("container", old)])
        await self.mount_block("container", name)

    async def copy_volume(self, vol_type, name, new_name, config=None):
        if not self.thin:
            return await super().copy_volume(vol_type, name, new_name, config)
        readonly = vol_type == "container" and is_snapshot(new_name)
        await self.run(self.snapshot_argv(vol_type, name, vol_type, new_name, readonly=readonly))
        try:
            if not readonly:
                await self.new_uuid(vol_type, new_name)
                await self.mount_block(vol_type, new_name)
            if (config or {}).get("size"):
                await self.set_quota(vol_type, new_name, config["size"])
        except BaseException:
            await self.delete_volume(vol_type, new_name)
            raise

    async def image_volumes(self):
        _, out, _ = await self.run(["lvs", "--noheadings", "-o", "lv_name", self.vg], check=False)
        parsed = [parse_lv_name(lv) for lv in out.decode().split()]
        return sorted(p[1] for p in parsed if p and p[0] == "image")

    async def delete_image(self, fingerprint):
        await self.delete_volume("image", fingerprint)

    # -- sizes ---------------------------------------------------------------------
    async def set_quota(self, vol_type, name, size):
        """`lvm.lv_resizing`: grow online; shrink ext4 unmounted; refuse to shrink xfs."""
        number = parse_size(size) if size else 0
        if number == 0:
            return  # a block volume always has a size: nothing to lift
        device = self.device_path(vol_type, name)
        _, out, _ = await self.run(["lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_size",
                                    self._lv(vol_type, name)])
        current = int(float(out.decode().split()[0]))
        target = int(_mib(number)[:-1]) << 20
        if target == current:
            return
        path = self.mount_path(vol_type, name)
        filesystem = await self.detect_filesystem(device)
        if target > current:
            await self.run(["lvresize", "-f", "-L", _mib(number), self._lv(vol_type, name)])
            await self.run(block.grow_argv(filesystem, device, path))
            return
        steps = block.shrink_steps(filesystem, device, path, target)
        was_mounted = False
        if filesystem == "ext4":
            was_mounted = await self.unmount_block(vol_type, name)
        for argv in steps:
            await self.run(argv)
        await self.run(["lvresize", "-f", "-L", _mib(number), self._lv(vol_type, name)])
        if was_mounted:
            await self.mount_block(vol_type, name)
