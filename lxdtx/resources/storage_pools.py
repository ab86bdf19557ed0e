# -*- test-case-name: tests.integration.test_containers -*-
"""`/1.0/storage-pools`: list, get and create (the full pool and volume API grows here)."""

from lxdtx import errors
from lxdtx.response import SyncResponse, created, etag_of
from lxdtx.router import Endpoint
from lxdtx.storage.pools import POOL


def _render(daemon, name, value):
    used_by = [f"/1.0/containers/{n}" for n in daemon.instances.names()
               if daemon.store.value("container", n, {}).get("pool") == name]
    return {"name": name, "driver": value["driver"], "description": value.get("description", ""),
            "config": value["config"], "used_by": used_by, "status": "Created", "locations": ["none"]}


async def list_pools(req):
    daemon = req.daemon
    if req.recursion:
        return SyncResponse([_render(daemon, d.name, d.value) for d in daemon.store.list(POOL)])
    return SyncResponse([f"/1.0/storage-pools/{n}" for n in daemon.pools.names()])


async def create_pool(req):
    body = req.json()
    name = body.get("name") or ""
    if not isinstance(name, str) or not name or "/" in name:
        raise errors.BadRequest("Invalid storage pool name")
    driver = body.get("driver") or ""
    config = body.get("config") or {}
    if not isinstance(config, dict):
        raise errors.BadRequest("config must be a map")
    await req.daemon.pools.create(name, driver, config, body.get("description") or "")
    return created(f"/1.0/storage-pools/{name}")


async def get_pool(req):
    doc = req.daemon.pools.get(req.params["name"])
    value = doc.value
    return SyncResponse(_render(req.daemon, doc.name, value),
                        etag=etag_of([doc.name, value["driver"], value["config"]]))


ENDPOINTS = [
    Endpoint("/1.0/storage-pools", get=list_pools, post=create_pool),
    Endpoint("/1.0/storage-pools/{name}", get=get_pool),
]
