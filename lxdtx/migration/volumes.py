# -*- test-case-name: tests.integration.test_migration -*-
"""Custom storage volumes between daemons (`storage_api_remote_volume_handling`): `lxc storage
volume copy` and `move` to another remote.

The same protocol as containers with `control` and `fs` only: the headers (rsync and its
features), one rsync session of the volume, the sink's outcome. The sink makes the volume
under an intent, so a failure or a kill leaves none behind.
"""

from lxdtx import errors, faults
from lxdtx.migration import messages as m
from lxdtx.migration import protocol, rsyncstream, sockets
from lxdtx.migration.progress import Progress
from lxdtx.state import ABSENT

RECORDED = faults.point("volume.migrate.recorded")


def _resources(pool, name):
    return {"storage_volumes": [f"/1.0/storage-pools/{pool}/volumes/custom/{name}"]}


def start_source(daemon, pool, name, target=None):
    """The operation that sends custom volume `name` (`POST .../volumes/custom/<name>` with
    `migration: true`): the sink dials it, or with `target` (push mode) it dials the sink's."""
    daemon.pools.custom.get(pool, name)
    peer = sockets.peer_of(target, "target") if target else None

    async def work(channels, op):
        await _send(daemon, pool, name, channels, op)

    return protocol.operation(daemon, "Migrating storage volume", _resources(pool, name), peer, work)


async def _send(daemon, pool, name, channels, op):
    control, fs = channels["control"], channels["fs"]
    driver = daemon.pools.driver(pool)
    socket_dir = daemon.path("migration")
    header = m.MigrationHeader(fs=m.RSYNC)
    m.set_features(header, m.FEATURES)
    control.send(header.SerializeToString())
    features = m.features_of(m.decode(m.MigrationHeader, await control.next_message()))
    await driver.mount_volume("custom", name)
    with Progress(daemon.reactor, op, name, lambda: fs.bytes_sent):
        await protocol.send(daemon.reactor, control, rsyncstream.send(
            daemon.reactor, fs, driver.mount_path("custom", name), f"volume {name}", socket_dir, features,
            driver.bwlimit()), "volume")


def create_sink(daemon, pool, name, source, config, description):
    """The operation that receives custom volume `name` (`POST .../volumes/custom` with
    `source.type: migration`): it dials the source's operation `source` (pull mode), or with
    `source` None the source dials it (push mode)."""
    peer = sockets.peer_of(source, "source") if source is not None else None
    daemon.pools.custom.check_new(pool, name, config)

    async def work(channels, op):
        await _receive(daemon, pool, name, config, description, channels, op)

    return protocol.operation(daemon, "Creating storage volume", _resources(pool, name), peer, work)


async def _receive(daemon, pool, name, config, description, channels, op):
    control, fs = channels["control"], channels["fs"]
    pools = daemon.pools
    try:
        header = m.decode(m.MigrationHeader, await control.next_message())
        reply = m.MigrationHeader(fs=m.RSYNC)
        features = protocol.answer_features(header, reply)
        control.send(reply.SerializeToString())
        pools.custom.check_new(pool, name, config)
        driver = pools.driver(pool)
        value = {"config": dict(config), "description": description or ""}
        with Progress(daemon.reactor, op, name, lambda: fs.bytes_received):
            await protocol.receive(daemon.reactor, control, _make(daemon, pool, name, driver, value, fs, features))
        control.send(m.MigrationControl(success=True).SerializeToString())
    except Exception as e:
        control.send(m.MigrationControl(success=False, message=errors.describe(e)).SerializeToString())
        raise
    daemon.events.lifecycle("storage-volume-created", f"/1.0/storage-pools/{pool}/volumes/custom/{name}")


async def _make(daemon, pool, name, driver, value, fs, features):
    """The volume, filled from the one session, and its row: under an intent."""
    async with daemon.journal.begin("volume.migrate", f"{pool}/{name}") as intent:
        await intent.will("volume", pool=pool, name=name)
        RECORDED()
        await driver.create_volume("custom", name, value["config"])
        await driver.mount_volume("custom", name)
        await rsyncstream.receive(daemon.reactor, fs, driver.mount_path("custom", name), f"volume {name}", features)
        await daemon.store.commit([daemon.pools.volume_changes(pool, "custom", name, value, expect=ABSENT),
                                   intent.done()])
