# -*- test-case-name: tests.integration.test_exec -*-
"""A pty of the container's own devpts, for interactive exec.

The master is opened through the container's root, so the command's terminal
is one of the container's (`tty` names it, the container can see and reopen
it), owned by the container's root and its `tty` group like one it allocated
itself. The path is resolved inside the container's root and only opened
once it is known to be a ptmx device: a container that put something else at
/dev/pts/ptmx gets nothing opened on its behalf.
"""

import fcntl
import os
import stat
import struct

from lxdtx.fsutil import Root

TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
PTMX = (5, 2)
TTY_GROUP = 5


def open_pty(init_pid, uid, gid):
    """(master, slave) fds of a new pty in the devpts of the container whose init is
    `init_pid`; the slave belongs to host `uid` and `gid`. Raises OSError."""
    with Root(f"/proc/{init_pid}/root") as root:
        handle = root.open("/dev/pts/ptmx", os.O_PATH | os.O_NOFOLLOW)
    try:
        st = os.fstat(handle)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != PTMX:
            raise OSError("/dev/pts/ptmx of the container is not a ptmx device")
        master = os.open(f"/proc/self/fd/{handle}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(handle)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            os.fchown(slave, uid, gid)
            os.fchmod(slave, 0o620)
        except BaseException:
            os.close(slave)
            raise
    except BaseException:
        os.close(master)
        raise
    return master, slave


def owner(idmap):
    """Host (uid, gid) of the container's root and tty group ((0, 5) without an id map)."""
    if not idmap.entries:
        return 0, TTY_GROUP
    uid, gid = idmap.host_uid(0), idmap.host_gid(TTY_GROUP)
    if uid is None or gid is None:
        raise OSError("the container's root or tty group is not mapped")
    return uid, gid
