# -*- test-case-name: tests.unit.test_storage_drivers -*-
"""Volumes that are block devices with a filesystem on them (lvm, ceph): mkfs, mount, resize.

`block.filesystem` is ext4 (default), xfs or btrfs; `block.mount_options`
defaults to `discard`. A volume is mounted at its mount path while in use.
Shrinking works only for ext4 (unmounted, after a forced fsck); xfs cannot
shrink; btrfs shrinks online.
"""

import os

from lxdtx.config.types import is_any, one_of, parse_size
from lxdtx.storage import mounts
from lxdtx.storage.errors import CannotBeShrunk

FILESYSTEMS = ("btrfs", "ext4", "xfs")
DEFAULT_FILESYSTEM = "ext4"
DEFAULT_MOUNT_OPTIONS = "discard"
DEFAULT_VOLUME_SIZE = "10GB"

is_filesystem = one_of(*FILESYSTEMS)

POOL_KEYS = {"volume.block.filesystem": is_filesystem, "volume.block.mount_options": is_any}
VOLUME_KEYS = {"block.filesystem": is_filesystem, "block.mount_options": is_any}


def mkfs_argv(filesystem, device):
    if filesystem == "ext4":
        return ["mkfs.ext4", "-q", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", device]
    if filesystem == "xfs":
        return ["mkfs.xfs", "-q", "-f", device]
    if filesystem == "btrfs":
        return ["mkfs.btrfs", "-q", "-f", device]
    raise ValueError(f"Unsupported filesystem: {filesystem}")


def mount_argv(filesystem, device, path, options, readonly=False):
    opts = [o for o in (options or "").split(",") if o]
    if filesystem == "xfs":
        # Snapshots and clones share the XFS UUID of their origin.
        opts.append("nouuid")
    if readonly:
        opts.append("ro")
    argv = ["mount", "-t", filesystem]
    if opts:
        argv += ["-o", ",".join(opts)]
    return argv + [device, path]


def grow_argv(filesystem, device, path):
    """Grow the filesystem to fill its (already grown) device."""
    if filesystem == "ext4":
        return ["resize2fs", device]
    if filesystem == "xfs":
        return ["xfs_growfs", path]
    return ["btrfs", "filesystem", "resize", "max", path]


def shrink_steps(filesystem, device, path, size_bytes):
    """Commands shrinking the filesystem to `size_bytes` before its device shrinks.

    ext4 needs the filesystem unmounted (the caller unmounts first); xfs cannot shrink.
    """
    if filesystem == "ext4":
        return [["e2fsck", "-f", "-y", device], ["resize2fs", device, f"{size_bytes // 1024}K"]]
    if filesystem == "btrfs":
        return [["btrfs", "filesystem", "resize", str(size_bytes), path]]
    raise CannotBeShrunk(f"Filesystem \"{filesystem}\" cannot be shrunk")


def regenerate_uuid_argv(filesystem, device):
    """A clone of a volume gets its own filesystem UUID (needed to mount both at once)."""
    if filesystem == "xfs":
        return ["xfs_admin", "-U", "generate", device]
    if filesystem == "btrfs":
        return ["btrfstune", "-f", "-u", device]
    return None


class BlockVolumes:
    """Mounting, formatting and resizing for drivers whose volumes are block devices.

    The driver provides `device_path(vol_type, name)`; the filesystem of an existing
    volume is read from the device (blkid), as the pool default may have changed since.
    """

    async def volume_usage(self, vol_type, name):
        """Bytes used in the volume's (mounted) filesystem."""
        st = await self.in_thread(os.statvfs, self.mount_path(vol_type, name))
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def volume_filesystem(self, config):
        return (config or {}).get("block.filesystem") or self.config.get("volume.block.filesystem") \
            or DEFAULT_FILESYSTEM

    def volume_mount_options(self, config):
        return (config or {}).get("block.mount_options") or self.config.get("volume.block.mount_options") \
            or DEFAULT_MOUNT_OPTIONS

    def volume_size(self, config):
        size = (config or {}).get("size") or self.config.get("volume.size") or ""
        if not size or parse_size(size) == 0:
            size = DEFAULT_VOLUME_SIZE
        return parse_size(size)

    async def detect_filesystem(self, device):
        _, out, _ = await self.run(["blkid", "-o", "value", "-s", "TYPE", device], check=False)
        return out.decode().strip() or DEFAULT_FILESYSTEM

    async def mount_block(self, vol_type, name, readonly=False):
        path = self.mount_path(vol_type, name)
        if await self.in_thread(mounts.is_mounted, path):
            return False
        await self.in_thread(os.makedirs, path, 0o711, True)
        device = self.device_path(vol_type, name)
        config = self.lookup_volume(vol_type, name)
        await self.run(mount_argv(await self.detect_filesystem(device), device, path,
                                  self.volume_mount_options(config), readonly=readonly))
        return True

    async def unmount_block(self, vol_type, name):
        path = self.mount_path(vol_type, name)
        if not await self.in_thread(mounts.is_mounted, path):
            return False
        await self.run(["umount", path])
        return True

    async def format_block(self, vol_type, name, config):
        await self.run(mkfs_argv(self.volume_filesystem(config), self.device_path(vol_type, name)))

    async def new_uuid(self, vol_type, name):
        device = self.device_path(vol_type, name)
        argv = regenerate_uuid_argv(await self.detect_filesystem(device), device)
        if argv:
            await self.run(argv)
