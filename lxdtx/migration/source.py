# -*- test-case-name: tests.integration.test_migration -*-
"""The source of a container migration in pull mode: `POST /1.0/containers/NAME` with
`migration: true` (read by lxdtx.resources.migrations) answers a websocket operation whose
secrets the sink dials with.

Once `control` and `fs` are open: the header (rsync, the id map on disk, the
snapshots oldest first unless `container_only`), the sink's header back, one rsync
session per snapshot, one for the container and, for a running container (stateless:
`criu` NONE), one more for what changed meanwhile; then the sink's outcome on
`control` decides the operation's. A live migration (`criu` CRIU_RSYNC) is
`lxdtx.migration.live`'s.
"""

from lxdtx import timeutil
from lxdtx.migration import btrfsmigration, live, protocol, rsyncstream, sockets
from lxdtx.migration import messages as m
from lxdtx.migration.progress import Progress
from lxdtx.operations import container_resources


async def start(daemon, name, snapshot=None, live_wanted=True, container_only=False, target=None):
    """The operation that sends container `name` (or its snapshot `snapshot`, which goes as a
    container of its own): in pull mode a websocket operation the sink dials; with `target`
    (push mode, the sink's operation) a task that dials it. A running container goes live
    unless `live_wanted` is false."""
    instances = daemon.instances
    instances.records.get(name)
    running = snapshot is None and instances.records.status(name) == "Running"
    going_live = running and live_wanted
    if going_live:
        await live.preflight(instances, name)
    peer = sockets.peer_of(target, "target") if target else None

    async def work(channels, op):
        await _send(daemon, name, snapshot, channels, container_only, op, going_live)

    return protocol.operation(daemon, "Migrating container", container_resources(name), peer, work,
                              names=live.CHANNELS if going_live else protocol.CHANNELS)


def snapshot_message(short_name, value):
    config = value.get("config", {})
    return m.Snapshot(
        name=short_name, localConfig=m.config_list(config), profiles=value.get("profiles", []),
        ephemeral=bool(value.get("ephemeral")), localDevices=m.device_list(value.get("devices", {})),
        architecture=m.ARCHITECTURES.get(value.get("architecture", ""), 0), stateful=bool(value.get("stateful")),
        creation_date=int(timeutil.parse(value.get("created_at") or timeutil.EPOCH).timestamp()),
        last_used_date=int(timeutil.parse(value.get("last_used_at") or timeutil.EPOCH).timestamp()))


async def _send(daemon, name, snapshot_name, channels, container_only, op, going_live=False):
    async with daemon.instances.locks.hold(name, "migrate"):
        await send_held(daemon, name, snapshot_name, channels, container_only, op, going_live)


async def send_held(daemon, name, snapshot_name, channels, container_only, op, going_live=False):
    """The source's side of a migration, by a caller that holds the container's lock."""
    reactor = daemon.reactor
    control, fs = channels["control"], channels["fs"]
    instances = daemon.instances
    socket_dir = daemon.path("migration")
    doc = instances.records.get(name)
    driver = daemon.pools.driver(doc.value["pool"])
    if snapshot_name is None:
        volume, value = name, doc.value
        snapshots = [] if container_only else instances.snapshots.documents(name)
        running = instances.records.status(name) == "Running"
    else:
        volume = f"{name}/{snapshot_name}"
        value, snapshots, running = instances.snapshots.get(name, snapshot_name).value, [], False
    going_live = going_live and running
    # A live migration's memory dump and its last changes travel over rsync.
    header = m.MigrationHeader(fs=m.RSYNC if going_live else btrfsmigration.offer(driver))
    m.set_features(header, m.FEATURES)
    header.idmap.extend(m.idmap_entries(value.get("config", {}).get("volatile.last_state.idmap")))
    for snapshot in snapshots:
        short = snapshot.name.split("/", 1)[1]
        header.snapshotNames.append(short)
        header.snapshots.append(snapshot_message(short, snapshot.value))
    if running:
        header.criu = m.CRIU_RSYNC if going_live else m.CRIU_NONE
    pre_copy = await live.pre_copy(instances, name) if going_live else None
    live.offer_pre_copy(header, pre_copy)
    control.send(header.SerializeToString())
    reply = m.decode(m.MigrationHeader, await control.next_message())
    features = m.features_of(reply)
    if going_live:
        live.check_answer(reply)
        await _send_live(daemon, name, driver, volume, snapshots, channels, socket_dir, features, op,
                         live.agreed_pre_copy(pre_copy, reply))
        return
    if header.fs == m.BTRFS and reply.fs == m.BTRFS:
        transfer = btrfsmigration.send(daemon, driver, doc.value["pool"], volume, snapshots, running, fs)
    else:
        transfer = _transfer(reactor, driver, volume, snapshots, running, fs, socket_dir, features)
    with Progress(reactor, op, name, lambda: fs.bytes_sent):
        await protocol.send(reactor, control, transfer, "container")


async def _send_live(daemon, name, driver, volume, snapshots, channels, socket_dir, features, op, rounds=None):
    """The transfer of a live migration (`lxdtx.migration.live`): the container keeps
    running here unless the target reports its restore done."""
    reactor, control, fs = daemon.reactor, channels["control"], channels["fs"]
    dumped = []

    async def transfer():
        await _transfer(reactor, driver, volume, snapshots, False, fs, socket_dir, features)
        await live.send(daemon, name, driver.mount_path("container", volume), channels, socket_dir, features,
                        driver.bwlimit(), dumped, rounds)

    try:
        with Progress(reactor, op, name, lambda: fs.bytes_sent + channels["criu"].bytes_sent):
            await protocol.send(reactor, control, transfer(), "container")
    except BaseException:
        if dumped:
            await live.resume(daemon.instances, name, dumped[0])
        raise
    finally:
        for directory in dumped:
            await live.remove(directory)
    await daemon.instances.stopped_by_migration(name)


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
