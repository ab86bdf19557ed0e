# -*- test-case-name: tests.integration.test_migration_btrfs -*-
"""Containers between two btrfs pools: `btrfs send` streams instead of rsync sessions.

The source offers BTRFS (`MigrationFSType`) when its pool can send subvolumes; the sink
answers BTRFS only when its own pool can receive them, else RSYNC, and the source then
falls back to rsync. The streams (`btrfsstream`), in LXD's order: each snapshot, oldest
first, incremental from the one before; then a read-only snapshot of the container (named
`.migration-send`, as LXD's sink looks for), incremental from the newest snapshot; for a
running container one more (`.root`), incremental from that first one.

Both ends work in a staging subvolume under the pool's `.migration` directory, recorded in
the journal (step `btrfs-staging`) before it is made, so a failure or a kill at any point
leaves nothing of it: the source keeps its read-only views there; the sink receives there
and puts a snapshot of each subvolume in place only once its stream is complete (read-only
for a snapshot, writable for the container). The received subvolumes stay in staging to the
end: a read-only subvolume cannot move to another directory, and each incremental stream
finds its parent by the received UUID. The sink receives them all into one directory of
staging (`r`), to which `btrfs receive` is confined, so each finds its parent there.
"""

import os
import secrets

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import faults
from lxdtx.migration import btrfsstream
from lxdtx.migration import messages as m
from lxdtx.storage import btrfs_stream

# A sink killed with a snapshot in its place and the container's stream in staging.
RECEIVED_ONE = faults.point("btrfs.migrate.received-one")

log = Logger()
STAGING = ".migration"
STEP = "btrfs-staging"
# What the container's streams are called, as LXD names them.
_FIRST, _FINAL = ".migration-send", ".root"


def usable(driver):
    return bool(getattr(driver.info, "send_receive", False))


def offer(driver):
    """The MigrationFSType a source on `driver`'s pool offers."""
    return m.BTRFS if usable(driver) else m.RSYNC


def answer(header, driver):
    """The MigrationFSType a sink on `driver`'s pool answers to the source's `header`."""
    return m.BTRFS if header.fs == m.BTRFS and usable(driver) else m.RSYNC


def settle_steps(daemon):
    """{journal step kind: its handler}: staging subvolumes left by an interrupted migration."""

    async def settle(pool, path):
        if not daemon.store.exists("pool", pool):
            return  # the pool went, and its staging with it
        driver = daemon.pools.driver(pool)
        if os.path.dirname(path) == os.path.join(driver.mount_point, STAGING):
            await driver.delete_subvolume(path)

    return {STEP: settle}


async def _staging(intent, driver, pool):
    """A fresh staging subvolume, recorded in `intent` before it exists."""
    path = os.path.join(driver.mount_point, STAGING, secrets.token_hex(8))
    await intent.will(STEP, pool=pool, path=path)
    await driver.create_subvolume(path)
    return path


async def _view(driver, path, staging, slot, basename=None):
    """A read-only snapshot of `path` at `staging/slot/basename` (the base name travels)."""
    target = os.path.join(staging, slot, basename or os.path.basename(path))
    await driver.snapshot_subvolume(path, target, readonly=True)
    return target


async def send(daemon, driver, pool, volume, snapshots, running, fs):
    """Source side: the streams of container volume `volume` (a snapshot's `c/s`, when one goes
    as a container of its own) and of `snapshots` (documents, oldest first)."""
    reactor = daemon.reactor
    log.info("Sending container {name} as btrfs send streams", name=volume)
    async with daemon.journal.begin("container.migrate.send", volume) as intent:
        staging = await _staging(intent, driver, pool)
        try:
            parent = None
            for index, snapshot in enumerate(snapshots):
                path = driver.mount_path("container", snapshot.name)
                if not await driver.is_readonly(path):  # one that came from another pool, say
                    path = await _view(driver, path, staging, f"s{index}")
                await btrfsstream.send(reactor, fs, path, f"snapshot {snapshot.name}", parent)
                parent = path
            first = await _view(driver, driver.mount_path("container", volume), staging, "c0", _FIRST)
            await btrfsstream.send(reactor, fs, first, volume, parent)
            if running:
                final = await _view(driver, driver.mount_path("container", volume), staging, "c1", _FINAL)
                await btrfsstream.send(reactor, fs, final, volume, first)
        finally:
            await driver.delete_subvolume(staging)


class _Chain:
    """What the next stream of one migration must be: relative to the one before it (none for
    the first), cloning only from the streams so far, under a name not used before; and where
    each arrived."""

    def __init__(self, directory):
        self.directory = directory
        self.parent, self.uuids, self.names = None, [], set()

    def checker(self):
        return btrfs_stream.Checker(parent=self.parent, chain=self.uuids, taken=self.names)

    async def receive(self, reactor, fs, what):
        stream = await btrfsstream.receive(reactor, fs, self.directory, what, self.checker())
        self.parent = stream.uuid
        self.uuids.append(stream.uuid)
        self.names.add(stream.name)
        got = os.path.join(self.directory, stream.name)
        if not await threads.deferToThread(os.path.isdir, got):
            raise btrfsstream.BtrfsFailed(f"btrfs receive of {what} left no subvolume")
        return got


async def receive(daemon, driver, pool, name, snapshots, sessions, fs, intent, size=""):
    """Sink side, inside the intent that made the container's (`container` step): receive the
    snapshots (Snapshot messages) and `sessions` streams of the container into staging, each
    checked before `btrfs receive` reads it (btrfs_stream: their parents and clone sources are
    the streams before them in this migration), and move them to their places in the pool."""
    reactor = daemon.reactor
    log.info("Receiving container {name} as btrfs send streams", name=name)
    staging = await _staging(intent, driver, pool)
    chain = _Chain(os.path.join(staging, "r"))
    await threads.deferToThread(os.mkdir, chain.directory, 0o700)
    for snapshot in snapshots:
        full = f"{name}/{snapshot.name}"
        got = await chain.receive(reactor, fs, f"snapshot {full}")
        target = driver.mount_path("container", full)
        await threads.deferToThread(os.makedirs, os.path.dirname(target), 0o711, True)
        await driver.snapshot_subvolume(got, target, readonly=True)
        RECEIVED_ONE()
    got = None
    for _ in range(sessions):
        got = await chain.receive(reactor, fs, name)
    path = driver.mount_path("container", name)
    await driver.snapshot_subvolume(got, path, readonly=False)
    await threads.deferToThread(os.chmod, path, 0o711)
    if size:
        await driver.set_quota("container", name, size)
    await driver.delete_subvolume(staging)
