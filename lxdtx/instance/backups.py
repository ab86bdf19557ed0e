# -*- test-case-name: tests.integration.test_backups -*-
"""Container backups (`container_backup`): tarballs (gzip unless asked otherwise) made from a container, restored as a new one.

Layout of a backup tarball, as LXD writes it::

    backup/index.yaml                 name, backend, privileged, pool, snapshots
    backup/container/...              the container directory: backup.yaml, metadata.yaml,
                                      templates/, rootfs/ (ids as on disk)
    backup/snapshots/<name>/...       the same for each snapshot

`backup.yaml` carries the container's documents, so an import recreates the
container with its config; its `volatile.last_state.idmap` tells the next start
whether the rootfs needs shifting. Backup files live in `DIR/backups/<c>/<b>`.
"""

import contextlib
import errno
import os
import re
import shutil
import stat
import uuid

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import errors, names, timeutil
from lxdtx.asyncutil import ProcessError, run
from lxdtx.config.types import is_true
from lxdtx.image import formats
from lxdtx.image import unpack as unpacking
from lxdtx.image.invalid import ImageFormatError
from lxdtx.image.pack import tar_to_file
from lxdtx.instance import model
from lxdtx.migration.progress import Progress
from lxdtx.state import ABSENT, Delete, Put

KIND = "backup"
_TAR_FLAGS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]
_NUMBERED = re.compile(r"backup(\d+)")
_WHAT = formats.BACKUP.what
# What an extracted backup must hold before any of it is read, parents first.
_TOP = (("backup", "dir", True), ("backup/index.yaml", "file", False), ("backup/container", "dir", True),
        ("backup/container/rootfs", "dir", True), ("backup/container/backup.yaml", "file", False))
# An optimized backup: the pool's streams instead of trees (snapshots/<s>.bin each).
_OPTIMIZED_TOP = (("backup", "dir", True), ("backup/index.yaml", "file", False),
                  ("backup/container.bin", "file", True))


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
    async def create(self, container, backup, *, expiry, container_only, optimized, compression=None, op=None):
        """Write the tarball of `container` as backup `backup`, compressed by `compression`
        (else `backups.compression_algorithm`; "none" for a plain tar).

        With an operation `op`, its `create_backup_progress` tells the bytes written so far
        (the tarball, then the compressed file) and the rate, as LXD's does.
        """
        compression = compression or self.daemon.config.get("backups.compression_algorithm") or "gzip"
        key = f"{container}/{backup}"
        if self.store.exists(KIND, key):
            raise errors.Conflict(f"Backup '{backup}' already exists")
        doc = self.instances.records.get(container)
        value = doc.value
        directory = self.instances.container_dir(value, container)
        snapshots = [] if container_only else self.instances.snapshot_dirs(container)
        driver = self.daemon.pools.driver(value["pool"])
        # As LXD: where the pool has no streams of its own, an optimized backup is a plain one.
        optimized = bool(optimized) and driver.info.optimized_backups
        stage = os.path.join(self.daemon.path("tmp"), f"backup-{uuid.uuid4().hex}")
        dest = self.path(container, backup)
        tarball = os.path.join(stage, "backup.tar")
        await threads.deferToThread(os.makedirs, os.path.join(stage, "backup"), 0o700)
        try:
            with _progress(self.daemon.reactor, op, tarball, dest + ".partial"):
                await threads.deferToThread(self._write_metadata, stage, directory, container, value, snapshots)
                if optimized:
                    await driver.send_backup(container, [n for n, _ in snapshots], os.path.join(stage, "backup"))
                    streams = ["backup/container.bin"] + [f"backup/snapshots/{n}.bin" for n, _ in snapshots]
                    await _tar(["tar", "-cf", tarball, "--numeric-owner", "-C", stage, "backup/index.yaml",
                                *streams])
                else:
                    await self._tar_trees(tarball, stage, directory, snapshots)
                await threads.deferToThread(os.makedirs, os.path.dirname(dest), 0o700, True)
                await tar_to_file(self.daemon.reactor, ["cat", tarball], dest + ".partial", compression)
            os.replace(dest + ".partial", dest)
            record = {
                "creation_date": timeutil.now(), "expiry_date": expiry or timeutil.ZERO_TIME,
                "container_only": bool(container_only), "optimized_storage": optimized,
                "compression_algorithm": compression,
            }
            await self.store.commit([Put(KIND, key, record, expect=ABSENT)])
        except BaseException:
            await threads.deferToThread(_remove, dest + ".partial", dest)
            raise
        finally:
            await threads.deferToThread(shutil.rmtree, stage, True)

    @staticmethod
    async def _tar_trees(tarball, stage, directory, snapshots):
        await _tar(["tar", "-cf", tarball, *_TAR_FLAGS, "-C", stage, "backup/index.yaml"])
        await _tar(["tar", "-rf", tarball, *_TAR_FLAGS, "--ignore-failed-read",
                    "--transform", r"flags=rhS;s,^\.,backup/container,", "-C", directory, "."])
        for snap_name, snap_dir in snapshots:
            await _tar(["tar", "-rf", tarball, *_TAR_FLAGS, "--ignore-failed-read",
                        "--transform", rf"flags=rhS;s,^\.,backup/snapshots/{snap_name},", "-C", snap_dir, "."])

    def _write_metadata(self, stage, directory, container, value, snapshots):
        import yaml  # loaded on first use: the idle daemon does without it

        config, _ = self.instances.records.expanded(value)
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
        _replace_file(directory, "backup.yaml", yaml.safe_dump(backup, default_flow_style=False).encode())

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
        """Create a container from a tarball received into `stage`; returns its name.

        An optimized backup (`backup/container.bin`, btrfs send streams) is received into
        the target pool first; its backup.yaml is then read from the received container.
        """
        received, driver = None, None
        try:
            tarball = os.path.join(stage, "upload")
            await _extract(tarball, stage)
            await threads.deferToThread(os.unlink, tarball)
            index, backup, optimized = await threads.deferToThread(_read_extracted, stage)
            unpacked = os.path.join(stage, "backup")
            if optimized:
                pool = pool_override or index.get("pool") or ""
                if not self.store.exists("pool", pool):
                    raise errors.BadRequest(f"Storage pool \"{pool}\" doesn't exist")
                driver = self.daemon.pools.driver(pool)
                if not driver.info.optimized_backups:
                    raise errors.BadRequest(f"Optimized backups cannot be restored onto {driver.info.name} pools; "
                                            "restore it onto a btrfs pool")
                received = await driver.receive_backup(unpacked, index.get("snapshots") or [])
                backup = await threads.deferToThread(_received_backup_yaml, received)
                unpacked = received
            return await self.instances.import_container(
                stage=unpacked, index=index, backup=backup, pool=pool_override, name=name_override,
                received=optimized)
        finally:
            if received is not None:
                await driver.discard_received(received)
            await threads.deferToThread(shutil.rmtree, stage, True)


def _progress(reactor, op, *paths):
    """`create_backup_progress` of `op` from the sizes of `paths` while a backup is written."""
    if op is None:
        return contextlib.nullcontext()
    return Progress(reactor, op, None, lambda: sum(_size(p) for p in paths), key="create_backup_progress")


def _size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


async def _extract(tarball, stage):
    """Check the uploaded tarball by the rules image tarballs follow, then extract it."""
    try:
        fmt = await threads.deferToThread(formats.detect_file, tarball)
    except ImageFormatError as e:
        raise errors.BadRequest(f"Invalid backup tarball: {e}")
    try:
        await unpacking.extract_tarball(tarball, fmt, stage, formats.BACKUP, privileged=True)
    except ImageFormatError as e:
        raise errors.BadRequest(str(e))
    except ProcessError as e:
        raise errors.BadRequest(f"Invalid backup tarball: {e}")


def _read_extracted(stage):
    """(index, backup, optimized) of an extracted backup, after checking the tree tar made
    (blocking). An optimized one has its backup.yaml inside its stream: {} here."""
    fd = os.open(stage, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            unpacking.expect_layout(fd, _TOP[:1], _WHAT)
            optimized = _lexists(fd, "backup/container.bin")
            unpacking.expect_layout(fd, _OPTIMIZED_TOP if optimized else _TOP, _WHAT)
        except ImageFormatError as e:
            raise errors.BadRequest(str(e))
        index = _load_yaml(fd, "backup/index.yaml")
        if index is None:
            raise errors.BadRequest("Backup is missing index.yaml")
        snapshots = index.get("snapshots") or []
        if not isinstance(snapshots, list):
            raise errors.BadRequest(f"Invalid {_WHAT}: index.yaml snapshots must be a list")
        for name in snapshots:
            # Each name becomes a path below backup/snapshots and a volume name.
            names.check("index.yaml snapshots", "snapshot", name)
        try:
            unpacking.expect_layout(fd, (_snapshot_streams if optimized else _snapshot_dirs)(snapshots), _WHAT)
        except ImageFormatError as e:
            raise errors.BadRequest(str(e))
        if optimized:
            return index, {}, True
        return index, _checked_backup_yaml(_load_yaml(fd, "backup/container/backup.yaml") or {}), False
    finally:
        os.close(fd)


def _checked_backup_yaml(backup):
    for doc in backup.get("snapshots") or []:
        if isinstance(doc, dict):
            names.check("backup.yaml snapshots", "snapshot", doc.get("name"))
    return backup


def _received_backup_yaml(received):
    """backup.yaml of a container received from an optimized backup (blocking)."""
    fd = os.open(received, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            unpacking.expect_layout(fd, (("container", "dir", True), ("container/rootfs", "dir", True),
                                         ("container/backup.yaml", "file", False)), f"{_WHAT} container.bin")
        except ImageFormatError as e:
            raise errors.BadRequest(str(e))
        return _checked_backup_yaml(_load_yaml(fd, "container/backup.yaml") or {})
    finally:
        os.close(fd)


def _lexists(dir_fd, path):
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _snapshot_streams(snapshots):
    entries = [("backup/snapshots", "dir", True)] if snapshots else []
    return entries + [(f"backup/snapshots/{name}.bin", "file", True) for name in snapshots]


def _snapshot_dirs(snapshots):
    entries = [("backup/snapshots", "dir", True)] if snapshots else []
    for name in snapshots:
        entries += [(f"backup/snapshots/{name}", "dir", True), (f"backup/snapshots/{name}/rootfs", "dir", True)]
    return entries


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


def _load_yaml(dir_fd, path):
    """The map in the small file `path` below `dir_fd` (None if absent); BadRequest if it is none."""
    import yaml  # loaded on first use: the idle daemon does without it

    try:
        raw = unpacking.read_beneath(dir_fd, path)
    except FileNotFoundError:
        return None
    except ImageFormatError as e:
        raise errors.BadRequest(f"Invalid {_WHAT}: {e}")
    try:
        doc = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        raise errors.BadRequest(f"Invalid {_WHAT}: {path} does not parse: {e}")
    if not isinstance(doc, dict):
        raise errors.BadRequest(f"Invalid {_WHAT}: {path} is not a map")
    return doc


def _replace_file(directory, name, data):
    """Write `name` in `directory`, never through what an image or backup put there.

    A symlink, fifo or device of that name is removed, not opened: an imported
    `backup.yaml -> /etc/shadow` must not turn an export into a write to the host.
    """
    dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_NOCTTY | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "wb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EEXIST, "not a regular file", os.path.join(directory, name))
        f.write(data)


def _remove(*paths):
    for path in paths:
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
