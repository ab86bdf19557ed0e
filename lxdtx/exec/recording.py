# -*- test-case-name: tests.unit.test_exec_recording -*-
"""Exec without websockets: output to /dev/null or to `exec_<op id>.stdout|stderr` log files.

Recorded output is readable through the container's logs API and expires after
48 hours (a timer service sweeps the log directories).
"""

import os
import re
import time

from twisted.application.internet import TimerService
from twisted.internet import defer, threads
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from lxdtx.exec.seeds import SeedUnavailable
from lxdtx.exec.streams import HELPER_ENV, exit_code

MAX_AGE = 48 * 3600
SWEEP_INTERVAL = 3600
_RECORD = re.compile(r"exec_[A-Za-z0-9-]+\.(stdout|stderr)")


def record_names(op_id):
    """The log file names of fds 1 and 2 of a recorded exec."""
    return {"1": f"exec_{op_id}.stdout", "2": f"exec_{op_id}.stderr"}


class _Reaped(ProcessProtocol):
    """Fires `done` with the exit code once the helper is reaped (no pipes to wait for)."""

    def __init__(self, done):
        self.done = done

    def processExited(self, reason):
        self.done.callback(exit_code(reason))


def _open_targets(paths):
    """Read end of /dev/null for stdin, then one write fd per output (a file or /dev/null)."""
    fds = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)]
    try:
        for path in paths:
            if path is None:
                fds.append(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
            else:
                fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                                   0o600))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


class _Exit:
    """Fires `done` with the exit code the exec seed reports."""

    def __init__(self, done):
        self.done = done

    def command_started(self, pid):
        pass

    def command_exited(self, code):
        self.done.callback(code)

    def command_failed(self, number):
        self.done.callback(-1)


async def run_detached(reactor, argv, stdout_path=None, stderr_path=None, *, seed=None, command=None,
                       env=None, cwd="/"):
    """Run a command with stdin from /dev/null and output to files; return the exit code.

    Through the container's exec seed when there is one, else `argv` (lxc-attach).
    """
    fds = _open_targets([stdout_path, stderr_path])
    done = defer.Deferred()
    try:
        try:
            if seed is None:
                raise SeedUnavailable("no seed")
            seed.run(command, env, cwd, fds, _Exit(done))
        except SeedUnavailable:
            reactor.spawnProcess(_Reaped(done), argv[0], argv, env=HELPER_ENV,
                                 childFDs={0: fds[0], 1: fds[1], 2: fds[2]})
    finally:
        for fd in fds:
            os.close(fd)
    return await done


def expire(log_root, max_age=MAX_AGE, now=None):
    """Delete recorded exec output older than `max_age` seconds; returns the paths removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        containers = os.listdir(log_root)
    except OSError:
        return removed
    for name in containers:
        directory = os.path.join(log_root, name)
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if not _RECORD.fullmatch(entry):
                continue
            path = os.path.join(directory, entry)
            try:
                if now - os.lstat(path).st_mtime > max_age:
                    os.unlink(path)
                    removed.append(path)
            except OSError:
                continue
    return removed


class RecordExpiry(TimerService):
    """Sweeps expired exec recordings every hour (the file walk runs in a thread)."""

    log = Logger()

    def __init__(self, log_root, reactor, interval=SWEEP_INTERVAL, max_age=MAX_AGE):
        super().__init__(interval, self._sweep)
        self.clock = reactor
        self.log_root = log_root
        self.max_age = max_age

    def _sweep(self):
        d = threads.deferToThread(expire, self.log_root, self.max_age)
        d.addErrback(lambda f: self.log.failure("Sweeping exec recordings failed", f))
        return d
