# -*- test-case-name: tests.integration.test_storage -*-
"""`/1.0/storage-pools`: list, create, get, put, patch, delete, resources.

The `target` query parameter (a cluster member) is accepted everywhere; on a
single server every pool lives on the one member, `none`. In a cluster `target` defines
a pool on one member, or shows that member's view of it (lxdtx.cluster.pools).
"""

from lxdtx import errors
from lxdtx.bodies import STRING, config, fields, one_of_strings
from lxdtx.cluster import onall
from lxdtx.cluster import pools as cluster_pools
from lxdtx.resources.common import string
from lxdtx.response import SyncResponse, created, empty, etag_of
from lxdtx.router import Action, Endpoint
from lxdtx.storage.load import DRIVERS
from lxdtx.storage.pools import POOL

# A pool's name is a directory name (of its default source) and a path segment of its URL.
MAX_NAME = 255


def _etag(doc):
    return [doc.name, doc.value["driver"], doc.value["config"]]

POOL_BODY = dict(description=STRING, config=config("storage-pool"))


async def render_pool(daemon, name, value, target=""):
    """A pool as the API shows it; in a cluster the shared config, or with `target` that
    member's (its own keys included)."""
    config, status, locations = value["config"], "Created", ["none"]
    if onall.clustered(daemon):
        status, locations = onall.status(value), cluster_pools.locations(daemon, value)
        if target:
            config = cluster_pools.member_view(daemon, value, daemon.cluster.get(target))
    return {"name": name, "driver": value["driver"], "description": value.get("description", ""),
            "config": config, "used_by": await daemon.pools.used_by(name), "status": status,
            "locations": locations}


async def list_pools(req):
    daemon = req.daemon
    if req.recursion:
        target = req.query.get("target", "") if onall.clustered(daemon) else ""
        return SyncResponse([await render_pool(daemon, d.name, d.value, target) for d in daemon.store.list(POOL)])
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
    target = req.query.get("target", "")
    if onall.clustered(req.daemon):
        if target:
            await cluster_pools.define(req.daemon, name, driver, _config(body), string(body, "description"), target)
            return created(f"/1.0/storage-pools/{name}")
        await cluster_pools.create(req.daemon, name, driver, _config(body), string(body, "description"))
        req.daemon.events.lifecycle("storage-pool-created", f"/1.0/storage-pools/{name}")
        return created(f"/1.0/storage-pools/{name}")
    await req.daemon.pools.create(name, driver, _config(body), string(body, "description"))
    req.daemon.events.lifecycle("storage-pool-created", f"/1.0/storage-pools/{name}")
    return created(f"/1.0/storage-pools/{name}")


async def get_pool(req):
    doc = req.daemon.pools.get(req.params["name"])
    target = req.query.get("target", "") if onall.clustered(req.daemon) else ""
    return SyncResponse(await render_pool(req.daemon, doc.name, doc.value, target), etag=etag_of(_etag(doc)))


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


# -- member to member (lxdtx.cluster.pools) ---------------------------------------------------
async def create_local(req):
    await onall.member_body(req)
    coordinator = req.daemon.cluster.peers.caller(req).value["id"]
    return SyncResponse(await cluster_pools.create_local(req.daemon, req.params["name"], coordinator))


async def update_local(req):
    body = await onall.member_body(req)
    await cluster_pools.update_local(req.daemon, req.params["name"], body.get("config"))
    return empty()


ENDPOINTS = [
    Endpoint("/1.0/storage-pools", get=list_pools,
             post=Action(create_pool, body=fields(name=STRING, driver=one_of_strings(*DRIVERS), **POOL_BODY))),
    Endpoint("/1.0/storage-pools/{name}", get=get_pool, put=Action(put_pool, body=fields(**POOL_BODY)),
             patch=Action(patch_pool, body=fields(**POOL_BODY)), delete=delete_pool),
    Endpoint("/1.0/storage-pools/{name}/resources", get=get_resources),
    Endpoint("/internal/cluster/storage-pools/{name}/create-local", post=create_local),
    Endpoint("/internal/cluster/storage-pools/{name}/update-local", post=update_local),
]
