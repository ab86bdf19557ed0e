# -*- test-case-name: tests.integration.test_containers -*-
"""Publishing a container or snapshot as an image: its directory lent out with ids unshifted.

Images carry container ids (root is 0), while an unprivileged container's files
are owned by shifted host ids. A stopped container is unshifted in place for the
time the image is packed and shifted back after; a snapshot (possibly
read-only) is copied to a temporary volume first.
"""

import os
import secrets

from twisted.internet import threads

from lxdtx import errors
from lxdtx.instance import idmap as idmaps
from lxdtx.instance.model import KIND
from lxdtx.instance.runtime import STOPPED
from lxdtx.state import Put

# Set while a publish has the rootfs unshifted: shifting from the map back to
# container ids is idempotent, so a start finishes that first, then shifts again.
UNSHIFTED_MARKER = "volatile.idmap.unshifted"


class PublishSource:
    """Locks a container and lends out its directory (or a snapshot's copy) with ids unshifted."""

    def __init__(self, instances, name, snapshot=None):
        self._instances = instances
        self._name = name
        self._snapshot = snapshot
        self._idmap = None
        self._path = None
        self._copy = None  # (driver, volume) of a snapshot's temporary copy

    async def __aenter__(self):
        instances, name = self._instances, self._name
        await instances.locks.acquire(name, "publish")
        try:
            doc = instances.records.get(name)
            if self._snapshot:
                return await self._copy_snapshot(doc)
            if instances.records.status(name) != STOPPED:
                raise errors.BadRequest("The container is currently running, stop it first")
            self._path = instances.container_dir(doc.value, name)
            text = doc.value["config"].get("volatile.last_state.idmap")
            self._idmap = idmaps.IdMap.from_json(text) if text else None
            if self._idmap is not None:
                await self._mark(True)
                await threads.deferToThread(idmaps.shift_tree, os.path.join(self._path, "rootfs"),
                                            self._idmap, None)
        except BaseException:
            instances.locks.release(name)
            raise
        return self._path

    async def _copy_snapshot(self, doc):
        """A writable copy of the snapshot, unshifted: snapshots may be read-only."""
        snap = self._instances.snapshots.get(self._name, self._snapshot)
        driver = self._instances.daemon.pools.driver(doc.value["pool"])
        volume = f"{self._name}.publish-{secrets.token_hex(4)}"
        await driver.copy_volume("container", snap.name, volume)
        self._copy = (driver, volume)
        self._path = driver.mount_path("container", volume)
        text = snap.value["config"].get("volatile.last_state.idmap")
        idmap = idmaps.IdMap.from_json(text) if text else None
        if idmap is not None:
            await threads.deferToThread(idmaps.shift_tree, os.path.join(self._path, "rootfs"), idmap, None)
        return self._path

    async def _mark(self, unshifting):
        """While the marker is set the rootfs may be partly unshifted; a start heals it first."""
        doc = self._instances.records.get(self._name)
        if unshifting:
            doc.value["config"][UNSHIFTED_MARKER] = "true"
        else:
            doc.value["config"].pop(UNSHIFTED_MARKER, None)
        await self._instances.store.commit([Put(KIND, self._name, doc.value, expect=doc.revision)])

    async def __aexit__(self, *exc):
        try:
            if self._copy is not None:
                driver, volume = self._copy
                await driver.delete_volume("container", volume)
            elif self._idmap is not None:
                await threads.deferToThread(idmaps.shift_tree, os.path.join(self._path, "rootfs"),
                                            None, self._idmap)
                await self._mark(False)
        finally:
            self._instances.locks.release(self._name)
        return False
