"""Drive an ImageStore on a real reactor, outside any daemon: publish and unpack.

Run as `python -m tests.integration.imagestore_driver WORKDIR` (tests/integration/
test_image_pack.py does). It prints one JSON document with what it found; a
failed step ends it with a traceback and a non-zero status.
"""

import io
import json
import os
import shutil
import subprocess
import sys

from twisted.internet import task

from lxdtx import errors
from lxdtx.config.server import ServerConfig
from lxdtx.events import EventHub
from lxdtx.image.store import ImageStore
from lxdtx.journal import Journal
from lxdtx.operations import Operations
from lxdtx.state.store import MemoryStore
from tests import imagefiles

COMPRESSIONS = ("gzip", "bzip2", "lzma", "xz", "none")


class _NoPools:
    """The pools of a daemon that has none yet: an image must fit its state directory."""

    def names(self):
        return []


class StoreHost:
    """What an ImageStore uses of a daemon, built from the real parts."""

    def __init__(self, state_dir, reactor):
        self.dir = state_dir
        self.reactor = reactor
        self.store = MemoryStore()
        self.journal = Journal(self.store)
        self.events = EventHub()
        self.operations = Operations(self.events, reactor)
        self.config = ServerConfig(self.store)
        self.pools = _NoPools()

    def path(self, *parts):
        return os.path.join(self.dir, *parts)


def make_source(root, with_metadata):
    """A container-like directory: metadata.yaml (optional), templates/, rootfs/ with owners,
    a setuid bit, a symlink, an extended attribute and (when setfacl exists) an ACL."""
    os.makedirs(os.path.join(root, "templates"))
    with open(os.path.join(root, "templates", "hostname.tpl"), "w") as f:
        f.write("{{ container.name }}\n")
    if with_metadata:
        with open(os.path.join(root, "metadata.yaml"), "wb") as f:
            f.write(imagefiles.metadata_yaml({"os": "original"}, creation_date=1500000000))
    rootfs = os.path.join(root, "rootfs")
    os.makedirs(os.path.join(rootfs, "etc"))
    os.makedirs(os.path.join(rootfs, "bin"))
    tool = os.path.join(rootfs, "bin", "tool")
    with open(tool, "w") as f:
        f.write("#!/bin/sh\n")
    os.chown(tool, 1000, 1001)
    os.chmod(tool, 0o4755)
    os.symlink("/bin/tool", os.path.join(rootfs, "bin", "link"))
    with open(os.path.join(rootfs, "etc", "data"), "w") as f:
        f.write("payload\n")
    os.setxattr(os.path.join(rootfs, "etc", "data"), "user.lxdtx", b"kept")
    if shutil.which("setfacl"):
        subprocess.run(["setfacl", "-m", "u:1234:r", os.path.join(rootfs, "etc", "data")], check=True)


def describe(target):
    """Facts of an unpacked image that the test compares."""
    rootfs = os.path.join(target, "rootfs")
    tool = os.lstat(os.path.join(rootfs, "bin", "tool"))
    data = os.path.join(rootfs, "etc", "data")
    facts = {
        "metadata": os.path.isfile(os.path.join(target, "metadata.yaml")),
        "templates": sorted(os.listdir(os.path.join(target, "templates"))),
        "tool_owner": [tool.st_uid, tool.st_gid],
        "tool_mode": oct(tool.st_mode & 0o7777),
        "link": os.readlink(os.path.join(rootfs, "bin", "link")),
        "xattr": os.getxattr(data, "user.lxdtx").decode(),
    }
    if shutil.which("getfacl"):
        out = subprocess.run(["getfacl", "-c", data], capture_output=True, text=True, check=True).stdout
        facts["acl"] = "user:1234:r--" in out
    return facts


async def main(reactor, workdir):
    host = StoreHost(os.path.join(workdir, "state"), reactor)
    os.makedirs(host.path("tmp"))
    images = ImageStore(host)
    report = {"published": {}, "unpacked": {}}

    source = os.path.join(workdir, "source")
    make_source(source, with_metadata=True)
    exported = os.path.join(workdir, "exported")
    os.makedirs(exported)
    for compression in COMPRESSIONS:
        fp = await images.create_from_directory(
            source, properties={"os": "published"}, public=True, compression=compression,
            aliases=[{"name": f"pub-{compression}", "description": "made here"}], filename=f"pub-{compression}")
        image = images.get(fp)
        target = os.path.join(workdir, f"unpacked-{compression}")
        await images.unpack(fp, target)
        copy = os.path.join(exported, f"{compression}.image")
        shutil.copyfile(images.path(fp), copy)
        with open(os.path.join(target, "metadata.yaml")) as f:
            meta = f.read()
        report["published"][compression] = {
            "fingerprint": fp, "format": host.store.value("image", fp)["format"], "image": image,
            "file": copy, "facts": describe(target), "metadata_yaml": meta,
        }

    # The server default applies when no compression is asked for.
    await host.config.update({"images.compression_algorithm": "bzip2"}, replace=False)
    bare = os.path.join(workdir, "bare")
    make_source(bare, with_metadata=False)
    fp = await images.create_from_directory(bare, properties={"description": "generated"})
    target = os.path.join(workdir, "unpacked-default")
    await images.unpack(fp, target)
    with open(os.path.join(target, "metadata.yaml")) as f:
        report["default"] = {"format": host.store.value("image", fp)["format"], "metadata_yaml": f.read(),
                             "image": images.get(fp)}

    # Failures leave nothing: an alias already taken, an unknown compressor.
    count = len(images.fingerprints())
    failures = {}
    try:
        await images.create_from_directory(bare, aliases=[{"name": "pub-gzip"}], compression="xz")
    except errors.Conflict as e:
        failures["alias"] = e.message
    try:
        await images.create_from_directory(bare, compression="no-such-compressor")
    except errors.BadRequest as e:
        failures["compressor"] = e.message
    try:
        await images.create_from_directory(os.path.join(workdir, "missing"))
    except errors.BadRequest as e:
        failures["no rootfs"] = e.message
    report["failures"] = failures
    report["count_unchanged"] = len(images.fingerprints()) == count
    report["spool_left"] = os.listdir(host.path("tmp"))
    report["image_files"] = len(os.listdir(host.path("images")))

    # Unpacking uploaded images: unified and split (tar and squashfs rootfs).
    uploads = {"unified-lzma": (imagefiles.unified("lzma", nonce="u1"), None)}
    meta, root = imagefiles.split("bzip2", nonce="s1")
    uploads["split-tar"] = (meta, root)
    if shutil.which("mksquashfs"):
        meta, root = imagefiles.split("xz", rootfs="squashfs", nonce="q1")
        uploads["split-squashfs"] = (meta, root)
    for name, (first, second) in uploads.items():
        if second is None:
            staged = await images.stage_upload(io.BytesIO(first))
        else:
            body = (b"--B\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"m\"\r\n\r\n" + first
                    + b"\r\n--B\r\nContent-Disposition: form-data; name=\"rootfs\"; filename=\"r\"\r\n\r\n"
                    + second + b"\r\n--B--\r\n")
            staged = await images.stage_upload(io.BytesIO(body), multipart_boundary="B")
        fp = await images.add(staged)
        target = os.path.join(workdir, f"unpacked-{name}")
        await images.unpack(fp[:20], target)
        with open(os.path.join(target, "rootfs", "etc", "nonce")) as f:
            nonce = f.read().strip()
        report["unpacked"][name] = {
            "nonce": nonce, "metadata": os.path.isfile(os.path.join(target, "metadata.yaml")),
            "templates": sorted(os.listdir(os.path.join(target, "templates"))),
            "sh": os.readlink(os.path.join(target, "rootfs", "bin", "sh")),
        }
        await images.mark_used(fp)
        report["unpacked"][name]["last_used_at"] = images.get(fp)["last_used_at"]

    # An unpack that fails removes the directory it created.
    fp = images.lookup(report["published"]["gzip"]["fingerprint"])
    os.unlink(images.path(fp))
    failed_target = os.path.join(workdir, "unpack-fails")
    try:
        await images.unpack(fp, failed_target)
        report["unpack_failure"] = "no error"
    except Exception as e:
        report["unpack_failure"] = str(e)
    report["failed_target_exists"] = os.path.exists(failed_target)
    print(json.dumps(report))


if __name__ == "__main__":
    task.react(main, [sys.argv[1]])
