# -*- test-case-name: tests.integration.test_migration -*-
"""The source of a container migration in pull mode: `POST /1.0/containers/NAME` with
`migration: true` answers a websocket operation whose secrets the sink dials with.

Once `control` and `fs` are open: the header (rsync, the id map on disk, the
snapshots oldest first unless `container_only`), the sink's header back, one rsync
session per snapshot, one for the container and, for a running container (stateless:
`criu` NONE), one more for what changed meanwhile; then the sink's outcome on
`control` decides the operation's.
"""

import os

from twisted.internet import threads

from lxdtx import errors, timeutil
from lxdtx.migration import messages as m
from lxdtx.migration import rsyncstream, sockets
from lxdtx.migration.channel import ChannelLost
from lxdtx.migration.progress import Progress
from lxdtx.operations import WEBSOCKET, container_resources
from lxdtx.response import AsyncResponse

# How long the peer has to dial every websocket after the operation is made.
CONNECT_WAIT = 60
CRIU_MISSING = "Unable to perform container live migration. CRIU isn't installed on the source server."


def start(req, name, body, snapshot=None):
    """`POST /1.0/containers/<name>` (or `.../snapshots/<snapshot>`, which goes as a container
    of its own) with `migration: true`: in pull mode a websocket operation the sink dials;
    with `target` (push mode) a task that dials the sink's operation."""
    daemon = req.daemon
    instances = daemon.instances
    instances.get(name)
    running = snapshot is None and instances.status(name) == "Running"
    # `live` left out means live (the API's legacy default); only a running container goes live.
    if running and body.get("live", True) is not False:
        raise errors.InternalError(CRIU_MISSING)
    container_only = bool(body.get("container_only") or body.get("instance_only"))
    target = body.get("target")
    if target:
        peer = sockets.peer_of(target, "target")

        async def push(op):
            channels = await sockets.dial_all(daemon, peer, ("control", "fs"))
            try:
                await _send(daemon, name, snapshot, channels, container_only, op)
            finally:
                for channel in channels.values():
                    channel.close()
            return {}

        op = daemon.operations.start("Migrating container", resources=container_resources(name), run=push)
        return AsyncResponse(op)
    served = sockets.ServedChannels(["control", "fs"])

    async def run(op):
        try:
            await served.wait(daemon.reactor, CONNECT_WAIT)
            await _send(daemon, name, snapshot, served.channels, container_only, op)
        finally:
            served.close()
        return {}

    async def connect(op, request, secret):
        return served.connect(daemon.websockets, secret)

    op = daemon.operations.create("Migrating container", cls=WEBSOCKET, resources=container_resources(name),
                                  metadata=served.metadata(), run=run, connect=connect)
    op.start()
    return AsyncResponse(op)


def snapshot_message(short_name, value):
    config = value.get("config", {})
    return m.Snapshot(
        name=short_name, localConfig=m.config_list(config), profiles=value.get("profiles", []),
        ephemeral=bool(value.get("ephemeral")), localDevices=m.device_list(value.get("devices", {})),
        architecture=m.ARCHITECTURES.get(value.get("architecture", ""), 0), stateful=bool(value.get("stateful")),
        creation_date=int(timeutil.parse(value.get("created_at") or timeutil.EPOCH).timestamp()),
        last_used_date=int(timeutil.parse(value.get("last_used_at") or timeutil.EPOCH).timestamp()))


async def _send(daemon, name, snapshot_name, channels, container_only, op):
    reactor = daemon.reactor
    control, fs = channels["control"], channels["fs"]
    instances = daemon.instances
    socket_dir = daemon.path("migration")
    await threads.deferToThread(os.makedirs, socket_dir, 0o700, True)
    async with instances.locks.hold(name, "migrate"):
        doc = instances.get(name)
        driver = daemon.pools.driver(doc.value["pool"])
        if snapshot_name is None:
            volume, value = name, doc.value
            snapshots = [] if container_only else instances.snapshots.documents(name)
            running = instances.status(name) == "Running"
        else:
            volume = f"{name}/{snapshot_name}"
            value, snapshots, running = instances.snapshots.get(name, snapshot_name).value, [], False
        header = m.MigrationHeader(fs=m.RSYNC)
        m.set_features(header, m.FEATURES)
        header.idmap.extend(m.idmap_entries(value.get("config", {}).get("volatile.last_state.idmap")))
        for snapshot in snapshots:
            short = snapshot.name.split("/", 1)[1]
            header.snapshotNames.append(short)
            header.snapshots.append(snapshot_message(short, snapshot.value))
        if running:
            header.criu = m.CRIU_NONE
        control.send(header.SerializeToString())
        features = m.features_of(m.decode(m.MigrationHeader, await control.next_message()))
        outcome = control.next_message()
        try:
            with Progress(reactor, op, name, lambda: fs.bytes_sent):
                await _transfer(reactor, driver, volume, snapshots, running, fs, socket_dir, features)
        except (rsyncstream.RsyncFailed, ChannelLost) as e:
            # The sink's own account of a failure beats ours of the stream it broke.
            message = await outcome_soon(outcome, reactor)
            if message is not None and not message.success:
                raise errors.InternalError(message.message or str(e)) from None
            control.send(m.MigrationControl(success=False, message=str(e)).SerializeToString())
            raise errors.InternalError(str(e)) from None
        try:
            result = m.decode(m.MigrationControl, await outcome)
        except ChannelLost:
            raise errors.InternalError("The target closed the migration without saying how it ended") from None
        if not result.success:
            raise errors.InternalError(result.message or "The target failed to receive the container")


async def _transfer(reactor, driver, name, snapshots, running, fs, socket_dir, features):
    """The rsync sessions: each snapshot, oldest first, then the container volume `name` (a
    snapshot's, when one goes alone), twice if the container runs."""
    bwlimit = driver.bwlimit()
    for snapshot in snapshots:
        full = snapshot.name
        await driver.mount_volume("container", full)
        await rsyncstream.send(reactor, fs, driver.mount_path("container", full), f"snapshot {full}", socket_dir,
                               features, bwlimit)
    await driver.mount_volume("container", name)
    for _ in range(2 if running else 1):
        await rsyncstream.send(reactor, fs, driver.mount_path("container", name), name, socket_dir, features,
                               bwlimit)


async def outcome_soon(outcome, reactor, wait=2):
    """The sink's MigrationControl if it comes within `wait` seconds, else None."""
    try:
        return m.decode(m.MigrationControl, await outcome.addTimeout(wait, reactor))
    except Exception:
        return None
