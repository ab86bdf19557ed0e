# -*- test-case-name: tests.unit.test_fsutil -*-
"""Opening paths inside a container's root so that nothing resolves outside it;
reading the host's small kernel files.

`openat2(2)` with RESOLVE_IN_ROOT makes the kernel treat the root directory as
`/` for every path component, `..` and absolute symlink: a path can never
escape. These calls block; callers run them in a thread.
"""

import ctypes
import errno
import os
import platform
import struct

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "ppc64le": 437, "s390x": 437, "armv7l": 437}
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dirfd, path, flags, mode=0, resolve=RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS):
    """The openat2 system call; returns a file descriptor or raises OSError."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if not (flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)):
        mode = 0  # openat2 refuses a mode without O_CREAT
    how = ctypes.create_string_buffer(struct.pack("QQQ", flags, mode, resolve), 24)
    number = _SYS_OPENAT2.get(platform.machine(), 437)
    raw_path = os.fsencode(path)
    fd = _syscall(ctypes.c_long(number), ctypes.c_int(dirfd), ctypes.c_char_p(raw_path),
                  how, ctypes.c_size_t(24))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def read_text(path):
    """A small host file (procfs, sysfs, cgroupfs) as text, or None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


class Root:
    """A directory treated as `/` for every path opened through it."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self, path, flags=os.O_RDONLY, mode=0o644):
        """A file descriptor for `path` resolved inside the root (O_CLOEXEC added)."""
        return openat2(self.fd, path.lstrip("/") or ".", flags | os.O_CLOEXEC, mode)

    def parent(self, path):
        """(fd of the parent directory inside the root, last component) for `path`."""
        parent, _, leaf = path.rstrip("/").rpartition("/")
        if leaf in ("", ".", ".."):
            raise OSError(errno.EINVAL, "invalid path", path)
        return self.open(parent or "/", os.O_PATH | os.O_DIRECTORY), leaf

    def write_file(self, path, data, mode=0o644, uid=0, gid=0):
        """Create or replace a regular file; its parent must exist inside the root."""
        dirfd, leaf = self.parent(path)
        try:
            fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode, dir_fd=dirfd)
            try:
                os.write(fd, data)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        finally:
            os.close(dirfd)
