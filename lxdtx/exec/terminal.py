# -*- test-case-name: tests.integration.test_exec -*-
"""A pty of the container's own devpts, for interactive exec.

The container's file agent opens it (`lxdtx/helpers/fileagent.py`, op `probe`),
inside the container's mount namespace and as its root, so the command's
terminal is one of the container's (`tty` names it, the container can see and
reopen it), owned by the container's root and its `tty` group like one it
allocated itself. The path is resolved inside the container's root and only
opened once it is known to be a ptmx device: a container that put something
else at /dev/pts/ptmx gets nothing opened on its behalf.
"""

import fcntl
import os
import stat
import struct

from lxdtx.fsutil import reopen

TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
PTMX = (5, 2)
TTY_GROUP = 5


def open_pty(root, uid=0, gid=TTY_GROUP, proc_fd=None):
    """(master, slave) fds of a new pty in the devpts at /dev/pts of `root` (an fsutil.Root);
    the slave belongs to `uid` and `gid`. Raises OSError."""
    handle = root.open("/dev/pts/ptmx", os.O_PATH | os.O_NOFOLLOW)
    try:
        st = os.fstat(handle)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != PTMX:
            raise OSError("/dev/pts/ptmx of the container is not a ptmx device")
        master = reopen(handle, os.O_RDWR | os.O_NOCTTY, proc_fd)
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
