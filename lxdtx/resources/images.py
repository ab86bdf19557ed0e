# -*- test-case-name: tests.integration.test_images -*-
"""`/1.0/images` and `/1.0/images/aliases`: upload, publish, read, change, export, delete.

The work happens in `daemon.images` (lxdtx.image.store.ImageStore); these
handlers parse, check who may see what, and answer.
"""

import os

from twisted.internet import threads

from lxdtx import errors
from lxdtx.image import export, upload
from lxdtx.image.formats import FORMATS
from lxdtx.image.invalid import ImageFormatError
from lxdtx.image.pack import compressor_argv
from lxdtx.image.store import alias_writable, writable
from lxdtx.resources.common import string
from lxdtx.response import AsyncResponse, FileResponse, ProducerResponse, SyncResponse, created, empty, etag_of
from lxdtx.router import MAX_JSON_BODY, Action, Endpoint, loads
from lxdtx.streaming import send_fd

# lxc streams whole images in one request; the body is spooled to disk.
MAX_IMAGE_BODY = 64 * 1024 ** 3

_SOURCE_TYPES = ("container", "snapshot", "image", "url")


# -- field checks -------------------------------------------------------------

def _bool(body, key, default=False):
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise errors.BadRequest(f"{key} must be a boolean")
    return value


def _properties(body, key="properties"):
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise errors.BadRequest(f"{key} must be a map of strings")
    return dict(value)


def _aliases(body):
    value = body.get("aliases")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise errors.BadRequest('aliases must be a list of {"name", "description"} maps')
    return value


def _media_type(content_type):
    return (content_type or "").split(";", 1)[0].strip().lower()


def _filter(images, expression):
    """The `filter=` of API filtering for images: `key eq value [and ...]` on top-level fields."""
    expression = (expression or "").strip()
    if not expression:
        return images
    terms = []
    for clause in expression.split(" and "):
        words = clause.split(None, 2)
        if len(words) != 3 or words[1] not in ("eq", "ne"):
            raise errors.BadRequest(f"Invalid filter expression {clause!r}: expected 'key eq value'")
        key, op, value = words
        terms.append((key.split("."), op == "eq", value.strip().strip('"').lower()))

    def field(obj, path):
        for part in path:
            obj = obj.get(part) if isinstance(obj, dict) else None
        return "" if obj is None else str(obj).lower()

    return [img for img in images if all((field(img, path) == value) == equal for path, equal, value in terms)]


# -- images -------------------------------------------------------------------

async def _visible(req, prefix):
    """The image Document for `prefix`; for an untrusted caller only a public image, or a
    private one with its secret. Every other image is the same 404 to an untrusted caller
    as an image that does not exist (`_not_visible`)."""
    images = req.daemon.images
    if req.trusted:
        return images.document(prefix)
    try:
        doc = images.document(prefix)
    except errors.ApiError:
        raise _not_visible()
    if not doc.value.get("public"):
        if not await images.consume_secret(doc.name, req.query.get("secret", "")):
            raise _not_visible()
    return doc


def _not_visible():
    """What an untrusted caller is told of an image or alias it may not see, or that is absent."""
    return errors.NotFound()


async def list_images(req):
    images = req.daemon.images.list(public_only=not req.trusted)
    images = _filter(images, req.query.get("filter"))
    if req.recursion:
        return SyncResponse(images)
    return SyncResponse([f"/1.0/images/{img['fingerprint']}" for img in images])


async def get_image(req):
    doc = await _visible(req, req.params["fingerprint"])
    return SyncResponse(req.daemon.images.render(doc.name, doc.value), etag=etag_of(writable(doc.value)))


async def _update_image(req, replace):
    images = req.daemon.images
    doc = images.document(req.params["fingerprint"])
    req.check_etag(writable(doc.value))
    body = req.json()
    current = doc.value
    if replace:
        public, auto_update, properties = _bool(body, "public"), _bool(body, "auto_update"), _properties(body)
    else:
        public = _bool(body, "public", current.get("public", False))
        auto_update = _bool(body, "auto_update", current.get("auto_update", False))
        properties = {**current.get("properties", {}), **_properties(body)}
    await images.update(doc.name, public=public, auto_update=auto_update, properties=properties,
                        expect=doc.revision)
    return empty()


async def put_image(req):
    return await _update_image(req, replace=True)


async def patch_image(req):
    return await _update_image(req, replace=False)


async def delete_image(req):
    images = req.daemon.images
    fingerprint = images.lookup(req.params["fingerprint"])

    async def run(op):
        await images.delete(fingerprint)

    op = req.daemon.operations.start("Deleting image", resources={"images": [fingerprint]}, run=run)
    return AsyncResponse(op)


def _open_parts(parts):
    """Open each part's file (setting its size); all or none stay open."""
    fds = []
    try:
        for part in parts:
            fds.append(os.open(part.path, os.O_RDONLY | os.O_CLOEXEC))
            part.size = os.fstat(fds[-1]).st_size
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


async def export_image(req):
    images = req.daemon.images
    doc = await _visible(req, req.params["fingerprint"])
    fp, value = doc.name, doc.value
    image_ext = FORMATS[value["format"]].extension
    rootfs_format = value.get("rootfs_format")
    if not rootfs_format:
        return FileResponse(images.path(fp), filename=f"{fp}{image_ext}")
    parts = [
        export.FilePart("metadata", f"meta-{fp}{image_ext}", images.path(fp), 0),
        export.FilePart("rootfs", f"{fp}{FORMATS[rootfs_format].extension}", images.rootfs_path(fp), 0),
    ]
    fds = await threads.deferToThread(_open_parts, parts)
    content_type, length, pieces = export.multipart_layout(parts)

    async def write(request):
        try:
            opened = iter(zip(fds, parts, strict=False))
            for piece in pieces:
                if isinstance(piece, bytes):
                    request.write(piece)
                else:
                    fd, part = next(opened)
                    await send_fd(request, fd, part.size, 0)
        finally:
            for fd in fds:
                os.close(fd)

    return ProducerResponse(write, headers={"Content-Type": content_type, "Content-Length": length})


async def create_secret(req):
    fingerprint = req.daemon.images.lookup(req.params["fingerprint"])
    return AsyncResponse(req.daemon.images.create_secret(fingerprint))


async def refresh_image(req):
    fingerprint = req.daemon.images.lookup(req.params["fingerprint"])

    async def run(op):
        # Local images have no source to refresh from.
        return {"refreshed": False}

    op = req.daemon.operations.start("Refreshing image", resources={"images": [fingerprint]}, run=run)
    return AsyncResponse(op)


# -- creating -----------------------------------------------------------------

def _json_body(req):
    """The body as a JSON object, or None when it is an upload (told apart by content)."""
    body = req.body
    size = body.seek(0, 2)
    body.seek(0)
    is_json_type = _media_type(req.header("Content-Type")) == "application/json"
    if size == 0:
        return {}
    if size <= MAX_JSON_BODY and body.read(64).lstrip().startswith(b"{"):
        body.seek(0)
        try:
            value = loads(body.read())
        except ValueError as e:
            if is_json_type:
                raise errors.BadRequest(f"invalid JSON body: {e}")
            return None
        if isinstance(value, dict):
            return value
    if is_json_type:
        raise errors.BadRequest("request body must be a JSON object")
    return None


async def create_image(req):
    value = _json_body(req)
    if value is None:
        return await _upload(req)
    return await _create_from_json(req, value)


async def _upload(req):
    images = req.daemon.images
    try:
        boundary = upload.multipart_boundary(req.header("Content-Type"))
    except ImageFormatError as e:
        raise errors.BadRequest(str(e))
    staged = await images.stage_upload(req.body, multipart_boundary=boundary,
                                       expected_fingerprint=req.header("X-LXD-fingerprint"))
    try:
        raw = req.http.requestHeaders.getRawHeaders(b"x-lxd-properties", [])
        staged.properties.update(upload.parse_properties([v.decode("utf-8", "replace") for v in raw]))
        if boundary is None:
            staged.filename = req.header("X-LXD-filename") or ""
        public = upload.is_public(req.header("X-LXD-public"))
    except BaseException:
        await images.discard(staged)
        raise

    async def run(op):
        fingerprint = await images.add(staged, public=public)
        return {"fingerprint": fingerprint, "size": str(staged.size)}

    op = req.daemon.operations.start("Downloading image", run=run)
    return AsyncResponse(op)


async def _create_from_json(req, body):
    source = body.get("source")
    if not isinstance(source, dict) or source.get("type") not in _SOURCE_TYPES:
        raise errors.BadRequest(
            f"Invalid images JSON: source.type must be one of {', '.join(_SOURCE_TYPES)}")
    kind = source["type"]
    if kind in ("image", "url"):
        raise errors.NotImplementedYet(f"Creating images from a source of type {kind!r} is not implemented")
    return await _publish(req, body, source, kind)


async def _publish(req, body, source, kind):
    daemon = req.daemon
    public = _bool(body, "public")
    properties = _properties(body)
    aliases = _aliases(body)
    filename = string(body, "filename")
    compression = string(body, "compression_algorithm")
    name = source.get("name")
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("source.name must be the name of a container or snapshot")
    container, _, snapshot = name.partition("/")
    if kind == "container" and snapshot:
        raise errors.BadRequest(f"Invalid container name {name!r}: use source type snapshot for a snapshot")
    if kind == "snapshot" and not (container and snapshot):
        raise errors.BadRequest(f"Invalid snapshot name {name!r}: expected <container>/<snapshot>")
    instances = daemon.instances
    images = daemon.images
    if compression and compression != "none":
        try:
            compressor_argv(compression)
        except ValueError as e:
            raise errors.BadRequest(str(e))
    images.check_aliases(aliases)

    async def run(op):
        async with instances.publish_source(container, snapshot=snapshot or None) as directory:
            fingerprint = await images.create_from_directory(
                directory, properties=properties, public=public, compression=compression,
                aliases=aliases, filename=filename, operation=op)
        return {"fingerprint": fingerprint, "size": str(images.get(fingerprint)["size"])}

    op = daemon.operations.start("Downloading image", run=run)
    return AsyncResponse(op)


# -- aliases ------------------------------------------------------------------

async def list_aliases(req):
    images = req.daemon.images
    names = images.alias_names()
    if req.recursion:
        return SyncResponse([images.render_alias(doc.name, doc.value) for doc in
                             (images.alias(name) for name in names)])
    return SyncResponse([f"/1.0/images/aliases/{name}" for name in names])


async def create_alias(req):
    body = req.json()
    name, target = string(body, "name"), string(body, "target")
    if not name:
        raise errors.BadRequest("name is required")
    if not target:
        raise errors.BadRequest("target is required")
    await req.daemon.images.create_alias(name, target, string(body, "description"))
    return created(f"/1.0/images/aliases/{name}")


async def get_alias(req):
    images = req.daemon.images
    if req.trusted:
        doc = images.alias(req.params["name"])
    else:
        try:
            doc = images.alias(req.params["name"])
        except errors.ApiError:
            raise _not_visible()
        target = req.daemon.store.value("image", doc.value["target"]) or {}
        if not target.get("public"):
            raise _not_visible()
    return SyncResponse(images.render_alias(doc.name, doc.value), etag=etag_of(alias_writable(doc.value)))


async def _update_alias(req, replace):
    images = req.daemon.images
    doc = images.alias(req.params["name"])
    req.check_etag(alias_writable(doc.value))
    body = req.json()
    if replace:
        target, description = string(body, "target"), string(body, "description")
        if not target:
            raise errors.BadRequest("The target field is required")
    else:
        target = string(body, "target") or doc.value["target"]
        description = string(body, "description") if "description" in body else doc.value.get("description", "")
    await images.update_alias(doc.name, target=target, description=description, expect=doc.revision)
    return empty()


async def put_alias(req):
    return await _update_alias(req, replace=True)


async def patch_alias(req):
    return await _update_alias(req, replace=False)


async def rename_alias(req):
    new_name = string(req.json(), "name")
    if not new_name:
        raise errors.BadRequest("name is required")
    await req.daemon.images.rename_alias(req.params["name"], new_name)
    return created(f"/1.0/images/aliases/{new_name}")


async def delete_alias(req):
    await req.daemon.images.delete_alias(req.params["name"])
    return empty()


# Alias paths come first: `/1.0/images/aliases/export` is an alias, not an image.
ENDPOINTS = [
    Endpoint("/1.0/images/aliases", get=list_aliases, post=create_alias),
    Endpoint("/1.0/images/aliases/{name}", get=Action(get_alias, untrusted=True), put=put_alias,
             patch=patch_alias, post=rename_alias, delete=delete_alias),
    Endpoint("/1.0/images", get=Action(list_images, untrusted=True),
             post=Action(create_image, max_body=MAX_IMAGE_BODY)),
    Endpoint("/1.0/images/{fingerprint}", get=Action(get_image, untrusted=True), put=put_image,
             patch=patch_image, delete=delete_image),
    Endpoint("/1.0/images/{fingerprint}/export", get=Action(export_image, untrusted=True)),
    Endpoint("/1.0/images/{fingerprint}/secret", post=create_secret),
    Endpoint("/1.0/images/{fingerprint}/refresh", post=refresh_image),
]
