# -*- test-case-name: tests.integration.test_containers -*-
"""`/1.0/containers` (and the same objects under `/1.0/instances`): CRUD, state, logs."""

import os
import re
import stat

from twisted.internet import defer

from lxdtx import errors
from lxdtx.bodies import BOOLEAN, DEVICES, INTEGER, MAP_OF_STRINGS, STRING, STRINGS, config, fields, one_of_strings
from lxdtx.cluster import images as cluster_images
from lxdtx.cluster.peers import FORWARDED, MemberUnreachable
from lxdtx.filter import compile_filter
from lxdtx.instance import model
from lxdtx.operations import container_resources
from lxdtx.resources import forwarding
from lxdtx.resources.common import container_endpoint, mapping, string, string_list
from lxdtx.response import AsyncResponse, ProducerResponse, SyncResponse, empty, etag_of
from lxdtx.router import Action, Endpoint
from lxdtx.streaming import byte_range, send_fd

_INSTANCE_TYPE = re.compile(r"c(\d+(?:\.\d+)?)-m(\d+(?:\.\d+)?)")
# A few well-known cloud instance types (cpus, GB of memory).
_INSTANCE_TYPES = {
    "t2.nano": (1, 0.5), "t2.micro": (1, 1), "t2.small": (1, 2), "t2.medium": (2, 4),
    "t2.large": (2, 8), "t2.xlarge": (4, 16), "m3.medium": (1, 3.75), "m3.large": (2, 7.5),
    "f1-micro": (1, 0.6), "g1-small": (1, 1.7), "n1-standard-1": (1, 3.75), "n1-standard-2": (2, 7.5),
}


def _instances(req):
    return req.daemon.instances


def _instance_type_limits(text):
    """limits.cpu / limits.memory for an `instance_type` (`c2-m4`, `t2.micro`, `aws:t2.micro`)."""
    text = text.split(":", 1)[-1]
    m = _INSTANCE_TYPE.fullmatch(text)
    if m:
        cpus, memory = float(m.group(1)), float(m.group(2))
    elif text in _INSTANCE_TYPES:
        cpus, memory = _INSTANCE_TYPES[text]
    else:
        raise errors.BadRequest(f"Invalid instance_type: {text}")
    return {"limits.cpu": str(max(1, int(cpus))), "limits.memory": f"{int(memory * 1024)}MB"}


# -- collection ------------------------------------------------------------
async def list_containers(req):
    instances = _instances(req)
    predicate = compile_filter(req.query.get("filter", ""))
    names = instances.records.names()
    if predicate is None and not req.recursion:
        return SyncResponse([f"/1.0/containers/{n}" for n in names])
    objects = []
    elsewhere = {}  # member id -> documents of its containers (clustered: each member tells its own)
    here = model.here(req.daemon)
    forwarded = bool(req.header(FORWARDED))
    for name in names:
        doc = instances.store.get(model.KIND, name)
        if doc is None:
            continue
        location = doc.value.get("location", "")
        if here and location and location != here:
            if not forwarded:
                elsewhere.setdefault(location, []).append(doc)
            continue
        try:
            objects.append(instances.records.render(name, doc.value))
        except Exception:
            objects.append({"name": name, "status": "Error", "status_code": 112})
    if elsewhere:
        level = min(max(req.recursion, 1), 2)
        results = await defer.gatherResults([defer.Deferred.fromCoroutine(
            _remote_objects(instances, member, docs, level)) for member, docs in elsewhere.items()])
        remote = [obj for found in results for obj in found]
    if predicate is not None:
        objects = [o for o in objects if predicate(o)]
    if req.recursion >= 2:
        await defer.DeferredList([defer.Deferred.fromCoroutine(_embed_full(instances, o)) for o in objects])
    if elsewhere:  # as their members rendered them (full ones at recursion=2)
        objects = sorted(objects + [o for o in remote if predicate is None or predicate(o)],
                         key=lambda o: o["name"])
    if req.recursion:
        return SyncResponse(objects)
    return SyncResponse([f"/1.0/containers/{o['name']}" for o in objects])


async def _remote_objects(instances, member_id, docs, recursion):
    """The containers `docs` of another member as it reports them; rendered from the shared
    state with status "Error" when it can't be reached (the rest of the list still answers)."""
    cluster = instances.daemon.cluster
    member = cluster.member_by_id(member_id)
    try:
        if member is None or not cluster.online(member):
            raise MemberUnreachable(cluster.location_name(member_id), "offline")
        theirs = {o.get("name"): o for o in await cluster.peers.get_json(
            member, f"/1.0/containers?recursion={recursion}")
                  if isinstance(o, dict)}
    except MemberUnreachable:
        theirs = {}
    objects = []
    for doc in docs:
        obj = theirs.get(doc.name)
        objects.append(obj if obj is not None else instances.records.render(doc.name, doc.value, status="Error"))
    return objects


# What a container's PUT and PATCH take (and its creation, with `name` and `source`).
WRITABLE = dict(architecture=STRING, config=config("container"), devices=DEVICES, profiles=STRINGS,
                ephemeral=BOOLEAN, description=STRING)
_PEER = dict(operation=STRING, certificate=STRING, secrets=MAP_OF_STRINGS)
CREATE = fields(name=STRING, instance_type=STRING, source=fields(
    type=one_of_strings("image", "none", "copy", "migration"), fingerprint=STRING, alias=STRING,
    properties=fields(), server=STRING, protocol=STRING, secret=STRING, source=STRING, mode=one_of_strings(
        "pull", "push"), live=BOOLEAN, container_only=BOOLEAN, instance_only=BOOLEAN, **_PEER), **WRITABLE)
MOVE = fields(name=STRING, migration=BOOLEAN, live=BOOLEAN, pool=STRING, container_only=BOOLEAN,
              instance_only=BOOLEAN, target=fields(**_PEER))


async def _embed_full(instances, obj):
    """`recursion=2` (`container_full`): state, snapshots and backups inside each object."""
    from lxdtx.instance import state

    name = obj["name"]
    doc = instances.store.get(model.KIND, name)
    obj["state"] = await state.collect(instances, name, doc.value) if doc else None
    obj["snapshots"] = instances.list_snapshots(name, 1)
    backups = instances.backups
    obj["backups"] = [backups.render(backups.get(name, b)) for b in backups.names(name)]


async def create_container(req):
    if req.header("Content-Type") == "application/octet-stream":
        from lxdtx.resources.backups import import_backup

        return await import_backup(req)
    instances = _instances(req)
    target = req.query.get("target", "")
    cluster = req.daemon.cluster
    if cluster.enabled and not req.header(FORWARDED):
        from lxdtx.cluster.placement import root_pool

        member = cluster.placement(target, root_pool(req.daemon.store, req.json()))
        if member.value["id"] != cluster.member_id:
            return await forwarding.forward(req, member)
    elif target and not cluster.enabled:
        raise errors.BadRequest("Target only allowed when clustered")
    body = req.json()
    source = mapping(body, "source")
    kind = string(source, "type")
    name = string(body, "name") or model.random_name(set(instances.records.names()))
    model.check_name(name)
    profiles = string_list(body, "profiles", ["default"])
    config = dict(mapping(body, "config"))
    devices = mapping(body, "devices")
    if body.get("instance_type"):
        for key, value in _instance_type_limits(string(body, "instance_type")).items():
            config.setdefault(key, value)
    architecture = string(body, "architecture")
    if architecture:
        model.check_architecture(architecture)
    if not req.daemon.pools.names():
        raise errors.BadRequest("No storage pool found. Please create a new storage pool.")
    image = remote = None
    if kind == "image" and source.get("server"):
        from lxdtx.image.sources import check_spec

        remote = check_spec(source)
    elif kind == "image":
        image = req.daemon.images.resolve(source)
    elif kind == "copy":
        from lxdtx.resources.copies import create_from_copy

        return await create_from_copy(req, name, body)
    elif kind == "migration":
        from lxdtx.resources.migrations import create_sink

        return await create_sink(req, name, body)
    elif kind != "none":
        raise errors.BadRequest(f"unknown source type {kind}" if kind else "Missing source type")
    params = dict(architecture=architecture, config=config, devices=devices, profiles=profiles,
                  ephemeral=bool(body.get("ephemeral")), description=string(body, "description"))
    await instances.validate_new(config=config, devices=devices, profiles=profiles)
    instances.reserve(name)

    async def run(op):
        fingerprint = image
        try:
            if remote is not None:
                fingerprint = await _pull_for_container(req.daemon, remote, op)
            elif fingerprint is not None:
                await cluster_images.ensure_local(req.daemon, fingerprint, op)  # a member that has it gives it
        except BaseException:
            instances.release(name)
            raise
        await instances.create(name, image=fingerprint, op=op, **params)

    op = req.daemon.operations.start("Creating container", resources=container_resources(name), run=run)
    return AsyncResponse(op)


async def _pull_for_container(daemon, spec, op):
    """The fingerprint of the remote image `spec` names, fetched first if it is not here:
    cached, and auto-updated when `images.auto_update_cached` says so."""
    from lxdtx.config.types import is_true

    auto_update = is_true(daemon.config.get("images.auto_update_cached") or "true")
    fingerprint, _ = await daemon.images.pull(spec, operation=op, cached=True, auto_update=auto_update)
    return fingerprint


# -- one container -----------------------------------------------------------
async def get_container(req):
    instances = _instances(req)
    doc = instances.records.get(req.params["name"])
    return SyncResponse(instances.records.render(doc.name, doc.value), etag=etag_of(model.writable(doc.value)))


def _writable_body(body, current):
    config = mapping(body, "config")
    devices = mapping(body, "devices")
    profiles = string_list(body, "profiles", [])
    return {
        "architecture": string(body, "architecture") or current.get("architecture"),
        "config": config, "devices": devices, "profiles": profiles,
        "ephemeral": bool(body.get("ephemeral")), "description": string(body, "description"),
    }


async def put_container(req):
    instances = _instances(req)
    name = req.params["name"]
    doc = instances.records.get(name)
    req.check_etag(model.writable(doc.value))
    body = req.json()
    if body.get("restore"):
        if not isinstance(body["restore"], str):
            raise errors.BadRequest("Invalid value for \"restore\": must be a snapshot name")
        snapshot = body["restore"].split("/")[-1]
        instances.snapshots.get(name, snapshot)

        async def run_restore(op):
            await instances.snapshots.restore(name, snapshot, stateful=bool(body.get("stateful")))

        return AsyncResponse(req.daemon.operations.start(
            "Restoring snapshot", resources=container_resources(name), run=run_restore))
    update = _writable_body(body, doc.value)
    await instances.validate_new(config=update["config"], devices=update["devices"], profiles=update["profiles"])

    async def run(op):
        await instances.updates.update(name, update, doc.revision)

    return AsyncResponse(req.daemon.operations.start("Updating container", resources=container_resources(name), run=run))


async def patch_container(req):
    instances = _instances(req)
    name = req.params["name"]
    doc = instances.records.get(name)
    req.check_etag(model.writable(doc.value))
    body = req.json()
    if "restore" in body:
        raise errors.BadRequest("Can't call PATCH in restore mode")
    value = doc.value
    update = {
        "architecture": string(body, "architecture") or value.get("architecture"),
        "config": {**value.get("config", {}), **mapping(body, "config")},
        "devices": {**value.get("devices", {}), **mapping(body, "devices")},
        "profiles": string_list(body, "profiles", value.get("profiles", [])),
        "ephemeral": bool(body["ephemeral"]) if "ephemeral" in body else value.get("ephemeral", False),
        "description": string(body, "description"),
    }
    await instances.updates.update(name, update, doc.revision)
    return empty()


async def post_container(req):
    instances = _instances(req)
    name = req.params["name"]
    instances.records.get(name)
    body = req.json()
    target = req.query.get("target", "")
    if target and body.get("migration"):
        if not req.daemon.cluster.enabled:
            raise errors.BadRequest("Target only allowed when clustered")
        from lxdtx.cluster import move

        return AsyncResponse(move.start(req.daemon, name, body, target))
    if body.get("migration") and body.get("pool"):
        from lxdtx.resources.copies import start_pool_move

        return start_pool_move(req, name, body)
    if body.get("migration"):
        from lxdtx.resources.migrations import start_source

        return await start_source(req, name, body)
    new_name = string(body, "name")
    model.check_name(new_name)
    if instances.store.exists(model.KIND, new_name):
        raise errors.Conflict(f"Name '{new_name}' already in use")

    async def run(op):
        await instances.rename(name, new_name)

    return AsyncResponse(req.daemon.operations.start(
        "Renaming container", resources=container_resources(name, new_name), run=run))


async def delete_container(req):
    instances = _instances(req)
    name = req.params["name"]
    instances.records.get(name)
    if instances.records.status(name) != "Stopped":
        raise errors.BadRequest("container is running")

    async def run(op):
        await instances.delete(name)

    return AsyncResponse(req.daemon.operations.start("Deleting container", resources=container_resources(name), run=run))


# -- state -------------------------------------------------------------------
async def get_state(req):
    from lxdtx.instance import state

    instances = _instances(req)
    name = req.params["name"]
    doc = instances.records.get(name)
    return SyncResponse(await state.collect(instances, name, doc.value))


_ACTIONS = {
    "start": "Starting container", "stop": "Stopping container", "restart": "Restarting container",
    "freeze": "Freezing container", "unfreeze": "Unfreezing container",
}


async def put_state(req):
    instances = _instances(req)
    name = req.params["name"]
    instances.records.get(name)
    body = req.json()
    action = string(body, "action")
    if action not in _ACTIONS:
        raise errors.BadRequest(f"unknown action {action}")
    timeout = body.get("timeout", -1)
    if timeout is None:
        timeout = -1
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise errors.BadRequest("Invalid value for \"timeout\": must be a number")
    force = bool(body.get("force"))
    stateful = bool(body.get("stateful"))

    async def run(op):
        if action == "start":
            await instances.start(name, stateful=stateful)
        elif action == "stop":
            await instances.stop(name, timeout=timeout, force=force, stateful=stateful)
        elif action == "restart":
            await instances.restart(name, timeout=timeout, force=force)
        elif action == "freeze":
            await instances.freeze(name)
        else:
            await instances.unfreeze(name)

    return AsyncResponse(req.daemon.operations.start(_ACTIONS[action], resources=container_resources(name), run=run))


# -- logs --------------------------------------------------------------------
# Plain file names only: no slash (a `%2F` is decoded by then), NUL or `..` can match.
_LOG_NAME = re.compile(r"(lxc\.log|lxc\.conf|console\.log|(migration|snapshot|exec)_[A-Za-z0-9_.-]+)")


def _log_container(req):
    """The container name of a logs path: 404 unless it could be a container's."""
    name = req.params["name"]
    try:
        model.check_name(name)
    except errors.BadRequest:
        raise errors.NotFound()
    return name


def _log_location(req, filename):
    """(directory, file name) of a container's log: 400 unless `filename` is one of its log names."""
    instances = _instances(req)
    name = _log_container(req)
    instances.records.get(name)
    if not _LOG_NAME.fullmatch(filename) or ".." in filename:
        raise errors.BadRequest(f"Invalid log file name: {filename!r}")
    if filename == "lxc.conf":
        return os.path.split(instances.liblxc.config_path(name))
    return instances.log_dir(name), filename


def _open_in(directory, filename):
    """(fd, size) of the regular file `filename` right in `directory`, no link followed; 404 otherwise."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise errors.NotFound()
    try:
        fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        raise errors.NotFound()
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise errors.NotFound()
    return fd, info.st_size


async def list_logs(req):
    instances = _instances(req)
    name = _log_container(req)
    directory = instances.log_dir(name)
    if not os.path.isdir(directory) and not instances.store.exists(model.KIND, name):
        raise errors.NotFound()
    found = []
    if os.path.isdir(directory):
        found = sorted(f for f in os.listdir(directory) if _LOG_NAME.fullmatch(f))
    if os.path.exists(instances.liblxc.config_path(name)):
        found.append("lxc.conf")
    return SyncResponse([f"/1.0/containers/{name}/logs/{f}" for f in sorted(set(found))])


async def get_log(req):
    filename = req.params["file"]
    # Opened here, not in a thread: a handler that never waits is answered at once, so
    # the writer below always runs and closes the fd (local files of the daemon's own).
    fd, size = _open_in(*_log_location(req, filename))

    async def write(request):
        try:
            await _send_range(request, fd, size)
        finally:
            os.close(fd)

    return ProducerResponse(write, headers={
        "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
        "Content-Disposition": f"inline;filename={filename}"})


async def _send_range(request, fd, size):
    """The whole file (200), one satisfiable Range of it (206), or 416."""
    header = request.getHeader(b"range")
    try:
        wanted = byte_range(header.decode("latin-1") if header else None, size)
    except ValueError as e:
        request.setResponseCode(416)
        request.setHeader(b"content-range", str(e).encode())
        request.setHeader(b"content-length", b"0")
        return
    start, end = wanted or (0, size)
    if wanted:
        request.setResponseCode(206)
        request.setHeader(b"content-range", b"bytes %d-%d/%d" % (start, end - 1, size))
    request.setHeader(b"content-length", b"%d" % (end - start))
    if request.method != b"HEAD":
        await send_fd(request, fd, end - start, start)


async def delete_log(req):
    filename = req.params["file"]
    directory, entry = _log_location(req, filename)
    if filename in ("lxc.log", "lxc.conf"):
        raise errors.BadRequest(f"Cannot delete {filename}")
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise errors.NotFound()
    try:
        os.unlink(entry, dir_fd=dir_fd)
    except FileNotFoundError:
        raise errors.NotFound()
    finally:
        os.close(dir_fd)
    return empty()


async def on_stop(req):
    await _instances(req).on_stop(req.params["name"])
    return empty()


ENDPOINTS = [
    container_endpoint("/1.0/containers", get=list_containers,
                       post=Action(create_container, max_body=1 << 40, body=CREATE, answers="async")),
    container_endpoint("/1.0/containers/{name}", get=get_container,
                       put=Action(put_container, body=fields(restore=STRING, stateful=BOOLEAN, **WRITABLE)),
                       patch=Action(patch_container, body=fields(**WRITABLE)),
                       post=Action(post_container, body=MOVE, answers="async"), delete=delete_container),
    container_endpoint("/1.0/containers/{name}/state", get=get_state, put=Action(put_state, body=fields(
        action=one_of_strings("start", "stop", "restart", "freeze", "unfreeze"), timeout=INTEGER, force=BOOLEAN,
        stateful=BOOLEAN), answers="async")),
    container_endpoint("/1.0/containers/{name}/logs", get=list_logs),
    container_endpoint("/1.0/containers/{name}/logs/{file}", get=Action(get_log, answers="raw"), delete=delete_log),
    Endpoint("/internal/containers/{name}/onstop", post=Action(on_stop, local_only=True)),
]
