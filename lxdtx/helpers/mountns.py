"""Mount into or unmount from a running container's mount namespace.

    python3 -I -S mountns.py mount PID SOURCE TARGET [ro] [rec] [owner=UID:GID]
    python3 -I -S mountns.py umount PID TARGET

A separate process because joining a mount namespace needs a single-threaded
caller. The source is opened on the host first (open_tree clone), then the
process joins the container's mount namespace, where TARGET resolves inside
the container's root, and moves the clone there. A missing TARGET is made as `owner` (host ids) when given:
host root, unmapped in an unprivileged container, may not create files on file systems
that container mounted itself (its /dev, say).
"""

import ctypes
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


def mount(pid, source, target, readonly, recursive, owner=None):
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = check(libc.syscall(SYS["open_tree"], AT_FDCWD, source.encode(), flags), f"open {source}")
    if readonly:
        attr = ctypes.create_string_buffer((MOUNT_ATTR_RDONLY).to_bytes(8, "little") + bytes(24), 32)
        check(libc.syscall(SYS["mount_setattr"], tree, b"", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0),
                           attr, ctypes.c_size_t(32)), "read-only")
    is_dir = os.path.isdir(source)
    enter(pid)
    target = "/" + target.lstrip("/")
    if owner is not None:
        os.setegid(owner[1])
        os.seteuid(owner[0])
    if is_dir:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    if owner is not None:
        os.seteuid(0)
        os.setegid(0)
    check(libc.syscall(SYS["move_mount"], tree, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
          f"mount on {target}")


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
        owners = [a[len("owner="):].split(":") for a in argv[4:] if a.startswith("owner=")]
        owner = (int(owners[0][0]), int(owners[0][1])) if owners else None
        mount(pid, source, target, "ro" in argv[4:], "rec" in argv[4:], owner)
    elif argv[0] == "umount":
        umount(int(argv[1]), argv[2])
    else:
        sys.stderr.write("usage: mountns.py mount|umount ...\n")
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
