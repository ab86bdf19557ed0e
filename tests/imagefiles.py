"""Small LXD image files made in memory for tests: unified and split, in any compression."""

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import time

import yaml

COMPRESSIONS = ("gzip", "bzip2", "xz", "lzma", "none")
EXTENSIONS = {"gzip": ".tar.gz", "bzip2": ".tar.bz2", "xz": ".tar.xz", "lzma": ".tar.lzma", "none": ".tar"}


def metadata_yaml(properties=None, architecture="x86_64", creation_date=None, **extra):
    doc = {
        "architecture": architecture,
        "creation_date": int(time.time()) if creation_date is None else creation_date,
        "properties": properties if properties is not None else {"os": "testos", "release": "1.0",
                                                                  "description": "test image"},
        "templates": {"/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"}},
    }
    doc.update(extra)
    return yaml.safe_dump(doc).encode()


def compress(data, compression):
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "bzip2":
        return bz2.compress(data)
    if compression == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    if compression == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if compression == "none":
        return data
    raise ValueError(compression)


def tarball(entries, compression="none"):
    """entries: [(name, bytes | None for a directory | ("symlink", target) | ("hardlink", target))]."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1500000000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, tuple):
                info.type = tarfile.SYMTYPE if content[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = content[1]
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return compress(buf.getvalue(), compression)


def rootfs_entries(prefix="rootfs/", nonce=None):
    nonce = nonce if nonce is not None else os.urandom(8).hex()
    return [
        (prefix.rstrip("/") or ".", None),
        (prefix + "etc", None),
        (prefix + "etc/hostname", b"image\n"),
        (prefix + "etc/nonce", nonce.encode() + b"\n"),
        (prefix + "bin", None),
        (prefix + "bin/sh", ("symlink", "busybox")),
        (prefix + "bin/busybox", b"not really busybox\n"),
    ]


def template_entries():
    return [("templates", None), ("templates/hostname.tpl", b"{{ container.name }}\n")]


def unified(compression="xz", properties=None, nonce=None, **meta):
    """Bytes of a unified image tarball."""
    entries = [("metadata.yaml", metadata_yaml(properties, **meta)), *template_entries(),
               *rootfs_entries(nonce=nonce)]
    return tarball(entries, compression)


def split(compression="xz", rootfs="tar", properties=None, nonce=None):
    """(metadata tarball bytes, rootfs bytes) of a split image; rootfs `tar` or `squashfs`."""
    meta = tarball([("metadata.yaml", metadata_yaml(properties)), *template_entries()], compression)
    if rootfs == "tar":
        return meta, tarball(rootfs_entries(prefix="", nonce=nonce)[1:], compression)
    return meta, squashfs(nonce)


def squashfs(nonce=None):
    """A squashfs root filesystem (needs mksquashfs)."""
    work = tempfile.mkdtemp(prefix="lxdtx-sqfs-")
    try:
        src = os.path.join(work, "root")
        os.makedirs(os.path.join(src, "etc"))
        os.makedirs(os.path.join(src, "bin"))
        with open(os.path.join(src, "etc", "nonce"), "w") as f:
            f.write((nonce or os.urandom(8).hex()) + "\n")
        with open(os.path.join(src, "bin", "busybox"), "w") as f:
            f.write("not really busybox\n")
        os.symlink("busybox", os.path.join(src, "bin", "sh"))
        out = os.path.join(work, "rootfs.squashfs")
        subprocess.run(["mksquashfs", src, out, "-noappend", "-quiet", "-no-progress"], check=True,
                       capture_output=True)
        with open(out, "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(work, ignore_errors=True)
