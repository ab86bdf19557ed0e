# -*- test-case-name: tests.integration.test_remote_images -*-
"""Remote image sources: another LXD-protocol server, or a simplestreams index.

A `source` of type image with a `server` (what `lxc launch remote:alias` and
`lxc image copy remote:x local:` send) is checked into a Spec; `open_source`
gives the object that resolves the name asked for (alias or fingerprint) to a
Resolved image and fetches its files into a private directory:

* LXD protocol: the daemon is a public client of the other server: the alias,
  then `GET /1.0/images/<fp>[?secret=]`, then `/export[?secret=]` (one unified
  file, or a multipart body split into its metadata and rootfs parts);
* simplestreams: `streams/v1/index.json` and its products files (kept for an
  hour unless a refresh asks again), then the image's files, each checked
  against the sha256 the stream gives.

The certificate in the source is pinned; without one the system's CAs and the
server's name decide (lxdtx.tls). Whatever was fetched is checked against the
fingerprint by the store before it becomes an image.
"""

import dataclasses
import hashlib
import os
import re
from urllib.parse import quote, urlsplit

from twisted.internet import threads

from lxdtx import errors, tls
from lxdtx.image import download, simplestreams, upload
from lxdtx.image.download import RemoteError
from lxdtx.image.invalid import ImageFormatError

PROTOCOLS = ("lxd", "simplestreams")
# How long a simplestreams index is reused (the reference keeps it an hour).
CATALOG_TTL = 3600
# The largest image fetched at all (as an upload may be).
MAX_IMAGE = 64 * 1024 ** 3
_FINGERPRINT = re.compile(r"^[0-9a-f]{1,64}$")


@dataclasses.dataclass(frozen=True)
class Spec:
    """Where an image comes from: server URL, protocol, pinned certificate, the name asked for."""

    server: str
    protocol: str
    certificate: str
    name: str
    secret: str = ""

    def update_source(self):
        """The `update_source` an image pulled by this Spec records (no secret: it is single use)."""
        return {"alias": self.name, "certificate": self.certificate, "protocol": self.protocol,
                "server": self.server}


def _string(source, key):
    value = source.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errors.BadRequest(f"source.{key} must be a string")
    return value


def check_server(server):
    """The server URL without a trailing slash; BadRequest unless it is https://host[:port][/path]."""
    try:
        parts = urlsplit(server)
        port = parts.port
    except ValueError:
        raise errors.BadRequest(f"source.server {server!r} is not a valid URL") from None
    if parts.scheme != "https" or not parts.hostname:
        raise errors.BadRequest(f"source.server {server!r} must be an https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password or any(
            ord(c) < 33 for c in server):
        raise errors.BadRequest(f"source.server {server!r} must have no credentials, query or fragment")
    del port
    return server.rstrip("/")


def check_spec(source):
    """A Spec from a JSON `source` of type image with a `server`; BadRequest naming the field."""
    server = check_server(_string(source, "server"))
    protocol = _string(source, "protocol") or "lxd"
    if protocol not in PROTOCOLS:
        raise errors.BadRequest(f"source.protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    certificate = _string(source, "certificate")
    if certificate:
        try:
            tls.pem_to_der(certificate)
        except ValueError:
            raise errors.BadRequest("source.certificate must be a PEM certificate") from None
    name = _string(source, "fingerprint") or _string(source, "alias")
    if not name:
        raise errors.BadRequest("source.fingerprint or source.alias is required for a remote image")
    if len(name) > 255 or any(ord(c) < 32 for c in name):
        raise errors.BadRequest(f"Invalid image name {name!r}")
    secret = _string(source, "secret")
    if len(secret) > 256:
        raise errors.BadRequest("source.secret is too long")
    mode = _string(source, "mode") or "pull"
    if mode != "pull":
        raise errors.BadRequest(f"source.mode {mode!r} is not supported for images (only pull)")
    return Spec(server, protocol, certificate, name, secret)


@dataclasses.dataclass
class Resolved:
    """A remote image found by name: its fingerprint, what the server says of it, and how to get it."""

    fingerprint: str
    properties: dict
    size: int  # bytes of its files as the server declares them (0: unknown)
    filename: str = ""
    files: object = None  # source-specific


@dataclasses.dataclass
class Fetched:
    """Files fetched into a private directory, with the SHA-256 over them (a split image's
    parts in order)."""

    image_path: str
    rootfs_path: str  # None for a unified image
    sha256: str
    size: int
    filename: str


class _Progress:
    """`download_progress` text as LXD shows it (`rootfs: 42% (3.20MB/s)`)."""

    def __init__(self, clock, report, label, total):
        self._clock = clock
        self._report = report
        self._label = label
        self._total = total
        self._start = clock.seconds()

    def __call__(self, written, length=None):
        if self._report is None:
            return
        total = length or self._total
        elapsed = max(self._clock.seconds() - self._start, 0.001)
        speed = f"{written / elapsed / 1e6:.2f}MB/s"
        if total:
            self._report(f"{self._label}: {min(100, written * 100 // total)}% ({speed})")
        else:
            self._report(f"{self._label}: {written} bytes ({speed})")


def _split_export(export_path, boundary, tmpdir):
    """An LXD export's multipart body -> (sha256, image path, rootfs path, size, rootfs filename)."""
    with open(export_path, "rb") as body:
        result = upload.receive(body, boundary, tmpdir)
    os.unlink(export_path)
    return result


# A split image's export is a multipart body: its parts plus their headers and boundaries.
_MULTIPART_SLACK = 64 * 1024


def _export_bound(size):
    """The most bytes an export of an image of `size` bytes can take (0: unknown)."""
    return size + _MULTIPART_SLACK if size else 0


class LXDSource:
    """Another LXD-protocol server, as a public client (with the secret it was given)."""

    def __init__(self, reactor, spec):
        self.reactor = reactor
        self.spec = spec

    def _url(self, path, secret=True):
        url = f"{self.spec.server}{path}"
        if secret and self.spec.secret:
            url += f"?secret={quote(self.spec.secret, safe='')}"
        return url

    async def _get(self, path, secret=True):
        envelope = await download.get_json(self.reactor, self._url(path, secret), peer_pem=self.spec.certificate,
                                           limit=4 * 1024 * 1024)
        if not isinstance(envelope, dict) or not isinstance(envelope.get("metadata"), dict):
            raise RemoteError(f"The image server {self.spec.server} gave no LXD answer for {path}")
        return envelope["metadata"]

    async def resolve(self, name, force=False):
        fingerprint = name
        if not self.spec.secret:
            try:
                alias = await self._get(f"/1.0/images/aliases/{quote(name, safe='')}", secret=False)
                fingerprint = str(alias.get("target") or name)
            except RemoteError as e:
                if "Not found" not in str(e):
                    raise
        if not _FINGERPRINT.match(fingerprint.lower()):
            raise RemoteError(f"The image '{name}' was not found on {self.spec.server}")
        try:
            info = await self._get(f"/1.0/images/{quote(fingerprint, safe='')}")
        except RemoteError as e:
            if "Not found" in str(e):
                raise RemoteError(f"The image '{name}' was not found on {self.spec.server}") from None
            raise
        full = str(info.get("fingerprint", "")).lower()
        if len(full) != 64 or not _FINGERPRINT.match(full) or not full.startswith(fingerprint.lower()):
            raise RemoteError(f"The image server {self.spec.server} described '{name}' with no valid fingerprint")
        properties = info.get("properties") if isinstance(info.get("properties"), dict) else {}
        size = info.get("size") if isinstance(info.get("size"), int) and info.get("size") > 0 else 0
        return Resolved(full, {str(k): str(v) for k, v in properties.items()}, size,
                        str(info.get("filename") or ""))

    async def fetch(self, resolved, tmpdir, limit, report=None):
        export = os.path.join(tmpdir, "export")
        progress = _Progress(self.reactor, report, "rootfs", resolved.size)
        written = await download.download(
            self.reactor, self._url(f"/1.0/images/{resolved.fingerprint}/export"), export,
            peer_pem=self.spec.certificate, limit=min(limit, _export_bound(resolved.size) or limit),
            progress=progress,
            what="image download")
        try:
            boundary = upload.multipart_boundary(written.header("Content-Type"))
        except ImageFormatError as e:
            raise RemoteError(f"The image server sent an unusable image: {e}") from None
        if boundary is None:
            image = os.path.join(tmpdir, "image")
            os.rename(export, image)
            return Fetched(image, None, written.sha256, written.size, resolved.filename)
        try:
            sha, image, rootfs, size, _ = await threads.deferToThread(_split_export, export, boundary, tmpdir)
        except ImageFormatError as e:
            raise RemoteError(f"The image server sent an unusable image: {e}") from None
        return Fetched(image, rootfs, sha, size, resolved.filename)


class SimpleStreamsSource:
    """A simplestreams server; `catalogs` is the daemon's {server: (time, Catalog)} cache."""

    def __init__(self, reactor, spec, catalogs):
        self.reactor = reactor
        self.spec = spec
        self.catalogs = catalogs

    def _url(self, path):
        return f"{self.spec.server}/{simplestreams.safe_path(path)}"

    async def catalog(self, force=False):
        now = self.reactor.seconds()
        cached = self.catalogs.get(self.spec.server)
        if cached is not None and not force and now - cached[0] < CATALOG_TTL:
            return cached[1]
        get = download.get_json
        try:
            index = await get(self.reactor, self._url(simplestreams.INDEX_PATH), peer_pem=self.spec.certificate)
            found = []
            for path in simplestreams.products_paths(index):
                products = await get(self.reactor, self._url(path), peer_pem=self.spec.certificate)
                found += simplestreams.images(products)
        except simplestreams.StreamError as e:
            raise RemoteError(f"The simplestreams server {self.spec.server} has an unusable index: {e}") from None
        catalog = simplestreams.Catalog(found)
        self.catalogs[self.spec.server] = (now, catalog)
        return catalog

    async def resolve(self, name, force=False):
        image = (await self.catalog(force)).find(name)
        if image is None:
            raise RemoteError(f"The image '{name}' was not found on {self.spec.server}")
        return Resolved(image.fingerprint, dict(image.properties), image.size,
                        os.path.basename(image.rootfs.path if image.rootfs else image.meta.path), image)

    async def fetch(self, resolved, tmpdir, limit, report=None):
        image = resolved.files
        combined = hashlib.sha256()
        parts = [("metadata", image.meta, os.path.join(tmpdir, "image"))]
        if image.rootfs is not None:
            parts.append(("rootfs", image.rootfs, os.path.join(tmpdir, "rootfs")))
        size = 0
        for label, file, path in parts:
            if file.size > limit:
                raise RemoteError(f"The image's {label} is {file.size} bytes, more than the {limit} allowed")
            written = await download.download(
                self.reactor, self._url(file.path), path, peer_pem=self.spec.certificate, limit=file.size,
                hashers=(combined,), progress=_Progress(self.reactor, report, label, file.size),
                what=f"image {label} download")
            if written.sha256 != file.sha256:
                raise RemoteError(f"The image's {label} file does not match its sha256 in the stream "
                                  f"(got {written.sha256}, expected {file.sha256})")
            size += written.size
        rootfs_path = parts[1][2] if len(parts) > 1 else None
        return Fetched(parts[0][2], rootfs_path, combined.hexdigest(), size, resolved.filename)


def open_source(reactor, spec, catalogs):
    """The source object for a Spec."""
    if spec.protocol == "simplestreams":
        return SimpleStreamsSource(reactor, spec, catalogs)
    return LXDSource(reactor, spec)
