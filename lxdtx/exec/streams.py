# -*- test-case-name: tests.integration.test_exec -*-
"""The real transports of a session: websocket protocols, and the command run
by the container's exec seed (pipes, or a pty of the container's devpts when
interactive) or, when the seed cannot, by `lxc-attach`.

Flow control runs both ways: a full stdin pipe (or pty) pauses reading the
client's socket, and a client slow to take output pauses reading the pipes
(the socket holds its source, `StreamSocket.feed_from`). Stdin pauses go
through `_Valve`s, because a Twisted consumer stops (disconnects) its producer
when it goes away, and neither side may close the other.
"""

import os
import pty
import signal
import termios

from twisted.internet import abstract, error, fdesc
from twisted.internet.interfaces import IPushProducer
from twisted.internet.process import ProcessReader, ProcessWriter
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from zope.interface import implementer

from lxdtx.exec import attach
from lxdtx.exec.seeds import SeedUnavailable
from lxdtx.websocket.server import StreamSocket

HELPER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
# How long a signal waits for the command to appear under the helper.
SIGNAL_RETRIES = 100
SIGNAL_RETRY_DELAY = 0.01
# How long keystrokes wait for the helper to set up its terminal (polls of 5 ms).
RAW_MODE_POLLS = 400
RAW_MODE_POLL_DELAY = 0.005


@implementer(IPushProducer)
class _Valve:
    """Pauses and resumes a transport's reading for a consumer; never closes it."""

    def __init__(self, target):
        self.target = target

    def pauseProducing(self):
        self.target.pauseProducing()

    def resumeProducing(self):
        self.target.resumeProducing()

    def stopProducing(self):
        # The consumer is gone: let the target read (and discard) again.
        self.target.resumeProducing()


def _take_over_consumer(transport, producer):
    """Make `producer` the (only) producer feeding `transport`."""
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    transport.registerProducer(producer, True)


def _release_consumer(transport):
    """Unregister (and resume) whatever producer feeds `transport`, so it can close."""
    producer = getattr(transport, "producer", None)
    if producer is not None:
        transport.unregisterProducer()
        if isinstance(producer, _Valve):
            producer.resumeProducing()


class SessionSocket(StreamSocket):
    """One fd of an exec or console session; pinged when the client reads it (see
    `lxdtx.websocket.options`), and a peer that stops answering is lost like `control`."""

    def __init__(self, session, name):
        super().__init__()
        self.session = session
        self.name = name
        self.pinged = session.read_by_client(name)

    def opened(self):
        self.session.socket_opened(self.name, self)

    def message(self, payload, binary):
        self.session.socket_message(self.name, payload, binary)

    def closed(self, abnormal):
        self.session.socket_closed(self.name, abnormal)

    def peer_gone(self):
        self.session.peer_gone(self.name)


class AttachedCommand(ProcessProtocol):
    """The `lxc-attach` helper running one command: pipes, or a pty when interactive."""

    log = Logger()

    def __init__(self, session, reactor, interactive):
        self.session = session
        self.reactor = reactor
        self.interactive = interactive
        self.exited = False
        # Keystrokes wait until the helper put the pty in raw mode: it does so
        # with TCSAFLUSH, which throws away input that arrived before.
        self._held = [] if interactive else None
        self._polls = RAW_MODE_POLLS

    def spawn(self, argv, size=None):
        if self.interactive:
            master, slave = pty.openpty()
            try:
                if size:
                    attach.set_window_size(master, *size)
                self.reactor.spawnProcess(self, argv[0], argv, env=HELPER_ENV, usePTY=(master, slave, None))
            except BaseException:
                os.close(master)
                os.close(slave)
                raise
        else:
            # No working directory of our own: Twisted can then use posix_spawn.
            self.reactor.spawnProcess(self, argv[0], argv, env=HELPER_ENV, childFDs={0: "w", 1: "r", 2: "r"})
        for name, fd in (("0", 1),) if self.interactive else (("1", 1), ("2", 2)):
            ws = self.session.sockets.get(name)
            reader = self.transport if self.interactive else self.transport.pipes.get(fd)
            if ws is not None and reader is not None and hasattr(ws, "feed_from"):
                ws.feed_from(reader)
        if self.interactive:
            self._wait_for_raw_mode()
        return self

    def _wait_for_raw_mode(self):
        if self._held is None:
            return
        raw = False
        try:
            raw = not termios.tcgetattr(self.transport.fileno())[3] & termios.ICANON
        except (OSError, termios.error, ValueError):
            raw = True  # gone already: nothing to wait for
        self._polls -= 1
        if raw or self._polls <= 0 or self.exited:
            held, self._held = self._held, None
            for data in held:
                self.write(data)
        else:
            self.reactor.callLater(RAW_MODE_POLL_DELAY, self._wait_for_raw_mode)

    # -- ProcessProtocol --------------------------------------------------
    def childDataReceived(self, fd, data):
        self.session.command_output(fd, data)

    def childConnectionLost(self, fd):
        if fd in (1, 2):
            self.session.command_output_ended(fd)

    def processExited(self, reason):
        self.exited = True
        self.session.command_exited(exit_code(reason))

    def processEnded(self, reason):
        if self.interactive:
            # The pty closes only when the helper (its one holder) has gone.
            self.session.command_output_ended(1)

    # -- what the session calls -----------------------------------------------
    def write(self, data):
        if self._held is not None:
            self._held.append(data)
        elif self.transport is not None and not self.exited:
            self.transport.write(data)

    def close_stdin(self):
        if not self.interactive and self.transport is not None:
            writer = self.transport.pipes.get(0)
            if writer is not None:
                # A consumer with a producer never closes: let the socket go first.
                _release_consumer(writer)
            self.transport.closeStdin()

    def stream_stdin_from(self, ws):
        """Pause reading the client's stdin socket while the pipe or pty is full."""
        transport = getattr(ws, "transport", None)
        if transport is None or self.transport is None:
            return
        consumer = self.transport if self.interactive else self.transport.pipes.get(0)
        if consumer is not None:
            _take_over_consumer(consumer, _Valve(transport))

    def signal(self, number, _tries=SIGNAL_RETRIES):
        if self.exited or self.transport is None or self.transport.pid is None:
            return
        try:
            delivered = attach.send_signal(self.transport.pid, number)
        except OSError as e:
            self.log.warn("Could not send signal {number}: {error}", number=number, error=e)
            return
        if not delivered and _tries > 0:
            # The helper has not started the command yet.
            self.reactor.callLater(SIGNAL_RETRY_DELAY, self.signal, number, _tries - 1)

    def kill(self):
        self.signal(signal.SIGKILL)

    def resize(self, width, height):
        if self.interactive and self.transport is not None and not self.transport.disconnected:
            attach.set_window_size(self.transport.fileno(), width, height)

    def abandon(self):
        """Stop reading output still held open by background children of the command."""
        if self.transport is None:
            return
        if self.interactive:
            _release_consumer(self.transport)
            self.transport.loseConnection()
        else:
            for fd in (0, 1, 2):
                self.transport.closeChildFD(fd)


class _Seeded:
    """What commands started by the container's exec seed share: exit reports and signals."""

    log = Logger()

    def __init__(self, session, reactor, seed):
        self.session = session
        self.reactor = reactor
        self.seed = seed
        self.id = None
        self.exited = False

    def command_started(self, pid):
        pass

    def command_exited(self, code):
        self.exited = True
        self.session.command_exited(code)

    def command_failed(self, number):
        self.log.warn("The exec seed could not run the command: {error}", error=os.strerror(number))
        self.command_exited(-1)

    def signal(self, number):
        if not self.exited:
            self.seed.signal(self.id, number)

    def kill(self):
        self.signal(signal.SIGKILL)


class SeededCommand(_Seeded):
    """A command started by the container's exec seed, with pipes for its three streams.

    The seed reports the exit status; the pipes end when the command and
    whatever inherited them have closed them.
    """

    def __init__(self, session, reactor, seed):
        super().__init__(session, reactor, seed)
        self.pipes = {}

    def spawn(self, argv, env, cwd):
        """Hand the command to the seed; raises SeedUnavailable when it cannot take it."""
        ends = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
        theirs = [ends[0][0], ends[1][1], ends[2][1]]
        try:
            self.id = self.seed.run(argv, env, cwd, theirs, self)
        except BaseException:
            for fd in (ends[0][1], ends[1][0], ends[2][0]):
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        self.pipes = {0: ProcessWriter(self.reactor, self, 0, ends[0][1]),
                      1: ProcessReader(self.reactor, self, 1, ends[1][0]),
                      2: ProcessReader(self.reactor, self, 2, ends[2][0])}
        for name, fd in (("1", 1), ("2", 2)):
            ws = self.session.sockets.get(name)
            if ws is not None and hasattr(ws, "feed_from"):
                ws.feed_from(self.pipes[fd])
        return self

    # -- what the pipes report -------------------------------------------------
    def childDataReceived(self, fd, data):
        self.session.command_output(fd, data)

    def childConnectionLost(self, fd, reason):
        pipe = self.pipes.pop(fd, None)
        if pipe is None:
            return
        os.close(pipe.fileno())
        if fd in (1, 2):
            self.session.command_output_ended(fd)

    # -- what the session calls -----------------------------------------------
    def write(self, data):
        writer = self.pipes.get(0)
        if writer is not None:
            writer.write(data)

    def close_stdin(self):
        writer = self.pipes.get(0)
        if writer is not None:
            _release_consumer(writer)
            writer.loseConnection()

    def stream_stdin_from(self, ws):
        transport = getattr(ws, "transport", None)
        writer = self.pipes.get(0)
        if transport is not None and writer is not None:
            _take_over_consumer(writer, _Valve(transport))

    def resize(self, width, height):
        pass  # no terminal

    def abandon(self):
        """Stop reading output still held open by background children of the command."""
        for pipe in list(self.pipes.values()):
            _release_consumer(pipe)
            pipe.loseConnection()


class _PtyMaster(abstract.FileDescriptor):
    """The master side of the command's pty: keystrokes in, the terminal's output out."""

    connected = True

    def __init__(self, reactor, fd, command):
        super().__init__(reactor)
        fdesc.setNonBlocking(fd)
        self.fd = fd
        self.command = command
        self.startReading()

    def fileno(self):
        return self.fd

    def doRead(self):
        # EIO once nothing holds the slave any more: the end of the output.
        return fdesc.readFromFD(self.fd, self.command.terminal_output)

    def writeSomeData(self, data):
        return fdesc.writeToFD(self.fd, data)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.command.terminal_closed()


class SeededTerminal(_Seeded):
    """An interactive command started by the exec seed on a pty of the container's devpts."""

    def __init__(self, session, reactor, seed):
        super().__init__(session, reactor, seed)
        self.master = None

    def spawn(self, argv, env, cwd, pty):
        """Hand the command to the seed with the pty (master, slave), which this takes over."""
        master, slave = pty
        try:
            if self.session.size:
                attach.set_window_size(master, *self.session.size)
            self.id = self.seed.run(argv, env, cwd, [slave] * 3, self, terminal=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = _PtyMaster(self.reactor, master, self)
        ws = self.session.sockets.get("0")
        if ws is not None and hasattr(ws, "feed_from"):
            ws.feed_from(self.master)
        return self

    # -- what the pty reports --------------------------------------------------
    def terminal_output(self, data):
        self.session.command_output(1, data)

    def terminal_closed(self):
        self.session.command_output_ended(1)

    # -- what the session calls -----------------------------------------------
    def write(self, data):
        if self.master is not None and self.master.connected and not self.master.disconnecting:
            self.master.write(data)

    def close_stdin(self):
        pass  # a terminal has no end of input of its own

    def stream_stdin_from(self, ws):
        transport = getattr(ws, "transport", None)
        if transport is not None and self.master is not None:
            _take_over_consumer(self.master, _Valve(transport))

    def resize(self, width, height):
        if self.master is not None and self.master.fd >= 0:
            attach.set_window_size(self.master.fd, width, height)

    def abandon(self):
        """Stop reading a terminal still held open by background children of the command."""
        if self.master is not None:
            _release_consumer(self.master)
            self.master.loseConnection()


def spawn_command(session, reactor, seed, argv_attach, argv, env, cwd, pty=None):
    """The session's command: through the seed when there is one, else `lxc-attach`.

    `pty`: (master, slave) of an interactive command, which this takes over.
    """
    if seed is not None:
        try:
            if not session.interactive:
                return SeededCommand(session, reactor, seed).spawn(argv, env, cwd)
            if pty is not None:
                taken, pty = pty, None
                return SeededTerminal(session, reactor, seed).spawn(argv, env, cwd, taken)
        except (SeedUnavailable, OSError) as e:
            _Seeded.log.info("Exec through lxc-attach: {reason}", reason=e)
    if pty is not None:
        for fd in pty:
            os.close(fd)
    return AttachedCommand(session, reactor, session.interactive).spawn(argv_attach, size=session.size)


def exit_code(reason):
    """The exit status of a reaped process: its code, 128+n for signal n, -1 if unknown."""
    value = reason.value
    if isinstance(value, error.ProcessDone):
        return 0
    code = getattr(value, "exitCode", None)
    if code is not None:
        return code
    number = getattr(value, "signal", None)
    return 128 + number if number else -1
