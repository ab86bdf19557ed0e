# -*- test-case-name: tests.unit.test_storage_drivers,tests.integration.test_storage -*-
"""The storage driver contract: a capabilities record and a base that says "not supported".

A driver manages one pool. Volumes are addressed by (type, name) with type one
of `container`, `image`, `custom`; snapshots of a container volume are
container volumes named `<container>/<snapshot>`. `mount_path(type, name)` is
where a mounted volume's files live; for containers that directory holds
`rootfs/`, `metadata.yaml`, `templates/`.

Drivers run tools through `self.run(argv)` (an `asyncutil.run` look-alike) and
blocking file work through `self.in_thread(fn, *args)`, so unit tests can record
the commands a driver builds without a kernel that has the feature.
"""

import os
from collections.abc import Callable

from twisted.internet import threads

from lxdtx import asyncutil, errors
from lxdtx.config.types import is_any, is_size, parse_size
from lxdtx.storage import mounts, rsync
from lxdtx.storage.errors import NotSupported

VOLUME_DIRS = {"container": "containers", "image": "images", "custom": "custom", "snapshot": "snapshots"}
VOLUME_TYPES = ("container", "image", "custom")

# Keys every driver accepts (validators); drivers add their own in `keys`.
COMMON_KEYS = {"source": is_any, "rsync.bwlimit": is_size, "volatile.initial_source": is_any}
COMMON_VOLUME_KEYS = {"volatile.idmap.last": is_any, "volatile.idmap.next": is_any}


class Info:
    """What a driver can do; callers check capabilities, never driver names."""

    def __init__(self, name, *, optimized_images=False, remote=False, block_backing=False,
                 fast_snapshots=False, fast_copies=False, quotas=False, restore_latest_only=False,
                 copies_snapshots=False, optimized_backups=False,
                 send_receive=False):
        self.name = name
        self.optimized_images = optimized_images  # images unpacked once, containers cloned from them
        self.remote = remote
        self.block_backing = block_backing  # volumes are block devices with a filesystem on them
        self.fast_snapshots = fast_snapshots
        self.fast_copies = fast_copies  # copies inside the pool share data (no rsync)
        self.quotas = quotas
        self.copies_snapshots = copies_snapshots  # fast copies can make snapshots of a copy too
        self.restore_latest_only = restore_latest_only  # only the newest snapshot can be restored (zfs)
        self.optimized_backups = optimized_backups  # backups as the pool's own send streams
        self.send_receive = send_receive  # volumes travel between hosts as btrfs send streams


async def tool_output(run, argv):
    """stdout of a tool as text, "" when it cannot run."""
    try:
        _, out, _ = await run(argv, check=False)
    except OSError:
        return ""
    return out.decode("utf-8", "replace")


def fill_source(config, name_key, pool, loop_file, default_size):
    """Defaults of a pool whose `source` is a loop file (none given), a device (a path) or
    an existing named thing (a volume group, a zpool); `name_key` holds that name."""
    source = config.get("source", "")
    if not source:
        config.setdefault("size", default_size)
        config["source"] = loop_file
        config.setdefault(name_key, pool)
    elif source.startswith("/"):
        config.setdefault(name_key, pool)
        if config.get("size"):
            raise errors.BadRequest("Only loop-backed pools can have a \"size\" (the pool has a source)")
    else:
        if config.get(name_key) and config[name_key] != source:
            raise errors.BadRequest(f"Invalid combination of \"source\" and \"{name_key}\"")
        config[name_key] = source
    return config


def is_snapshot(name):
    return "/" in name


class Driver:
    """Defaults for every operation; drivers override what they support."""

    info = Info("none")
    # Pool config keys this driver accepts besides COMMON_KEYS, key -> validator.
    keys: dict[str, Callable] = {}
    # Pool keys that may change after creation.
    changeable: frozenset[str] = frozenset()
    # Volume config keys besides COMMON_VOLUME_KEYS and user.*.
    volume_keys: dict[str, Callable] = {}
    # Volume keys of container volumes that may change (elsewhere through the root disk).
    volume_changeable: frozenset[str] = frozenset()

    def __init__(self, pool, config, state_dir, *, run=None, in_thread=None, lookup_volume=None):
        self.pool = pool
        self.config = config
        self.state_dir = state_dir
        self.run = run or asyncutil.run
        self.in_thread = in_thread or threads.deferToThread
        # (type, name) -> the volume's own config; the backend passes its documents' reader.
        self.lookup_volume = lookup_volume or (lambda vol_type, name: {})

    # -- host support ------------------------------------------------------
    @classmethod
    def missing(cls):
        """Why this driver cannot work on this host (kernel feature, tool), or None if it can."""
        return None

    @classmethod
    async def version(cls, run):
        """The version string `GET /1.0` shows for this driver; `run` spawns a tool (asyncutil.run)."""
        return "1"

    # -- pool ------------------------------------------------------------
    @property
    def mount_point(self):
        return os.path.join(self.state_dir, "storage-pools", self.pool)

    @property
    def loop_file(self):
        """Where a loop-backed pool keeps its disk image."""
        return os.path.join(self.state_dir, "disks", f"{self.pool}.img")

    async def make_loop_file(self):
        """Create the sparse disk image of a pool whose source is its loop file; True when made."""
        if self.config.get("source") != self.loop_file:
            return False
        await self.in_thread(mounts.make_sparse_file, self.loop_file, parse_size(self.config["size"]))
        return True

    async def abandon(self):
        """Undo a pool create that may have stopped anywhere: remove what this daemon made
        for it (its loop file and everything on it), never a source the user named.
        Idempotent; the pool holds no volume yet."""
        if self.config.get("source") == self.loop_file:
            await self.delete()
        else:
            await self.unmount()
            await self.in_thread(mounts.rmdir_if_empty, self.mount_point)

    def fill_defaults(self, config):
        """The config with driver defaults filled in (called once at pool creation)."""
        config = dict(config)
        if config.get("source"):
            config.setdefault("volatile.initial_source", config["source"])
        return config

    async def create(self):
        raise NotSupported(f"Creating {self.info.name} pools is not supported")

    async def delete(self):
        raise NotSupported(f"Deleting {self.info.name} pools is not supported")

    async def mount(self):
        """Make the pool usable; True when something was mounted."""
        return False

    async def unmount(self):
        return False

    async def update(self, changed):
        """Apply changed pool keys ({key: new value}); only `changeable` keys reach here."""

    async def usage(self):
        """{"space": {"used", "total"}, "inodes": {"used", "total"}} of the pool."""
        st = await self.in_thread(os.statvfs, self.mount_point)
        return {
            "space": {"used": (st.f_blocks - st.f_bfree) * st.f_frsize, "total": st.f_blocks * st.f_frsize},
            "inodes": {"used": st.f_files - st.f_ffree, "total": st.f_files},
        }

    def bwlimit(self):
        """rsync's --bwlimit in KiB/s for this pool (0: unlimited)."""
        value = self.config.get("rsync.bwlimit") or "0"
        return max(0, parse_size(value) // 1024) if value != "0" else 0

    # -- volumes ---------------------------------------------------------
    def mount_path(self, vol_type, name):
        if vol_type == "container" and is_snapshot(name):
            return os.path.join(self.mount_point, VOLUME_DIRS["snapshot"], name)
        return os.path.join(self.mount_point, VOLUME_DIRS[vol_type], name)

    def snapshots_dir(self, container):
        """Where the snapshots of one container live."""
        return os.path.join(self.mount_point, VOLUME_DIRS["snapshot"], container)

    def names_on_disk(self, vol_type, container=None):
        """Blocking: the names of the `vol_type` volumes in this pool's directories (the
        snapshots of `container`), for recovery to compare with the store."""
        top = self.snapshots_dir(container) if container else os.path.join(self.mount_point, VOLUME_DIRS[vol_type])
        try:
            return sorted(os.listdir(top))
        except (FileNotFoundError, NotADirectoryError):
            return []

    async def create_volume(self, vol_type, name, config):
        raise NotSupported(f"{self.info.name} pools cannot create volumes")

    async def create_from_image(self, name, fingerprint, unpack, config):
        """A container volume holding the image; `unpack(target_dir)` extracts it."""
        raise NotSupported(f"{self.info.name} pools cannot create containers")

    async def delete_volume(self, vol_type, name):
        raise NotSupported(f"{self.info.name} pools cannot delete volumes")

    async def delete_container(self, name, snapshots):
        """Delete container volume `name` and its snapshot volumes (names `name/<s>`), the
        snapshots first; drivers that can remove them all in one go override this."""
        for snapshot in snapshots:
            await self.delete_volume("container", snapshot)
        await self.delete_volume("container", name)

    async def rename_volume(self, vol_type, name, new_name):
        """Rename a volume; a container's snapshots follow it."""
        raise NotSupported(f"{self.info.name} pools cannot rename volumes")

    async def mount_volume(self, vol_type, name):
        return False

    async def unmount_volume(self, vol_type, name):
        return False

    async def set_quota(self, vol_type, name, size):
        """Limit a volume to `size` (a size string; "" or "0" removes the limit)."""
        raise NotSupported(f"{self.info.name} pools do not support quotas")

    async def volume_usage(self, vol_type, name):
        raise NotSupported("Volume usage is not supported")

    async def update_volume(self, vol_type, name, changed):
        """Apply changed volume keys ({key: new value})."""
        if "size" in changed:
            await self.set_quota(vol_type, name, changed["size"])

    # -- snapshots and copies (generic: rsync between mounted volumes) ------
    async def create_snapshot(self, name, snapshot):
        """Snapshot container volume `name` as `name/snapshot`."""
        target = f"{name}/{snapshot}"
        await self.create_volume("container", target, {})
        try:
            await self.mount_volume("container", name)
            await self.rsync(self.mount_path("container", name), self.mount_path("container", target))
        except BaseException:
            await self.delete_volume("container", target)
            raise

    def may_remove_snapshots(self):
        """Whether restoring an older snapshot may drop the newer ones (restore_latest_only drivers)."""
        return False

    async def restore_snapshot(self, name, snapshot):
        """Make container volume `name` what its snapshot holds."""
        await self.mount_volume("container", name)
        await self.mount_volume("container", f"{name}/{snapshot}")
        await self.rsync(self.mount_path("container", f"{name}/{snapshot}"), self.mount_path("container", name),
                         exact=True)

    async def copy_volume(self, vol_type, name, new_name, config=None):
        """A new volume in this pool with the content of another (snapshots: read-only)."""
        await self.create_volume(vol_type, new_name, config or {})
        try:
            await self.mount_volume(vol_type, name)
            await self.mount_volume(vol_type, new_name)
            await self.rsync(self.mount_path(vol_type, name), self.mount_path(vol_type, new_name))
        except BaseException:
            await self.delete_volume(vol_type, new_name)
            raise

    async def import_volume(self, vol_type, name, source_dir, received=False):
        """A new volume holding the contents of `source_dir` (an unpacked backup; with
        `received`, a volume `receive_backup` made in this pool)."""
        if received:
            raise NotSupported(f"{self.info.name} pools do not support optimized backups")
        if vol_type == "container" and is_snapshot(name):
            await self.in_thread(os.makedirs, self.snapshots_dir(name.split("/", 1)[0]), 0o700, True)
        await self.create_volume(vol_type, name, {})
        try:
            await self.mount_volume(vol_type, name)
            await self.rsync(source_dir, self.mount_path(vol_type, name))
        except BaseException:
            await self.delete_volume(vol_type, name)
            raise
        return self.mount_path(vol_type, name)

    async def send_backup(self, name, snapshots, target_dir):
        """Write the pool's own streams of container `name` and its `snapshots` into `target_dir`."""
        raise NotSupported(f"{self.info.name} pools do not support optimized backups")

    async def receive_backup(self, stage_dir, snapshots):
        """Receive the streams `send_backup` wrote (in `stage_dir`) into the pool; returns
        a directory holding `container` and `snapshots/<s>` for `import_volume(received=True)`."""
        raise NotSupported(f"{self.info.name} pools do not support optimized backups")

    async def discard_received(self, directory):
        """Remove what `receive_backup` made."""

    async def rsync(self, source, target, bwlimit=None, exact=False):
        argv = rsync.argv(source, target, self.bwlimit() if bwlimit is None else bwlimit, exact=exact)
        code, out, err = await self.run(argv, check=False)
        if code not in rsync.SUCCESS:
            raise asyncutil.ProcessError(argv, code, out, err)

    async def rsync_from(self, other, vol_type, name, new_name):
        """Make our volume `new_name` a copy of `other`'s volume `name` (the source pool's
        `rsync.bwlimit` applies, else ours)."""
        await self.rsync(other.mount_path(vol_type, name), self.mount_path(vol_type, new_name),
                         other.bwlimit() or self.bwlimit())

    # -- image volumes -----------------------------------------------------
    async def image_volumes(self):
        """Fingerprints of the images unpacked in this pool."""
        return []

    async def forget_image(self, fingerprint):
        """The image itself was deleted: drop whatever the pool keeps of it."""
        if fingerprint in await self.image_volumes():
            await self.delete_image(fingerprint)

    async def delete_image(self, fingerprint):
        """Drop the pool's copy of an image (nothing to do where there is none)."""
