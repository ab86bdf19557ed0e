# -*- test-case-name: tests.integration.test_migration -*-
"""Custom storage volumes between daemons (`storage_api_remote_volume_handling`): `lxc storage
volume copy` and `move` to another remote.

The same protocol as containers with `control` and `fs` only: the headers (rsync and its
features), one rsync session of the volume, the sink's outcome. The sink makes the volume
under an intent, so a failure or a kill leaves none behind.
"""

import os

from twisted.internet import threads

from lxdtx import errors, faults
from lxdtx.migration import messages as m
from lxdtx.migration import rsyncstream, sockets
from lxdtx.migration.channel import ChannelLost
from lxdtx.migration.progress import Progress
from lxdtx.migration.sink import WANTED
from lxdtx.migration.source import CONNECT_WAIT, outcome_soon
from lxdtx.operations import WEBSOCKET
from lxdtx.response import AsyncResponse
from lxdtx.state import ABSENT

RECORDED = faults.point("volume.migrate.recorded")


def _resources(pool, name):
    return {"storage_volumes": [f"/1.0/storage-pools/{pool}/volumes/custom/{name}"]}


def _operation(daemon, description, resources, peer, work):
    """A task dialling the peer's websockets, or a websocket operation the peer dials."""
    if peer is not None:
        async def dialled(op):
            channels = await sockets.dial_all(daemon, peer, ("control", "fs"))
            try:
                await work(channels, op)
            finally:
                for channel in channels.values():
                    channel.close()
            return {}

        return daemon.operations.start(description, resources=resources, run=dialled)
    served = sockets.ServedChannels(["control", "fs"])

    async def serving(op):
        try:
            await served.wait(daemon.reactor, CONNECT_WAIT)
            await work(served.channels, op)
        finally:
            served.close()
        return {}

    async def connect(op, request, secret):
        return served.connect(daemon.websockets, secret)

    op = daemon.operations.create(description, cls=WEBSOCKET, resources=resources, metadata=served.metadata(),
                                  run=serving, connect=connect)
    op.start()
    return op


def start_source(req, pool, name, body):
    """`POST .../volumes/custom/<name>` with `migration: true`."""
    daemon = req.daemon
    daemon.pools.custom.get(pool, name)
    target = body.get("target")
    peer = sockets.peer_of(target, "target") if target else None

    async def work(channels, op):
        await _send(daemon, pool, name, channels, op)

    return AsyncResponse(_operation(daemon, "Migrating storage volume", _resources(pool, name), peer, work))


async def _send(daemon, pool, name, channels, op):
    control, fs = channels["control"], channels["fs"]
    driver = daemon.pools.driver(pool)
    socket_dir = daemon.path("migration")
    await threads.deferToThread(os.makedirs, socket_dir, 0o700, True)
    header = m.MigrationHeader(fs=m.RSYNC)
    m.set_features(header, m.FEATURES)
    control.send(header.SerializeToString())
    features = m.features_of(m.decode(m.MigrationHeader, await control.next_message()))
    outcome = control.next_message()
    try:
        await driver.mount_volume("custom", name)
        with Progress(daemon.reactor, op, name, lambda: fs.bytes_sent):
            await rsyncstream.send(daemon.reactor, fs, driver.mount_path("custom", name), f"volume {name}",
                                   socket_dir, features, driver.bwlimit())
    except (rsyncstream.RsyncFailed, ChannelLost) as e:
        said = await outcome_soon(outcome, daemon.reactor)
        if said is not None and not said.success:
            raise errors.InternalError(said.message or str(e)) from None
        control.send(m.MigrationControl(success=False, message=str(e)).SerializeToString())
        raise errors.InternalError(str(e)) from None
    try:
        result = m.decode(m.MigrationControl, await outcome)
    except ChannelLost:
        raise errors.InternalError("The target closed the migration without saying how it ended") from None
    if not result.success:
        raise errors.InternalError(result.message or "The target failed to receive the volume")


def create_sink(req, pool, name, source, config, description):
    """`POST .../volumes/custom` with `source.type: migration` (pull or push mode)."""
    daemon = req.daemon
    mode = source.get("mode") or "pull"
    if mode not in ("pull", "push"):
        raise errors.BadRequest(f"Invalid value for \"source.mode\": {mode}")
    peer = sockets.peer_of(source, "source") if mode == "pull" else None
    daemon.pools.custom.check_new(pool, name, config)

    async def work(channels, op):
        await _receive(daemon, pool, name, config, description, channels, op)

    return AsyncResponse(_operation(daemon, "Creating storage volume", _resources(pool, name), peer, work))


async def _receive(daemon, pool, name, config, description, channels, op):
    control, fs = channels["control"], channels["fs"]
    pools = daemon.pools
    try:
        header = m.decode(m.MigrationHeader, await control.next_message())
        reply = m.MigrationHeader(fs=m.RSYNC)
        offered = m.features_of(header)
        if "bidirectional" in offered:
            features = offered & WANTED
            m.set_features(reply, features)
        else:
            features = set(offered)
        control.send(reply.SerializeToString())
        outcome = control.next_message()
        pools.custom.check_new(pool, name, config)
        driver = pools.driver(pool)
        value = {"config": dict(config), "description": description or ""}
        try:
            async with daemon.journal.begin("volume.migrate", f"{pool}/{name}") as intent:
                await intent.will("volume", pool=pool, name=name)
                RECORDED()
                await driver.create_volume("custom", name, config)
                await driver.mount_volume("custom", name)
                with Progress(daemon.reactor, op, name, lambda: fs.bytes_received):
                    await rsyncstream.receive(daemon.reactor, fs, driver.mount_path("custom", name),
                                              f"volume {name}", features)
                await daemon.store.commit([pools.volume_changes(pool, "custom", name, value, expect=ABSENT),
                                           intent.done()])
        except (ChannelLost, rsyncstream.RsyncFailed) as e:
            said = await outcome_soon(outcome, daemon.reactor)
            if said is not None and not said.success and said.message:
                raise errors.InternalError(f"The source failed: {said.message}") from None
            raise errors.InternalError(f"The transfer from the source failed: {e}") from None
        control.send(m.MigrationControl(success=True).SerializeToString())
    except Exception as e:
        control.send(m.MigrationControl(success=False, message=errors.describe(e)).SerializeToString())
        raise
    daemon.events.lifecycle("storage-volume-created", f"/1.0/storage-pools/{pool}/volumes/custom/{name}")
