# -*- test-case-name: tests.unit.test_storage_drivers,tests.integration.test_storage -*-
"""The `btrfs` driver: a subvolume per container, image and custom volume.

The pool is a btrfs filesystem on a loop file under `<state>/disks` (default,
sized by `size`), on an existing block device, or an existing directory on a
btrfs filesystem (bind-mounted). Snapshots are read-only subvolumes; a
container made from an image is a writable snapshot of the image's subvolume,
which is unpacked once per pool. `size` quotas are qgroup limits (quotas are
switched on at the first one, as they cost write performance).
"""

import os
import secrets

from twisted.internet import defer

from lxdtx import errors
from lxdtx.asyncutil import ProcessError
from lxdtx.config.types import is_any, is_size, parse_size
from lxdtx.storage import btrfs_stream, mounts
from lxdtx.storage.driver import VOLUME_DIRS, Driver, Info, is_snapshot, tool_output

DEFAULT_MOUNT_OPTIONS = "user_subvol_rm_allowed"


class BtrfsDriver(Driver):
    """Subvolumes and snapshots on one btrfs filesystem."""

    info = Info("btrfs", optimized_images=True, fast_snapshots=True, fast_copies=True, quotas=True,
                copies_snapshots=True, optimized_backups=True, send_receive=True)
    keys = {"size": is_size, "btrfs.mount_options": is_any, "volume.size": is_size}
    changeable = frozenset({"rsync.bwlimit", "btrfs.mount_options"})
    volume_keys = {"size": is_size}
    volume_changeable = frozenset({"size"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._image_locks = {}

    @classmethod
    def missing(cls):
        if not mounts.kernel_has_filesystem("btrfs"):
            return f"the kernel has no btrfs filesystem (/proc/filesystems lists no btrfs; {mounts.module_note('btrfs')})"
        for tool in ("btrfs", "mkfs.btrfs"):
            if mounts.which(tool) is None:
                return f"{tool} is not installed (btrfs-progs)"
        return None

    @classmethod
    async def version(cls, run):
        out = await tool_output(run, ["btrfs", "--version"])
        return out.split()[-1].lstrip("v") if out.split() else ""

    # -- pool ----------------------------------------------------------------
    @property
    def source(self):
        return self.config.get("source") or self.loop_file

    def mount_options(self):
        return self.config.get("btrfs.mount_options") or DEFAULT_MOUNT_OPTIONS

    def fill_defaults(self, config):
        config = super().fill_defaults(config)
        if not config.get("source"):
            if not config.get("size"):
                config["size"] = mounts.default_loop_size(self.state_dir)
            config["source"] = self.loop_file
        elif config.get("size"):
            raise errors.BadRequest("Only loop-backed pools can have a \"size\" (the pool has a source)")
        return config

    def _source_kind(self):
        """`loop` (a file), `block` (a device) or `dir` (a directory on btrfs)."""
        source = self.source
        if mounts.is_block_device(source):
            return "block"
        if os.path.isdir(source):
            return "dir"
        return "loop"

    async def create(self):
        source = self.source
        kind = await self.in_thread(self._source_kind)
        made_file = False
        try:
            if kind == "loop" and source == self.loop_file:
                size = parse_size(self.config.get("size") or "0")
                if size < 128 << 20:
                    raise errors.BadRequest("Invalid value for \"size\": a btrfs pool needs at least 128MB")
                await self.in_thread(mounts.make_sparse_file, source, size)
                made_file = True
            elif kind == "loop" and not os.path.isfile(source):
                raise errors.BadRequest(f"Source \"{source}\" is neither a block device, a file nor a directory")
            if kind in ("loop", "block"):
                await self.run(self.mkfs_argv(source))
            elif await self.in_thread(mounts.filesystem_type, source) != "btrfs":
                raise errors.BadRequest(f"Source directory \"{source}\" is not on a btrfs filesystem")
            await self.mount()
            await self.in_thread(self._make_layout)
        except BaseException:
            await self.unmount()
            if made_file:
                await self.in_thread(mounts.remove_file, source)
            raise

    def mkfs_argv(self, source):
        return ["mkfs.btrfs", "-q", "-L", self.pool, source]

    def _make_layout(self):
        for sub in VOLUME_DIRS.values():
            os.makedirs(os.path.join(self.mount_point, sub), mode=0o711, exist_ok=True)
        os.chmod(self.mount_point, 0o711)

    async def delete(self):
        await self.unmount()
        if self.source == self.loop_file:
            await self.in_thread(mounts.remove_file, self.loop_file)
        await self.in_thread(mounts.rmdir_if_empty, self.mount_point)

    def mount_argv(self, kind):
        options = self.mount_options()
        if kind == "dir":
            return ["mount", "--bind", self.source, self.mount_point]
        if kind == "loop":
            # A loop device set up by mount(8) has autoclear: unmounting releases it.
            options = f"loop,{options}" if options else "loop"
        return ["mount", "-t", "btrfs", "-o", options, self.source, self.mount_point]

    async def mount(self):
        if await self.in_thread(mounts.is_mounted, self.mount_point):
            return False
        kind = await self.in_thread(self._source_kind)
        if kind == "loop" and not await self.in_thread(os.path.isfile, self.source):
            raise errors.BadRequest(f"The loop file of storage pool \"{self.pool}\" is missing: {self.source}")
        await self.in_thread(os.makedirs, self.mount_point, 0o711, True)
        await self.run(self.mount_argv(kind))
        return True

    async def unmount(self):
        if not await self.in_thread(mounts.is_mounted, self.mount_point):
            await self._detach_loops()
            return False
        await self.run(["umount", self.mount_point])
        await self._detach_loops()
        return True

    async def _detach_loops(self):
        """Release loop devices still bound to our file (a lazy unmount may leave one)."""
        if self.source != self.loop_file or not await self.in_thread(os.path.exists, self.source):
            return
        _, out, _ = await self.run(["losetup", "-j", self.source], check=False)
        for line in out.decode().splitlines():
            device = line.split(":", 1)[0].strip()
            if device:
                await self.run(["losetup", "-d", device], check=False)

    async def update(self, changed):
        if "btrfs.mount_options" in changed:
            options = changed["btrfs.mount_options"] or DEFAULT_MOUNT_OPTIONS
            await self.run(["mount", "-o", f"remount,{options}", self.mount_point])

    # -- subvolumes ---------------------------------------------------------
    async def _is_subvolume(self, path):
        code, _, _ = await self.run(["btrfs", "subvolume", "show", path], check=False)
        return code == 0

    async def _refuse_existing(self, path):
        # `btrfs subvolume snapshot` into an existing directory nests the snapshot inside it.
        if await self.in_thread(os.path.lexists, path):
            raise errors.Conflict(f"Storage volume path \"{path}\" already exists")

    async def _subvolume_create(self, path):
        await self._refuse_existing(path)
        await self.in_thread(os.makedirs, os.path.dirname(path), 0o711, True)
        await self.run(["btrfs", "subvolume", "create", path])
        await self.in_thread(os.chmod, path, 0o711)

    async def _subvolume_delete(self, path):
        if not await self.in_thread(os.path.lexists, path):
            return
        if not await self._is_subvolume(path):
            # A plain directory may hold subvolumes (what a killed backup or optimized import
            # left in its holding directory): they go first, plain rm cannot remove them.
            for nested in await self._nested_subvolumes(path):
                await self.run(["btrfs", "property", "set", "-ts", nested, "ro", "false"], check=False)
                await self.run(["btrfs", "subvolume", "delete", nested])
            from lxdtx.storage.dir import remove_path

            await self.in_thread(remove_path, path)
            return
        # Nested subvolumes (a container running btrfs inside) go first.
        for nested in await self._nested_subvolumes(path):
            await self.run(["btrfs", "property", "set", "-ts", nested, "ro", "false"], check=False)
            await self.run(["btrfs", "subvolume", "delete", nested])
        qgroup = await self._qgroup_id(path)
        await self.run(["btrfs", "property", "set", "-ts", path, "ro", "false"], check=False)
        await self.run(["btrfs", "subvolume", "delete", path])
        if qgroup:
            await self.run(["btrfs", "qgroup", "destroy", qgroup, self.mount_point], check=False)

    async def _subvolumes(self, *options):
        """{absolute path: subvolume id} as `btrfs subvolume list` (with `options`) prints
        them; its paths are relative to the filesystem's top level, which is our mount point."""
        _, out, _ = await self.run(["btrfs", "subvolume", "list", *options], check=False)
        found = {}
        for line in out.decode().splitlines():
            head, sep, rel = line.partition(" path ")
            fields = head.split()
            if sep and len(fields) >= 2 and fields[0] == "ID":
                found[os.path.join(self.mount_point, rel.strip())] = fields[1]
        return found

    async def _nested_subvolumes(self, path):
        """Subvolumes below `path`, deepest first (absolute paths)."""
        found = [p for p in await self._subvolumes("-o", path) if p.startswith(path + "/")]
        return sorted(found, key=lambda p: -p.count("/"))

    async def _qgroup_id(self, path):
        code, out, _ = await self.run(["btrfs", "subvolume", "show", path], check=False)
        if code != 0:
            return None
        for line in out.decode().splitlines():
            key, _, value = line.strip().partition(":")
            if key.strip() == "Subvolume ID":
                return f"0/{value.strip()}"
        return None

    async def _snapshot(self, source, target, readonly):
        await self._refuse_existing(target)
        await self.in_thread(os.makedirs, os.path.dirname(target), 0o711, True)
        argv = ["btrfs", "subvolume", "snapshot"] + (["-r"] if readonly else []) + [source, target]
        await self.run(argv)

    # -- subvolumes for migrations (`lxdtx.migration.btrfsmigration`) -------------------
    async def create_subvolume(self, path):
        await self._subvolume_create(path)

    async def delete_subvolume(self, path):
        """`path` and every subvolume below it, read-only or not (gone already: nothing to do)."""
        await self._subvolume_delete(path)

    async def snapshot_subvolume(self, source, target, readonly):
        await self._snapshot(source, target, readonly)

    async def is_readonly(self, path):
        _, out, _ = await self.run(["btrfs", "property", "get", "-ts", path, "ro"], check=False)
        return out.decode().strip() == "ro=true"

    # -- volumes ---------------------------------------------------------------
    async def create_volume(self, vol_type, name, config):
        path = self.mount_path(vol_type, name)
        await self._subvolume_create(path)
        if config.get("size"):
            try:
                await self.set_quota(vol_type, name, config["size"])
            except BaseException:
                await self._subvolume_delete(path)
                raise
        return path

    def _image_lock(self, fingerprint):
        lock = self._image_locks.get(fingerprint)
        if lock is None:
            lock = self._image_locks[fingerprint] = defer.DeferredLock()
        return lock

    async def ensure_image(self, fingerprint, unpack):
        """The image's read-only subvolume, unpacked the first time it is needed."""
        path = self.mount_path("image", fingerprint)
        await self._image_lock(fingerprint).acquire()
        try:
            if await self.in_thread(os.path.isdir, path):
                return path
            # Unpacked under a temporary name and renamed when complete: a crash never
            # leaves a half-unpacked image looking usable.
            staging = f"{path}.unpacking-{secrets.token_hex(4)}"
            await self._subvolume_create(staging)
            try:
                await unpack(staging)
                await self.run(["btrfs", "property", "set", "-ts", staging, "ro", "true"])
                await self.in_thread(os.rename, staging, path)
            except BaseException:
                await self._subvolume_delete(staging)
                raise
            return path
        finally:
            self._image_lock(fingerprint).release()

    async def create_from_image(self, name, fingerprint, unpack, config):
        image = await self.ensure_image(fingerprint, unpack)
        path = self.mount_path("container", name)
        await self._snapshot(image, path, readonly=False)
        return path

    async def image_volumes(self):
        directory = os.path.join(self.mount_point, VOLUME_DIRS["image"])

        def scan():
            try:
                return sorted(n for n in os.listdir(directory) if ".unpacking-" not in n)
            except FileNotFoundError:
                return []

        return await self.in_thread(scan)

    async def delete_image(self, fingerprint):
        await self._image_lock(fingerprint).acquire()
        try:
            await self._subvolume_delete(self.mount_path("image", fingerprint))
        finally:
            self._image_lock(fingerprint).release()

    async def delete_volume(self, vol_type, name):
        await self._subvolume_delete(self.mount_path(vol_type, name))
        if vol_type == "container":
            await self.in_thread(mounts.rmdir_if_empty, self.snapshots_dir(name.split("/")[0]))

    async def delete_container(self, name, snapshots):
        """A container and its snapshots with one `btrfs subvolume list` and one `btrfs
        subvolume delete` of them all (nested subvolumes first), where deleting them one
        by one costs six commands per subvolume."""
        paths = [self.mount_path("container", s) for s in snapshots] + [self.mount_path("container", name)]
        ids = await self._subvolumes(self.mount_point)  # every subvolume of the pool
        doomed, plain = [], []
        for path in paths:
            if path in ids:
                doomed.append(path)
            elif await self.in_thread(os.path.lexists, path):
                plain.append(path)  # a plain directory (a half-made volume): its own path
        nested = [p for p in ids for top in doomed if p.startswith(top + "/")]
        nested.sort(key=lambda p: -p.count("/"))
        # A read-only snapshot cannot lose the entry of a subvolume nested in it: its
        # holder (the nearest subvolume above it) is made writable first.
        holders = {max((p for p in ids if n.startswith(p + "/")), key=len) for n in nested}
        for holder in sorted(holders):
            await self.run(["btrfs", "property", "set", "-ts", holder, "ro", "false"], check=False)
        if nested or doomed:
            await self.run(["btrfs", "subvolume", "delete", *nested, *doomed])
        if await self._quotas_on():
            for path in nested + doomed:
                await self.run(["btrfs", "qgroup", "destroy", f"0/{ids[path]}", self.mount_point], check=False)
        for path in plain:
            await self._subvolume_delete(path)
        await self.in_thread(mounts.rmdir_if_empty, self.snapshots_dir(name))

    async def _quotas_on(self):
        code, _, _ = await self.run(["btrfs", "qgroup", "show", self.mount_point], check=False)
        return code == 0

    async def rename_volume(self, vol_type, name, new_name):
        def move():
            os.makedirs(os.path.dirname(self.mount_path(vol_type, new_name)), mode=0o711, exist_ok=True)
            os.rename(self.mount_path(vol_type, name), self.mount_path(vol_type, new_name))
            if vol_type == "container" and not is_snapshot(name) and os.path.isdir(self.snapshots_dir(name)):
                os.rename(self.snapshots_dir(name), self.snapshots_dir(new_name))
            if vol_type == "container" and is_snapshot(name):
                mounts.rmdir_if_empty(self.snapshots_dir(name.split("/")[0]))

        await self.in_thread(move)

    async def create_snapshot(self, name, snapshot):
        await self._snapshot(self.mount_path("container", name), self.mount_path("container", f"{name}/{snapshot}"),
                             readonly=True)

    async def restore_snapshot(self, name, snapshot):
        """Swap in a writable snapshot of the snapshot; the old subvolume goes only once that worked."""
        path = self.mount_path("container", name)
        fresh = f"{path}.restoring-{secrets.token_hex(4)}"
        await self._snapshot(self.mount_path("container", f"{name}/{snapshot}"), fresh, readonly=False)
        old = f"{path}.old-{secrets.token_hex(4)}"
        try:
            await self.in_thread(os.rename, path, old)
        except BaseException:
            await self._subvolume_delete(fresh)
            raise
        try:
            await self.in_thread(os.rename, fresh, path)
        except BaseException:
            await self.in_thread(os.rename, old, path)
            await self._subvolume_delete(fresh)
            raise
        await self._subvolume_delete(old)

    async def copy_volume(self, vol_type, name, new_name, config=None):
        """A snapshot of the source subvolume: shares every extent until written."""
        target = self.mount_path(vol_type, new_name)
        await self._snapshot(self.mount_path(vol_type, name), target,
                             readonly=vol_type == "container" and is_snapshot(new_name))
        size = (config or {}).get("size")
        if size:
            try:
                await self.set_quota(vol_type, new_name, size)
            except BaseException:
                await self._subvolume_delete(target)
                raise

    # -- optimized backups (btrfs send streams, as LXD writes them) ----------------
    async def send_backup(self, name, snapshots, target_dir):
        """`snapshots/<s>.bin` for each snapshot, relative to the one before, and
        `container.bin` of a read-only snapshot named `.backup` relative to the last."""
        parent = None
        if snapshots:
            await self.in_thread(os.makedirs, os.path.join(target_dir, "snapshots"), 0o700, True)
        for snapshot in snapshots:
            path = self.mount_path("container", f"{name}/{snapshot}")
            await self._send(path, parent, os.path.join(target_dir, "snapshots", f"{snapshot}.bin"))
            parent = path
        holder = os.path.join(self.mount_point, VOLUME_DIRS["container"], f"{name}.backup-{secrets.token_hex(4)}")
        await self.in_thread(os.mkdir, holder, 0o700)
        frozen = os.path.join(holder, ".backup")
        try:
            await self._snapshot(self.mount_path("container", name), frozen, readonly=True)
            await self._send(frozen, parent, os.path.join(target_dir, "container.bin"))
        finally:
            await self._subvolume_delete(frozen)
            await self.in_thread(mounts.rmdir_if_empty, holder)

    async def _send(self, path, parent, out):
        await self.run(["btrfs", "send", "-q", "-f", out, *(["-p", parent] if parent else []), path])

    async def receive_backup(self, stage_dir, snapshots):
        """Check each stream (btrfs_stream), then receive it confined to a new directory of
        the pool (`receive -C`): the snapshots in order, then the container."""
        holder = os.path.join(self.mount_point, VOLUME_DIRS["container"], f".import-{secrets.token_hex(6)}")
        await self.in_thread(os.makedirs, os.path.join(holder, "snapshots"), 0o700)
        try:
            parent, chain = None, []
            for snapshot in snapshots:
                stream = await self._check_stream(os.path.join(stage_dir, "snapshots", f"{snapshot}.bin"),
                                                  snapshot, parent, chain)
                await self._receive(os.path.join(stage_dir, "snapshots", f"{snapshot}.bin"),
                                    os.path.join(holder, "snapshots"))
                parent = stream.uuid
                chain.append(parent)
            await self._check_stream(os.path.join(stage_dir, "container.bin"), ".backup", parent, chain)
            await self._receive(os.path.join(stage_dir, "container.bin"), holder)
            await self.in_thread(os.rename, os.path.join(holder, ".backup"), os.path.join(holder, "container"))
        except BaseException:
            await self.discard_received(holder)
            raise
        return holder

    async def _check_stream(self, path, name, parent, chain):
        try:
            return await self.in_thread(btrfs_stream.check, path, name=name, parent=parent, chain=chain)
        except FileNotFoundError:
            raise errors.BadRequest(f"Invalid backup tarball: the stream of {name!r} is missing")
        except btrfs_stream.StreamError as e:
            raise errors.BadRequest(f"Invalid backup tarball: {os.path.basename(path)}: {e}")

    async def _receive(self, path, directory):
        try:
            await self.run(["btrfs", "receive", "-q", "-e", "-C", "-f", path, directory])
        except ProcessError as e:
            # Its complaint names host paths: the exit code only.
            raise errors.BadRequest(f"Invalid backup tarball: btrfs receive of {os.path.basename(path)} failed "
                                    f"(exit {e.code})")

    async def discard_received(self, directory):
        def subvolumes():
            found = []
            for sub in ("container", ".backup"):
                if os.path.lexists(os.path.join(directory, sub)):
                    found.append(os.path.join(directory, sub))
            snaps = os.path.join(directory, "snapshots")
            if os.path.isdir(snaps):
                found += [os.path.join(snaps, n) for n in sorted(os.listdir(snaps), reverse=True)]
            return found

        for path in await self.in_thread(subvolumes):
            await self._subvolume_delete(path)
        from lxdtx.storage.dir import remove_path

        await self.in_thread(remove_path, directory)

    async def import_volume(self, vol_type, name, source_dir, received=False):
        """A received subvolume becomes the volume as a snapshot of it (sharing its extents)."""
        if not received:
            return await super().import_volume(vol_type, name, source_dir, received)
        snapshot = vol_type == "container" and is_snapshot(name)
        if snapshot:
            await self.in_thread(os.makedirs, self.snapshots_dir(name.split("/", 1)[0]), 0o700, True)
        await self._snapshot(source_dir, self.mount_path(vol_type, name), readonly=snapshot)
        return self.mount_path(vol_type, name)

    # -- quotas ----------------------------------------------------------------
    async def set_quota(self, vol_type, name, size):
        path = self.mount_path(vol_type, name)
        number = parse_size(size) if size else 0
        if number == 0:
            await self.run(["btrfs", "qgroup", "limit", "none", path], check=False)
            return
        await self.run(["btrfs", "quota", "enable", self.mount_point])
        try:
            await self.run(["btrfs", "qgroup", "limit", str(number), path])
        except ProcessError as e:
            raise errors.BadRequest(f"Failed to set the size of volume \"{name}\" to {size}: {e}")

    async def volume_usage(self, vol_type, name):
        """Referenced bytes of the volume's qgroup (quotas must be on)."""
        path = self.mount_path(vol_type, name)
        qgroup = await self._qgroup_id(path)
        code, out, _ = await self.run(["btrfs", "qgroup", "show", "-f", "--raw", path], check=False)
        if code != 0 or qgroup is None:
            from lxdtx.storage.errors import NotSupported

            raise NotSupported("Volume usage needs btrfs quotas")
        for line in out.decode().splitlines():
            fields = line.split()
            if fields and fields[0] == qgroup and len(fields) >= 2:
                return int(fields[1])
        return 0
