# -*- test-case-name: tests.integration.test_backups -*-
"""Container backups (`container_backup`): xz tarballs made from a container, restored as a new one.

Layout of a backup tarball, as LXD writes it::

    backup/index.yaml                 name, backend, privileged, pool, snapshots
    backup/container/...              the container directory: backup.yaml, metadata.yaml,
                                      templates/, rootfs/ (ids as on disk)
    backup/snapshots/<name>/...       the same for each snapshot

`backup.yaml` carries the container's documents, so an import recreates the
container with its config; its `volatile.last_state.idmap` tells the next start
whether the rootfs needs shifting. Backup files live in `DIR/backups/<c>/<b>`.
"""

import errno
import os
import re
import shutil
import uuid

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import errors, timeutil
from lxdtx.asyncutil import ProcessError, run
from lxdtx.config.types import is_true
from lxdtx.image.pack import tar_to_file
from lxdtx.instance import model
from lxdtx.state import ABSENT, Delete, Put

KIND = "backup"
_TAR_FLAGS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]
_NUMBERED = re.compile(r"backup(\d+)")


class Backups:
    """Backups of the containers of one daemon."""

    log = Logger()

    def __init__(self, instances):
        self.instances = instances
        self.daemon = instances.daemon
        self.store = instances.store
        self.root = self.daemon.path("backups")

    # -- reading -------------------------------------------------------------
    def path(self, container, backup):
        return os.path.join(self.root, container, backup)

    def names(self, container):
        prefix = container + "/"
        return [n[len(prefix):] for n in self.store.names(KIND) if n.startswith(prefix)]

    def get(self, container, backup):
        doc = self.store.get(KIND, f"{container}/{backup}")
        if doc is None:
            raise errors.NotFound()
        return doc

    @staticmethod
    def render(doc):
        value = doc.value
        return {
            "name": doc.name, "creation_date": value["creation_date"],
            "expiry_date": value.get("expiry_date", timeutil.ZERO_TIME),
            "container_only": value.get("container_only", False),
            "optimized_storage": value.get("optimized_storage", False),
        }

    def next_name(self, container):
        numbers = [int(m.group(1)) for m in map(_NUMBERED.fullmatch, self.names(container)) if m]
        return f"backup{max(numbers, default=-1) + 1}"

    # -- create ----------------------------------------------------------------
    async def create(self, container, backup, *, expiry, container_only, optimized):
        """Write the tarball of `container` as backup `backup`."""
        key = f"{container}/{backup}"
        if self.store.exists(KIND, key):
            raise errors.Conflict(f"Backup '{backup}' already exists")
        doc = self.instances.get(container)
        value = doc.value
        directory = self.instances.container_dir(value, container)
        snapshots = [] if container_only else self.instances.snapshot_dirs(container)
        stage = os.path.join(self.daemon.path("tmp"), f"backup-{uuid.uuid4().hex}")
        dest = self.path(container, backup)
        await threads.deferToThread(os.makedirs, os.path.join(stage, "backup"), 0o700)
        try:
            await threads.deferToThread(self._write_metadata, stage, directory, container, value, snapshots)
            tarball = os.path.join(stage, "backup.tar")
            await _tar(["tar", "-cf", tarball, *_TAR_FLAGS, "-C", stage, "backup/index.yaml"])
            await _tar(["tar", "-rf", tarball, *_TAR_FLAGS, "--ignore-failed-read",
                        "--transform", r"flags=rhS;s,^\.,backup/container,", "-C", directory, "."])
            for snap_name, snap_dir in snapshots:
                await _tar(["tar", "-rf", tarball, *_TAR_FLAGS, "--ignore-failed-read",
                            "--transform", rf"flags=rhS;s,^\.,backup/snapshots/{snap_name},", "-C", snap_dir, "."])
            await threads.deferToThread(os.makedirs, os.path.dirname(dest), 0o700, True)
            await tar_to_file(self.daemon.reactor, ["cat", tarball], dest + ".partial", "xz")
            os.replace(dest + ".partial", dest)
            record = {
                "creation_date": timeutil.now(), "expiry_date": expiry or timeutil.ZERO_TIME,
                "container_only": bool(container_only), "optimized_storage": False,
            }
            await self.store.commit([Put(KIND, key, record, expect=ABSENT)])
        except BaseException:
            await threads.deferToThread(_remove, dest + ".partial", dest)
            raise
        finally:
            await threads.deferToThread(shutil.rmtree, stage, True)

    def _write_metadata(self, stage, directory, container, value, snapshots):
        import yaml  # loaded on first use: the idle daemon does without it

        config, _ = self.instances.expanded(value)
        pool = self.store.value("pool", value["pool"], {})
        index = {
            "name": container, "backend": pool.get("driver", "dir"),
            "privileged": is_true(config.get("security.privileged", "")),
            "pool": value["pool"], "snapshots": [name for name, _ in snapshots],
        }
        with open(os.path.join(stage, "backup", "index.yaml"), "w") as f:
            yaml.safe_dump(index, f, default_flow_style=False)
        snapshot_docs = [
            dict(self.store.value(model.SNAPSHOT_KIND, f"{container}/{name}", {}), name=name)
            for name, _ in snapshots
        ]
        backup = {
            "container": dict(value, name=container),
            "snapshots": snapshot_docs,
            "pool": {"name": value["pool"], "driver": pool.get("driver", "dir"), "config": pool.get("config", {})},
        }
        with open(os.path.join(directory, "backup.yaml"), "w") as f:
            yaml.safe_dump(backup, f, default_flow_style=False)

    # -- rename, delete, prune ---------------------------------------------------
    async def rename(self, container, backup, new_name):
        doc = self.get(container, backup)
        if not new_name or "/" in new_name:
            raise errors.BadRequest("Backup names may not be empty or contain slashes")
        new_key = f"{container}/{new_name}"
        if self.store.exists(KIND, new_key):
            raise errors.Conflict(f"Backup '{new_name}' already exists")
        await threads.deferToThread(os.rename, self.path(container, backup), self.path(container, new_name))
        await self.store.commit([Delete(KIND, doc.name, expect=doc.revision),
                                 Put(KIND, new_key, doc.value, expect=ABSENT)])

    async def delete(self, container, backup):
        doc = self.get(container, backup)
        await self.store.commit([Delete(KIND, doc.name, expect=doc.revision)])
        await threads.deferToThread(_remove, self.path(container, backup))

    async def delete_all(self, container):
        """Drop every backup of a container that is being deleted."""
        names = self.names(container)
        if names:
            await self.store.commit([Delete(KIND, f"{container}/{n}") for n in names])
        await threads.deferToThread(shutil.rmtree, os.path.join(self.root, container), True)

    async def rename_all(self, container, new_name):
        """Carry backups along when their container is renamed."""
        names = self.names(container)
        if not names:
            return
        changes = []
        for name in names:
            doc = self.get(container, name)
            changes += [Delete(KIND, doc.name), Put(KIND, f"{new_name}/{name}", doc.value)]
        await threads.deferToThread(os.rename, os.path.join(self.root, container), os.path.join(self.root, new_name))
        await self.store.commit(changes)

    async def prune(self):
        """Delete backups past their expiry date (run periodically)."""
        now = timeutil.parse(timeutil.now())
        for doc in self.store.list(KIND):
            expiry = doc.value.get("expiry_date") or timeutil.ZERO_TIME
            if expiry != timeutil.ZERO_TIME and timeutil.parse(expiry) < now:
                container, _, backup = doc.name.partition("/")
                try:
                    await self.delete(container, backup)
                except errors.NotFound:
                    pass

    # -- import ------------------------------------------------------------------
    async def receive(self, body):
        """Copy an uploaded tarball (the spooled request body) to a private staging directory.

        Done before the operation answers: the request body is closed when the request ends.
        """
        stage = os.path.join(self.daemon.path("tmp"), f"import-{uuid.uuid4().hex}")
        await threads.deferToThread(os.makedirs, stage, 0o700)
        try:
            await threads.deferToThread(_save_body, body, os.path.join(stage, "upload"))
        except BaseException:
            await threads.deferToThread(shutil.rmtree, stage, True)
            raise
        return stage

    async def restore(self, stage, pool_override=None, name_override=None):
        """Create a container from a tarball received into `stage`; returns its name."""
        try:
            tarball = os.path.join(stage, "upload")
            try:
                await run(["tar", "-xf", tarball, *_TAR_FLAGS, "-C", stage])
            except ProcessError as e:
                raise errors.BadRequest(f"Invalid backup tarball: {e}")
            await threads.deferToThread(os.unlink, tarball)
            index = await threads.deferToThread(_load_yaml, os.path.join(stage, "backup", "index.yaml"))
            if index is None:
                raise errors.BadRequest("Backup is missing index.yaml")
            backup = await threads.deferToThread(
                _load_yaml, os.path.join(stage, "backup", "container", "backup.yaml")) or {}
            return await self.instances.import_container(
                stage=os.path.join(stage, "backup"), index=index, backup=backup,
                pool=pool_override, name=name_override)
        finally:
            await threads.deferToThread(shutil.rmtree, stage, True)


async def _tar(argv):
    try:
        await run(argv)
    except ProcessError as e:
        # GNU tar exits 1 when files changed while being read (a running container): still a backup.
        if e.code != 1:
            raise


def _save_body(body, path):
    body.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(body, out, 1 << 20)


def _load_yaml(path):
    import yaml  # loaded on first use: the idle daemon does without it

    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        return None


def _remove(*paths):
    for path in paths:
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
