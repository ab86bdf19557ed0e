# -*- test-case-name: tests.unit.test_files -*-
"""Files inside a container: stat, read, list, write, mkdir, symlink, delete.

This runs inside the container's file agent (`lxdtx/helpers/fileagent.py`): for a
running container a process in the container's user, mount and other
namespaces with the credentials of its root, so the kernel checks every open
as it would for the container's own root; for a stopped one a process on the
host over the rootfs directory. Every path is resolved with
`openat2(RESOLVE_IN_ROOT)` against the root, so `..`, absolute symlinks and
symlinked directories stay inside; the last component of a path that is
created or deleted is handled relative to its parent's fd with no-follow
calls.

What a path names is looked at before it is opened for real: it is pinned with
O_PATH, its type checked (only regular files are read or written: opening a
device or a fifo can block or have effects) and its file system too. Nothing
on a kernel control file system (proc, sysfs, cgroup, debugfs, ...) is read,
written, created or deleted: a container can mount a fresh proc and point a
link at `sys/kernel/hostname`. Everything here blocks.
"""

import errno
import os
import stat
from typing import NamedTuple

from lxdtx import errors
from lxdtx.fsutil import Root, kernel_filesystem, reopen

DEFAULT_FILE_MODE = 0o640
DEFAULT_DIR_MODE = 0o750
COPY_CHUNK = 4 * 1024 * 1024

TYPES = ("file", "directory", "symlink")
WRITE_MODES = ("overwrite", "append")


class Entry(NamedTuple):
    """What a GET answers about a path (ids as seen inside the container)."""

    kind: str  # file, directory or symlink
    uid: int
    gid: int
    mode: int
    size: int
    fd: int  # an open fd (regular files) or -1
    target: str  # symlink target
    names: list  # directory entries


class IdShift:
    """Converts ids between the container's view and the disk (None map: privileged).

    `in_namespace`: the caller is inside the container's user namespace, where the
    kernel converts ids itself; the map only tells which ids exist there.
    """

    def __init__(self, idmap, in_namespace=False):
        self.idmap = idmap
        self.in_namespace = in_namespace

    def to_host(self, uid, gid):
        if self.idmap is None:
            return uid, gid
        host_uid, host_gid = self.idmap.host_uid(uid), self.idmap.host_gid(gid)
        if host_uid is None or host_gid is None:
            raise _unmapped(uid, gid)
        return (uid, gid) if self.in_namespace else (host_uid, host_gid)

    def to_container(self, uid, gid):
        if self.idmap is None or self.in_namespace:
            return uid, gid
        ns_uid, ns_gid = self.idmap.ns_uid(uid), self.idmap.ns_gid(gid)
        # Unmapped ids show as the overflow id, like the kernel does.
        return (65534 if ns_uid is None else ns_uid), (65534 if ns_gid is None else ns_gid)


def parse_mode(text):
    """X-LXD-mode: an integer, re-read with base detection (leading 0: octal), masked with 0777.

    None when absent or negative (the default applies).
    """
    if text is None or text == "":
        return None
    try:
        int(text, 10)
    except ValueError:
        raise errors.BadRequest(f"Invalid X-LXD-mode: {text}")
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    try:
        value = int(digits, 8) if len(digits) > 1 and digits.startswith("0") else int(digits, 10)
    except ValueError:
        raise errors.BadRequest(f"Invalid X-LXD-mode: {text}")
    if sign < 0:
        return None
    return value & 0o777


def parse_id(text, header):
    """X-LXD-uid / X-LXD-gid: decimal; None when absent or -1."""
    if text is None or text == "":
        return None
    try:
        value = int(text, 10)
    except ValueError:
        raise errors.BadRequest(f"Invalid {header}: {text}")
    if value < -1 or value > 0xFFFFFFFE:
        raise errors.BadRequest(f"Invalid {header}: {text}")
    return None if value == -1 else value


def _refuse_kernel_filesystem(fd, path):
    """Forbidden when `fd` lies on a kernel control file system."""
    kind = kernel_filesystem(fd)
    if kind is not None:
        raise errors.Forbidden(f"{path}: file operations on {kind} file systems are not allowed")


def _not_found(e, path):
    if e.errno == errno.ENOENT:
        return errors.NotFound(f"{path}: no such file or directory")
    if e.errno in (errno.ENOTDIR,):
        return errors.NotFound(f"{path}: not a directory on the way")
    if e.errno == errno.ELOOP:
        return errors.BadRequest(f"{path}: too many levels of symbolic links")
    if e.errno == errno.EACCES or e.errno == errno.EPERM:
        return errors.Forbidden(f"{path}: permission denied")
    return errors.BadRequest(f"{path}: {os.strerror(e.errno)}")


class ContainerFiles:
    """File operations under one container root."""

    def __init__(self, root_path, idmap, proc_fd=None, in_namespace=False):
        self.root_path = root_path
        self.ids = IdShift(idmap, in_namespace)
        # A host /proc to reopen pinned fds through (the container's own /proc
        # does not show the agent's process).
        self.proc_fd = proc_fd

    def _root(self):
        try:
            return Root(self.root_path)
        except OSError as e:
            raise errors.InternalError(f"Container root unavailable: {e.strerror}")

    def _parent(self, root, path):
        """(parent dir fd, leaf name) with the parent resolved inside the root, on a data file system."""
        try:
            dirfd, leaf = root.parent(path)
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise errors.BadRequest(f"Invalid path: {path}")
            raise _not_found(e, path)
        try:
            _refuse_kernel_filesystem(dirfd, path)
        except BaseException:
            os.close(dirfd)
            raise
        return dirfd, leaf

    def _pin(self, root, path):
        """An O_PATH fd of `path` (symlinks followed inside the root) and its stat."""
        fd = root.open(path, os.O_PATH)
        try:
            return fd, os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise

    def _reopen(self, fd, flags):
        return reopen(fd, flags, self.proc_fd)

    # -- reading ----------------------------------------------------------
    def get(self, path):
        """Entry for `path`; a regular file comes with an fd the caller must close."""
        with self._root() as root:
            try:
                fd = root.open(path, os.O_PATH | os.O_NOFOLLOW)
            except OSError as e:
                raise _not_found(e, path)
            try:
                st = os.fstat(fd)
                _refuse_kernel_filesystem(fd, path)
                uid, gid = self.ids.to_container(st.st_uid, st.st_gid)
                mode = stat.S_IMODE(st.st_mode) & 0o777
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink("", dir_fd=fd)
                    return Entry("symlink", uid, gid, mode, len(target), -1, target, [])
                if stat.S_ISDIR(st.st_mode):
                    listing = self._reopen(fd, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        names = sorted(os.listdir(listing))
                    finally:
                        os.close(listing)
                    return Entry("directory", uid, gid, mode, 0, -1, "", names)
                if not stat.S_ISREG(st.st_mode):
                    raise errors.BadRequest(f"{path}: not a regular file, directory or symlink")
                data = self._reopen(fd, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
                return Entry("file", uid, gid, mode, st.st_size, data, "", [])
            except OSError as e:
                raise _not_found(e, path)
            finally:
                os.close(fd)

    # -- writing ----------------------------------------------------------
    def _ids(self, uid, gid):
        return self.ids.to_host(0 if uid is None else uid, 0 if gid is None else gid)

    def write_file(self, path, body, *, uid=None, gid=None, mode=None, append=False, opened=None):
        """Create or overwrite (or append to) a regular file with the bytes of `body` (a file object).

        `opened()` is called once the file is open, before the copy.
        """
        owner = self._ids(uid, gid)  # an unmapped id fails before anything changes
        with self._root() as root:
            flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | (os.O_APPEND if append else os.O_TRUNC)
            created = False
            try:
                # An existing path (even through a symlink) resolves inside the root.
                pinned, st = self._pin(root, path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise _not_found(e, path)
                dirfd, leaf = self._parent(root, path)
                try:
                    fd = os.open(leaf, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o600, dir_fd=dirfd)
                    created = True
                except OSError as e:
                    raise _not_found(e, path)
                finally:
                    os.close(dirfd)
            else:
                try:
                    if not stat.S_ISREG(st.st_mode):
                        raise errors.BadRequest(f"{path}: not a regular file")
                    _refuse_kernel_filesystem(pinned, path)
                    fd = self._reopen(pinned, flags)
                except OSError as e:
                    raise _not_found(e, path)
                finally:
                    os.close(pinned)
            try:
                os.set_blocking(fd, True)
                if opened is not None:
                    opened()
                _copy(body, fd)
                if created or uid is not None or gid is not None:
                    _chown(fd, owner, uid, gid)
                if created or mode is not None:
                    os.fchmod(fd, DEFAULT_FILE_MODE if mode is None else mode)
            finally:
                os.close(fd)

    def make_directory(self, path, *, uid=None, gid=None, mode=None):
        """Create a directory (an existing one is fine: `lxc file push -p` walks the parents)."""
        owner = self._ids(uid, gid)
        with self._root() as root:
            dirfd, leaf = self._parent(root, path)
            try:
                created = True
                try:
                    os.mkdir(leaf, 0o700, dir_fd=dirfd)
                except FileExistsError:
                    created = False
                try:
                    fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
                except OSError as e:
                    raise _not_found(e, path)
                try:
                    if created or uid is not None or gid is not None:
                        _chown(fd, owner, uid, gid)
                    if created or mode is not None:
                        os.fchmod(fd, DEFAULT_DIR_MODE if mode is None else mode)
                finally:
                    os.close(fd)
            except OSError as e:
                raise _not_found(e, path)
            finally:
                os.close(dirfd)

    def make_symlink(self, path, target, *, uid=None, gid=None):
        """Create (or replace) a symlink; its target is stored as given, never resolved here."""
        if not target or "\0" in target:
            raise errors.BadRequest("Invalid symlink target")
        owner = self._ids(uid, gid)
        with self._root() as root:
            dirfd, leaf = self._parent(root, path)
            try:
                try:
                    os.symlink(target, leaf, dir_fd=dirfd)
                except FileExistsError:
                    if stat.S_ISDIR(os.stat(leaf, dir_fd=dirfd, follow_symlinks=False).st_mode):
                        raise errors.BadRequest(f"{path}: is a directory")
                    os.unlink(leaf, dir_fd=dirfd)
                    os.symlink(target, leaf, dir_fd=dirfd)
                try:
                    os.chown(leaf, *owner, dir_fd=dirfd, follow_symlinks=False)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    raise _unmapped(uid, gid)
            except OSError as e:
                raise _not_found(e, path)
            finally:
                os.close(dirfd)

    def delete(self, path):
        """Remove a file, symlink or empty directory (never what a symlink points to)."""
        with self._root() as root:
            dirfd, leaf = self._parent(root, path)
            try:
                st = os.stat(leaf, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(leaf, dir_fd=dirfd)
                else:
                    os.unlink(leaf, dir_fd=dirfd)
            except OSError as e:
                if e.errno == errno.ENOTEMPTY:
                    raise errors.BadRequest(f"{path}: directory not empty")
                raise _not_found(e, path)
            finally:
                os.close(dirfd)


def _unmapped(uid, gid):
    return errors.BadRequest(f"uid {0 if uid is None else uid} or gid {0 if gid is None else gid} "
                             "is not mapped in the container")


def _chown(fd, owner, uid, gid):
    """fchown; in the container's user namespace an id it does not map is EINVAL."""
    try:
        os.fchown(fd, *owner)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        raise _unmapped(uid, gid)


def _copy(body, fd):
    """Copy a request body (a spooled temp file or BytesIO) into `fd` without loading it whole."""
    body.seek(0)
    try:
        source = body.fileno()
    except (AttributeError, OSError, ValueError):
        source = None
    if source is not None:
        offset = body.tell()
        while True:
            try:
                n = os.copy_file_range(source, fd, COPY_CHUNK, offset)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
                    raise
                body.seek(offset)
                break
            if n == 0:
                return
            offset += n
    while True:
        chunk = body.read(COPY_CHUNK)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            written = os.write(fd, view)
            view = view[written:]
