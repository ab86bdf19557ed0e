# -*- test-case-name: tests.integration.test_exec -*-
"""Exec without websockets: output to /dev/null or to `exec_<op id>.stdout|stderr` log files.

Recorded output is readable through the container's logs API and expires after
48 hours (a timer service sweeps the log directories). It reaches its file
through a pipe the daemon reads, which keeps at most MAX_RECORD bytes of each
stream (LXD keeps all): the rest is read and dropped, so the command runs on
unblocked, and the daemon log says how much was cut.
"""

import os
import re
import time

from twisted.application.internet import TimerService
from twisted.internet import abstract, defer, error, fdesc, threads
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from lxdtx.exec.seeds import SeedUnavailable
from lxdtx.exec.streams import HELPER_ENV, exit_code

MAX_AGE = 48 * 3600
SWEEP_INTERVAL = 3600
# Bytes kept of each recorded stream.
MAX_RECORD = 16 * 1024 * 1024
# Once the command is reaped, how long output still held open (by a background child) may take to end.
DRAIN_TIMEOUT = 1.0
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


class _RecordSink(abstract.FileDescriptor):
    """One recorded output: reads its pipe into its log file, up to `limit` bytes; drops the rest."""

    log = Logger()
    connected = True

    def __init__(self, reactor, pipe_fd, file_fd, limit, path):
        super().__init__(reactor)
        fdesc.setNonBlocking(pipe_fd)
        self.fd = pipe_fd
        self.file_fd = file_fd
        self.room = limit
        self.limit = limit
        self.path = path
        self.dropped = 0
        self.ended = defer.Deferred()
        self.startReading()

    def fileno(self):
        return self.fd

    def doRead(self):
        return fdesc.readFromFD(self.fd, self._data)

    def _data(self, data):
        if self.room > 0:
            kept = data[:self.room]
            try:
                _write_all(self.file_fd, kept)
            except OSError as e:
                self.log.warn("Recording exec output to {path} failed: {error}", path=self.path, error=e)
                self.room = 0
            else:
                self.room -= len(kept)
                data = data[len(kept):]
        self.dropped += len(data)

    def abandon(self):
        """Stop reading (output still held open after the command ended)."""
        if self.connected:
            self.connectionLost(Failure(error.ConnectionDone()))

    def connectionLost(self, reason):
        super().connectionLost(reason)
        for fd in (self.fd, self.file_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.file_fd = -1
        if self.dropped:
            self.log.warn("Recorded exec output {path} cut at {limit} bytes: {dropped} more bytes not kept",
                          path=self.path, limit=self.limit, dropped=self.dropped)
        if not self.ended.called:
            self.ended.callback(None)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def run_detached(reactor, argv, stdout_path=None, stderr_path=None, *, seed=None, command=None,
                       env=None, cwd="/", limit=MAX_RECORD, drain_timeout=DRAIN_TIMEOUT):
    """Run a command with stdin from /dev/null and output to files; return the exit code.

    Through the container's exec seed when there is one, else `argv` (lxc-attach).
    A recorded stream keeps its first `limit` bytes; the code is returned once the
    command is reaped and its recorded output ended (or `drain_timeout` later).
    """
    fds = _open_targets([stdout_path, stderr_path])
    child = [fds[0]]  # the command's 0, 1, 2: closed here once it has them
    files = fds[1:]  # not yet handed to the command or a sink
    sinks = []
    done = defer.Deferred()
    try:
        for path in (stdout_path, stderr_path):
            fd = files.pop(0)
            if path is None:
                child.append(fd)
                continue
            try:
                pipe_fd, write_end = os.pipe2(os.O_CLOEXEC)
            except BaseException:
                os.close(fd)
                raise
            child.append(write_end)
            sinks.append(_RecordSink(reactor, pipe_fd, fd, limit, path))
        try:
            if seed is None:
                raise SeedUnavailable("no seed")
            seed.run(command, env, cwd, child, _Exit(done))
        except SeedUnavailable:
            reactor.spawnProcess(_Reaped(done), argv[0], argv, env=HELPER_ENV,
                                 childFDs={0: child[0], 1: child[1], 2: child[2]})
    finally:
        # Closing our write ends leaves the command the only writer: its exit ends the pipes
        # (and a failed start ends them at once).
        for fd in child + files:
            os.close(fd)
    code = await done
    if sinks:
        timer = reactor.callLater(drain_timeout, lambda: [sink.abandon() for sink in sinks])
        await defer.DeferredList([sink.ended for sink in sinks])
        if timer.active():
            timer.cancel()
    return code


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
