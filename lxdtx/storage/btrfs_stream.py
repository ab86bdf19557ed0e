# -*- test-case-name: tests.unit.test_btrfs_stream -*-
"""Checking a `btrfs send` stream before `btrfs receive` sees it: optimized backups, migrations.

`btrfs receive` finds a stream's parent and the sources of its clones by UUID
anywhere on the file system: a crafted stream could make the arriving container
a snapshot of another container, or copy extents out of one. It would also make
device nodes. So each stream is read here first, command by command (the data
of writes is skipped, not kept), and refused unless it is one subvolume whose
name is the one expected, whose parent is the stream before it in the backup or
migration (or none for the first), whose clones come from itself or that chain,
with no device node and no path leaving the subvolume.

`Checker` is fed the stream as it comes (a migration's websocket frames): it keeps
only the command header and attributes it is reading, so a chunk it passed can go to
`btrfs receive` at once; `check` feeds it a file (blocking: run it in a thread).

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
MAX_OTHER = 1 << 18  # other commands: paths and an xattr's value (64 KiB at most), the only ones kept whole
_WRITE_HEAD = 8192  # what of a write is read: its path and offset come before its data
_READ = 1 << 16


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


class Checker:
    """A stream fed in pieces (`feed`), then `finish`: StreamError as soon as what came is not
    as the module docstring says, else the Stream.

    `name`: the subvolume name it must create (None: any single path component not in
    `taken`); `parent`: the UUID (a uuid.UUID) of the stream it must be relative to (None:
    it must be a full stream); `chain`: the UUIDs its clones may come from besides its own;
    `size`: the stream's length, when known (a file).
    """

    def __init__(self, *, name=None, parent=None, chain=(), taken=(), size=None):
        self.name, self.parent, self.chain, self.taken, self.size = name, parent, set(chain), set(taken), size
        self.stream = None
        self.version = None
        self.skip = 0  # bytes of write data still to pass over
        self._buffer = bytearray()
        self._need = len(MAGIC) + 4
        self._step = self._magic
        self._offset = 0  # bytes taken so far
        self._command = None
        self._rest = 0
        self._ended = False

    def feed(self, data):
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self.skip:
                n = min(self.skip, len(view) - pos)
                self.skipped(n)
                pos += n
                continue
            if self._ended:
                raise StreamError("data after the end of the stream")
            piece = view[pos:pos + self._need - len(self._buffer)]
            self._buffer += piece
            pos += len(piece)
            self._offset += len(piece)
            if len(self._buffer) == self._need:
                self._advance()

    def skipped(self, n):
        """`n` bytes of the pending skip went by without being fed (a file seeked over them)."""
        self.skip -= n
        self._offset += n

    def finish(self):
        if self._ended:
            return self.stream
        if self._step == self._magic:
            raise StreamError("not a btrfs send stream")
        if self._step == self._header and not self._buffer and not self.skip:
            raise StreamError("the stream ends without its end command")
        if self._step == self._header and not self.skip:
            raise StreamError("a command header is cut short")
        raise StreamError("a command is cut short")

    def _advance(self):
        data, self._buffer = bytes(self._buffer), bytearray()
        self._step(data)
        while self._need == 0 and not self._ended:  # an empty command (the end) has nothing to wait for
            self._step(b"")

    def _magic(self, head):
        if not head.startswith(MAGIC):
            raise StreamError("not a btrfs send stream")
        (self.version,) = struct.unpack("<I", head[len(MAGIC):])
        if self.version not in (1, 2, 3):
            raise StreamError(f"btrfs send stream version {self.version} is not supported")
        self._expect_header()

    def _expect_header(self):
        self._step, self._need = self._header, _HEADER.size

    def _header(self, header):
        length, command, _ = _HEADER.unpack(header)
        if command == 0 or command > LAST_COMMAND:
            raise StreamError(f"unknown command {command}")
        if length > MAX_COMMAND or (self.size is not None and self._offset + length > self.size):
            raise StreamError("a command is longer than the stream")
        if command in (WRITE, ENCODED_WRITE):
            # Only the path matters; the data after it is skipped.
            self._need = min(length, _WRITE_HEAD)
        elif length > MAX_OTHER:
            raise StreamError(f"command {command} is longer than btrfs send makes it")
        else:
            self._need = length
        self._command, self._rest = command, length - self._need
        self._step = self._payload

    def _payload(self, payload):
        command = self._command
        self.skip = self._rest
        self._expect_header()
        if command == END:
            if self.stream is None:
                raise StreamError("the stream holds no subvolume")
            self._ended = True
            return
        attrs = _attributes(payload, self.version, command)
        if command in (SUBVOL, SNAPSHOT):
            self.stream = _subvolume(self.stream, command, attrs, self.name, self.parent, self.taken)
            return
        if self.stream is None:
            raise StreamError("a command comes before the subvolume it changes")
        _command(command, attrs, {self.stream.uuid, *self.chain})


def check(path, *, name, parent=None, chain=()):
    """The Stream in the file `path`; StreamError unless it is as the module docstring says
    (the arguments as Checker's)."""
    with open(path, "rb") as f:
        checker = Checker(name=name, parent=parent, chain=chain, size=os.fstat(f.fileno()).st_size)
        while True:
            if checker.skip > _READ:
                f.seek(checker.skip, os.SEEK_CUR)
                checker.skipped(checker.skip)
            data = f.read(_READ)
            if not data:
                return checker.finish()
            checker.feed(data)


def _uuid(raw):
    if len(raw or b"") != 16:
        raise StreamError("a UUID is not 16 bytes")
    return uuids.UUID(bytes=raw)


def _subvolume(stream, command, attrs, name, parent, taken=()):
    if stream is not None:
        raise StreamError("the stream holds more than one subvolume")
    found = attrs.get(A_PATH, b"").decode("utf-8", "surrogateescape")
    if name is None:
        if found in ("", ".", "..") or "/" in found or "\0" in found:
            raise StreamError(f"the stream's subvolume name {found!r} is not one path component")
        if found in taken:
            raise StreamError(f"the stream's subvolume {found!r} came before in this transfer")
        name = found
    elif found != name:
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
