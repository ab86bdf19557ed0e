# -*- test-case-name: tests.integration.test_backups -*-
"""`/1.0/containers/<c>/backups` (`container_backup`) and backup import on `POST /1.0/containers`."""

from lxdtx import errors, names, timeutil
from lxdtx.bodies import BOOLEAN, RENAME, STRING, fields
from lxdtx.image.pack import compressor_argv
from lxdtx.operations import container_resources
from lxdtx.resources.common import container_endpoint, string
from lxdtx.response import AsyncResponse, FileResponse, SyncResponse
from lxdtx.router import Action

# Backups made before the choice existed were xz.
_SUFFIXES = {"gzip": ".gz", "xz": ".xz", "bzip2": ".bz2", "lzma": ".lzma", "zstd": ".zst", "none": ""}


def _backups(req):
    return req.daemon.instances.backups


async def list_backups(req):
    backups = _backups(req)
    name = req.params["name"]
    req.daemon.instances.records.get(name)
    if req.recursion:
        return SyncResponse([backups.render(backups.get(name, b)) for b in backups.names(name)])
    return SyncResponse([f"/1.0/containers/{name}/backups/{b}" for b in backups.names(name)])


async def create_backup(req):
    backups = _backups(req)
    name = req.params["name"]
    req.daemon.instances.records.get(name)
    body = req.json()
    backup = body.get("name")
    if backup is None or backup == "":
        backup = backups.next_name(name)
    names.check("name", "backup", backup)
    expiry = string(body, "expiry")
    if expiry:
        try:
            timeutil.parse(expiry)
        except (TypeError, ValueError):
            raise errors.BadRequest(f"Invalid value for \"expiry\": {expiry}")
    compression = string(body, "compression_algorithm")
    if compression:
        try:
            compressor_argv(compression) if compression != "none" else None
        except ValueError as e:
            raise errors.BadRequest(f"Invalid value for \"compression_algorithm\": {e}")
    if backups.store.exists("backup", f"{name}/{backup}"):
        raise errors.Conflict(f"Backup '{backup}' already exists")

    async def run(op):
        await backups.create(name, backup, expiry=expiry, container_only=bool(body.get("container_only")),
                             optimized=bool(body.get("optimized_storage")), compression=compression, op=op)

    return AsyncResponse(req.daemon.operations.start(
        "Backing up container", resources=container_resources(name, backups=[backup]), run=run))


async def get_backup(req):
    backups = _backups(req)
    return SyncResponse(backups.render(backups.get(req.params["name"], req.params["backup"])))


async def rename_backup(req):
    backups = _backups(req)
    name, backup = req.params["name"], req.params["backup"]
    backups.get(name, backup)
    new_name = req.json().get("name")
    if new_name is None or new_name == "":
        raise errors.BadRequest("Invalid value for \"name\": the new backup name is required")
    names.check("name", "backup", new_name)
    if backups.store.exists("backup", f"{name}/{new_name}"):
        raise errors.Conflict(f"Backup '{new_name}' already exists")

    async def run(op):
        await backups.rename(name, backup, new_name)

    return AsyncResponse(req.daemon.operations.start(
        "Renaming container backup", resources=container_resources(name, backups=[backup]), run=run))


async def delete_backup(req):
    backups = _backups(req)
    name, backup = req.params["name"], req.params["backup"]
    backups.get(name, backup)

    async def run(op):
        await backups.delete(name, backup)

    return AsyncResponse(req.daemon.operations.start(
        "Removing container backup", resources={"container": [name]}, run=run))


async def export_backup(req):
    backups = _backups(req)
    name, backup = req.params["name"], req.params["backup"]
    doc = backups.get(name, backup)
    suffix = _SUFFIXES.get(doc.value.get("compression_algorithm", "xz"), "")
    return FileResponse(backups.path(name, backup), filename=f"{backup}.tar{suffix}")


async def import_backup(req):
    """`POST /1.0/containers` with `Content-Type: application/octet-stream`: restore a backup."""
    backups = _backups(req)
    pool = req.header("X-LXD-pool") or None
    name = req.header("X-LXD-name") or None
    stage = await backups.receive(req.body)

    async def run(op):
        created = await backups.restore(stage, pool_override=pool, name_override=name)
        op.update_resources(container_resources(created))

    return AsyncResponse(req.daemon.operations.start("Restoring backup", resources={}, run=run))


ENDPOINTS = [
    container_endpoint("/1.0/containers/{name}/backups", get=list_backups, post=Action(create_backup, body=fields(
        name=STRING, expiry=STRING, container_only=BOOLEAN, instance_only=BOOLEAN, optimized_storage=BOOLEAN,
        compression_algorithm=STRING))),
    container_endpoint("/1.0/containers/{name}/backups/{backup}", get=get_backup,
                       post=Action(rename_backup, body=RENAME), delete=delete_backup),
    container_endpoint("/1.0/containers/{name}/backups/{backup}/export", get=Action(export_backup, answers="raw")),
]
