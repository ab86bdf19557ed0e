"""Mount into or unmount from a running container's mount namespace.

    python3 -I -S mountns.py mount PID SOURCE TARGET [ro] [rec]
    python3 -I -S mountns.py umount PID TARGET

A separate process because joining a mount namespace needs a single-threaded
caller. The source is opened on the host first (open_tree clone), then the
process joins the container's mount namespace, where TARGET resolves inside
the container's root, and moves the clone there.
"""

import ctypes
import errno
import os
import sys

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
CLONE_NEWNS = 0x20000
MNT_DETACH = 2

SYS = {"open_tree": 428, "move_mount": 429, "mount_setattr": 442}

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"{what}: {os.strerror(err)}\n")
        sys.exit(1)
    return result


def mount(pid, source, target, readonly, recursive):
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = check(libc.syscall(SYS["open_tree"], AT_FDCWD, source.encode(), flags), f"open {source}")
    if readonly:
        attr = ctypes.create_string_buffer((MOUNT_ATTR_RDONLY).to_bytes(8, "little") + bytes(24), 32)
        check(libc.syscall(SYS["mount_setattr"], tree, b"", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0),
                           attr, ctypes.c_size_t(32)), "read-only")
    is_dir = os.path.isdir(source)
    owner = container_root(pid)
    enter(pid)
    target = "/" + target.lstrip("/")
    try:
        make_target(target, is_dir)
    except OSError as e:
        if e.errno != errno.EOVERFLOW:
            raise
        # An idmapped rootfs has no id for host root: create as the container's root.
        libc.setfsgid(owner[1])
        libc.setfsuid(owner[0])
        try:
            make_target(target, is_dir)
        finally:
            libc.setfsuid(0)
            libc.setfsgid(0)
    check(libc.syscall(SYS["move_mount"], tree, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
          f"mount on {target}")


def make_target(target, is_dir):
    if is_dir:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()


def container_root(pid):
    """(host uid, host gid) of the container's root: the first lines of its id maps."""
    ids = []
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                inside, host, _ = line.split()
                if inside == "0":
                    ids.append(int(host))
                    break
            else:
                ids.append(0)
    return tuple(ids)


def umount(pid, target):
    enter(pid)
    check(libc.umount2(("/" + target.lstrip("/")).encode(), MNT_DETACH), f"unmount {target}")


def enter(pid):
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    check(libc.setns(fd, CLONE_NEWNS), "join mount namespace")
    os.close(fd)
    os.chdir("/")


def main(argv):
    if argv[0] == "mount":
        pid, source, target = int(argv[1]), argv[2], argv[3]
        mount(pid, source, target, "ro" in argv[4:], "rec" in argv[4:])
    elif argv[0] == "umount":
        umount(int(argv[1]), argv[2])
    else:
        sys.stderr.write("usage: mountns.py mount|umount ...\n")
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
