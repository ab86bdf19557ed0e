# -*- test-case-name: tests.integration.test_storage -*-
"""The `dir` driver: volumes are plain directories under the pool's source.

An image is unpacked once per pool, into `images/<fingerprint>` (root's alone, as
unpacked), and each container made from it is a `cp -a --reflink=auto` of that tree:
where the filesystem shares extents (xfs, btrfs used as a dir pool) the copy costs
next to nothing; elsewhere it is still a plain copy, cheaper than decompressing and
checking the tarball again. Hard links into the image tree would be cheaper still
but are no copy: a write through any container, or a chown, would change the image
and every other container. These image trees are the pool's own cache, not image
volumes (LXD lists none for dir pools): `forget_image` drops one with its image.
"""

import os
import secrets
import shutil
from collections.abc import Callable

from twisted.internet import defer

from lxdtx import errors
from lxdtx.storage import mounts
from lxdtx.storage.driver import VOLUME_DIRS, Driver, Info, is_snapshot


class DirDriver(Driver):
    """Directories on the host filesystem; no quotas, snapshots and copies by rsync."""

    info = Info("dir")
    keys: dict[str, Callable] = {}
    changeable = frozenset({"rsync.bwlimit"})

    @property
    def source(self):
        return self.config.get("source") or self.mount_point

    def fill_defaults(self, config):
        config = super().fill_defaults(config)
        config.setdefault("source", self.mount_point)
        return config

    async def create(self):
        source = self.source

        def make():
            if os.path.exists(source) and not os.path.isdir(source):
                raise FileExistsError(f"Source path '{source}' isn't a directory")
            os.makedirs(source, mode=0o711, exist_ok=True)
            if os.listdir(source):
                raise FileExistsError(f"Source path '{source}' isn't empty")
            for sub in VOLUME_DIRS.values():
                os.makedirs(os.path.join(source, sub), mode=0o711, exist_ok=True)

        try:
            await self.in_thread(make)
        except OSError as e:
            if e.errno is None:  # the refusals of `make`, which name the source as LXD does
                raise errors.BadRequest(str(e))
            # The source is the client's (or the default under the state directory): named as LXD does.
            raise errors.BadRequest(f"Failed to create the directories of source path '{source}': "
                                    f"{errors.describe(e)}")
        await self.mount()

    async def delete(self):
        await self.unmount()
        source = self.source

        def remove():
            # Only what we made: the volume directories, then the source if left empty.
            for sub in VOLUME_DIRS.values():
                shutil.rmtree(os.path.join(source, sub), ignore_errors=True)
            try:
                os.rmdir(source)
            except OSError:
                pass
            if os.path.islink(self.mount_point):
                os.unlink(self.mount_point)

        await self.in_thread(remove)

    async def abandon(self):
        """A source the user named may have held files before: only our empty layout goes."""
        await self.unmount()
        source = self.source

        def remove():
            for sub in VOLUME_DIRS.values():
                mounts.rmdir_if_empty(os.path.join(source, sub))
            mounts.rmdir_if_empty(source)
            if os.path.islink(self.mount_point):
                os.unlink(self.mount_point)

        await self.in_thread(remove)

    async def mount(self):
        """The pool's mount point is the source itself or a symlink to it."""
        if self.source == self.mount_point:
            return False

        def link():
            os.makedirs(os.path.dirname(self.mount_point), exist_ok=True)
            if not os.path.islink(self.mount_point):
                os.symlink(self.source, self.mount_point)

        await self.in_thread(link)
        return True

    async def create_volume(self, vol_type, name, config):
        path = self.mount_path(vol_type, name)
        await self.in_thread(os.makedirs, path, 0o711)
        return path

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._image_locks = {}  # fingerprint -> DeferredLock: one unpack of an image at a time

    def _image_lock(self, fingerprint):
        return self._image_locks.setdefault(fingerprint, defer.DeferredLock())

    async def ensure_image(self, fingerprint, unpack):
        """The pool's unpacked tree of the image, made the first time it is needed."""
        path = self.mount_path("image", fingerprint)
        lock = self._image_lock(fingerprint)
        await lock.acquire()
        try:
            if await self.in_thread(os.path.isdir, path):
                return path
            # Unpacked under a temporary name and renamed when complete: a crash never
            # leaves a half-unpacked tree looking usable (the next one removes it).
            staging = f"{path}.unpacking-{secrets.token_hex(4)}"

            def prepare():
                os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
                for stale in os.listdir(os.path.dirname(path)):
                    if stale.startswith(f"{fingerprint}.unpacking-"):
                        shutil.rmtree(os.path.join(os.path.dirname(path), stale), ignore_errors=True)
                os.mkdir(staging, 0o700)

            await self.in_thread(prepare)
            try:
                await unpack(staging)
                await self.in_thread(os.rename, staging, path)
            except BaseException:
                await self.in_thread(shutil.rmtree, staging, True)
                raise
            return path
        finally:
            lock.release()

    async def create_from_image(self, name, fingerprint, unpack, config):
        image = await self.ensure_image(fingerprint, unpack)
        path = self.mount_path("container", name)
        try:
            # Owners, modes, links, xattrs (file capabilities, ACLs) and times as unpacked.
            await self.run(["cp", "-a", "--reflink=auto", "--no-target-directory", image, path])
        except BaseException:
            await self.in_thread(shutil.rmtree, path, True)
            raise
        return path

    async def forget_image(self, fingerprint):
        """The image is gone: drop the pool's unpacked tree of it."""
        lock = self._image_lock(fingerprint)
        await lock.acquire()
        try:
            await self.in_thread(shutil.rmtree, self.mount_path("image", fingerprint), True)
        finally:
            lock.release()

    async def delete_volume(self, vol_type, name):
        path = self.mount_path(vol_type, name)

        def remove():
            remove_path(path)
            if vol_type == "container":
                mounts.rmdir_if_empty(self.snapshots_dir(name.split("/")[0]))

        await self.in_thread(remove)

    async def rename_volume(self, vol_type, name, new_name):
        def move():
            os.rename(self.mount_path(vol_type, name), self.mount_path(vol_type, new_name))
            if vol_type == "container" and not is_snapshot(name) and os.path.isdir(self.snapshots_dir(name)):
                os.rename(self.snapshots_dir(name), self.snapshots_dir(new_name))

        await self.in_thread(move)

    async def create_snapshot(self, name, snapshot):
        await self.in_thread(os.makedirs, self.snapshots_dir(name), 0o700, True)
        await super().create_snapshot(name, snapshot)



def remove_path(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
