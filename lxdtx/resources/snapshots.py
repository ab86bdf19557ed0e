# -*- test-case-name: tests.integration.test_storage -*-
"""`/1.0/containers/<c>/snapshots[/<s>]` (and the same under `/1.0/instances`)."""

from lxdtx import errors, names
from lxdtx.bodies import BOOLEAN, STRING, fields
from lxdtx.instance import model
from lxdtx.operations import container_resources
from lxdtx.resources.common import container_endpoint
from lxdtx.response import AsyncResponse, SyncResponse
from lxdtx.router import Action


def _snapshots(req):
    return req.daemon.instances.snapshots


async def list_snapshots(req):
    return SyncResponse(_snapshots(req).list(req.params["name"], req.recursion))


async def create_snapshot(req):
    name = req.params["name"]
    snapshots = _snapshots(req)
    req.daemon.instances.records.get(name)
    body = req.json()
    snapshot = body.get("name")
    if snapshot is None or snapshot == "":
        snapshot = ""  # the next free snap<N>
    else:
        names.check("name", "snapshot", snapshot)
        snapshots.check_new(name, snapshot)
    stateful = bool(body.get("stateful"))
    if stateful:
        await snapshots.check_stateful(name)

    async def run(op):
        await snapshots.create(name, snapshot, stateful=stateful)

    return AsyncResponse(req.daemon.operations.start("Snapshotting container", resources=container_resources(name), run=run))


async def get_snapshot(req):
    name, snapshot = req.params["name"], req.params["snapshot"]
    req.daemon.instances.records.get(name)
    doc = _snapshots(req).get(name, snapshot)
    return SyncResponse(_snapshots(req).render(doc.name, doc.value))


async def post_snapshot(req):
    """Rename (`{"name": new}`); migration of a snapshot comes with migration."""
    name, snapshot = req.params["name"], req.params["snapshot"]
    req.daemon.instances.records.get(name)
    snapshots = _snapshots(req)
    snapshots.get(name, snapshot)
    body = req.json()
    if body.get("migration"):
        from lxdtx.resources.migrations import start_source

        return await start_source(req, name, body, snapshot=snapshot)
    new_name = body.get("name")
    if new_name is None or new_name == "":
        raise errors.BadRequest("Invalid value for \"name\": the new snapshot name is required")
    names.check("name", "snapshot", new_name)
    if req.daemon.store.exists(model.SNAPSHOT_KIND, f"{name}/{new_name}"):
        raise errors.Conflict(f"Name '{new_name}' already in use")

    async def run(op):
        await snapshots.rename(name, snapshot, new_name)

    return AsyncResponse(req.daemon.operations.start("Renaming snapshot", resources=container_resources(name), run=run))


async def delete_snapshot(req):
    name, snapshot = req.params["name"], req.params["snapshot"]
    req.daemon.instances.records.get(name)
    snapshots = _snapshots(req)
    snapshots.get(name, snapshot)

    async def run(op):
        await snapshots.delete(name, snapshot)

    return AsyncResponse(req.daemon.operations.start("Deleting snapshot", resources=container_resources(name), run=run))


ENDPOINTS = [
    container_endpoint("/1.0/containers/{name}/snapshots", get=list_snapshots,
                       post=Action(create_snapshot, body=fields(name=STRING, stateful=BOOLEAN))),
    container_endpoint("/1.0/containers/{name}/snapshots/{snapshot}", get=get_snapshot,
                       post=Action(post_snapshot, body=fields(name=STRING, migration=BOOLEAN, live=BOOLEAN)),
                       delete=delete_snapshot),
]
