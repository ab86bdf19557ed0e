# -*- test-case-name: tests.integration.test_migration_rsync -*-
"""One migration websocket (`control`, `fs`, `criu`) as the protocol code sees it, whichever
end dialled: frames out, and frames in handed to one reader at a time.

The `fs` socket carries sessions back to back, each ending at an empty text frame (the
barrier). A reader takes frames up to and including one barrier; what arrives after it
waits for the next reader, so one rsync session never eats the start of the next.
"""

import collections

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class _Reads:
    """The websocket's reading as a pipe writer's producer: held while the pipe is full, and
    let go (never closed) when the pipe goes, whose end is not the websocket's."""

    def __init__(self, transport):
        self.transport = transport

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        self.transport.resumeProducing()


STREAM_READ = 1 << 20


class ChannelLost(Exception):
    """The websocket closed (or was dropped) while the protocol still needed it."""


class Channel:
    def __init__(self, name):
        self.name = name
        # `fs` carries streams only (rsync sessions, btrfs send): its binary frames may come in
        # pieces. `control` and `criu` carry whole messages too (protobuf, one a frame).
        self.streams = name == "fs"
        self._protocol = None
        self._queue = collections.deque()  # (payload, binary) not yet read
        self._reader = None  # (on_data, on_barrier)
        self._lost = False
        self.is_open = False
        self.bytes_sent = self.bytes_received = 0  # of binary frames: what progress reports
        self._open_waiters = []
        self.closed = defer.Deferred()  # fires (with None) when the websocket is gone

    # -- the protocol's side --------------------------------------------------------
    def attach(self, protocol):
        """The websocket protocol (server or client) that carries this channel."""
        self._protocol = protocol
        if self.streams:
            # The connection under TLS (or the plain one) reads as much as the kernel holds.
            transport = getattr(protocol, "transport", None)
            connection = getattr(transport, "transport", transport)
            if connection is not None and hasattr(connection, "bufferSize"):
                connection.bufferSize = STREAM_READ

    def connected(self):
        self.is_open = True
        waiters, self._open_waiters = self._open_waiters, []
        for waiter in waiters:
            if not waiter.called:  # a waiter may have been cancelled (its operation was)
                waiter.callback(self)

    def received(self, payload, binary):
        if binary:
            self.bytes_received += len(payload)
            if self._reader is not None and not self._queue:
                self._reader[0](payload)  # the common case of a stream: straight to its reader
                return
        self._queue.append((payload, binary))
        self._deliver()

    def lost(self):
        if self._lost:
            return
        self._lost = True
        waiters, self._open_waiters = self._open_waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(ChannelLost(f"the {self.name} websocket closed before it opened"))
        if not self.closed.called:
            self.closed.callback(None)
        self._deliver()

    # -- the migration code's side ----------------------------------------------------
    def when_open(self):
        """A Deferred that fires with the channel once its websocket is open."""
        if self.is_open:
            return defer.succeed(self)
        if self._lost:
            return defer.fail(ChannelLost(f"the {self.name} websocket closed before it opened"))
        waiter = defer.Deferred()
        self._open_waiters.append(waiter)
        return waiter

    def send(self, data):
        if self._protocol is not None and not self._lost:
            self.bytes_sent += len(data)
            self._protocol.sendMessage(data, True)

    def send_barrier(self):
        if self._protocol is not None and not self._lost:
            self._protocol.sendMessage(b"", False)

    def close(self, abort=False):
        """End the websocket: a close frame, or (`abort`) just the connection, as LXD ends
        its data sockets after a failure."""
        protocol = self._protocol
        if protocol is None or self._lost:
            return
        if abort:
            protocol.dropConnection(abort=False)
        else:
            protocol.sendClose(1000)

    def feed_from(self, producer):
        """Pause `producer` (a pipe reader) while the websocket's send buffers are full."""
        transport = getattr(self._protocol, "transport", None)
        if transport is not None:
            if getattr(transport, "producer", None) is not None:
                transport.unregisterProducer()
            transport.registerProducer(producer, True)

    def stop_feeding(self):
        transport = getattr(self._protocol, "transport", None)
        if transport is not None and getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()

    def throttle_into(self, consumer):
        """Stop reading the websocket while `consumer` (a pipe writer) holds a full buffer."""
        transport = getattr(self._protocol, "transport", None)
        if transport is not None and consumer is not None:
            consumer.registerProducer(_Reads(transport), True)

    def stop_throttling(self, consumer):
        """Undo `throttle_into` (`consumer` None: it is gone already); the websocket reads again."""
        if consumer is not None and getattr(consumer, "producer", None) is not None:
            consumer.unregisterProducer()
        transport = getattr(self._protocol, "transport", None)
        if transport is not None and not self._lost:
            transport.resumeProducing()

    def read(self, on_data, on_barrier):
        """Hand frames to `on_data(bytes)` until a barrier, then call `on_barrier()` (also
        when the websocket is lost first: `on_barrier(lost=True)`)."""
        self._reader = (on_data, on_barrier)
        self._deliver()

    def next_message(self):
        """A Deferred of the next binary frame (a control message); ChannelLost if none comes."""
        result = defer.Deferred()
        frames = []

        def data(payload):
            frames.append(payload)
            self._reader = None
            result.callback(payload)

        def barrier(lost=False):
            if not result.called:
                result.errback(ChannelLost(f"the {self.name} websocket closed"))

        self._reader = (data, barrier)
        self._deliver()
        return result

    def _deliver(self):
        while self._reader is not None and self._queue:
            payload, binary = self._queue.popleft()
            on_data, on_barrier = self._reader
            if binary:
                on_data(payload)
            elif not payload:
                self._reader = None
                on_barrier()
            # A non-empty text frame is not part of any stream: ignored.
        if self._reader is not None and self._lost and not self._queue:
            _, on_barrier = self._reader
            self._reader = None
            on_barrier(lost=True)
