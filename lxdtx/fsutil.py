# -*- test-case-name: tests.unit.test_templates,tests.integration.test_files -*-
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
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# Kernel file systems whose files are controls, not data (statfs f_type): a write to one
# of them, done on a container's behalf by the host, could reach the host's kernel
# (core_pattern, sysrq-trigger, cgroup limits, binfmt handlers, EFI variables).
KERNEL_FILESYSTEMS = {
    0x9FA0: "proc",
    0x62656572: "sysfs",
    0x64626720: "debugfs",
    0x74726163: "tracefs",
    0x73636673: "securityfs",
    0x0027E0EB: "cgroup",
    0x63677270: "cgroup2",
    0xCAFE4A11: "bpf",
    0x42494E4D: "binfmt_misc",
    0xDE5E81E4: "efivarfs",
    0x62656570: "configfs",
    0x6165676C: "pstore",
    0xF97CFF8C: "selinuxfs",
    0x43415D53: "smackfs",
    0x65735543: "fusectl",
    0x6E736673: "nsfs",
    0x19800202: "mqueue",
    0x00000187: "autofs",
    0x1CD1: "devpts",
    0x67596969: "rpc_pipefs",
    0x6E667364: "nfsd",
}

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


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long), ("f_blocks", ctypes.c_ulong),
                ("f_bfree", ctypes.c_ulong), ("f_bavail", ctypes.c_ulong), ("f_files", ctypes.c_ulong),
                ("f_ffree", ctypes.c_ulong), ("f_fsid", ctypes.c_int * 2), ("f_namelen", ctypes.c_long),
                ("f_frsize", ctypes.c_long), ("f_flags", ctypes.c_long), ("f_spare", ctypes.c_long * 4)]


_libc.fstatfs.argtypes = (ctypes.c_int, ctypes.POINTER(_Statfs))


def filesystem_type(fd):
    """The statfs f_type (magic number) of the file system holding the open `fd`."""
    buf = _Statfs()
    if _libc.fstatfs(fd, ctypes.byref(buf)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.f_type & 0xFFFFFFFF


def kernel_filesystem(fd):
    """The name of the kernel control file system `fd` lies on, or None for a data one."""
    return KERNEL_FILESYSTEMS.get(filesystem_type(fd))


def reopen(fd, flags, proc_fd=None):
    """A new open file description for the inode an O_PATH `fd` pins (O_CLOEXEC added).

    Lets a caller check what a path is (fstat, fstatfs) before opening it for real:
    opening a device, a fifo or a control file can itself have effects. `proc_fd`: a
    host /proc to go through, for a process in a mount namespace whose own /proc does
    not show it.
    """
    if proc_fd is None:
        return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)
    return os.open(f"self/fd/{fd}", flags | os.O_CLOEXEC, dir_fd=proc_fd)


def open_beneath(dirfd, path, flags, mode=0):
    """`path` opened below `dirfd`, refusing any symlink and any way out (RESOLVE_BENEATH).

    For the daemon's own trees that image or backup content may have shaped
    (templates, metadata, backup.yaml): a link there is never followed.
    """
    return openat2(dirfd, path, flags | os.O_CLOEXEC, mode,
                   resolve=RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)


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
