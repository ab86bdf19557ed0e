# -*- test-case-name: tests.integration.test_exec_seed -*-
"""One resident exec helper per running container: commands without `lxc-attach`'s cost.

`helpers/execseed.c` (compiled by setup.py's build step) says how the seed and its zygote
work. Here the daemon starts them at a container's first exec, talks to the
zygote over a SOCK_SEQPACKET socket (one datagram per message, the command's
three standard fds passed with the request), and ends them when the container
stops. A seed that cannot be had (the helper was not built, the container caps
its processes, the launch failed) makes the caller fall back to `lxc-attach`;
a failed launch is not tried again before the container restarts.
"""

import errno
import itertools
import os
import socket

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from lxdtx.asyncutil import shared
from lxdtx.instance.resident import Residents

BINARY = os.path.join(os.path.dirname(os.path.dirname(__file__)), "helpers", "execseed")
READY_TIMEOUT = 5.0
# How long a stopped container's seed may take to exit before it is killed.
END_TIMEOUT = 5.0
# Bigger requests go to lxc-attach (which has the kernel's own limits on argv and env);
# the seed reads up to 256 KiB and 8192 fields.
MAX_REQUEST = 128 * 1024
MAX_FIELDS = 8192
_SOCKET_BUFFER = 4 * MAX_REQUEST


def wait_status_code(status):
    """An exit code from a raw wait status: the code, or 128+n when signal n killed it."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return -1


def request(command_id, argv, env, cwd, terminal=False):
    """The `run` datagram: fields ended by NUL (see execseed.c)."""
    fields = ["run", command_id, "t" if terminal else "", cwd, str(len(argv)), *argv,
              *(f"{k}={v}" for k, v in env.items())]
    return b"".join(field.encode() + b"\0" for field in fields)


class SeedUnavailable(Exception):
    """The seed cannot take this command; use lxc-attach."""


class _Launcher(ProcessProtocol):
    def __init__(self, seed):
        self.seed = seed

    def processEnded(self, reason):
        self.seed._launcher_ended()


class Seed:
    """The launcher, seed and zygote of one container: requests out to the zygote,
    started/failed/exited reports in."""

    log = Logger()

    def __init__(self, reactor, name):
        self.reactor = reactor
        self.name = name
        self.pid = None  # the zygote's host pid, once ready
        self.ready = defer.Deferred()
        self.done = defer.Deferred()  # the launcher has exited: so have the seed and the zygote
        self.gone = False
        self._socket = None
        self._launcher = None
        self._listeners = {}  # command id -> listener
        self._ids = (str(n) for n in itertools.count(1))

    def launch(self, binary, lxcpath, cgroup_dirs):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            ours.setblocking(False)
            self._launcher = self.reactor.spawnProcess(
                _Launcher(self), binary, [binary, self.name, lxcpath, *cgroup_dirs], env={},
                childFDs={0: devnull, 1: devnull, 2: devnull, 3: theirs.fileno()})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(devnull)
        self._socket = ours
        self.reactor.addReader(self)

    # -- IReadDescriptor -----------------------------------------------------
    def fileno(self):
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self):
        return f"execseed {self.name}"

    def doRead(self):
        while self._socket is not None:
            try:
                message = self._socket.recv(256)
            except BlockingIOError:
                return
            except OSError as e:
                self.log.warn("Exec seed of {name} failed: {error}", name=self.name, error=e)
                message = b""
            if not message:
                self._close()
                return
            self._handle(message.decode(errors="replace").split())

    def connectionLost(self, reason):
        self._close()

    # -- messages ------------------------------------------------------------
    def _handle(self, words):
        kind, args = (words[0], words[1:]) if words else ("", [])
        try:
            if kind == "ready":
                self.pid = int(args[0])
                if not self.ready.called:
                    self.ready.callback(self)
            elif kind in ("started", "failed", "exited"):
                command_id, number = args[0], int(args[1])
                if command_id == "0" and kind == "failed":
                    self.log.warn("Exec seed of {name} did not start: {error}",
                                  name=self.name, error=os.strerror(number))
                    self._close()
                    return
                listener = self._listeners.get(command_id)
                if listener is None:
                    return
                if kind == "started":
                    listener.command_started(number)
                    return
                del self._listeners[command_id]
                if kind == "failed":
                    listener.command_failed(number)
                else:
                    listener.command_exited(wait_status_code(number))
        except (IndexError, ValueError):
            self.log.warn("Exec seed of {name} sent {words!r}", name=self.name, words=words)

    # -- what callers use ------------------------------------------------------
    def run(self, argv, env, cwd, fds, listener, terminal=False):
        """Start a command with `fds` as its stdin, stdout, stderr; returns its id.

        `terminal`: the fds are a terminal's, to become the command's controlling
        terminal. The listener hears `command_started(pid)`, then
        `command_exited(code)`, or `command_failed(errno)`. Raises
        SeedUnavailable when the request cannot be sent (then nothing was started).
        """
        if self.gone or self.pid is None:
            raise SeedUnavailable("the seed is not running")
        command_id = next(self._ids)
        message = request(command_id, argv, env, cwd, terminal)
        if len(message) > MAX_REQUEST or 5 + len(argv) + len(env) > MAX_FIELDS or "\0" in cwd:
            raise SeedUnavailable("request too large")
        try:
            sent = socket.send_fds(self._socket, [message], list(fds))
        except OSError as e:
            raise SeedUnavailable(str(e)) from e
        if sent != len(message):
            raise SeedUnavailable("short send")
        self._listeners[command_id] = listener
        return command_id

    def signal(self, command_id, number):
        """Deliver signal `number` to a command that has not been reaped yet (also after `end`)."""
        if self._socket is None or command_id not in self._listeners:
            return
        try:
            self._socket.send(f"kill\0{command_id}\0{number}\0".encode())
        except OSError as e:
            self.log.warn("Could not send signal {number}: {error}", number=number, error=e)

    def end(self):
        """Take no more commands: the zygote exits once the running ones are reaped.

        Their ends are still reported; the socket closes after the last.
        """
        if self.gone:
            return
        self.gone = True
        if not self.ready.called:
            self.ready.callback(None)
        try:
            if self.pid is None:
                raise OSError("not ready")  # not listening yet
            self._socket.send(b"end\0")
        except OSError:
            self.kill()

    def kill(self):
        """End it now: the launcher dies, and with it the seed and the zygote (commands keep running)."""
        if self._launcher is not None and self._launcher.pid is not None:
            try:
                self._launcher.signalProcess("KILL")
            except (OSError, error.ProcessExitedAlready):
                pass

    def _close(self):
        """The socket is done (the zygote is gone): whatever never reported has failed."""
        self.gone = True
        if not self.ready.called:
            self.ready.callback(None)
        if self._socket is not None:
            self.reactor.removeReader(self)
            self._socket.close()
            self._socket = None
        listeners, self._listeners = self._listeners, {}
        for listener in listeners.values():
            listener.command_failed(errno.ECONNRESET)

    def _launcher_ended(self):
        self._launcher = None
        self.gone = True
        if not self.ready.called:
            self.ready.callback(None)
        self.done.callback(None)


class Seeds(Residents):
    """The seeds of one daemon's containers, started on first use."""

    log = Logger()

    def __init__(self, reactor, lxcpath, binary=BINARY):
        super().__init__(reactor)
        self.lxcpath = lxcpath
        self.binary = binary
        self._failed = set()  # containers whose seed could not start, until they stop
        self._warned = False

    def exec_path(self):
        """Which way commands enter containers, for the start-up log."""
        if os.access(self.binary, os.X_OK):
            return f"the exec seed {self.binary}"
        return f"lxc-attach (no exec seed at {self.binary})"

    def available(self):
        if os.access(self.binary, os.X_OK):
            return True
        if not self._warned:
            self._warned = True
            self.log.warn("{binary} is not built: exec runs through lxc-attach", binary=self.binary)
        return False

    async def get(self, name, cgroup_dirs):
        """The ready seed of running container `name`, or None (then use lxc-attach).

        `cgroup_dirs(name)` lists the container's cgroup directories, for a new seed.
        """
        seed = self._current.get(name)
        if seed is None or seed.gone:
            if name in self._failed or not self.available():
                return None
            cgroup_dirs = cgroup_dirs(name)
            if not cgroup_dirs:
                return None
            seed = Seed(self.reactor, name)
            try:
                seed.launch(self.binary, self.lxcpath, cgroup_dirs)
            except OSError as e:
                self.log.warn("Could not start the exec seed of {name}: {error}", name=name, error=e)
                return None
            self._current[name] = seed
            timer = self.reactor.callLater(READY_TIMEOUT, seed.end)

            def cancel(result):
                if timer.active():
                    timer.cancel()
                return result

            seed.ready.addBoth(cancel)
        ready = await shared(seed.ready)
        if ready is None and self._current.get(name) is seed:
            del self._current[name]
            self._failed.add(name)
        return ready

    def forget(self, name):
        """Start no more commands in `name` through its seed: it ends once its running commands have."""
        self._failed.discard(name)
        super().forget(name)

    async def stopped(self, name, timeout=END_TIMEOUT):
        """`name` has stopped: wait until its seeds have exited, so that none holds its
        namespaces or cgroups. One still there after `timeout` seconds is killed."""
        await super().stopped(name, timeout)
