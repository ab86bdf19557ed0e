# -*- test-case-name: tests.unit.test_websocket -*-
"""The server side of the daemon's websockets: Autobahn protocols in the twisted.web tree.

A handler answers an upgrade with `lxdtx.websocket.handshake.Handshake(factories,
protocol)`: the one protocol instance of that connection, made with what it serves (an
exec session's fd, the event hub). Two factories carry the options (`lxdtx.websocket.options`): one pings
its peers, one does not, and each protocol says which it needs.

`StreamSocket` is what every stream of the daemon shares: messages in, data and
barriers out, back-pressure both ways (`Backpressure`, which client protocols share
too), and a patient ping: while the peer's
buffers are full (our output is held), it is slow, not gone, and an unanswered
ping waits for it (a pager holding `lxc exec` output, say).
"""

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from lxdtx import errors
from lxdtx.websocket import options

SERVER_NAME = "lxdtx"
# Module-level: a protocol's own `log` is Autobahn's (txaio), whose debug calls are no-ops.
log = Logger()


class Factories:
    """The daemon's two server factories: with pings and without."""

    def __init__(self, reactor, **timing):
        self.pinged = self._factory(reactor, True, timing)
        self.unpinged = self._factory(reactor, False, timing)

    @staticmethod
    def _factory(reactor, ping, timing):
        factory = WebSocketServerFactory(server=SERVER_NAME, reactor=reactor)
        factory.setProtocolOptions(**options.server(ping, **timing))
        return factory

    def for_protocol(self, protocol):
        return self.pinged if protocol.pinged else self.unpinged


@implementer(IPushProducer)
class Backpressure:
    """What a websocket protocol of either side (server or client) needs to be fed by a
    producer: while the peer's buffers are full (our transport pauses us) the `source`
    (a pipe, a pty, another connection) is paused, and an unanswered ping waits for a
    peer that is slow, not gone. `held` says whether our output is held now."""

    _source = None
    held = False

    def peer_gone(self):
        pass

    def pause_reading(self):
        if self.transport is not None:
            self.transport.pauseProducing()

    def resume_reading(self):
        if self.transport is not None:
            self.transport.resumeProducing()

    def feed_from(self, producer):
        """Hold `producer` (a pipe or pty reader, a transport) while the peer's buffers are full."""
        if self.transport is None:
            return
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        self._source = producer
        self.transport.registerProducer(self, True)

    def pauseProducing(self):
        self.held = True
        if self._source is not None:
            self._source.pauseProducing()

    def resumeProducing(self):
        self.held = False
        if self._source is not None:
            self._source.resumeProducing()

    def stopProducing(self):
        self._let_go()

    def _let_go(self):
        # The connection is going: its source reads (and its output is dropped) again,
        # so the command is never stuck on a full pipe.
        source, self._source = self._source, None
        if source is not None and self.held:
            source.resumeProducing()
        self.held = False

    def onAutoPingTimeout(self):
        if self.held:
            # Still waiting for the pong; any frame from the peer also ends the wait.
            self.autoPingTimeoutCall = self.factory.reactor.callLater(self.autoPingTimeout,
                                                                      self.onAutoPingTimeout)
            return
        log.info("Websocket peer {peer} did not answer a ping", peer=self.peer)
        self.peer_gone()
        super().onAutoPingTimeout()


class StreamSocket(Backpressure, WebSocketServerProtocol):  # type: ignore[misc]  # Autobahn's own bases disagree
    """One websocket stream. Subclasses get `opened()`, `message(payload, binary)`,
    `closed(abnormal)` and `peer_gone()` (its ping went unanswered)."""

    pinged = True
    claim = None  # called once the upgrade is good: what it takes only a good handshake takes

    def __init__(self):
        super().__init__()
        self._source = None
        self.held = False

    # -- subclass hooks ------------------------------------------------------
    def opened(self):
        pass

    def message(self, payload, binary):
        pass

    def closed(self, abnormal):
        pass

    # -- sending -------------------------------------------------------------
    def is_open(self):
        return self.state == self.STATE_OPEN

    def send(self, data):
        if self.state == self.STATE_OPEN:
            self.sendMessage(data, True)

    def send_text(self, data):
        if self.state == self.STATE_OPEN:
            self.sendMessage(data, False)

    def send_barrier(self):
        """The empty text message that ends a stream of LXD's."""
        self.send_text(b"")

    def drop(self):
        """End the connection without a close frame (as LXD ends its exec sockets)."""
        self._let_go()
        if self.transport is not None and self.state != self.STATE_CLOSED:
            self.wasClean = True  # ours to end: not a peer lost (nor a warning in the log)
            self.dropConnection(abort=False)

    # -- Autobahn ------------------------------------------------------------
    def onConnect(self, request):
        if self.claim is not None:
            try:
                self.claim()
            except errors.ApiError as e:
                raise ConnectionDeny(e.code, e.message)
        return None

    def onOpen(self):
        self.opened()

    def onMessage(self, payload, isBinary):
        self.message(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        self._let_go()
        self.closed(not wasClean)
