# -*- test-case-name: tests.integration.test_migration -*-
"""The sink of a container migration in pull mode: `POST /1.0/containers` with
`source.type: migration` (read by lxdtx.resources.migrations) dials the source's websockets
and receives the container.

The container is made as a copy is (`lxdtx.instance.copy`): an intent recorded first,
volumes filled, then its rows and the end of the intent in one commit, so a failure
or a kill at any point leaves nothing. Snapshots arrive oldest first: on a dir pool
each straight into its own fresh directory, elsewhere into the container volume,
which is then snapshotted. The files keep the source's ownership and
`volatile.last_state.idmap` says which, so the first start shifts them if this
host's map differs.
"""

import copy
import os

from twisted.internet import threads

from lxdtx import errors, faults, timeutil
from lxdtx.config import container as container_config
from lxdtx.instance import devices as devices_rt
from lxdtx.instance import model
from lxdtx.instance.copy import link_volume
from lxdtx.migration import btrfsmigration, live, protocol, rsyncstream, sockets
from lxdtx.migration import messages as m
from lxdtx.migration.progress import Progress
from lxdtx.operations import container_resources
from lxdtx.state import ABSENT, Put

RECORDED = faults.point("container.migrate.recorded")
RECEIVED = faults.point("container.migrate.received")

# Volatile keys of the source that mean nothing here (its runtime state, its id map choice).
_DROPPED_VOLATILE = ("volatile.last_state.power", "volatile.idmap.current", "volatile.idmap.next")


async def create(daemon, name, params, source, live_wanted=False):
    """Reserve the name and receive container `name` in an operation: a task that dials the
    source's operation `source` (pull mode), or with `source` None a websocket operation the
    source (push mode) or the client (relay mode) dials. `params`: architecture, config
    (the source's, its volatile runtime keys dropped here), devices, profiles, ephemeral,
    description."""
    instances = daemon.instances
    peer = sockets.peer_of(source, "source") if source is not None else None
    params = dict(params, config=_carried(params["config"]), devices=copy.deepcopy(params["devices"]))
    if params["architecture"]:
        model.check_architecture(params["architecture"])
    params["pool"] = (await instances.validate_new(config=params["config"], devices=params["devices"],
                                                   profiles=params["profiles"]))["pool"]
    if live_wanted:
        await live.sink_preflight(instances, params["config"], params["devices"], params["profiles"],
                                  peer["secrets"] if peer else None)
    instances.reserve(name)

    async def work(channels, op):
        await _receive(daemon, name, params, channels, op)

    try:
        return protocol.operation(daemon, "Creating container", container_resources(name), peer, work,
                                  finished=lambda: instances.release(name),
                                  names=live.CHANNELS if live_wanted else protocol.CHANNELS)
    except BaseException:
        instances.release(name)
        raise


async def _receive(daemon, name, params, channels, op):
    control, fs = channels["control"], channels["fs"]
    try:
        header = m.decode(m.MigrationHeader, await control.next_message())
        going_live = header.HasField("criu") and header.criu != m.CRIU_NONE
        if going_live and (header.criu != m.CRIU_RSYNC or "criu" not in channels):
            raise errors.BadRequest(live.PREFIX + "The source offered it without asking this server for it")
        # A live migration's memory dump and its last changes travel over rsync.
        reply = m.MigrationHeader(fs=m.RSYNC if going_live else
                                  btrfsmigration.answer(header, daemon.pools.driver(params["pool"])))
        if header.HasField("criu"):
            reply.criu = m.CRIU_RSYNC if going_live else m.CRIU_NONE
        if going_live:
            live.answer_pre_copy(header, reply)
        features = protocol.answer_features(header, reply)
        control.send(reply.SerializeToString())
        with Progress(daemon.reactor, op, name, lambda: fs.bytes_received):
            await protocol.receive(daemon.reactor, control, _make(daemon, name, params, header, channels, features,
                                                                  going_live, reply.fs == m.BTRFS))
        control.send(m.MigrationControl(success=True).SerializeToString())
    except Exception as e:
        control.send(m.MigrationControl(success=False, message=errors.describe(e)).SerializeToString())
        raise


def _carried(config):
    """The source's config as this server keeps it: its runtime state and the volatile keys
    of newer servers (cloud-init's instance id, say) stay behind; every other key is checked."""
    return {key: value for key, value in config.items()
            if key not in _DROPPED_VOLATILE
            and not (key.startswith("volatile.") and container_config.SCHEMA.lookup(key) is None)}


def _snapshot_value(message, container_value, pool):
    return {
        "architecture": m.ARCHITECTURE_NAMES.get(message.architecture, container_value["architecture"]),
        "config": _carried(m.config_map(message.localConfig)), "devices": m.device_map(message.localDevices),
        "profiles": list(message.profiles), "ephemeral": message.ephemeral, "stateful": message.stateful,
        "description": "", "created_at": timeutil.from_timestamp(message.creation_date),
        "last_used_at": timeutil.from_timestamp(message.last_used_date), "pool": pool,
    }


async def _make(daemon, name, params, header, channels, features, going_live=False, btrfs=False):
    instances, pools = daemon.instances, daemon.pools
    fs = channels["fs"]
    async with instances.locks.hold(name, "create"):
        root = await instances.validate_new(config=params["config"], devices=params["devices"],
                                            profiles=params["profiles"])
        pool = root["pool"]
        config = dict(params["config"])
        config["volatile.last_state.idmap"] = m.idmap_json(header.idmap)
        config["volatile.apply_template"] = "copy"
        value = model.new_document(architecture=params["architecture"] or "x86_64", config=config,
                                   devices=params["devices"], profiles=params["profiles"],
                                   ephemeral=params["ephemeral"], description=params["description"], pool=pool,
                                   location=model.here(daemon))
        _, expanded_devices = instances.records.expanded(value)
        for key, item in devices_rt.fill_volatile(config, expanded_devices).items():
            config.setdefault(key, item)
        snapshots = list(header.snapshots)
        if len(snapshots) != len(header.snapshotNames):  # an old sender: names only
            snapshots = [m.Snapshot(name=n, localConfig=m.config_list(config), profiles=params["profiles"],
                                    ephemeral=False, architecture=0, stateful=False,
                                    creation_date=0, last_used_date=0) for n in header.snapshotNames]
        for snapshot in snapshots:
            model.check_snapshot_name(snapshot.name)
        driver = pools.driver(pool)
        size = root.get("size") or ""
        await instances.check_volume_free(pool, name)
        async with daemon.journal.begin("container.migrate", name) as intent:
            await intent.will("container", name=name, pool=pool)
            RECORDED()
            sessions = 0 if going_live else 2 if header.HasField("criu") else 1
            if btrfs:
                await btrfsmigration.receive(daemon, driver, pool, name, snapshots, sessions, fs, intent, size)
            else:
                await _receive_rsync(daemon, driver, name, snapshots, sessions, fs, features, size)
            images = None
            if going_live:
                images = await live.receive(daemon, name, driver.mount_path("container", name), channels, features,
                                            header.HasField("predump") and header.predump)
            RECEIVED()
            await link_volume(instances, name, driver)
            if images is not None:
                await live.restore(instances, name, value, images)
                value["config"]["volatile.last_state.power"] = "RUNNING"
            changes = [Put(model.KIND, name, value, expect=ABSENT),
                       pools.volume_changes(pool, "container", name, {"config": {}, "description": ""},
                                            expect=ABSENT)]
            for snapshot in snapshots:
                full = f"{name}/{snapshot.name}"
                changes += [Put(model.SNAPSHOT_KIND, full, _snapshot_value(snapshot, value, pool), expect=ABSENT),
                            pools.volume_changes(pool, "container", full, {"config": {}, "description": ""},
                                                 expect=ABSENT)]
            try:
                await instances.store.commit(changes + [intent.done()])
            except BaseException:
                if images is not None:  # running without a row: it goes with what the intent undoes
                    await instances.liblxc.stop(name, force=True)
                raise
    instances.events.lifecycle("container-created", f"/1.0/containers/{name}")
    if going_live:
        instances.events.lifecycle("container-started", f"/1.0/containers/{name}")


async def _receive_rsync(daemon, driver, name, snapshots, sessions, fs, features, size):
    """The container volume, and its snapshots before it, from one rsync session each: on a dir
    pool each snapshot straight into its own directory, elsewhere into the container volume,
    which is then snapshotted."""
    reactor = daemon.reactor
    direct = driver.info.name == "dir"
    await driver.create_volume("container", name, {"size": size} if size else {})
    await driver.mount_volume("container", name)
    path = driver.mount_path("container", name)
    for snapshot in snapshots:
        full = f"{name}/{snapshot.name}"
        if direct:
            target = driver.mount_path("container", full)
            await threads.deferToThread(os.makedirs, target, 0o700)
            await rsyncstream.receive(reactor, fs, target, f"snapshot {full}", features)
        else:
            await rsyncstream.receive(reactor, fs, path, f"snapshot {full}", features)
            await driver.create_snapshot(name, snapshot.name)
    for _ in range(sessions):
        await rsyncstream.receive(reactor, fs, path, name, features)
