# -*- test-case-name: tests.integration.test_storage -*-
"""`/1.0/storage-pools`: list, create, get, put, patch, delete, resources.

The `target` query parameter (a cluster member) is accepted everywhere; on a
single server every pool lives on the one member, `none`.
"""

from lxdtx import errors
from lxdtx.resources.common import string
from lxdtx.response import SyncResponse, created, empty, etag_of
from lxdtx.router import Endpoint
from lxdtx.storage.pools import POOL

# A pool's name is a directory name (of its default source) and a path segment of its URL.
MAX_NAME = 255


def _etag(doc):
    return [doc.name, doc.value["driver"], doc.value["config"]]


async def render_pool(daemon, name, value):
    return {"name": name, "driver": value["driver"], "description": value.get("description", ""),
            "config": value["config"], "used_by": await daemon.pools.used_by(name), "status": "Created",
            "locations": ["none"]}


async def list_pools(req):
    daemon = req.daemon
    if req.recursion:
        return SyncResponse([await render_pool(daemon, d.name, d.value) for d in daemon.store.list(POOL)])
    return SyncResponse([f"/1.0/storage-pools/{n}" for n in daemon.pools.names()])


def _config(body):
    config = body.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise errors.BadRequest("Invalid value for \"config\": must be a map")
    return config


async def create_pool(req):
    body = req.json()
    name = string(body, "name")
    if not name:
        raise errors.BadRequest("No name provided")
    if ("/" in name or name in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in name)
            or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME):
        raise errors.BadRequest(f"Invalid storage pool name \"{name}\"")
    driver = string(body, "driver")
    if not driver:
        raise errors.BadRequest("No driver provided")
    await req.daemon.pools.create(name, driver, _config(body), string(body, "description"))
    req.daemon.events.lifecycle("storage-pool-created", f"/1.0/storage-pools/{name}")
    return created(f"/1.0/storage-pools/{name}")


async def get_pool(req):
    doc = req.daemon.pools.get(req.params["name"])
    return SyncResponse(await render_pool(req.daemon, doc.name, doc.value), etag=etag_of(_etag(doc)))


async def put_pool(req):
    name = req.params["name"]
    doc = req.daemon.pools.get(name)
    req.check_etag(_etag(doc))
    body = req.json()
    await req.daemon.pools.update(name, _config(body), string(body, "description"), doc.revision)
    req.daemon.events.lifecycle("storage-pool-updated", f"/1.0/storage-pools/{name}")
    return empty()


async def patch_pool(req):
    """Merge the given keys over the current config (the reference's PATCH was a no-op by
    accident; pylxd's `patch()` relies on it doing what PATCH says)."""
    name = req.params["name"]
    doc = req.daemon.pools.get(name)
    req.check_etag(_etag(doc))
    body = req.json()
    config = {**doc.value["config"], **_config(body)}
    description = string(body, "description") if "description" in body else doc.value.get("description", "")
    await req.daemon.pools.update(name, config, description, doc.revision)
    req.daemon.events.lifecycle("storage-pool-updated", f"/1.0/storage-pools/{name}")
    return empty()


async def delete_pool(req):
    name = req.params["name"]
    await req.daemon.pools.delete(name)
    req.daemon.events.lifecycle("storage-pool-deleted", f"/1.0/storage-pools/{name}")
    return empty()


async def get_resources(req):
    name = req.params["name"]
    req.daemon.pools.get(name)
    usage = await req.daemon.pools.usage(name)
    if not usage["space"].get("used"):
        usage["space"].pop("used", None)
    return SyncResponse(usage)


ENDPOINTS = [
    Endpoint("/1.0/storage-pools", get=list_pools, post=create_pool),
    Endpoint("/1.0/storage-pools/{name}", get=get_pool, put=put_pool, patch=patch_pool, delete=delete_pool),
    Endpoint("/1.0/storage-pools/{name}/resources", get=get_resources),
]
