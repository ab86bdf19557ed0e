# -*- test-case-name: tests.integration.test_storage -*-
"""`/1.0/storage-pools/<pool>/volumes[/<type>[/<name>]]`: container, image and custom volumes.

URLs name types in the plural (`containers`, `images`, `custom`) and clients
of newer API levels in the singular; both are accepted, JSON says singular.
Only custom volumes are created, renamed, copied and moved here.
"""

import unicodedata

from lxdtx import errors, names
from lxdtx.bodies import BOOLEAN, MAP_OF_STRINGS, STRING, config, fields, one_of_strings
from lxdtx.cluster.peers import FORWARDED
from lxdtx.resources.common import mapping, string
from lxdtx.response import AsyncResponse, SyncResponse, created, empty, etag_of
from lxdtx.router import Action, Endpoint
from lxdtx.storage import volumes as custom_volumes

_TYPES = {"containers": "container", "container": "container", "images": "image", "image": "image",
          "custom": "custom"}
_PLURAL = {"container": "containers", "image": "images", "custom": "custom"}


def _type(req):
    vol_type = _TYPES.get(req.params["type"])
    if vol_type is None:
        raise errors.BadRequest(f"Invalid storage volume type \"{req.params['type']}\"")
    return vol_type


def _check_name(name):
    """400 unless `name` can name a custom volume: each becomes a directory (or dataset) name."""
    custom_volumes.check_volume_name(name)
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise errors.BadRequest(f"Invalid storage volume name \"{name}\": no control characters")
    if len(name.encode("utf-8")) > names.NAME_MAX:
        raise errors.BadRequest(f"Invalid storage volume name \"{name}\": at most {names.NAME_MAX} bytes long")


def _url(pool, vol_type, name):
    return f"/1.0/storage-pools/{pool}/volumes/{_PLURAL[vol_type]}/{name}"


def _used_by(daemon, pool, vol_type, name):
    if vol_type == "custom":
        return daemon.pools.custom.used_by(pool, name)
    if vol_type == "image":
        return [f"/1.0/images/{name}"]
    if "/" in name:
        container, snapshot = name.split("/", 1)
        return [f"/1.0/containers/{container}/snapshots/{snapshot}"]
    return [f"/1.0/containers/{name}"]

VOLUME = dict(description=STRING, config=config("storage-volume"))


async def _all(daemon, pool, only=None):
    """[(type, name, value)] of a pool's volumes, image volumes included."""
    found = [v for v in daemon.pools.volume_documents(pool) if only in (None, v[0])]
    if only in (None, "image"):
        found += [("image", fp, {"config": {}, "description": ""}) for fp in await daemon.pools.image_volumes(pool)]
    return sorted(found, key=lambda v: (v[0], v[1]))


def _location(daemon, value):
    """The member a volume is on: its row's `location`, else (image caches, container
    volumes) the member answering, whose pool has it."""
    cluster = daemon.cluster
    if not cluster.enabled:
        return "none"
    return cluster.location_name(value.get("location") or cluster.member_id)


async def _list(req, only):
    daemon = req.daemon
    pool = req.params["pool"]
    daemon.pools.get(pool)
    found = await _all(daemon, pool, only)
    if req.recursion:
        return SyncResponse([custom_volumes.render(pool, t, n, v, _used_by(daemon, pool, t, n), _location(daemon, v))
                             for t, n, v in found])
    return SyncResponse([_url(pool, t, n) for t, n, _ in found])


async def list_volumes(req):
    return await _list(req, None)


async def list_volumes_of_type(req):
    return await _list(req, _type(req))


async def create_volume(req):
    daemon = req.daemon
    pool = req.params["pool"]
    daemon.pools.get(pool)
    vol_type = _type(req)
    if vol_type != "custom":
        raise errors.BadRequest(f"Storage volumes of type \"{vol_type}\" cannot be created through the API")
    body = req.json()
    name = string(body, "name")
    _check_name(name)
    config = mapping(body, "config")
    description = string(body, "description")
    source = mapping(body, "source")
    kind = string(source, "type")
    if kind in ("", "none"):
        await daemon.pools.custom.create(pool, name, config, description)
        daemon.events.lifecycle("storage-volume-created", _url(pool, "custom", name))
        return empty()
    if kind == "copy":
        source_pool = string(source, "pool") or pool
        source_name = string(source, "name")
        daemon.pools.custom.get(source_pool, source_name)
        if daemon.pools.volume(pool, "custom", name) is not None:
            raise errors.Conflict(f"Storage volume \"{name}\" of type custom already exists in pool \"{pool}\"")

        async def run(op):
            await daemon.pools.custom.copy(source_pool, source_name, pool, name, config,
                                           description if "description" in body else None)

        op = daemon.operations.start("Copying storage volume",
                                     resources={"storage_volumes": [_url(pool, "custom", name)]}, run=run)
        return AsyncResponse(op)
    if kind == "migration":
        from lxdtx.migration import volumes

        mode = string(source, "mode") or "pull"
        if mode not in ("pull", "push"):
            raise errors.BadRequest(f"Invalid value for \"source.mode\": {mode}")
        return AsyncResponse(volumes.create_sink(daemon, pool, name, source if mode == "pull" else None, config,
                                                 description))
    raise errors.BadRequest(f"Unknown source type \"{kind}\"")


def _one_holder(req, pool, name):
    """In a cluster, a custom volume asked without `target` of a name several members have:
    400, as LXD, rather than this member's by chance (a forwarded request chose already)."""
    if not req.daemon.cluster.enabled or req.query.get("target") or req.header(FORWARDED):
        return
    if len(req.daemon.pools.custom_holders(pool, name)) > 1:
        raise errors.BadRequest(f"More than one cluster member has a volume named \"{name}\". "
                                "Please target a specific member")


def _volume_doc(req):
    daemon = req.daemon
    pool = req.params["pool"]
    daemon.pools.get(pool)
    vol_type = _type(req)
    name = req.params["vname"]
    if vol_type == "custom":
        _one_holder(req, pool, name)
    doc = daemon.pools.volume(pool, vol_type, name)
    if doc is None:
        raise errors.NotFound(f"Storage volume \"{name}\" of type {vol_type} not found in pool \"{pool}\"")
    return pool, vol_type, name, doc


def _etag(name, vol_type, value):
    return [name, vol_type, value.get("config", {})]


async def get_volume(req):
    daemon = req.daemon
    if _TYPES.get(req.params["type"]) == "image":
        pool, name = req.params["pool"], req.params["vname"]
        if name not in await daemon.pools.image_volumes(pool):
            raise errors.NotFound(f"Storage volume \"{name}\" of type image not found in pool \"{pool}\"")
        value = {"config": {}, "description": ""}
        return SyncResponse(custom_volumes.render(pool, "image", name, value, _used_by(daemon, pool, "image", name),
                                                  _location(daemon, value)),
                            etag=etag_of(_etag(name, "image", value)))
    pool, vol_type, name, doc = _volume_doc(req)
    return SyncResponse(custom_volumes.render(pool, vol_type, name, doc.value,
                                              _used_by(daemon, pool, vol_type, name), _location(daemon, doc.value)),
                        etag=etag_of(_etag(name, vol_type, doc.value)))


async def _update(req, merge):
    daemon = req.daemon
    pool, vol_type, name, doc = _volume_doc(req)
    req.check_etag(_etag(name, vol_type, doc.value))
    body = req.json()
    config = mapping(body, "config")
    if merge:
        config = {**doc.value.get("config", {}), **config}
    description = string(body, "description") if "description" in body or not merge \
        else doc.value.get("description", "")
    if vol_type != "custom":
        raise errors.BadRequest(f"Storage volumes of type \"{vol_type}\" change through their container's "
                                "root disk device")
    await daemon.pools.custom.update(pool, name, config, description, doc.revision)
    daemon.events.lifecycle("storage-volume-updated", _url(pool, vol_type, name))
    return empty()


async def put_volume(req):
    return await _update(req, merge=False)


async def patch_volume(req):
    return await _update(req, merge=True)


async def post_volume(req):
    """Rename within the pool (sync 201), or move to another pool (async)."""
    daemon = req.daemon
    pool, vol_type, name, _doc = _volume_doc(req)
    if vol_type != "custom":
        raise errors.BadRequest("Only custom storage volumes can be renamed or moved")
    body = req.json()
    if body.get("migration"):
        from lxdtx.migration import volumes

        return AsyncResponse(volumes.start_source(daemon, pool, name, body.get("target") or None))
    new_name = string(body, "name")
    _check_name(new_name)
    target_pool = string(body, "pool") or pool
    daemon.pools.get(target_pool)
    if daemon.pools.volume(target_pool, "custom", new_name) is not None:
        raise errors.Conflict(f"Storage volume \"{new_name}\" of type custom already exists in pool \"{target_pool}\"")
    if target_pool == pool:
        await daemon.pools.custom.rename(pool, name, new_name)
        daemon.events.lifecycle("storage-volume-renamed", _url(pool, "custom", name), {"new_name": new_name})
        return created(f"/1.0/storage-pools/{pool}/volumes/custom")

    async def run(op):
        await daemon.pools.custom.move(pool, name, target_pool, new_name)

    op = daemon.operations.start("Moving storage volume", resources={
        "storage_volumes": [_url(pool, "custom", name), _url(target_pool, "custom", new_name)]}, run=run)
    return AsyncResponse(op)


async def delete_volume(req):
    daemon = req.daemon
    pool = req.params["pool"]
    daemon.pools.get(pool)
    vol_type = _type(req)
    name = req.params["vname"]
    if vol_type == "image":
        await daemon.pools.delete_image_volume(pool, name)
    elif vol_type == "custom":
        _one_holder(req, pool, name)
        await daemon.pools.custom.delete(pool, name)
    else:
        raise errors.BadRequest(f"Storage volumes of type \"{vol_type}\" cannot be deleted through the "
                                "storage API: delete the container")
    daemon.events.lifecycle("storage-volume-deleted", _url(pool, vol_type, name))
    return empty()


ENDPOINTS = [
    Endpoint("/1.0/storage-pools/{pool}/volumes", get=list_volumes),
    Endpoint("/1.0/storage-pools/{pool}/volumes/{type}", get=list_volumes_of_type,
             post=Action(create_volume, body=fields(name=STRING, source=fields(
                 type=one_of_strings("copy"), pool=STRING, name=STRING), **VOLUME))),
    Endpoint("/1.0/storage-pools/{pool}/volumes/{type}/{vname:*}", get=get_volume,
             put=Action(put_volume, body=fields(**VOLUME)),
             patch=Action(patch_volume, body=fields(**VOLUME)),
             post=Action(post_volume, body=fields(name=STRING, pool=STRING, migration=BOOLEAN, target=fields(
                 operation=STRING, certificate=STRING, secrets=MAP_OF_STRINGS))), delete=delete_volume),
]
