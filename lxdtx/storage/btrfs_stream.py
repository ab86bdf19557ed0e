# -*- test-case-name: tests.unit.test_btrfs_stream -*-
"""Checking a `btrfs send` stream from an optimized backup before `btrfs receive` sees it.

`btrfs receive` finds a stream's parent and the sources of its clones by UUID
anywhere on the file system: a crafted stream could make the imported container
a snapshot of another container, or copy extents out of one. It would also make
device nodes. So each stream is read here first, command by command (the data
of writes is skipped, not read), and refused unless it is one subvolume whose
name is the one expected, whose parent is the stream before it in the backup
(or none for the first), whose clones come from itself or that chain, with no
device node and no path leaving the subvolume. Blocking: run it in a thread.

Format (btrfs-progs `send.h`): `btrfs-stream\\0`, a u32 version, then commands:
u32 length, u16 command, u32 crc, then attributes (u16 type, u16 length, data;
in version 2 a write's data attribute has no length and runs to the command's end).
"""

import os
import stat
import struct
import uuid as uuids

MAGIC = b"btrfs-stream\0"
_HEADER = struct.Struct("<IHI")
_TLV = struct.Struct("<HH")

# Commands and attributes this check looks at.
SUBVOL, SNAPSHOT, MKNOD, SYMLINK, RENAME, LINK, WRITE, CLONE, END = 1, 2, 5, 8, 9, 10, 15, 16, 21
ENCODED_WRITE = 25
LAST_COMMAND = 26
A_UUID, A_MODE, A_PATH, A_PATH_TO, A_PATH_LINK, A_DATA, A_CLONE_UUID, A_CLONE_PATH = 1, 5, 15, 16, 17, 19, 20, 22
_PATHS = (A_PATH, A_PATH_TO, A_CLONE_PATH)
MAX_COMMAND = 1 << 26  # a write carries at most a few hundred KiB; a header claiming more is no stream


class StreamError(ValueError):
    """The stream is not one this daemon receives; the text says why."""


def _path_ok(raw):
    """A path below the subvolume (empty: the subvolume itself)."""
    if raw is None or raw.startswith(b"/") or b"\0" in raw:
        return False
    return b".." not in raw.split(b"/")


class Stream:
    """What a checked stream is: its subvolume's name and UUID, and its parent's UUID."""

    def __init__(self, name, uuid, parent):
        self.name = name
        self.uuid = uuid
        self.parent = parent


def _attributes(payload, version, command):
    attrs = {}
    pos = 0
    while pos < len(payload):
        if len(payload) - pos < _TLV.size:
            raise StreamError("an attribute is cut short")
        kind, size = _TLV.unpack_from(payload, pos)
        pos += _TLV.size
        if kind == A_DATA and command in (WRITE, ENCODED_WRITE):
            # A write's data (only its first bytes were read; in version 2 it has no length):
            # not looked at.
            attrs[kind] = b""
            break
        if len(payload) - pos < size:
            raise StreamError("an attribute is longer than its command")
        attrs[kind] = payload[pos:pos + size]
        pos += size
    return attrs


def check(path, *, name, parent=None, chain=()):
    """The Stream in the file `path`; StreamError unless it is as the module docstring says.

    `name`: the subvolume name it must create; `parent`: the UUID (a uuid.UUID) of the
    stream it must be relative to (None: it must be a full stream); `chain`: the UUIDs
    its clones may come from besides its own.
    """
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 4)
        if len(head) < len(MAGIC) + 4 or not head.startswith(MAGIC):
            raise StreamError("not a btrfs send stream")
        (version,) = struct.unpack("<I", head[len(MAGIC):])
        if version not in (1, 2, 3):
            raise StreamError(f"btrfs send stream version {version} is not supported")
        size = os.fstat(f.fileno()).st_size
        stream = None
        while True:
            header = f.read(_HEADER.size)
            if not header:
                raise StreamError("the stream ends without its end command")
            if len(header) < _HEADER.size:
                raise StreamError("a command header is cut short")
            length, command, _ = _HEADER.unpack(header)
            if length > MAX_COMMAND or f.tell() + length > size:
                raise StreamError("a command is longer than the stream")
            if command in (WRITE, ENCODED_WRITE):
                # Only the path matters; the data after it is skipped.
                payload = f.read(min(length, 8192))
                f.seek(length - len(payload), os.SEEK_CUR)
            else:
                payload = f.read(length)
            if command == 0 or command > LAST_COMMAND:
                raise StreamError(f"unknown command {command}")
            if command == END:
                if stream is None:
                    raise StreamError("the stream holds no subvolume")
                if f.read(1):
                    raise StreamError("data after the end of the stream")
                return stream
            attrs = _attributes(payload, version, command)
            if command in (SUBVOL, SNAPSHOT):
                stream = _subvolume(stream, command, attrs, name, parent)
                continue
            if stream is None:
                raise StreamError("a command comes before the subvolume it changes")
            _command(command, attrs, {stream.uuid, *chain})


def _uuid(raw):
    if len(raw or b"") != 16:
        raise StreamError("a UUID is not 16 bytes")
    return uuids.UUID(bytes=raw)


def _subvolume(stream, command, attrs, name, parent):
    if stream is not None:
        raise StreamError("the stream holds more than one subvolume")
    found = attrs.get(A_PATH, b"").decode("utf-8", "surrogateescape")
    if found != name:
        raise StreamError(f"the stream's subvolume is {found!r}, not {name!r}")
    uuid = _uuid(attrs.get(A_UUID))
    if command == SUBVOL:
        if parent is not None:
            raise StreamError(f"{name!r} is a full stream where one relative to the snapshot before it was expected")
        return Stream(name, uuid, None)
    of = _uuid(attrs.get(A_CLONE_UUID))
    if parent is None or of != parent:
        raise StreamError(f"{name!r} is relative to a subvolume that is not the snapshot before it in the backup")
    return Stream(name, uuid, of)


def _command(command, attrs, allowed):
    for kind in _PATHS:
        if kind in attrs and not _path_ok(attrs[kind]):
            raise StreamError("a path in the stream leaves its subvolume")
    if command == LINK and not _path_ok(attrs.get(A_PATH_LINK)):
        raise StreamError("a hard link in the stream points out of its subvolume")
    if command == MKNOD:
        mode = struct.unpack("<Q", attrs.get(A_MODE, b"\0" * 8).ljust(8, b"\0")[:8])[0]
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise StreamError("the stream makes a device node (unprivileged containers cannot use them)")
    if command == CLONE and _uuid(attrs.get(A_CLONE_UUID)) not in allowed:
        raise StreamError("the stream clones data from a subvolume outside the backup")
