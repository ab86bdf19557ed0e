"""Whether the filesystem holding a directory takes an idmapped mount (kernel >= 5.12).

    python3 -I -S idmapprobe.py DIRECTORY

Clones a detached mount of DIRECTORY (open_tree) and asks the kernel to idmap it
(mount_setattr MOUNT_ATTR_IDMAP) with the user namespace of a child made here for
that; the detached mount is never attached anywhere and goes with its fd. Exit 0:
it can; 2: the kernel or filesystem refuses (the reason on stderr); 1: the probe
itself failed. A helper process, because the probe forks.
"""

import ctypes
import os
import sys

# The same numbers on every architecture (the unified syscall table of these calls).
SYS_OPEN_TREE = 428
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MOUNT_ATTR_IDMAP = 0x00100000
CLONE_NEWUSER = 0x10000000
PROBE_MAP = "0 1000000 65536\n"


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _child_in_userns(libc):
    """(pid, release fd) of a child sitting in a new user namespace until the fd closes."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(hold_w)
        code = 0 if libc.unshare(CLONE_NEWUSER) == 0 else 1
        os.write(ready_w, b"%d" % code)
        os.read(hold_r, 1)
        os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    ok = os.read(ready_r, 1)
    os.close(ready_r)
    if ok != b"0":
        os.close(hold_w)
        os.waitpid(pid, 0)
        raise OSError("cannot make a user namespace")
    return pid, hold_w


def probe(directory):
    """None if DIRECTORY's filesystem can be idmapped, else the kernel's refusal."""
    libc = ctypes.CDLL(None, use_errno=True)
    pid, hold = _child_in_userns(libc)
    try:
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(PROBE_MAP)
        userns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        try:
            tree = libc.syscall(SYS_OPEN_TREE, AT_FDCWD, directory.encode(), OPEN_TREE_CLONE | os.O_CLOEXEC)
            if tree < 0:
                return f"open_tree: {os.strerror(ctypes.get_errno())}"
            try:
                attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns)
                if libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                                ctypes.sizeof(attr)) != 0:
                    return f"mount_setattr(MOUNT_ATTR_IDMAP): {os.strerror(ctypes.get_errno())}"
                return None
            finally:
                os.close(tree)
        finally:
            os.close(userns)
    finally:
        os.close(hold)
        os.waitpid(pid, 0)


def main(argv):
    try:
        refused = probe(argv[0])
    except (OSError, IndexError) as e:
        print(f"probe failed: {e}", file=sys.stderr)
        return 1
    if refused:
        print(refused, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
