# -*- test-case-name: tests.integration.test_migration_rsync -*-
"""One rsync session through a migration websocket, both ends real rsync processes.

The sender runs the rsync client with `-e netcat.py SOCKET`: its remote shell is a
unix socket of the daemon (mode 0600, in the daemon's directory), pumped into the
websocket. The receiver runs `rsync --server` with its stdin and stdout on the
websocket. Each side sends the barrier (an empty text frame) when its rsync has said
all it will; a session is over when both barriers are seen and the local rsync exited.

The flags are LXD's, for the features the two headers agreed (`xattrs`, `delete`,
`compress`, and between two lxdtx daemons `hardlinks_acls` and `negotiation`), so an LXD peer's rsync
and ours speak the same protocol. Files arrive in a fresh directory, or into a
previous session's with mtimes compared to the nanosecond (`--modify-window=-1`).
"""

import fcntl
import os
import sys
import uuid

from twisted.internet import defer, protocol, threads
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from lxdtx.migration.channel import ChannelLost

CLIENT_ARGS = ["-ar", "--devices", "--numeric-ids", "--partial", "--sparse"]
SERVER_FLAGS = "-vlogDtpre.iLsfx"
# What rsync's client says it can do besides (`negotiation`): the checksum seed fix, in-place
# partial files, varint file lists with checksum and compression negotiation, names of id 0.
NEGOTIATING = "CIvu"
SERVER_ARGS = ["--server", SERVER_FLAGS, "--numeric-ids", "--devices", "--partial", "--sparse",
               "--modify-window=-1"]
NETCAT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "netcat.py")
# The dummy destination the client names; the receiver decides where files go.
_REMOTE = "localhost:/migration/"
_STDERR_KEPT = 4096
PIPE_SIZE = READ_SIZE = 1 << 20


def feature_args(features):
    """The flags both ends add for the agreed features."""
    args = []
    if "xattrs" in features:
        args += ["--xattrs", "--filter=-x security.selinux"]
    if "delete" in features:
        args.append("--delete")
    if "compress" in features:
        args += ["--compress", "--compress-level=2"]
    if "hardlinks_acls" in features:
        args += ["--hard-links", "--acls"]
    return args


def widen_pipe(fd):
    """Make the pipe `fd` hold `PIPE_SIZE` (rsync then reads and we write in larger pieces, with
    fewer wake-ups on both sides); left as it is where the system refuses."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


class RsyncFailed(Exception):
    """rsync exited non-zero, or the websocket went before the session ended."""


def client_argv(source, socket_path, features, bwlimit_kib=0):
    argv = ["rsync", *CLIENT_ARGS, *feature_args(features), "-e", f"{sys.executable} -I -S {NETCAT} {socket_path}"]
    if bwlimit_kib:
        argv.append(f"--bwlimit={bwlimit_kib}")
    return argv + [source.rstrip("/") + "/", _REMOTE]


def server_argv(target, features):
    args = list(SERVER_ARGS)
    if "negotiation" in features:
        args[1] = SERVER_FLAGS + NEGOTIATING
    return ["rsync", *args, *feature_args(features), ".", target.rstrip("/") + "/"]


class _Session:
    """What one session waits for: its rsync's exit and the peer's barrier."""

    def __init__(self, what):
        self.what = what
        self.done = defer.Deferred()
        self.code = None
        self.peer_done = False
        self.peer_lost = False
        self.stderr = b""

    def keep_stderr(self, data):
        self.stderr = (self.stderr + data)[-_STDERR_KEPT:]

    def check(self):
        if self.done.called or self.code is None or not self.peer_done:
            return
        if self.peer_lost and self.code != 0:
            self.done.errback(ChannelLost(f"the fs websocket closed during the transfer of {self.what}"))
        elif self.code != 0:
            text = self.stderr.decode(errors="replace").strip().splitlines()
            self.done.errback(RsyncFailed(f"rsync of {self.what} failed: {text[-1] if text else self.code}"))
        else:
            self.done.callback(None)


class _Receiver(protocol.ProcessProtocol):
    def __init__(self, channel, session):
        self.channel = channel
        self.session = session

    def connectionMade(self):
        widen_pipe(self.transport.pipes[0].fileno())
        # Holding the websocket only once a pipe's worth waits: not at every 64 KiB.
        self.transport.pipes[0].bufferSize = PIPE_SIZE
        self.channel.feed_from(self.transport.pipes[1])
        # Held while rsync has not taken what came: the websocket waits, not our memory.
        self.channel.throttle_into(self.transport.pipes[0])
        self.channel.read(self._peer_data, self._peer_barrier)

    def outReceived(self, data):
        self.channel.send(data)

    def errReceived(self, data):
        self.session.keep_stderr(data)

    def outConnectionLost(self):
        self.channel.stop_feeding()
        self.channel.send_barrier()

    def _peer_data(self, data):
        self.transport.write(data)

    def _peer_barrier(self, lost=False):
        self.session.peer_done, self.session.peer_lost = True, lost
        self.channel.stop_throttling(self.transport.pipes.get(0))
        self.transport.closeStdin()
        if lost:
            self.transport.signalProcess("KILL")
        self.session.check()

    def processEnded(self, reason):
        self.channel.stop_throttling(None)
        self.session.code = reason.value.exitCode if reason.value.exitCode is not None else -1
        self.session.check()


@implementer(IHalfCloseableProtocol)
class _Pump(protocol.Protocol):
    """The daemon's end of the rsync client's remote shell."""

    def __init__(self, channel, session):
        self.channel = channel
        self.session = session

    def connectionMade(self):
        # Reads as large as what the socket holds: fewer, larger frames.
        self.transport.bufferSize = READ_SIZE
        self.channel.feed_from(self.transport)
        self.channel.read(self._peer_data, self._peer_barrier)

    def dataReceived(self, data):
        self.channel.send(data)

    def readConnectionLost(self):
        self.channel.stop_feeding()
        self.channel.send_barrier()

    def writeConnectionLost(self):
        pass

    def _peer_data(self, data):
        self.transport.write(data)

    def _peer_barrier(self, lost=False):
        self.session.peer_done, self.session.peer_lost = True, lost
        if lost:
            self.transport.abortConnection()
        else:
            self.transport.loseWriteConnection()
        self.session.check()


class _OneConnection(protocol.Factory):
    def __init__(self, pump):
        self.pump = pump
        self.taken = False

    def buildProtocol(self, addr):
        if self.taken:
            return None
        self.taken = True
        return self.pump


class _Client(protocol.ProcessProtocol):
    def __init__(self, session):
        self.session = session

    def errReceived(self, data):
        self.session.keep_stderr(data)

    def processEnded(self, reason):
        self.session.code = reason.value.exitCode if reason.value.exitCode is not None else -1
        if self.session.code != 0:
            # Failed on its own (its remote shell never connected, say): no barrier will
            # come; the caller ends the channel, which ends the peer's rsync.
            self.session.peer_done = True
        self.session.check()


async def receive(reactor, channel, target, what, features):
    """Receive one session into the directory `target`."""
    session = _Session(what)
    argv = server_argv(target, features)
    reactor.spawnProcess(_Receiver(channel, session), argv[0], argv, env=_env())
    await session.done


async def send(reactor, channel, source, what, socket_dir, features, bwlimit_kib=0):
    """Send the contents of the directory `source` as one session; the remote shell's socket
    is made in `socket_dir` (made too, 0700, if missing)."""
    await threads.deferToThread(os.makedirs, socket_dir, 0o700, True)
    session = _Session(what)
    path = os.path.join(socket_dir, f"rsync-{uuid.uuid4().hex[:12]}.sock")
    port = reactor.listenUNIX(path, _OneConnection(_Pump(channel, session)), mode=0o600)
    try:
        argv = client_argv(source, path, features, bwlimit_kib)
        reactor.spawnProcess(_Client(session), argv[0], argv, env=_env())
        await session.done
    finally:
        await port.stopListening()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _env():
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
