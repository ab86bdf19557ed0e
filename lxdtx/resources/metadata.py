# -*- test-case-name: tests.integration.test_container_metadata -*-
"""`/1.0/containers/<c>/metadata` and `/metadata/templates?path=` (`container_edit_metadata`).

The container's metadata.yaml as JSON (with an ETag that If-Match is checked
against on PUT) and the files of its templates/ as raw bodies. The file work
is in `lxdtx.instance.metadata`, run in threads; changes hold the container's
operation lock, so they do not interleave with a publish, a rename or a start.
"""

from twisted.internet import threads

from lxdtx import bodies, errors
from lxdtx.instance import metadata
from lxdtx.resources.common import container_endpoint
from lxdtx.response import RawResponse, SyncResponse, empty, etag_of
from lxdtx.router import Action


async def _directory(req):
    """The container's directory, its volume mounted (404 for an unknown container)."""
    instances = req.daemon.instances
    name = req.params["name"]
    value = instances.records.get(name).value
    await req.daemon.pools.driver(value["pool"]).mount_volume("container", name)
    return instances.container_dir(value, name)


async def _in_thread(function, *args, **kwargs):
    try:
        return await threads.deferToThread(function, *args, **kwargs)
    except metadata.TemplateMissing:
        raise errors.NotFound("Template not found")
    except metadata.MetadataError as e:
        raise errors.BadRequest(str(e))


def _template_name(req):
    name = req.query.get("path")
    if not name:
        raise errors.BadRequest("missing path argument")
    try:
        return metadata.check_template_name(name)
    except metadata.MetadataError as e:
        raise errors.BadRequest(str(e))


async def get_metadata(req):
    current = await _in_thread(metadata.read_metadata, await _directory(req))
    return SyncResponse(current, etag=etag_of(current))


async def put_metadata(req):
    body = req.json()
    try:
        wanted = metadata.validate(body)
    except metadata.MetadataError as e:
        raise errors.BadRequest(str(e))
    name = req.params["name"]
    async with req.daemon.instances.locks.hold(name, "metadata"):
        directory = await _directory(req)
        req.check_etag(await _in_thread(metadata.read_metadata, directory))
        await _in_thread(metadata.write_metadata, directory, wanted)
    return empty()


async def get_templates(req):
    directory = await _directory(req)
    if not req.query.get("path"):
        return SyncResponse(await _in_thread(metadata.list_templates, directory))
    template = _template_name(req)
    data = await _in_thread(metadata.read_template, directory, template)
    return RawResponse(data, filename=template)


async def write_template(req):
    """POST and PUT alike create or replace: `lxc config template edit` (5.0) sends a POST for
    a template that exists, and LXD after 3.x answers it so."""
    template = _template_name(req)
    data = req.body.read(metadata.MAX_TEMPLATE_SIZE + 1)
    if len(data) > metadata.MAX_TEMPLATE_SIZE:
        raise errors.BodyTooLarge(f"Template larger than {metadata.MAX_TEMPLATE_SIZE} bytes")
    async with req.daemon.instances.locks.hold(req.params["name"], "metadata"):
        await _in_thread(metadata.write_template, await _directory(req), template, data)
    return empty()


async def delete_template(req):
    template = _template_name(req)
    async with req.daemon.instances.locks.hold(req.params["name"], "metadata"):
        await _in_thread(metadata.delete_template, await _directory(req), template)
    return empty()


_TEMPLATE_BODY = metadata.MAX_TEMPLATE_SIZE + 64 * 1024
_TEMPLATE_ENTRY = bodies.fields(when=bodies.STRINGS, create_only=bodies.BOOLEAN, template=bodies.STRING,
                                properties=bodies.MAP_OF_STRINGS)
_METADATA = bodies.fields(architecture=bodies.STRING, creation_date=bodies.INTEGER, expiry_date=bodies.INTEGER,
                          properties=bodies.MAP_OF_STRINGS,
                          templates={"type": "object", "additionalProperties": _TEMPLATE_ENTRY})

ENDPOINTS = [
    container_endpoint("/1.0/containers/{name}/metadata", get=get_metadata,
                       put=Action(put_metadata, body=_METADATA)),
    container_endpoint("/1.0/containers/{name}/metadata/templates", get=get_templates,
                       post=Action(write_template, max_body=_TEMPLATE_BODY),
                       put=Action(write_template, max_body=_TEMPLATE_BODY),
                       delete=delete_template),
]
