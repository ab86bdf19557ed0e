# -*- test-case-name: tests.integration.test_cluster_members -*-
"""`lxc move c --target m`: a stopped container goes to another cluster member.

`POST /1.0/containers/NAME?target=M {"name": NAME, "migration": true}` reaches the member
that holds the container (the router forwards it there). As LXD 3.x does for a container
that is not on ceph, a running one is refused ("Container is running") and the target
must be online ("Target node is offline"); the name stays (a rename is a separate step).

The owner serves a migration's websockets (`lxdtx.migration.source`) and asks the target
(`POST /internal/cluster/containers/NAME/move-in`) to dial them. The target receives the
volumes (snapshots first) into its own pool, then commits the container's row with its own
id as `location`, compare-and-swap on the revision the owner saw, with the end of its
intent. That commit is the move: before it the container is the owner's, whole; after it
the target's, and the owner drops its copy. Both sides record an intent whose step,
`settle.container`, looks at the row's `location`: the target's drops what it received
unless the row names it, the owner's drops its copy only once the row names another member.
The owner holds the container's lock throughout, so it can't be started or changed here
meanwhile; a change committed elsewhere fails the compare-and-swap and the move with it.
"""

import json

from lxdtx import errors, faults
from lxdtx.asyncutil import sleep
from lxdtx.device import disk
from lxdtx.instance import model, settle
from lxdtx.instance.copy import link_volume
from lxdtx.migration import messages as m
from lxdtx.migration import protocol, sink, sockets
from lxdtx.migration import source as migration_source
from lxdtx.migration.progress import Progress
from lxdtx.operations import container_resources
from lxdtx.state import Put

MOVE_IN = "/internal/cluster/containers/{}/move-in"
CATCH_UP = 30  # seconds the target's commit may take to reach our mirror of the store
RECEIVED = faults.point("cluster.move.received")  # the target has the volumes, the row is unchanged
MOVED = faults.point("cluster.move.moved")  # the row names the target, the owner's copy is still here


def check(daemon, name, body, target):
    """The target member's document, or 400/404 naming what stands in the way."""
    from lxdtx.cluster.placement import has_pool

    cluster = daemon.cluster
    instances = daemon.instances
    doc = instances.records.get(name)
    member = cluster.get(target)
    if member.value["id"] == cluster.member_id:
        raise errors.BadRequest(f"Container '{name}' is already on cluster member '{target}'")
    if not cluster.online(member):
        raise errors.BadRequest("Target node is offline")
    new_name = body.get("name") or name
    if new_name != name:
        raise errors.BadRequest("A container keeps its name when it moves to another cluster member: "
                                "rename it before or after")
    if body.get("pool"):
        raise errors.BadRequest("A move to another cluster member keeps the container's storage pool")
    pool = doc.value.get("pool", "")
    if not has_pool(daemon.store, member, pool):
        raise errors.BadRequest(f"Storage pool \"{pool}\" is not available on cluster member '{target}'")
    # A custom volume of a local pool is this member's (another may have one of its name):
    # the container would leave it behind, or take the target's.
    _config, devices = instances.records.expanded(doc.value)
    for device in sorted(devices):
        config = devices[device]
        if (config.get("type") == "disk" and config.get("path") != "/" and config.get("pool")
                and config.get("source") and daemon.pools.volume_member(config["pool"], "custom")):
            raise errors.BadRequest(f"Container '{name}' has the custom volume \"{config['source']}\" of the local "
                                    f"storage pool \"{config['pool']}\" attached (device {device}): detach it "
                                    "before it moves to another cluster member")
    if instances.records.status(name) != "Stopped":
        raise errors.BadRequest("Container is running")
    return member


def start(daemon, name, body, target):
    """The operation that moves container `name` to member `target` (`body`: the request's)."""
    member = check(daemon, name, body, target)

    async def run(op):
        await move_out(daemon, name, member, op)

    return daemon.operations.start("Migrating container", resources=container_resources(name), run=run)


# -- the owner ---------------------------------------------------------------------------------
async def move_out(daemon, name, member, op):
    instances = daemon.instances
    async with instances.locks.hold(name, "move"):
        doc = instances.records.get(name)
        if instances.records.status(name) != "Stopped":
            raise errors.BadRequest("Container is running")
        pool = doc.value["pool"]
        async with daemon.journal.begin("container.move-out", name, finish=True) as cleanup:
            await cleanup.will("container", name=name, pool=pool)
            failure = None
            try:
                await _hand_over(daemon, name, doc, member, op)
                # The target committed: our mirror of the store hears of it a moment later.
                await _until(daemon, lambda: _located(daemon, name, member), CATCH_UP)
            except Exception as e:
                failure = e
            # The row decides, not how the conversation with the target ended.
            if not _located(daemon, name, member):
                raise failure or errors.InternalError(f"Cluster member '{member.name}' did not take the container")
            MOVED()
            await settle.container(instances, name, pool)  # our copy, which no row owns now
        instances.runtime.forget(name)
    instances.events.lifecycle("container-updated", f"/1.0/containers/{name}")


def _located(daemon, name, member):
    now = daemon.instances.store.value(model.KIND, name)
    return now is not None and now.get("location") == member.value["id"]


async def _until(daemon, predicate, timeout, interval=0.05):
    deadline = daemon.reactor.seconds() + timeout
    while not predicate() and daemon.reactor.seconds() < deadline:
        await sleep(interval, daemon.reactor)


async def _hand_over(daemon, name, doc, member, op):
    """Serve the migration, have the target pull it and wait for the target's outcome."""
    cluster = daemon.cluster

    async def work(channels, served_op):
        await migration_source.send_held(daemon, name, None, channels, False, served_op)

    served = protocol.operation(daemon, "Migrating container", container_resources(name), None, work)
    own = cluster.get(cluster.name)
    request = {"revision": doc.revision, "store_revision": daemon.store.revision, "source": {
        "operation": own.value["url"] + served.url, "certificate": daemon.cert_pem,
        "secrets": dict(served.metadata)}}
    try:
        code, _headers, content = await cluster.peers.call(member, "POST", MOVE_IN.format(name),
                                                           json.dumps(request).encode(),
                                                           {"content-type": "application/json"})
        answer = json.loads(content)
        if code != 202:
            raise errors.BadRequest(f"Cluster member '{member.name}' refused the container: "
                                    f"{answer.get('error') or code}")
        remote_id = answer["operation"].rstrip("/").split("/")[-1]
        code, _headers, content = await cluster.peers.call(member, "GET", f"/1.0/operations/{remote_id}/wait",
                                                           timeout=None)
        outcome = json.loads(content).get("metadata") or {}
        if outcome.get("status") != "Success":
            raise errors.InternalError(f"Cluster member '{member.name}' failed to take the container: "
                                       f"{outcome.get('err') or outcome.get('status')}")
        await served.finished
        if served.err:
            raise errors.InternalError(served.err)
    finally:
        if not served.final:
            served.fail("The move to another cluster member ended")


# -- the target --------------------------------------------------------------------------------
def start_move_in(daemon, name, body):
    """`POST /internal/cluster/containers/NAME/move-in` on the target: a task that pulls."""
    doc = daemon.instances.records.get(name)
    if doc.revision != body.get("revision"):
        raise errors.BadRequest(f"Container '{name}' changed since the move began")
    if model.is_local(daemon, doc.value):
        raise errors.BadRequest(f"Container '{name}' is already on this member")
    peer = sockets.peer_of(body.get("source"), "source")
    daemon.pools.driver(doc.value["pool"])  # 404 if the pool is not here

    async def work(channels, op):
        await _receive(daemon, name, doc, channels, op)

    return protocol.operation(daemon, "Receiving container", container_resources(name), peer, work)


async def _receive(daemon, name, doc, channels, op):
    control, fs = channels["control"], channels["fs"]
    try:
        header = m.decode(m.MigrationHeader, await control.next_message())
        reply = m.MigrationHeader(fs=m.RSYNC)  # whatever the pools: one path, rsync's
        if header.HasField("criu"):
            raise errors.BadRequest("Container is running")
        features = protocol.answer_features(header, reply)
        control.send(reply.SerializeToString())
        with Progress(daemon.reactor, op, name, lambda: fs.bytes_received):
            await protocol.receive(daemon.reactor, control, _take(daemon, name, doc, header, fs, features))
        control.send(m.MigrationControl(success=True).SerializeToString())
    except Exception as e:
        control.send(m.MigrationControl(success=False, message=errors.describe(e)).SerializeToString())
        raise


async def _take(daemon, name, doc, header, fs, features):
    instances = daemon.instances
    pool = doc.value["pool"]
    driver = daemon.pools.driver(pool)
    snapshots = list(header.snapshots)
    expected = sorted(d.name.split("/", 1)[1] for d in instances.snapshots.documents(name))
    if sorted(s.name for s in snapshots) != expected:
        raise errors.BadRequest(f"The source sent snapshots {[s.name for s in snapshots]}, "
                                f"the cluster has {expected}")
    async with instances.locks.hold(name, "move"):
        await instances.check_volume_free(pool, name)
        async with daemon.journal.begin("container.move-in", name) as intent:
            await intent.will("container", name=name, pool=pool)
            _, root = disk.root_device(instances.records.expanded(doc.value)[1])
            size = (root or {}).get("size") or ""
            await sink._receive_rsync(daemon, driver, name, snapshots, 1, fs, features, size)
            await link_volume(instances, name, driver)
            RECEIVED()
            value = dict(doc.value, location=daemon.cluster.member_id)
            await instances.store.commit([Put(model.KIND, name, value, expect=doc.revision), intent.done()])
