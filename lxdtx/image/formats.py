# -*- test-case-name: tests.unit.test_image_formats -*-
"""What an image file is: compression told by magic bytes, and a safe look inside tarballs.

Everything here that reads a file blocks: callers run it in a thread.
"""

import bz2
import dataclasses
import gzip
import lzma
import posixpath
import tarfile
import zlib

from lxdtx.image import metadata as image_metadata
from lxdtx.image.invalid import ImageFormatError

# How far into a file the magic numbers reach (`ustar` sits at offset 257).
HEAD_SIZE = 262

# metadata.yaml is a few hundred bytes; anything much larger is not metadata.
MAX_METADATA_SIZE = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Format:
    """One kind of image file: how tar reads it and the extension export gives it."""

    name: str  # gzip, bzip2, xz, lzma, zstd, tar, squashfs
    tar_flags: tuple  # decompression flags for GNU tar; () for plain tar
    extension: str

    @property
    def is_tarball(self):
        return self.name != "squashfs"


FORMATS = {
    f.name: f for f in [
        Format("bzip2", ("-j",), ".tar.bz2"),
        Format("gzip", ("-z",), ".tar.gz"),
        Format("xz", ("-J",), ".tar.xz"),
        Format("lzma", ("--lzma",), ".tar.lzma"),
        Format("zstd", ("--zstd",), ".tar.zst"),
        Format("tar", (), ".tar"),
        Format("squashfs", (), ".squashfs"),
    ]
}


def detect(head):
    """The Format of a file from its first HEAD_SIZE bytes; ImageFormatError if unknown."""
    if head.startswith(b"BZh"):
        return FORMATS["bzip2"]
    if head.startswith(b"\x1f\x8b"):
        return FORMATS["gzip"]
    if head.startswith(b"\xfd7zXZ\x00"):
        return FORMATS["xz"]
    if head[1:5] == b"7zXZ" or head.startswith(b"\x5d\x00\x00"):
        return FORMATS["lzma"]
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return FORMATS["zstd"]
    if head[257:262] == b"ustar":
        return FORMATS["tar"]
    if head.startswith(b"hsqs"):
        return FORMATS["squashfs"]
    raise ImageFormatError("Unsupported compression")


def detect_file(path):
    """The Format of the file at `path`."""
    with open(path, "rb") as f:
        return detect(f.read(HEAD_SIZE))


def _decompressed(fileobj, fmt):
    if fmt.name == "gzip":
        return gzip.GzipFile(fileobj=fileobj, mode="rb")
    if fmt.name == "bzip2":
        return bz2.BZ2File(fileobj, "rb")
    if fmt.name == "xz":
        return lzma.LZMAFile(fileobj, "rb", format=lzma.FORMAT_XZ)
    if fmt.name == "lzma":
        return lzma.LZMAFile(fileobj, "rb", format=lzma.FORMAT_ALONE)
    if fmt.name == "tar":
        return fileobj
    raise ImageFormatError(f"Unsupported compression for reading metadata: {fmt.name}")


def member_path(name):
    """A tar member name normalised (`./a//b/` -> `a/b`); ImageFormatError if it could escape."""
    if name.startswith("/"):
        raise ImageFormatError(f"Invalid image: archive member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageFormatError(f"Invalid image: archive member {name!r} contains '..'")
    return "/".join(parts)


class _MemberCheck:
    """Refuses members that could land outside the target directory when extracted."""

    def __init__(self):
        self._symlinks = set()

    def check(self, member):
        path = member_path(member.name)
        # A member below a symlink member would be written wherever the link points.
        parent = posixpath.dirname(path)
        while parent:
            if parent in self._symlinks:
                raise ImageFormatError(
                    f"Invalid image: archive member {member.name!r} lies below the symlink {parent!r}")
            parent = posixpath.dirname(parent)
        if member.issym():
            self._symlinks.add(path)
        else:
            self._symlinks.discard(path)
        if member.islnk():
            member_path(member.linkname)
        return path


@dataclasses.dataclass
class TarballInfo:
    """What a pass over a tarball found."""

    metadata: bytes = None  # raw metadata.yaml, when present
    has_rootfs: bool = False  # a `rootfs` directory or members under `rootfs/`
    members: int = 0


def inspect_tarball(path, fmt, *, check_members=True):
    """Read a tarball once: its metadata.yaml and, when asked, check every member name.

    Raises ImageFormatError for a corrupt archive or an unsafe member.
    """
    if not fmt.is_tarball:
        raise ImageFormatError(f"Invalid image: {fmt.name} where a tarball was expected")
    info = TarballInfo()
    checker = _MemberCheck()
    try:
        with open(path, "rb") as raw, _decompressed(raw, fmt) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    info.members += 1
                    path_in = checker.check(member) if check_members else member_path(member.name)
                    if path_in == "rootfs" or path_in.startswith("rootfs/"):
                        info.has_rootfs = True
                    if path_in == "metadata.yaml" and member.isfile() and info.metadata is None:
                        if member.size > MAX_METADATA_SIZE:
                            raise ImageFormatError("Invalid image: metadata.yaml is too large")
                        info.metadata = tar.extractfile(member).read()
                    elif not check_members and info.metadata is not None:
                        break
    except ImageFormatError:
        raise
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise ImageFormatError(f"Invalid image: not a readable {fmt.name} tarball: {e}")
    if info.members == 0:
        raise ImageFormatError("Invalid image: empty archive")
    return info


def read_metadata(path, fmt, *, check_members=True):
    """(ImageMetadata, TarballInfo) of a unified or metadata tarball."""
    info = inspect_tarball(path, fmt, check_members=check_members)
    if info.metadata is None:
        raise ImageFormatError(
            "Could not extract image metadata.yaml from tar: metadata.yaml not found in the archive")
    return image_metadata.parse(info.metadata), info
