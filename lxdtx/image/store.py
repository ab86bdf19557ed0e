# -*- test-case-name: tests.integration.test_images -*-
"""The local image store: image and alias documents, image files, secrets, unpacking.

An image is stored once, under its fingerprint: `DIR/images/<fp>` holds the
unified tarball (or the metadata tarball of a split image) and
`DIR/images/<fp>.rootfs` the rootfs of a split image, byte for byte as they were
imported, so export returns exactly that and the hash still matches. Its
document (kind `image`, name = fingerprint) holds the API fields plus the
detected formats; aliases are documents of kind `alias` keyed by name.

Adding an image has two steps. `stage_upload` / packing put the files in a
private directory under `DIR/tmp`, hash and check them there (threads and child
processes, never the reactor); `add` then moves them into place and commits the
document (and any aliases) in one transaction. A failure at either step removes
the staged files, so nothing half-made is left behind.

Interface used by other subsystems (`daemon.images`):

* `resolve(source) -> fingerprint` for a container `source` of type image;
* `get(fingerprint) -> dict`, the image object as the API renders it;
* `await unpack(fingerprint, target_dir)`;
* `await mark_used(fingerprint)`;
* `await create_from_directory(directory, *, properties, public, compression,
  aliases, filename, operation=None) -> fingerprint` (publish);
* `await stage_upload(body_file, *, multipart_boundary=None, expected_fingerprint=None)
  -> Staged` then `await add(staged, *, public=False, filename=None, properties=None,
  aliases=()) -> fingerprint` (import a file, e.g. `lxdtx init` importing busybox);
* `delete_hooks`: `async fn(fingerprint)` run before an image is deleted (storage
  pools drop their copies there).
"""

import dataclasses
import hashlib
import hmac
import io
import os
import shutil
import stat
import tempfile
import time

from twisted.internet import defer, threads
from twisted.logger import Logger

from lxdtx import errors, faults, timeutil
from lxdtx.image import formats, metadata, pack, sources, upload
from lxdtx.image import unpack as unpacking
from lxdtx.image.invalid import ImageFormatError
from lxdtx.operations import CANCELLED, RUNNING, TOKEN, new_secret
from lxdtx.state import ABSENT, Delete, Put, RevisionMismatch

KIND = "image"

ADD_PLACED = faults.point("image.add.placed")
PULL_FETCHED = faults.point("image.pull.fetched")
DELETE_COMMITTED = faults.point("image.delete.committed")
REFRESH_RECORDED = faults.point("image.refresh.recorded")
REFRESH_PULLED = faults.point("image.refresh.pulled")
REFRESH_COMMITTED = faults.point("image.refresh.committed")
ALIAS_KIND = "alias"

_INTERNAL_KEYS = ("format", "rootfs_format")
_PUBLISH_TOP = (("metadata.yaml", "file", False), ("templates", "dir", False))


def writable(value):
    """The part of an image an owner may change (and its ETag covers)."""
    return {"auto_update": value.get("auto_update", False), "properties": value.get("properties", {}),
            "public": value.get("public", False)}


def alias_writable(value):
    return {"description": value.get("description", ""), "target": value["target"]}


def _human_size(n):
    """Bytes as the lxc progress line shows them (`12.34MB`)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.2f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000.0
    return f"{n:.2f}TB"


@dataclasses.dataclass
class Staged:
    """Checked image files waiting in a private directory to be added under `fingerprint`."""

    tmpdir: str
    image_path: str
    rootfs_path: str  # None for a unified image
    fingerprint: str
    size: int
    meta: metadata.ImageMetadata
    image_format: formats.Format
    rootfs_format: formats.Format  # None for a unified image
    filename: str = ""
    properties: dict = dataclasses.field(default_factory=dict)


# -- blocking helpers (run in threads) --------------------------------------

@dataclasses.dataclass(frozen=True)
class Room:
    """Bytes and inodes free where an image would be unpacked (None: not bounded)."""

    space: int | None = None
    inodes: int | None = None


UNBOUNDED = Room()


def _inspect(image_path, rootfs_path, check_members=True, room=UNBOUNDED):
    """(ImageMetadata, image Format, rootfs Format or None) of staged files.

    With `room`, the tarballs' members must fit in it together: an archive that
    unpacks to more than any pool holds is refused when it arrives, not at launch.
    """
    image_format = formats.detect_file(image_path)
    meta, info = formats.read_metadata(image_path, image_format, check_members=check_members,
                                       free_space=room.space, free_inodes=room.inodes)
    rootfs_format = None
    if rootfs_path is None:
        if check_members and not info.has_rootfs:
            raise ImageFormatError("Invalid image: no rootfs/ directory in the tarball")
    else:
        rootfs_format = formats.detect_file(rootfs_path)
        if rootfs_format.is_tarball:
            left = Room(None if room.space is None else max(0, room.space - info.size),
                        None if room.inodes is None else max(0, room.inodes - info.members))
            formats.check_tarball(rootfs_path, rootfs_format, formats.ROOTFS, free_space=left.space,
                                  free_inodes=left.inodes)
    return meta, image_format, rootfs_format


def _stage_upload(spool, body, boundary, expected_fingerprint, room=UNBOUNDED):
    os.makedirs(spool, mode=0o700, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix="image-upload-", dir=spool)
    try:
        fingerprint, image_path, rootfs_path, size, rootfs_filename = upload.receive(body, boundary, tmpdir)
        if expected_fingerprint and expected_fingerprint != fingerprint:
            raise ImageFormatError(
                f"fingerprints don't match, got {fingerprint} expected {expected_fingerprint}")
        meta, image_format, rootfs_format = _inspect(image_path, rootfs_path, room=room)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return Staged(tmpdir, image_path, rootfs_path, fingerprint, size, meta, image_format,
                  rootfs_format, filename=rootfs_filename)


def _detached(body):
    """A file object over the same bytes that stays open when twisted.web closes the
    request's own (a client that goes away mid-request)."""
    try:
        fd = body.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        body.seek(0)
        return io.BytesIO(body.read())
    return os.fdopen(os.dup(fd), "rb")


def _lstat(dir_fd, name):
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _read_publish_source(directory):
    """(metadata.yaml bytes or None, whether templates/ is there) of a directory to publish.

    Its top came from an image or a backup: nothing there is followed or read
    unless it is a regular file, and rootfs/ must be a real directory (tar packs a
    link as a link, which no import would take back).
    """
    no_rootfs = ImageFormatError(f"Invalid image source: {directory} has no rootfs directory")
    try:
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise no_rootfs from None
    try:
        rootfs = _lstat(fd, "rootfs")
        if rootfs is None or not stat.S_ISDIR(rootfs.st_mode):
            raise no_rootfs
        unpacking.expect_layout(fd, _PUBLISH_TOP, f"image source {directory}")
        try:
            raw = unpacking.read_beneath(fd, "metadata.yaml")
        except FileNotFoundError:
            raw = None
        except ImageFormatError as e:
            raise ImageFormatError(f"Invalid image source: {e}") from None
        return raw, _lstat(fd, "templates") is not None
    finally:
        os.close(fd)


def _prepare_publish(spool, directory, properties, now):
    raw, include_templates = _read_publish_source(directory)
    text = metadata.for_publish(raw, properties, metadata.host_architecture(), now)
    os.makedirs(spool, mode=0o700, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix="image-publish-", dir=spool)
    meta_dir = os.path.join(tmpdir, "meta")
    os.mkdir(meta_dir)
    with open(os.path.join(meta_dir, "metadata.yaml"), "wb") as f:
        f.write(text)
    return tmpdir, meta_dir, include_templates


def _new_spool_dir(spool, prefix):
    os.makedirs(spool, mode=0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=spool)


def _hash_file(path):
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        size = upload.hash_chunks(f, sha)
    return sha.hexdigest(), size


def _remove_files(*paths):
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class ImageStore:
    """The images and aliases of this daemon (`daemon.images`)."""

    log = Logger()

    def __init__(self, daemon):
        self.daemon = daemon
        self.dir = daemon.path("images")
        self.spool = daemon.path("tmp")
        self.delete_hooks = []  # see `wire`
        self._adding = set()  # fingerprints being moved into place right now
        self._publishing = defer.DeferredLock()  # one publish at a time, as the reference does
        self._catalogs = {}  # simplestreams server -> (time read, Catalog)

    def wire(self, delete_hooks):
        """The daemon's step: `async fn(fingerprint)` run before an image is deleted."""
        self.delete_hooks = list(delete_hooks)

    def settle_steps(self):
        """{journal step kind: its handler}, registered by the daemon."""
        return {"image": self._settle, "image.refresh": self._settle_refresh}

    async def _settle(self, fingerprint):
        """A step of an interrupted add or delete: the files of an image without a row go."""
        if not self._store.exists(KIND, fingerprint):
            await threads.deferToThread(_remove_files, self.path(fingerprint), self.rootfs_path(fingerprint))

    @property
    def _store(self):
        return self.daemon.store

    # -- paths and lookups ---------------------------------------------------

    def path(self, fingerprint):
        """The unified tarball, or the metadata tarball of a split image."""
        return os.path.join(self.dir, fingerprint)

    def rootfs_path(self, fingerprint):
        return os.path.join(self.dir, fingerprint + ".rootfs")

    def fingerprints(self):
        return self._store.names(KIND)

    def lookup(self, prefix):
        """The full fingerprint for a full or unique partial one."""
        if not isinstance(prefix, str) or not prefix:
            raise errors.BadRequest("image fingerprint must be a non-empty string")
        prefix = prefix.lower()
        if self._store.exists(KIND, prefix):
            return prefix
        matches = [fp for fp in self.fingerprints() if fp.startswith(prefix)]
        if not matches:
            raise errors.NotFound(f"Image '{prefix}' not found")
        if len(matches) > 1:
            raise errors.BadRequest("Partial fingerprint matches more than one image")
        return matches[0]

    def document(self, fingerprint):
        """The image's Document (full or unique partial fingerprint)."""
        fingerprint = self.lookup(fingerprint)
        return self._store.get(KIND, fingerprint)

    def _alias_index(self):
        index = {}
        for doc in self._store.list(ALIAS_KIND):
            index.setdefault(doc.value["target"], []).append(
                {"name": doc.name, "description": doc.value.get("description", "")})
        return index

    def render(self, fingerprint, value, alias_index=None):
        """The API object of an image document."""
        if alias_index is None:
            alias_index = self._alias_index()
        obj = {k: v for k, v in value.items() if k not in _INTERNAL_KEYS}
        obj["fingerprint"] = fingerprint
        obj["aliases"] = alias_index.get(fingerprint, [])
        obj.setdefault("properties", {})
        return obj

    def get(self, fingerprint):
        """The image object as the API renders it; NotFound if there is no such image."""
        doc = self.document(fingerprint)
        return self.render(doc.name, doc.value)

    def list(self, *, public_only=False):
        """Every image object (only public ones when asked), by fingerprint."""
        index = self._alias_index()
        return [self.render(doc.name, doc.value, index) for doc in self._store.list(KIND)
                if not public_only or doc.value.get("public")]

    def resolve(self, source):
        """The fingerprint a container `source` of type image names: by fingerprint
        (unique prefix), by alias, or by properties (the newest local image having them all)."""
        if not isinstance(source, dict):
            raise errors.BadRequest("source must be a map")
        fingerprint = source.get("fingerprint")
        alias = source.get("alias")
        properties = source.get("properties")
        if fingerprint:
            return self.lookup(fingerprint)
        if alias:
            if not isinstance(alias, str):
                raise errors.BadRequest("source.alias must be a string")
            value = self._store.value(ALIAS_KIND, alias)
            if value is None:
                raise errors.NotFound(f"Image alias '{alias}' not found")
            return value["target"]
        if properties:
            if not isinstance(properties, dict):
                raise errors.BadRequest("source.properties must be a map of strings")
            wanted = {str(k): str(v) for k, v in properties.items()}
            matches = [doc for doc in self._store.list(KIND)
                       if all(doc.value.get("properties", {}).get(k) == v for k, v in wanted.items())]
            if not matches:
                raise errors.NotFound(f"No image matches the properties {wanted}")
            newest = max(matches, key=lambda doc: timeutil.parse(doc.value["created_at"]))
            return newest.name
        raise errors.BadRequest("Must specify one of alias, fingerprint or properties for init from image")

    # -- adding --------------------------------------------------------------

    async def room(self):
        """The Room of the storage pool with the most free space (of the state directory
        when there is no pool yet): what an image must fit in to be usable here at all."""
        best = None
        pools = self.daemon.pools
        for name in pools.names():
            try:
                usage = await pools.usage(name)
            except Exception as e:  # an unmounted or broken pool holds nothing
                self.log.warn("Pool {pool} gave no usage: {e}", pool=name, e=errors.describe(e))
                continue
            space = usage["space"]["total"] - usage["space"]["used"]
            inodes = usage["inodes"]["total"] - usage["inodes"]["used"] if usage["inodes"]["total"] else None
            if best is None or space > best.space:
                best = Room(space, inodes)
        if best is None:
            st = await threads.deferToThread(os.statvfs, self.daemon.path())
            best = Room(st.f_bavail * st.f_frsize, st.f_favail or None)
        return best

    async def stage_upload(self, body, *, multipart_boundary=None, expected_fingerprint=None):
        """Copy, hash and check an uploaded body (a file); a Staged image, or BadRequest.

        Any failure leaves no file behind.
        """
        expected = (expected_fingerprint or "").strip().lower() or None
        body = _detached(body)
        try:
            room = await self.room()
            staged = await threads.deferToThread(_stage_upload, self.spool, body, multipart_boundary, expected,
                                                 room)
        except ImageFormatError as e:
            raise errors.BadRequest(str(e))
        finally:
            body.close()
        staged.properties = dict(staged.meta.properties)
        if self._store.exists(KIND, staged.fingerprint) or staged.fingerprint in self._adding:
            await self.discard(staged)
            raise errors.Conflict("Image with same fingerprint already exists")
        return staged

    async def discard(self, staged):
        """Remove a staged image's files."""
        await threads.deferToThread(shutil.rmtree, staged.tmpdir, True)

    def check_aliases(self, aliases):
        """[(name, description)] of aliases to create; BadRequest/Conflict if any cannot be."""
        names = []
        for entry in aliases or ():
            name = entry.get("name") if isinstance(entry, dict) else entry
            description = entry.get("description", "") if isinstance(entry, dict) else ""
            check_alias_name(name)
            if not isinstance(description, str):
                raise errors.BadRequest("aliases description must be a string")
            if self._store.exists(ALIAS_KIND, name) or name in (n for n, _ in names):
                raise errors.Conflict(f"Alias already exists: {name}")
            names.append((name, description or ""))
        return names

    async def add(self, staged, *, public=False, filename=None, properties=None, aliases=(), extra=None):
        """Move a staged image into the store and record it (with its aliases) at once.

        `extra`: more record fields (`cached`, `auto_update`, `update_source` of a pulled
        image). Returns the fingerprint; on any failure the staged files are removed.
        """
        fp = staged.fingerprint
        try:
            alias_entries = self.check_aliases(aliases)
            if self._store.exists(KIND, fp) or fp in self._adding:
                raise errors.Conflict("Image with same fingerprint already exists")
            self._adding.add(fp)
        except BaseException:
            await self.discard(staged)
            raise
        placed = []
        intent = self.daemon.journal.begin("image.add", fp)
        try:
            await intent.will("image", fingerprint=fp)
            now = timeutil.now()
            record = {
                "architecture": staged.meta.architecture,
                "auto_update": False,
                "cached": False,
                "created_at": timeutil.from_timestamp(staged.meta.creation_date),
                "expires_at": timeutil.from_timestamp(staged.meta.expiry_date),
                "filename": filename if filename is not None else staged.filename,
                "last_used_at": timeutil.ZERO_TIME,
                "properties": dict(staged.properties if properties is None else properties),
                "public": bool(public),
                "size": staged.size,
                "uploaded_at": now,
                "format": staged.image_format.name,
                "rootfs_format": staged.rootfs_format.name if staged.rootfs_format else None,
                **(extra or {}),
            }
            await threads.deferToThread(os.makedirs, self.dir, 0o700, True)
            os.rename(staged.image_path, self.path(fp))
            placed.append(self.path(fp))
            if staged.rootfs_path is not None:
                os.rename(staged.rootfs_path, self.rootfs_path(fp))
                placed.append(self.rootfs_path(fp))
            ADD_PLACED()
            changes = [Put(KIND, fp, record, expect=ABSENT), intent.done()]
            changes += [Put(ALIAS_KIND, name, {"target": fp, "description": description}, expect=ABSENT)
                        for name, description in alias_entries]
            try:
                await self._store.commit(changes)
            except RevisionMismatch as e:
                if e.kind == ALIAS_KIND:
                    raise errors.Conflict(f"Alias already exists: {e.name}")
                raise errors.Conflict("Image with same fingerprint already exists")
        except BaseException:
            _remove_files(*placed)
            await self._store.commit([intent.done()])
            raise
        finally:
            self._adding.discard(fp)
            await self.discard(staged)
        self.log.info("Image {fingerprint} added", fingerprint=fp)
        return fp

    async def create_from_directory(self, directory, *, properties=None, public=False, compression=None,
                                    aliases=(), filename="", operation=None):
        """Publish: pack `directory` (metadata.yaml, templates/, rootfs/) into a new image.

        `compression` is a compressor in $PATH or `none`; empty means the server's
        `images.compression_algorithm`. The image record gets exactly `properties`.
        Returns the fingerprint.
        """
        properties = {str(k): str(v) for k, v in (properties or {}).items()}
        compression = compression or self.daemon.config.get("images.compression_algorithm") or "gzip"
        if compression != "none":
            try:
                pack.compressor_argv(compression)
            except ValueError as e:
                raise errors.BadRequest(str(e))
        self.check_aliases(aliases)
        await self._publishing.acquire()
        try:
            return await self._publish(directory, properties, public, compression, aliases, filename, operation)
        finally:
            self._publishing.release()

    async def _publish(self, directory, properties, public, compression, aliases, filename, operation):
        try:
            tmpdir, meta_dir, include_templates = await threads.deferToThread(
                _prepare_publish, self.spool, directory, properties, time.time())
        except ImageFormatError as e:
            raise errors.BadRequest(str(e))
        staged = None
        try:
            packed = os.path.join(tmpdir, "image")

            def progress(size):
                if operation is not None:
                    operation.update_metadata({
                        **(operation.metadata or {}),
                        "create_image_from_container_pack_progress": f"Image pack: {_human_size(size)}",
                    })

            await pack.pack(self.daemon.reactor, meta_dir, directory, packed, compression,
                            include_templates=include_templates, privileged=os.geteuid() == 0,
                            progress=progress)
            fingerprint, size = await threads.deferToThread(_hash_file, packed)
            try:
                meta, image_format, _ = await threads.deferToThread(_inspect, packed, None, False)
            except ImageFormatError as e:
                raise errors.BadRequest(f"compression algorithm {compression!r} made an unusable image: {e}")
            staged = Staged(tmpdir, packed, None, fingerprint, size, meta, image_format, None,
                            filename=filename or "", properties=properties)
        except BaseException:
            await threads.deferToThread(shutil.rmtree, tmpdir, True)
            raise
        return await self.add(staged, public=public, aliases=aliases)

    # -- remote images -------------------------------------------------------

    def source(self, spec):
        return sources.open_source(self.daemon.reactor, spec, self._catalogs)

    async def pull(self, spec, *, operation=None, public=False, auto_update=False, cached=False,
                   properties=None, aliases=(), force=False, resolved=None):
        """Make the remote image `spec` names a local one; (fingerprint, whether it was fetched).

        An image already here is not fetched again. The files land in a private
        spool directory (removed at start-up after a crash), are checked against the
        fingerprint and the image rules there, and only then become an image.
        """
        source = self.source(spec)
        if resolved is None:  # else what the caller resolved just before (a refresh)
            resolved = await source.resolve(spec.name, force=force)
        fp = resolved.fingerprint
        if self._store.exists(KIND, fp):
            if aliases:
                for name, description in self.check_aliases(aliases):
                    await self.create_alias(name, fp, description)
            return fp, False
        self.check_aliases(aliases)

        def report(text):
            if operation is not None:
                operation.update_metadata({**(operation.metadata or {}), "download_progress": text})

        tmpdir = await threads.deferToThread(_new_spool_dir, self.spool, "image-pull-")
        try:
            room = await self.room()
            spool_free = await threads.deferToThread(unpacking.free_bytes, tmpdir)
            fetched = await source.fetch(resolved, tmpdir, min(sources.MAX_IMAGE, spool_free), report)
            PULL_FETCHED()
            if fetched.sha256 != fp:
                raise sources.RemoteError(f"Image fingerprint doesn't match: got {fetched.sha256}, expected {fp}")
            try:
                meta, image_format, rootfs_format = await threads.deferToThread(
                    _inspect, fetched.image_path, fetched.rootfs_path, True, room)
            except ImageFormatError as e:
                raise errors.BadRequest(f"The remote image is not usable here: {e}") from None
        except BaseException:
            # A simplestreams index may have changed under its cached copy: read it again next time.
            self._catalogs.pop(spec.server, None)
            await threads.deferToThread(shutil.rmtree, tmpdir, True)
            raise
        staged = Staged(tmpdir, fetched.image_path, fetched.rootfs_path, fp, fetched.size, meta, image_format,
                        rootfs_format, filename=fetched.filename,
                        properties={**meta.properties, **resolved.properties, **(properties or {})})
        extra = {"cached": bool(cached), "auto_update": bool(auto_update), "update_source": spec.update_source()}
        try:
            await self.add(staged, public=public, aliases=aliases, extra=extra)
        except errors.Conflict:
            if not self._store.exists(KIND, fp):  # not a pull of the same image just before
                raise
            return fp, False
        return fp, True

    async def refresh(self, fingerprint, *, operation=None):
        """Look for a newer image where this one came from (`update_source`); if there is one,
        fetch it, move this image's aliases to it and delete this one. Whether it did.

        One intent (`image.refresh`) covers it all, recorded before the fetch: the switch
        (aliases moved, flags copied, the old row gone) is one transaction; a start-up
        after a crash before it deletes the new image again, after it removes the old
        image's files.
        """
        doc = self.document(fingerprint)
        fingerprint, value = doc.name, doc.value
        origin = value.get("update_source")
        if not origin:
            return False
        spec = sources.Spec(origin["server"], origin["protocol"], origin.get("certificate", ""), origin["alias"])
        resolved = await self.source(spec).resolve(spec.name, force=True)
        new_fp = resolved.fingerprint
        if new_fp == fingerprint:
            return False
        async with self.daemon.journal.begin("image.refresh", fingerprint) as intent:
            # `fetched`: the new image is this refresh's own, so undoing it deletes it.
            fetched = not self._store.exists(KIND, new_fp)
            await intent.will("image.refresh", old=fingerprint, new=new_fp, fetched=fetched)
            REFRESH_RECORDED()
            await self.pull(spec, operation=operation, public=value.get("public", False),
                            auto_update=value.get("auto_update", False), cached=value.get("cached", False),
                            resolved=resolved)
            REFRESH_PULLED()
            for hook in self.delete_hooks:
                await hook(fingerprint)
            await self._switch(fingerprint, new_fp, intent, take_flags=fetched)
            REFRESH_COMMITTED()
            await self._settle(fingerprint)
        self.log.info("Image {old} refreshed to {new}", old=fingerprint, new=new_fp)
        return True

    async def _switch(self, old, new, intent, take_flags):
        """In one transaction: the old image's aliases name the new one, which takes over its
        public/auto_update/cached flags (if the refresh brought it: an image that was here
        already keeps its own); the old row goes; the intent is marked decided.
        An old image deleted meanwhile fails the refresh (and so undoes the new one)."""
        for _ in range(5):
            old_doc, new_doc = self._store.get(KIND, old), self._store.get(KIND, new)
            if old_doc is None:
                raise errors.NotFound(f"Image '{old}' not found")
            if new_doc is None:
                raise errors.NotFound(f"Image '{new}' not found")
            flags = {k: old_doc.value.get(k, False) for k in ("public", "auto_update", "cached") if take_flags}
            intent.value["finish"] = True
            changes = [Put(KIND, new, dict(new_doc.value, **flags), expect=new_doc.revision),
                       Delete(KIND, old, expect=old_doc.revision), intent.record()]
            changes += [Put(ALIAS_KIND, doc.name, dict(doc.value, target=new), expect=doc.revision)
                        for doc in self._store.list(ALIAS_KIND) if doc.value["target"] == old]
            try:
                await self._store.commit(changes)
                return
            except RevisionMismatch:
                intent.value["finish"] = False
                continue
        raise errors.Conflict(f"Image '{old}' kept changing during its refresh")

    async def _settle_refresh(self, old, new, fetched):
        """The step of an interrupted refresh: finished if the old row is gone (its files go),
        undone otherwise (the new image goes, if the refresh brought it)."""
        if not self._store.exists(KIND, old):
            await self._settle(old)
        elif fetched and self._store.exists(KIND, new):
            await self.delete(new)
        else:
            await self._settle(new)

    # -- changing ------------------------------------------------------------

    async def update(self, fingerprint, *, public, auto_update, properties, expect):
        """Replace the writable fields of an image (`expect` = the revision read)."""
        doc = self._store.get(KIND, fingerprint)
        if doc is None:
            raise errors.NotFound(f"Image '{fingerprint}' not found")
        value = dict(doc.value, public=public, auto_update=auto_update, properties=properties)
        await self._store.commit([Put(KIND, fingerprint, value, expect=expect)])

    def has_files(self, fingerprint):
        """Whether this daemon holds the files of image `fingerprint` (a cluster shares the
        documents of its images, each member holds the files of those it received)."""
        value = self._store.value(KIND, fingerprint) or {}
        return os.path.exists(self.path(fingerprint)) and (
            not value.get("rootfs_format") or os.path.exists(self.rootfs_path(fingerprint)))

    async def adopt_files(self, body_path, boundary, fingerprint):
        """Take the files of image `fingerprint`, whose document exists already, from an
        export of it (`body_path`, multipart with `boundary` for a split image): checked and
        hashed like an upload, then moved into place, the rootfs first, so the image file
        appearing is the moment the files are here."""
        try:
            with open(body_path, "rb") as body:
                staged = await threads.deferToThread(_stage_upload, self.spool, body, boundary, fingerprint,
                                                     await self.room())
        except ImageFormatError as e:
            raise errors.BadRequest(str(e))
        try:
            await threads.deferToThread(os.makedirs, self.dir, 0o700, True)
            if staged.rootfs_path is not None:
                os.rename(staged.rootfs_path, self.rootfs_path(fingerprint))
            os.rename(staged.image_path, self.path(fingerprint))
        finally:
            await self.discard(staged)

    async def mark_used(self, fingerprint):
        """Record that a container was just created from the image (`last_used_at`)."""
        for _ in range(5):
            doc = self._store.get(KIND, fingerprint)
            if doc is None:
                return
            value = dict(doc.value, last_used_at=timeutil.now())
            try:
                await self._store.commit([Put(KIND, fingerprint, value, expect=doc.revision)])
                return
            except RevisionMismatch:
                continue

    async def delete(self, fingerprint):
        """Remove an image, its aliases and its files."""
        doc = self._store.get(KIND, fingerprint)
        if doc is None:
            raise errors.NotFound(f"Image '{fingerprint}' not found")
        for hook in self.delete_hooks:
            await hook(fingerprint)
        changes = [Delete(KIND, fingerprint, expect=doc.revision)]
        changes += [Delete(ALIAS_KIND, alias.name, expect=alias.revision)
                    for alias in self._store.list(ALIAS_KIND) if alias.value["target"] == fingerprint]
        async with self.daemon.journal.begin("image.delete", fingerprint, finish=True) as intent:
            await self._store.commit(changes + [intent.record("image", fingerprint=fingerprint)])
            DELETE_COMMITTED()
            await self._settle(fingerprint)
        self.log.info("Image {fingerprint} deleted", fingerprint=fingerprint)

    async def unpack(self, fingerprint, target_dir):
        """Extract the image into `target_dir` (metadata.yaml, templates/, rootfs/).

        Any supported compression, unified or split, squashfs rootfs through
        unsquashfs. If it fails, `target_dir` is removed when this call created it.
        """
        doc = self.document(fingerprint)
        fp, value = doc.name, doc.value
        rootfs_format = value.get("rootfs_format")
        try:
            await unpacking.unpack(
                self.path(fp), formats.FORMATS[value["format"]],
                self.rootfs_path(fp) if rootfs_format else None,
                formats.FORMATS[rootfs_format] if rootfs_format else None,
                target_dir, privileged=os.geteuid() == 0)
        except ImageFormatError as e:
            # Images stored before the tarball rules, or a disk too full for this one.
            raise errors.BadRequest(str(e))

    # -- aliases -------------------------------------------------------------

    def alias_names(self):
        return self._store.names(ALIAS_KIND)

    def alias(self, name):
        """The alias Document; NotFound if absent."""
        doc = self._store.get(ALIAS_KIND, name)
        if doc is None:
            raise errors.NotFound(f"Image alias '{name}' not found")
        return doc

    @staticmethod
    def render_alias(name, value):
        return {"name": name, "description": value.get("description", ""), "target": value["target"]}

    async def create_alias(self, name, target, description=""):
        check_alias_name(name)
        if self._store.exists(ALIAS_KIND, name):
            raise errors.Conflict(f"Alias '{name}' already exists")
        fingerprint = self.lookup(target)
        try:
            await self._store.commit([Put(ALIAS_KIND, name, {"target": fingerprint, "description": description},
                                          expect=ABSENT)])
        except RevisionMismatch:
            raise errors.Conflict(f"Alias '{name}' already exists")

    async def update_alias(self, name, *, target, description, expect):
        fingerprint = self.lookup(target)
        await self._store.commit([Put(ALIAS_KIND, name, {"target": fingerprint, "description": description},
                                      expect=expect)])

    async def rename_alias(self, name, new_name):
        doc = self.alias(name)
        check_alias_name(new_name)
        if self._store.exists(ALIAS_KIND, new_name):
            raise errors.Conflict(f"Alias '{new_name}' already exists")
        try:
            await self._store.commit([Delete(ALIAS_KIND, name, expect=doc.revision),
                                      Put(ALIAS_KIND, new_name, doc.value, expect=ABSENT)])
        except RevisionMismatch as e:
            if e.name == new_name:
                raise errors.Conflict(f"Alias '{new_name}' already exists")
            raise

    async def delete_alias(self, name):
        doc = self.alias(name)
        await self._store.commit([Delete(ALIAS_KIND, name, expect=doc.revision)])

    # -- secrets -------------------------------------------------------------

    def create_secret(self, fingerprint):
        """A started token operation whose metadata `secret` lets an untrusted caller
        read this one image once (the token is consumed by its first use)."""
        op = self.daemon.operations.create(
            "Image download token", cls=TOKEN, resources={"images": [fingerprint]},
            metadata={"secret": new_secret()})
        op.start()
        return op

    async def consume_secret(self, fingerprint, secret):
        """True if `secret` is a live token for this image. Its first use cancels the
        token operation; it keeps matching while the finished operation is kept
        (a puller reads the image, then exports it)."""
        if not secret:
            return False
        for op in self.daemon.operations.all():
            if op.cls != TOKEN or not isinstance(op.metadata, dict) or not op.resources:
                continue
            if fingerprint not in op.resources.get("images", ()):
                continue
            if not hmac.compare_digest(str(op.metadata.get("secret", "")).encode(), secret.encode()):
                continue
            if op.status_code == RUNNING:
                await op.cancel()
                return True
            return op.status_code == CANCELLED
        return False


# An alias is a path segment of its URL: bounded, so that URL fits a request line.
MAX_ALIAS_NAME = 255


def check_alias_name(name):
    """BadRequest unless `name` can be an alias (non-empty, usable in a URL path)."""
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("Alias name must be a non-empty string")
    if "/" in name or name in (".", "..") or any(ord(c) < 32 for c in name):
        raise errors.BadRequest(f"Invalid alias name {name!r}: no '/' or control characters")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_ALIAS_NAME:
        raise errors.BadRequest(f"Invalid alias name: at most {MAX_ALIAS_NAME} bytes long")
