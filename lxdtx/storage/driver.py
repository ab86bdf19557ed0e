# -*- test-case-name: tests.unit.test_storage -*-
"""The storage driver contract: a capabilities record and a base that says "not supported".

A driver manages one pool. Volumes are addressed by (type, name) with type one
of `container`, `image`, `custom`; snapshots of a container volume are named
`<container>/<snapshot>`. `mount_path(type, name)` is where a mounted volume's
files live; for containers that directory holds `rootfs/`, `metadata.yaml`,
`templates/`.
"""

import os

from twisted.internet import threads

from lxdtx.asyncutil import run
from lxdtx.storage.errors import NotSupported

VOLUME_DIRS = {"container": "containers", "image": "images", "custom": "custom", "snapshot": "snapshots"}


class Info:
    """What a driver can do; callers check capabilities, never driver names."""

    def __init__(self, name, *, optimized_images=False, remote=False, block_backing=False,
                 fast_snapshots=False, quotas=False):
        self.name = name
        self.optimized_images = optimized_images  # images unpacked once, containers cloned from them
        self.remote = remote
        self.block_backing = block_backing
        self.fast_snapshots = fast_snapshots
        self.quotas = quotas


class Driver:
    """Defaults for every operation; drivers override what they support."""

    info = Info("none")
    # Pool config keys this driver accepts, key -> validator (see lxdtx.config.types).
    keys = {}
    # Keys that may change after creation.
    changeable = frozenset()

    def __init__(self, pool, config, state_dir):
        self.pool = pool
        self.config = config
        self.state_dir = state_dir

    # -- pool ------------------------------------------------------------
    @property
    def mount_point(self):
        return os.path.join(self.state_dir, "storage-pools", self.pool)

    def fill_defaults(self, config):
        """The config with driver defaults filled in (called once at pool creation)."""
        return dict(config)

    async def create(self):
        raise NotSupported(f"Creating {self.info.name} pools is not supported")

    async def delete(self):
        raise NotSupported(f"Deleting {self.info.name} pools is not supported")

    async def mount(self):
        """Make the pool usable; True when something was mounted."""
        return False

    async def unmount(self):
        return False

    async def usage(self):
        """{"space": {"used", "total"}, "inodes": {"used", "total"}} of the pool."""
        raise NotSupported("Pool usage is not supported")

    # -- volumes ---------------------------------------------------------
    def mount_path(self, vol_type, name):
        return os.path.join(self.mount_point, VOLUME_DIRS[vol_type], name)

    async def create_volume(self, vol_type, name, config):
        raise NotSupported(f"{self.info.name} pools cannot create volumes")

    async def create_from_image(self, name, fingerprint, unpack, config):
        """A container volume holding the image; `unpack(target_dir)` extracts it."""
        raise NotSupported(f"{self.info.name} pools cannot create containers")

    async def delete_volume(self, vol_type, name):
        raise NotSupported(f"{self.info.name} pools cannot delete volumes")

    async def rename_volume(self, vol_type, name, new_name):
        raise NotSupported(f"{self.info.name} pools cannot rename volumes")

    async def mount_volume(self, vol_type, name):
        return False

    async def unmount_volume(self, vol_type, name):
        return False

    async def set_quota(self, vol_type, name, size):
        raise NotSupported(f"{self.info.name} pools do not support quotas")

    async def volume_usage(self, vol_type, name):
        raise NotSupported("Volume usage is not supported")

    async def import_volume(self, vol_type, name, source_dir):
        """A new volume holding the contents of `source_dir` (moved when on the same filesystem)."""
        path = await self.create_volume(vol_type, name, {})
        try:
            await move_contents(source_dir, path)
        except BaseException:
            await self.delete_volume(vol_type, name)
            raise
        return path


async def move_contents(source_dir, target_dir):
    """Move every entry of source_dir into target_dir; copy (keeping owners, xattrs) across filesystems."""
    same_fs = (await threads.deferToThread(os.stat, source_dir)).st_dev == \
        (await threads.deferToThread(os.stat, target_dir)).st_dev
    entries = await threads.deferToThread(os.listdir, source_dir)
    for entry in entries:
        source, target = os.path.join(source_dir, entry), os.path.join(target_dir, entry)
        if same_fs:
            await threads.deferToThread(os.rename, source, target)
        else:
            await run(["cp", "-a", "--no-target-directory", source, target])
