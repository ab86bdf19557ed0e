# -*- test-case-name: tests.integration.test_file_agent -*-
"""The daemon's side of the containers' file agents (`lxdtx/helpers/fileagent.py`).

One agent per container, started at its first file operation: inside the
container's namespaces while it runs, over its rootfs while it is stopped.
An agent made for one state is ended when the container changes state, when
it stops, and after a while without requests. Each request waits at most
`OPEN_TIMEOUT` seconds for its first answer (the path resolved and opened);
past that, or when its client goes away, the agent kills the fork serving it.
Nothing here touches the container's files itself, so no daemon thread can be
held by them.
"""

import itertools
import os
import socket
import sys

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from lxdtx import errors
from lxdtx.asyncutil import shared
from lxdtx.helpers.fileagent import receive, send
from lxdtx.instance.resident import Residents

PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "fileagent.py")
READY_TIMEOUT = 15.0
OPEN_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0
END_TIMEOUT = 5.0
_MAX_STDERR = 4096


class _Call:
    """The answers to one request, in order; the first is bounded in time."""

    def __init__(self, agent, ident):
        self.agent = agent
        self.ident = ident
        self._answers = []
        self._waiter = None
        self._failure = None
        self.ended = False

    def deliver(self, message, fds):
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.callback((message, fds))
        else:
            self._answers.append((message, fds))

    def fail(self, error):
        self._failure = error
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.errback(error)

    async def next(self, timeout=None):
        """The next answer (message, fds); an error answer raises its ApiError."""
        if self._answers:
            message, fds = self._answers.pop(0)
        elif self._failure is not None:
            raise self._failure
        else:
            self._waiter = defer.Deferred(lambda _: self.cancel())
            if timeout is not None:
                self._waiter.addTimeout(timeout, self.agent.reactor)
            try:
                message, fds = await self._waiter
            except defer.TimeoutError:
                self.cancel()
                raise errors.InternalError(
                    f"The container's file system did not answer within {timeout:g} seconds")
        if "error" in message:
            self.end()
            raise errors.ApiError(message.get("message", "file operation failed"), code=message["error"])
        return message, fds

    def cancel(self):
        """Stop the fork serving this request."""
        if not self.ended:
            self.agent.cancel(self.ident)
        self.end()

    def end(self):
        if not self.ended:
            self.ended = True
            for _, fds in self._answers:
                for fd in fds:
                    os.close(fd)
            self._answers.clear()
            self.agent.finished(self.ident)


class _Process(ProcessProtocol):
    def __init__(self, agent):
        self.agent = agent
        self.stderr = b""

    def errReceived(self, data):
        self.stderr = (self.stderr + data)[-_MAX_STDERR:]

    def processEnded(self, reason):
        self.agent.process_ended(self.stderr.decode(errors="replace").strip())


class FileAgent:
    """One agent process: requests out, answers (with fds) in."""

    log = Logger()

    def __init__(self, reactor, name, key):
        self.reactor = reactor
        self.name = name
        self.key = key  # what the agent was made for: the init pid, or None (stopped)
        self.ready = defer.Deferred()
        self.done = defer.Deferred()
        self.gone = False
        self._socket = None
        self._process = None
        self._calls = {}
        self._ids = itertools.count(1)
        self._idle = None

    def launch(self, argv, pidfd=None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        child_fds = {0: devnull, 1: devnull, 2: "r", 3: theirs.fileno()}
        if pidfd is not None:
            child_fds[4] = pidfd
        try:
            ours.setblocking(False)
            self._process = self.reactor.spawnProcess(_Process(self), argv[0], argv, env={},
                                                      childFDs=child_fds)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(devnull)
        self._socket = ours
        self.reactor.addReader(self)

    # -- requests ------------------------------------------------------------
    def request(self, message, fds=()):
        """Send a request; its _Call yields the answers."""
        if self.gone or self._socket is None:
            raise errors.InternalError("The container's file agent has ended")
        ident = str(next(self._ids))
        call = _Call(self, ident)
        try:
            send(self._socket, {**message, "id": ident}, fds)
        except BlockingIOError:
            raise errors.ApiError("Too many file operations in progress in this container", code=503)
        except OSError as e:
            raise errors.InternalError(f"The container's file agent failed: {e.strerror}")
        self._calls[ident] = call
        self._touch()
        return call

    def cancel(self, ident):
        if self._socket is not None and not self.gone:
            try:
                send(self._socket, {"id": ident, "op": "cancel"})
            except OSError:
                pass

    def finished(self, ident):
        self._calls.pop(ident, None)
        self._touch()

    def _touch(self):
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if not self._calls and not self.gone:
            self._idle = self.reactor.callLater(IDLE_TIMEOUT, self.end)

    # -- IReadDescriptor -----------------------------------------------------
    def fileno(self):
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self):
        return f"fileagent {self.name}"

    def doRead(self):
        while self._socket is not None:
            try:
                message, fds = receive(self._socket)
            except BlockingIOError:
                return
            except (OSError, ValueError) as e:
                self.log.warn("File agent of {name} failed: {error}", name=self.name, error=e)
                message, fds = None, []
            if message is None:
                self._close()
                return
            self._handle(message, fds)

    def connectionLost(self, reason):
        self._close()

    def _handle(self, message, fds):
        if "ready" in message:
            if not self.ready.called:
                self.ready.callback(self)
            return
        if "failed" in message:
            self.log.warn("File agent of {name} could not start: {error}", name=self.name,
                          error=message["failed"])
            self._close()
            return
        call = self._calls.get(message.get("id"))
        if call is None or call.ended:
            for fd in fds:
                os.close(fd)
            return
        call.deliver(message, fds)

    # -- ending --------------------------------------------------------------
    def end(self):
        """No more requests: the agent exits (killing what it still serves)."""
        self._close()

    def kill(self):
        if self._process is not None and not self.done.called:
            try:
                self._process.signalProcess("KILL")
            except Exception:
                pass

    def _close(self):
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        self.gone = True
        if self._socket is not None:
            self.reactor.removeReader(self)
            self._socket.close()
            self._socket = None
        if not self.ready.called:
            self.ready.callback(None)
        error = errors.InternalError("The container's file agent has ended")
        for call in list(self._calls.values()):
            call.fail(error)
        self._calls.clear()

    def process_ended(self, stderr):
        if stderr:
            self.log.warn("File agent of {name}: {stderr}", name=self.name, stderr=stderr)
        self._close()
        if not self.done.called:
            self.done.callback(None)


class FileAgents(Residents):
    """The file agents of one daemon's containers."""

    def __init__(self, reactor, python=sys.executable, program=PROGRAM):
        super().__init__(reactor)
        self.argv = [python, "-I", "-S", program]

    async def for_running(self, name, pid, pidfd, idmap_json):
        """The agent inside running container `name` (init `pid`, kept open as `pidfd`)."""
        return await self._agent(name, pid, [*self.argv, "running", name, idmap_json], pidfd)

    async def for_rootfs(self, name, rootfs, idmap_json):
        """The agent over the rootfs directory of stopped container `name`."""
        return await self._agent(name, None, [*self.argv, "stopped", name, rootfs, idmap_json], None)

    async def _agent(self, name, key, argv, pidfd):
        agent = self._current.get(name)
        if agent is not None and (agent.gone or agent.key != key):
            self.forget(name)
            agent = None
        if agent is None:
            agent = FileAgent(self.reactor, name, key)
            try:
                agent.launch(argv, pidfd)
            except OSError as e:
                raise errors.InternalError(f"Could not start the file agent: {e.strerror}")
            self._current[name] = agent
            timer = self.reactor.callLater(READY_TIMEOUT, agent.end)

            def cancel(result):
                if timer.active():
                    timer.cancel()
                return result

            agent.ready.addBoth(cancel)
        ready = await shared(agent.ready)
        if ready is None:
            if self._current.get(name) is agent:
                del self._current[name]
            raise errors.InternalError("The container's file agent could not start")
        return ready

    async def stopped(self, name, timeout=END_TIMEOUT):
        """`name` stopped or goes away: wait until its agents have exited, so that none
        holds its namespaces or its rootfs. One still there after `timeout` is killed."""
        await super().stopped(name, timeout)
