# -*- test-case-name: tests.integration.test_cluster_streams -*-
"""Image files between cluster members.

The members share their images' documents (the store), not their files: a member
holds the files of the images imported or pulled through it. A container created on a
member from an image whose files it lacks has them fetched first, as the reference's
target pulls an image from a member that has it: the member asks the others in turn
(the online ones, by name) for `GET /1.0/images/<fp>/export`, showing its certificate
and pinning theirs, streams the answer to a private file, checks it like an upload
(the fingerprint must match) and moves it into its image directory.
"""

import os
import shutil
import tempfile

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import errors
from lxdtx.cluster.peers import FORWARDED, MemberUnreachable, _MemberPolicy

log = Logger()
# An image export is at most this big (the reference has no bound; ours keeps a disk from filling).
MAX_IMAGE = 64 * 1024 * 1024 * 1024



async def ensure_local(daemon, fingerprint, op=None):
    """The files of image `fingerprint` here, fetched from another member if need be.

    Two creates racing for the same image may both fetch it: each places checked,
    identical files with a rename, so the second changes nothing."""
    cluster = getattr(daemon, "cluster", None)
    if cluster is None or not cluster.enabled or daemon.images.has_files(fingerprint):
        return
    await _fetch(daemon, fingerprint, op)


async def _fetch(daemon, fingerprint, op):
    reasons = []
    for member in daemon.cluster.peers.others():
        try:
            await _fetch_from(daemon, member, fingerprint, op)
        except (errors.ApiError, MemberUnreachable) as e:
            reasons.append(f"{member.name}: {e.message}")
            continue
        log.info("Image {fingerprint} fetched from cluster member {name}", fingerprint=fingerprint,
                 name=member.name)
        return
    detail = "; ".join(reasons) if reasons else "no other member is online"
    raise errors.BadRequest(f"Image '{fingerprint}' is on no reachable cluster member ({detail})")


async def _fetch_from(daemon, member, fingerprint, op):
    from lxdtx.image import download, upload

    certificate = member.value.get("certificate")
    if not certificate:
        raise MemberUnreachable(member.name, "its certificate is not known")
    spool = daemon.path("tmp")
    tmpdir = await threads.deferToThread(tempfile.mkdtemp, prefix="image-member-", dir=spool)
    try:
        path = os.path.join(tmpdir, "export")

        def progress(written, length):
            if op is not None:
                op.update_metadata(dict(op.metadata or {}, download_progress=f"image: {written * 100 // length}%"
                                        if length else f"image: {written} bytes"))

        policy = _MemberPolicy(member.value["url"], certificate, daemon.cert_path, daemon.key_path)
        try:
            written = await download.download(daemon.reactor, f"{member.value['url']}/1.0/images/{fingerprint}/export",
                                              path, limit=MAX_IMAGE, progress=progress, what="image transfer",
                                              policy=policy, headers={FORWARDED: "1"})
        except download.RemoteError as e:
            raise MemberUnreachable(member.name, e.message) from None
        try:
            boundary = upload.multipart_boundary(written.header("Content-Type"))
        except Exception as e:
            raise errors.BadRequest(f"Invalid image export: {e}") from None
        await daemon.images.adopt_files(path, boundary, fingerprint)
    finally:
        await threads.deferToThread(shutil.rmtree, tmpdir, True)
