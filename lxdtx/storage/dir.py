# -*- test-case-name: tests.integration.test_containers -*-
"""The `dir` driver: volumes are plain directories under the pool's source."""

import os
import shutil

from twisted.internet import threads

from lxdtx.config.types import is_any
from lxdtx.storage.driver import VOLUME_DIRS, Driver, Info


class DirDriver(Driver):
    """Directories on the host filesystem; no quotas, copies by rsync."""

    info = Info("dir")
    keys = {"source": is_any}

    @property
    def source(self):
        return self.config.get("source") or self.mount_point

    def fill_defaults(self, config):
        config = dict(config)
        config.setdefault("source", self.mount_point)
        return config

    async def create(self):
        def make():
            os.makedirs(self.source, mode=0o711, exist_ok=True)
            if os.listdir(self.source):
                raise FileExistsError(f"Source path '{self.source}' isn't empty")
            for sub in VOLUME_DIRS.values():
                os.makedirs(os.path.join(self.source, sub), mode=0o711, exist_ok=True)

        await threads.deferToThread(make)
        await self.mount()

    async def delete(self):
        await self.unmount()
        await threads.deferToThread(shutil.rmtree, self.source, True)
        if os.path.islink(self.mount_point) or os.path.isdir(self.mount_point):
            await threads.deferToThread(_remove_path, self.mount_point)

    async def mount(self):
        """The pool's mount point is the source itself or a symlink to it."""
        if self.source == self.mount_point:
            return False

        def link():
            os.makedirs(os.path.dirname(self.mount_point), exist_ok=True)
            if not os.path.islink(self.mount_point):
                os.symlink(self.source, self.mount_point)

        await threads.deferToThread(link)
        return True

    async def usage(self):
        st = await threads.deferToThread(os.statvfs, self.source)
        return {
            "space": {"used": (st.f_blocks - st.f_bfree) * st.f_frsize, "total": st.f_blocks * st.f_frsize},
            "inodes": {"used": st.f_files - st.f_ffree, "total": st.f_files},
        }

    async def create_volume(self, vol_type, name, config):
        path = self.mount_path(vol_type, name)
        await threads.deferToThread(os.makedirs, path, 0o711)
        return path

    async def create_from_image(self, name, fingerprint, unpack, config):
        path = self.mount_path("container", name)
        await threads.deferToThread(os.makedirs, path, 0o711)
        try:
            await unpack(path)
        except BaseException:
            await threads.deferToThread(shutil.rmtree, path, True)
            raise
        return path

    async def delete_volume(self, vol_type, name):
        await threads.deferToThread(_remove_path, self.mount_path(vol_type, name))

    async def rename_volume(self, vol_type, name, new_name):
        await threads.deferToThread(os.rename, self.mount_path(vol_type, name), self.mount_path(vol_type, new_name))


def _remove_path(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
