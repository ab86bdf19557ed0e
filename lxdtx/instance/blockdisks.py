# -*- test-case-name: tests.integration.test_disk_devices -*-
"""`disk` devices whose source is a block device: its file system, mounted on the host first.

As in LXD, a block device source means the file system on it (its type found
by mount's own probing), not the node. It is mounted in `disks/<container>/`
of the state directory (read-only for `readonly` devices) while the container
runs, and that directory is what the container gets, like a host directory.
What a killed daemon left mounted there is unmounted at the container's next
start or stop.
"""

import os
import shutil
import stat

from twisted.internet import threads

from lxdtx import errors
from lxdtx.asyncutil import ProcessError, run
from lxdtx.config.types import is_true


def is_block_source(config):
    """Blocking: whether a non-root, non-pool disk device's source is a block device."""
    if config.get("type") != "disk" or config.get("path") == "/" or config.get("pool"):
        return False
    try:
        return stat.S_ISBLK(os.stat(config.get("source") or "").st_mode)
    except (OSError, ValueError):
        return False


class BlockDisks:
    """The host mounts of one daemon's block device disks."""

    def __init__(self, root):
        self.root = root

    def staging(self, name, dev_name):
        # Hex: a device name may hold characters a file name should not.
        return os.path.join(self.root, name, dev_name.encode().hex())

    async def mount(self, name, dev_name, config):
        """Mount the device's file system (once); returns the directory to bind into the container."""
        target = self.staging(name, dev_name)
        if await threads.deferToThread(os.path.ismount, target):
            return target
        await threads.deferToThread(_make_dirs, self.root, os.path.dirname(target), target)
        options = "ro" if is_true(config.get("readonly", "")) else "rw"
        try:
            await run(["mount", "-o", options, config["source"], target])
        except ProcessError as e:
            await threads.deferToThread(_rmdir, target)
            detail = e.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise errors.BadRequest(f"Failed to mount the file system of '{config['source']}' for disk device "
                                    f"\"{dev_name}\": {detail[0]}")
        return target

    async def mount_all(self, name, devices):
        """{device name: directory} for the block device disks of a container about to start."""
        await self.unmount_all(name)
        staged = {}
        try:
            for dev_name in sorted(devices):
                if await threads.deferToThread(is_block_source, devices[dev_name]):
                    staged[dev_name] = await self.mount(name, dev_name, devices[dev_name])
        except BaseException:
            await self.unmount_all(name)
            raise
        return staged

    async def unmount(self, name, dev_name):
        target = self.staging(name, dev_name)
        if await threads.deferToThread(os.path.ismount, target):
            # Lazy: the container may still be letting go of it (a stop in progress).
            await run(["umount", "-l", target], check=False)
        await threads.deferToThread(_rmdir, target)

    async def unmount_all(self, name):
        directory = os.path.join(self.root, name)
        try:
            entries = await threads.deferToThread(os.listdir, directory)
        except OSError:
            return
        for entry in sorted(entries):
            target = os.path.join(directory, entry)
            if await threads.deferToThread(os.path.ismount, target):
                await run(["umount", "-l", target], check=False)
        await threads.deferToThread(_remove_unmounted, directory)


def _make_dirs(root, parent, target):
    os.makedirs(root, mode=0o711, exist_ok=True)
    os.makedirs(parent, mode=0o711, exist_ok=True)
    os.makedirs(target, mode=0o755, exist_ok=True)


def _rmdir(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


def _remove_unmounted(directory):
    """Remove the container's staging directory unless something is still mounted below it."""
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.path.ismount(path):
            return
    shutil.rmtree(directory, ignore_errors=True)
