"""Mount into or unmount from a running container's mount namespace.

    python3 -I -S mountns.py mount PID SOURCE TARGET [ro] [rec] [propagation=MODE]
    python3 -I -S mountns.py umount PID TARGET [placeholder]

A separate process because joining a mount namespace needs a single-threaded
caller. The source is opened on the host first (open_tree clone), then the
process joins the container's mount namespace, where TARGET resolves inside
the container's root, and moves the clone there. A file source gets an empty
file to be mounted on where TARGET is missing; `placeholder` removes such a
file after the unmount (never anything else: the mount may have covered a
node of the container's own). MODE (private, shared, slave, unbindable or an r-
form) is set on the new mount: the clone of a shared host mount would otherwise
stay its peer, and mounts made in the container would show on the host.
"""

import ctypes
import os
import stat
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
MS_REC = 0x4000
PROPAGATION = {"unbindable": 1 << 17, "private": 1 << 18, "slave": 1 << 19, "shared": 1 << 20}

SYS = {"open_tree": 428, "move_mount": 429, "mount_setattr": 442}

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"{what}: {os.strerror(err)}\n")
        sys.exit(1)
    return result


def mount(pid, source, target, readonly, recursive, propagation=None):
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = check(libc.syscall(SYS["open_tree"], AT_FDCWD, source.encode(), flags), f"open {source}")
    if readonly:
        attr = ctypes.create_string_buffer((MOUNT_ATTR_RDONLY).to_bytes(8, "little") + bytes(24), 32)
        check(libc.syscall(SYS["mount_setattr"], tree, b"", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0),
                           attr, ctypes.c_size_t(32)), "read-only")
    is_dir = os.path.isdir(source)
    enter(pid)
    target = "/" + target.lstrip("/")
    try:
        make_target(target, is_dir)
    except OSError as e:
        sys.stderr.write(f"create {target}: {e.strerror}\n")
        sys.exit(1)
    check(libc.syscall(SYS["move_mount"], tree, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
          f"mount on {target}")
    if propagation:
        flags = PROPAGATION[propagation.removeprefix("r")] | (MS_REC if propagation.startswith("r") else 0)
        check(libc.mount(None, target.encode(), None, ctypes.c_ulong(flags), None), f"propagation of {target}")


def make_target(target, is_dir):
    """Create the missing parts of `target`, each owned like the directory it is made in:
    in a tmpfs of the container's user namespace (its /dev), or on an idmapped rootfs, a
    file of an unmapped owner, such as the host's root, cannot be created at all."""
    if os.path.lexists(target):
        return
    parent = os.path.dirname(target)
    make_target(parent, True)
    owner = os.stat(parent)
    libc.setfsgid(owner.st_gid)
    libc.setfsuid(owner.st_uid)
    try:
        if is_dir:
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
    finally:
        libc.setfsuid(0)
        libc.setfsgid(0)


def umount(pid, target, placeholder):
    enter(pid)
    target = "/" + target.lstrip("/")
    check(libc.umount2(target.encode(), MNT_DETACH), f"unmount {target}")
    if placeholder:
        try:
            st = os.lstat(target)
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(target)
        except OSError:
            pass


def enter(pid):
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    check(libc.setns(fd, CLONE_NEWNS), "join mount namespace")
    os.close(fd)
    os.chdir("/")


def main(argv):
    if argv[0] == "mount":
        pid, source, target = int(argv[1]), argv[2], argv[3]
        options = argv[4:]
        propagation = next((o.partition("=")[2] for o in options if o.startswith("propagation=")), None)
        if propagation is not None and propagation.removeprefix("r") not in PROPAGATION:
            sys.stderr.write(f"unknown propagation: {propagation}\n")
            sys.exit(2)
        mount(pid, source, target, "ro" in options, "rec" in options, propagation)
    elif argv[0] == "umount":
        umount(int(argv[1]), argv[2], "placeholder" in argv[3:])
    else:
        sys.stderr.write("usage: mountns.py mount|umount ...\n")
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
