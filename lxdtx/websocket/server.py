# -*- test-case-name: tests.unit.test_websocket -*-
"""The server side of the daemon's websockets: Autobahn protocols in the twisted.web tree.

A handler answers an upgrade with `Handshake(factories, protocol)`: the one
protocol instance of that connection, made by the handler with what it serves
(an exec session's fd, the event hub), goes through
`autobahn.twisted.resource.WebSocketResource` like any Autobahn server
protocol. Two factories carry the options (`lxdtx.websocket.options`): one pings
its peers, one does not, and each protocol says which it needs.

`StreamSocket` is what every stream of the daemon shares: messages in, data and
barriers out, back-pressure both ways (`Backpressure`, which client protocols share
too), and a patient ping: while the peer's
buffers are full (our output is held), it is slow, not gone, and an unanswered
ping waits for it (a pager holding `lxc exec` output, say).
"""

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from lxdtx import errors
from lxdtx.response import ErrorResponse, Response
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


def _tolerate_host(request):
    """Strip a non-numeric port from the Host header, which Autobahn refuses: the daemon
    serves whatever name it is reached by, and pylxd sends `localhost:None` over the
    unix socket."""
    host = request.getHeader(b"host")
    if host is None or host.endswith(b"]") or b":" not in host:
        return
    name, port = host.rsplit(b":", 1)
    if not port.strip().isdigit():
        request.requestHeaders.setRawHeaders(b"host", [name])


class _OneProtocol:
    """What WebSocketResource builds the connection's protocol with: the one the handler made."""

    def __init__(self, factory, protocol):
        self.factory = factory
        self.protocol = protocol

    def buildProtocol(self, addr):
        self.protocol.factory = self.factory
        return self.protocol


class Handshake(Response):
    """Answer an upgrade request by handing the connection to `protocol` (a StreamSocket)."""

    def __init__(self, factories, protocol, claim=None):
        self.factories = factories
        self.protocol = protocol
        if claim is not None:
            protocol.claim = claim

    def render(self, request):
        # Autobahn answers a plain request with a status page; LXD answers 400.
        if (request.getHeader(b"upgrade") or b"").lower() != b"websocket" or request.channel.transport is None:
            return ErrorResponse(400, "websocket upgrade expected").render(request)
        channel = request.channel
        channel.setTimeout(None)
        upgraded = getattr(channel, "upgraded", None)
        if upgraded is not None:
            upgraded()  # no more HTTP bounds on this connection (lxdtx.router.ApiChannel)
        # The HTTP channel is the transport's producer; the connection is the websocket's now.
        transport = channel.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        _tolerate_host(request)
        factory = self.factories.for_protocol(self.protocol)
        return WebSocketResource(_OneProtocol(factory, self.protocol)).render(request)
