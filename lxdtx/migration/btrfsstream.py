# -*- test-case-name: tests.integration.test_migration_btrfs -*-
"""One `btrfs send` stream through a migration websocket, as LXD frames it.

The sender runs `btrfs send [-p PARENT] SUBVOLUME` and sends what it writes as binary
frames, then (only once it exited well) the barrier, an empty text frame. The receiver
checks each frame (`lxdtx.storage.btrfs_stream.Checker`) before it pipes it into
`btrfs receive -C DIRECTORY` (confined there: its parent and clone sources must be found
below it), and closes its stdin at the barrier; the subvolume appears in DIRECTORY under
the sent one's base name, read-only. A frame the check refuses kills `btrfs receive` before
it reads it, and the transfer fails saying why. Nothing comes back on the socket. Both ends hold back: the sender's pipe while the websocket's buffers
are full, the receiver's websocket while `btrfs receive` has not taken what it got.
"""

import os

from twisted.internet import defer, protocol

from lxdtx.migration.channel import ChannelLost
from lxdtx.storage import btrfs_stream

_STDERR_KEPT = 4096


class BtrfsFailed(Exception):
    """`btrfs send` or `btrfs receive` exited non-zero."""


def send_argv(path, parent=None):
    return ["btrfs", "send", *(["-p", parent] if parent else []), path]


def receive_argv(directory):
    return ["btrfs", "receive", "-C", directory]


def _env():
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}


class _Stream(protocol.ProcessProtocol):
    def __init__(self, channel, what):
        self.channel = channel
        self.what = what
        self.done = defer.Deferred()
        self.stderr = b""

    def errReceived(self, data):
        self.stderr = (self.stderr + data)[-_STDERR_KEPT:]

    def _fail(self, error):
        if not self.done.called:
            self.done.errback(error)

    def _tool_failed(self, tool, code):
        lines = self.stderr.decode(errors="replace").strip().splitlines()
        self._fail(BtrfsFailed(f"btrfs {tool} of {self.what} failed: {lines[-1] if lines else code}"))


class _Sender(_Stream):
    def connectionMade(self):
        self.transport.closeStdin()
        self.channel.feed_from(self.transport.pipes[1])

    def outReceived(self, data):
        if self.channel.closed.called:
            # The sink is gone: nobody will take the rest.
            self.transport.signalProcess("KILL")
            return
        self.channel.send(data)

    def outConnectionLost(self):
        self.channel.stop_feeding()

    def processEnded(self, reason):
        code = reason.value.exitCode
        if self.channel.closed.called:
            self._fail(ChannelLost(f"the fs websocket closed during the transfer of {self.what}"))
        elif code != 0:
            self._tool_failed("send", code if code is not None else -1)
        else:
            self.channel.send_barrier()
            self.done.callback(None)


class StreamRefused(BtrfsFailed):
    """The stream is not one a sink receives (btrfs_stream's check); the text says why."""


class _Receiver(_Stream):
    def __init__(self, channel, what, checker):
        super().__init__(channel, what)
        self.checker = checker
        self.code = None
        self.barrier = False

    def connectionMade(self):
        self.channel.throttle_into(self.transport.pipes[0])
        self.channel.read(self._data, self._barrier)

    def _data(self, data):
        if self.done.called:
            return  # refused or failed: the rest is dropped
        try:
            self.checker.feed(data)
        except btrfs_stream.StreamError as e:
            self._refuse(e)
            return
        if 0 in self.transport.pipes:
            self.transport.write(data)

    def _refuse(self, error):
        self.transport.signalProcess("KILL")
        self.channel.stop_throttling(self.transport.pipes.get(0))
        self._fail(StreamRefused(f"The btrfs send stream of {self.what} was refused: {error}"))

    def _barrier(self, lost=False):
        self.barrier = True
        self.channel.stop_throttling(self.transport.pipes.get(0))
        if lost:
            self.transport.signalProcess("KILL")
            self._fail(ChannelLost(f"the fs websocket closed during the transfer of {self.what}"))
            return
        if self.done.called:
            return
        try:
            self.checker.finish()
        except btrfs_stream.StreamError as e:
            self._refuse(e)
            return
        self.transport.closeStdin()
        self._check()

    def processEnded(self, reason):
        code = reason.value.exitCode
        self.code = code if code is not None else -1
        self._check()

    def _check(self):
        if self.code is None or self.done.called:
            return
        if self.code != 0:
            # Failed before the end of the stream: what still comes is dropped.
            self.channel.stop_throttling(None)
            self._tool_failed("receive", self.code)
        elif self.barrier:
            self.done.callback(self.checker.stream)


async def send(reactor, channel, path, what, parent=None):
    """Send the read-only subvolume `path` (incremental from `parent`, also read-only)."""
    stream = _Sender(channel, what)
    argv = send_argv(path, parent)
    reactor.spawnProcess(stream, argv[0], argv, env=_env())
    await stream.done


async def receive(reactor, channel, directory, what, checker):
    """Receive one stream into `directory`, which must exist on the pool's filesystem, as
    `checker` (a btrfs_stream.Checker) allows; the stream's btrfs_stream.Stream."""
    stream = _Receiver(channel, what, checker)
    argv = receive_argv(directory)
    reactor.spawnProcess(stream, argv[0], argv, env=_env())
    return await stream.done
