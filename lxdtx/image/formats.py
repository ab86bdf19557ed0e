# -*- test-case-name: tests.unit.test_hostile_tarballs -*-
"""What an image file is: compression told by magic bytes, and the one check every
tarball passes before anything extracts it (image import and unpack, backup import).

The rules, for a tarball whose root filesystems lie in `rootfs/` (a Layout says where):

* Outside a root filesystem (metadata.yaml, templates/, backup.yaml, index.yaml) only
  regular files and directories, no setuid/setgid bits, no sparse files, at most
  MAX_METADATA_SIZE bytes each: the daemon reads these files itself.
* A root filesystem's own top (`rootfs`) is a directory. Inside it symlinks are data,
  pointing anywhere, but no member lies below one; hard links only name earlier
  regular members of the same root filesystem; no device nodes (an unprivileged
  container cannot use them, and LXD skips them too); fifos are fine.
* The archive ends with an end-of-archive block followed by nothing but zeros, its
  compressed stream is complete with nothing after it, and its members fit in the
  free space of where it is extracted.

GNU tar alone would replace the extracted `rootfs` directory by a `rootfs -> /`
member, or write a template through a link, as root. Everything here that reads a
file blocks: callers run it in a thread.
"""

import bz2
import dataclasses
import errno
import lzma
import posixpath
import tarfile
import zlib
from collections.abc import Callable

from lxdtx import errors
from lxdtx.image import metadata as image_metadata
from lxdtx.image.invalid import ImageFormatError

# How far into a file the magic numbers reach (`ustar` sits at offset 257).
HEAD_SIZE = 262

# metadata.yaml is a few hundred bytes; the other files outside a rootfs (templates,
# backup.yaml, index.yaml) are small too, and the daemon reads them into memory.
MAX_METADATA_SIZE = 1024 * 1024

_READ_SIZE = 64 * 1024
_SETID = 0o6000


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


# -- layouts -------------------------------------------------------------------

def _image_rootfs(parts):
    return "rootfs" if parts[:1] == ["rootfs"] else None


def _backup_rootfs(parts):
    if parts[:3] == ["backup", "container", "rootfs"]:
        return "backup/container/rootfs"
    if len(parts) >= 4 and parts[:2] == ["backup", "snapshots"] and parts[3] == "rootfs":
        return "/".join(parts[:4])
    return None


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the root filesystems of one kind of tarball lie, and what its errors call it."""

    what: str
    rootfs_of: Callable  # member path components -> path of the rootfs holding it, or None

    def refuse(self, text):
        return ImageFormatError(f"Invalid {self.what}: {text}")


IMAGE = Layout("image tarball", _image_rootfs)  # unified image, or a split image's metadata
ROOTFS = Layout("image rootfs tarball", lambda parts: "")  # a split image's rootfs: all of it
BACKUP = Layout("backup tarball", _backup_rootfs)  # backup/container/rootfs, backup/snapshots/*/rootfs


# -- member rules ----------------------------------------------------------------

def _normalised(name):
    """(`./a//b/` -> `a/b`, None), or (None, why the name could escape)."""
    if name.startswith("/"):
        return None, "has an absolute path"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "contains '..'"
    return "/".join(parts), None


def member_path(name, layout=IMAGE):
    """A tar member name normalised (`./a//b/` -> `a/b`); ImageFormatError if it could escape."""
    path, problem = _normalised(name)
    if problem:
        raise layout.refuse(f"member {name!r} {problem}")
    return path


def _kind(member):
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hard link"
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "fifo"
    if member.isdir():
        return "directory"
    if member.isfile():
        return "regular file"
    return f"member of unknown type {member.type!r}"


def _data_size(member):
    """Bytes a regular member takes once extracted (a sparse one only its data)."""
    if not member.isfile():
        return 0
    if member.sparse is not None:
        return sum(size for _, size in member.sparse)
    return member.size


def _ancestors(path):
    parent = posixpath.dirname(path)
    while parent:
        yield parent
        parent = posixpath.dirname(parent)


class _Members:
    """The rules of the module docstring, applied to an archive's members in order."""

    def __init__(self, layout, free_space=None):
        self.layout = layout
        self.free_space = free_space
        self.size = 0
        self._symlinks = set()
        self._regular = set()  # regular files (and hard links to them), as extracted so far

    def check(self, member):
        """The member's normalised path; ImageFormatError naming it if it breaks a rule."""
        path = member_path(member.name, self.layout)
        below = self._symlink_above(path)
        if below:
            raise self.layout.refuse(f"member {member.name!r} lies below the symlink {below!r}")
        rootfs = self.layout.rootfs_of(path.split("/") if path else [])
        if rootfs is None:
            self._outside(member, path)
        else:
            self._inside(member, path, rootfs)
        self._record(member, path)
        self._count(member)
        return path

    def _symlink_above(self, path):
        # A member below a symlink would be written wherever the link points.
        return next((p for p in _ancestors(path) if p in self._symlinks), None)

    def _outside(self, member, path):
        refuse = self.layout.refuse
        if not (member.isfile() or member.isdir()):
            raise refuse(f"member {member.name!r} is a {_kind(member)}: only regular files and "
                         "directories may lie outside rootfs")
        if not path and not member.isdir():
            raise refuse(f"member {member.name!r} is a {_kind(member)}, not a directory")
        if member.mode & _SETID:
            raise refuse(f"member {member.name!r} has the setuid or setgid bit outside rootfs")
        if member.sparse is not None:
            raise refuse(f"member {member.name!r} is a sparse file outside rootfs")
        if member.isfile() and member.size > MAX_METADATA_SIZE:
            raise refuse(f"member {member.name!r} is larger than {MAX_METADATA_SIZE} bytes")

    def _inside(self, member, path, rootfs):
        refuse = self.layout.refuse
        if path == rootfs and not member.isdir():
            raise refuse(f"member {member.name!r} is a {_kind(member)}, not a directory")
        if member.ischr() or member.isblk():
            raise refuse(f"member {member.name!r} is a {_kind(member)}: device nodes are not "
                         "supported (unprivileged containers cannot use them)")
        if member.islnk():
            self._hard_link(member, rootfs)
        elif not (member.isfile() or member.isdir() or member.issym() or member.isfifo()):
            raise refuse(f"member {member.name!r} is a {_kind(member)}")

    def _hard_link(self, member, rootfs):
        target, problem = _normalised(member.linkname)
        if problem:
            raise self.layout.refuse(f"hard link {member.name!r} points to {member.linkname!r}, which {problem}")
        # A target once regular may have been replaced by a symlink directory above it since.
        if (target not in self._regular or self._symlink_above(target)
                or self.layout.rootfs_of(target.split("/")) != rootfs):
            raise self.layout.refuse(
                f"hard link {member.name!r} points to {member.linkname!r}, which is not an earlier "
                "regular file of the same rootfs")

    def _record(self, member, path):
        if member.issym():
            self._symlinks.add(path)
        else:
            self._symlinks.discard(path)
        if member.isfile() or member.islnk():
            self._regular.add(path)
        else:
            self._regular.discard(path)

    def _count(self, member):
        self.size += _data_size(member)
        if self.free_space is not None and self.size > self.free_space:
            raise self.layout.refuse(
                f"its members need more than {self.size} bytes, but only {self.free_space} "
                "are free where it is extracted")


# -- reading ---------------------------------------------------------------------

class _Trailing(Exception):
    """Bytes after the end of the data that GNU tar or its decompressor would choke on."""


class _Truncated(Exception):
    """The archive stops early."""


# The magic bytes that open a further concatenated stream (`.lzma` files have none).
_STREAM_MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00"}


def _decompressor(name):
    if name == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "bzip2":
        return bz2.BZ2Decompressor()
    if name == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)
    if name == "lzma":
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    raise ImageFormatError(f"Unsupported compression for reading metadata: {name}")


class _Stream:
    """One compressed stream, its output bounded per call whatever the ratio.

    zlib hands back the input it has not used yet; lzma and bz2 keep it inside.
    """

    def __init__(self, name):
        self._d = _decompressor(name)
        self._zlib = hasattr(self._d, "unconsumed_tail")
        self._tail = b""

    @property
    def eof(self):
        return self._d.eof

    @property
    def unused_data(self):
        return self._d.unused_data

    @property
    def needs_input(self):
        return not self._tail if self._zlib else self._d.needs_input

    def output(self, data, limit):
        if not self._zlib:
            return self._d.decompress(data, limit)
        out = self._d.decompress(self._tail + data, limit)
        self._tail = self._d.unconsumed_tail
        return out


class _Decoded:
    """The decompressed bytes of a file, read forward only (all tarfile needs here).

    Python's gzip, bz2 and lzma file objects ignore whatever follows the last
    compressed stream; the decompressor GNU tar runs fails on it. So here only zero
    padding or a further stream may follow. The last read is kept: the block at
    which tarfile stopped is looked at again.
    """

    def __init__(self, raw, fmt):
        self._raw = raw
        self._name = fmt.name
        self._stream = None if fmt.name == "tar" else _Stream(fmt.name)
        self._pending = b""  # compressed bytes read but not yet given to a stream
        self._buffer = bytearray()  # decompressed bytes not yet read
        self._pos = 0
        self.last_pos = 0
        self.last = b""

    def tell(self):
        return self._pos

    def seek(self, pos, whence=0):
        if whence != 0 or pos < self._pos:
            raise OSError(errno.ESPIPE, "decompressed data is read forward only")
        while self._pos < pos and self.read(min(pos - self._pos, _READ_SIZE)):
            pass
        return self._pos

    def read(self, size):
        while len(self._buffer) < size:
            chunk = self._more(_READ_SIZE)
            if not chunk:
                break
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.last_pos, self.last = self._pos, data
        self._pos += len(data)
        return data

    def _more(self, limit):
        """Up to `limit` bytes; b"" only at the end of the data."""
        if self._stream is None:
            return self._raw.read(limit)
        while True:
            if self._stream.eof and not self._next_stream():
                return b""
            data = b""
            if self._stream.needs_input:
                data, self._pending = self._pending or self._raw.read(_READ_SIZE), b""
                if not data:
                    raise EOFError(f"the {self._name} stream ends before its end marker")
            out = self._stream.output(data, limit)
            if out:
                return out

    def _next_stream(self):
        """After a stream ends: True once a further stream starts, False if only zeros follow."""
        rest = self._stream.unused_data + self._pending
        magic = _STREAM_MAGIC.get(self._name)
        while True:
            rest = rest.lstrip(b"\0")
            if rest and (magic is None or len(rest) >= len(magic)):
                break
            more = self._raw.read(_READ_SIZE)
            if not more:
                if rest:
                    raise _Trailing(f"trailing data after the {self._name} stream")
                return False
            rest += more
        if magic is None or not rest.startswith(magic):
            raise _Trailing(f"trailing data after the {self._name} stream")
        self._stream, self._pending = _Stream(self._name), rest
        return True


def _each(tar):
    """The members of `tar` in order, without tarfile keeping them all (a rootfs has many)."""
    while True:
        member = tar.next()
        tar.members.clear()
        if member is None:
            return
        yield member


def _check_end(tar, stream):
    """After the last member: an end-of-archive block, then nothing but zeros."""
    block = stream.last if stream.last_pos == tar.offset else b""
    if len(block) < tarfile.BLOCKSIZE:
        raise _Truncated("the archive ends without an end-of-archive marker")
    if block.strip(b"\0"):
        raise _Trailing(f"the data at offset {tar.offset} is no member header (a member holds "
                        "more data than it declares, or the archive is damaged)")
    while True:
        chunk = stream.read(_READ_SIZE)
        if not chunk:
            return
        if chunk.strip(b"\0"):
            raise _Trailing("trailing data after the end of the archive")


@dataclasses.dataclass
class TarballInfo:
    """What a pass over a tarball found."""

    metadata: bytes = None  # raw metadata.yaml, when present (the last one: what tar leaves)
    has_rootfs: bool = False  # a `rootfs` directory or members under `rootfs/`
    members: int = 0
    size: int = 0  # bytes of file data once extracted


def check_tarball(path, fmt, layout=IMAGE, *, free_space=None):
    """Check every member of the tarball at `path` against the rules for `layout`.

    `free_space`: bytes free where it will be extracted (None: not checked).
    Returns a TarballInfo; ImageFormatError names the first member or problem found.
    """
    return _read(path, fmt, layout, _Members(layout, free_space))


def _read(path, fmt, layout, members):
    if not fmt.is_tarball:
        raise layout.refuse(f"{fmt.name} where a tarball was expected")
    info = TarballInfo()
    try:
        with open(path, "rb") as raw:
            stream = _Decoded(raw, fmt)
            with tarfile.open(fileobj=stream, mode="r:") as tar:
                for member in _each(tar):
                    info.members += 1
                    name = members.check(member) if members else member_path(member.name, layout)
                    if name == "rootfs" or name.startswith("rootfs/"):
                        info.has_rootfs = True
                    if name == "metadata.yaml" and member.isfile():
                        if member.size > MAX_METADATA_SIZE:
                            raise layout.refuse("metadata.yaml is too large")
                        info.metadata = tar.extractfile(member).read()
                        if members is None:
                            break
                if members is not None:
                    _check_end(tar, stream)
    except ImageFormatError:
        raise
    except _Trailing as e:
        raise layout.refuse(str(e))
    except (_Truncated, EOFError) as e:
        raise layout.refuse(f"truncated archive: {e}")
    except tarfile.ReadError as e:
        if "unexpected end of data" in str(e):
            raise layout.refuse("truncated archive: a member's data is cut short")
        raise layout.refuse(f"not a readable {fmt.name} tarball: {e}")
    except (tarfile.TarError, OSError, lzma.LZMAError, zlib.error) as e:
        raise layout.refuse(f"not a readable {fmt.name} tarball: {errors.describe(e)}")
    if info.members == 0:
        raise layout.refuse("empty archive")
    if members is not None:
        info.size = members.size
    return info


def inspect_tarball(path, fmt, *, check_members=True):
    """An image tarball's metadata.yaml and rootfs presence; with `check_members`, every rule.

    Without it (an image this daemon just packed) only metadata.yaml is looked for.
    """
    return _read(path, fmt, IMAGE, _Members(IMAGE) if check_members else None)


def read_metadata(path, fmt, *, check_members=True):
    """(ImageMetadata, TarballInfo) of a unified or metadata tarball."""
    info = inspect_tarball(path, fmt, check_members=check_members)
    if info.metadata is None:
        raise ImageFormatError(
            "Could not extract image metadata.yaml from tar: metadata.yaml not found in the archive")
    return image_metadata.parse(info.metadata), info
