# -*- test-case-name: tests.unit.test_singleton -*-
"""One daemon per state directory: an exclusive `flock` on `DIR/lxdtx.lock`.

The kernel drops the lock with the process however it ends (kill -9, a crash),
so a start after a crash never waits on a dead daemon, and no other process
that got the same pid (a zombie, a reboot) can stand for it, as it could for
a pid symlink. The file holds the holder's pid, for the message only.
"""

import fcntl
import os

NAME = "lxdtx.lock"


class AlreadyRunning(Exception):
    pass


def acquire(state_dir):
    """Take the lock of `state_dir`; its fd, which must stay open while the daemon runs.
    Raises AlreadyRunning when another process holds it. Blocking: called at start-up."""
    path = os.path.join(state_dir, NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunning(f"Another lxdtx daemon (pid {holder}) is running on {state_dir}") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release(fd):
    os.close(fd)
