# -*- test-case-name: tests.unit.test_websocket_relay -*-
"""One websocket relayed to another, frame by frame: a client's connection served here
(`RelayedSocket`) and the connection this daemon opened to where the stream really
lives (`RelayClient`), such as the cluster member that runs an exec.

Every message goes across as it came (binary or text, the empty barrier included),
and so does the end: a close frame is answered by a close frame with the same code
(codes a sender may not send become 1000), a connection dropped without one drops the
other. Back-pressure runs both ways with `Backpressure`: while one side's peer is slow
to read, the other side's connection is not read either, so nothing piles up here.

The far end opens first (its handshake decides whether the client is let in at all);
what it sends before the client's end is open waits, its connection paused.
"""

from autobahn.twisted.websocket import WebSocketClientProtocol

from lxdtx.websocket.server import Backpressure, StreamSocket

_SENDABLE = (1000,)  # and 3000-4999: the close codes Autobahn lets an endpoint send


def _sendable(code):
    return code in _SENDABLE or (code is not None and 3000 <= code <= 4999)


def _end_like(ended, other):
    """End `other` as `ended` ended (unless the relay ended `ended` itself)."""
    if ended.relay_ended or other.state == other.STATE_CLOSED:
        return
    other.relay_ended = True
    code = ended.remoteCloseCode
    if code is None:
        other.drop()
        return
    other.sendClose(code if _sendable(code) else 1000, ended.remoteCloseReason if _sendable(code) else None)


class RelayClient(Backpressure, WebSocketClientProtocol):  # type: ignore[misc]  # as StreamSocket
    """The far end: frames it receives go to its partner, a RelayedSocket."""

    relay_ended = False

    def __init__(self):
        super().__init__()
        self.partner = None
        self.early = []  # what came before the partner opened

    def expect_partner(self, clock, seconds):
        """Drop this connection unless its partner opens within `seconds` (the client's
        handshake failed or never came: nobody else would end it)."""

        def check():
            if self.partner is None or not self.partner.opened_once:
                self.drop()

        clock.callLater(seconds, check)

    def drop(self):
        self._let_go()
        if self.transport is not None and self.state != self.STATE_CLOSED:
            self.wasClean = True
            self.dropConnection(abort=False)

    def send_relayed(self, payload, binary):
        if self.state == self.STATE_OPEN:
            self.sendMessage(payload, binary)

    def onOpen(self):
        if self.partner is None or self.partner.state != self.partner.STATE_OPEN:
            self.transport.pauseProducing()

    def onMessage(self, payload, isBinary):
        partner = self.partner
        if partner is not None and partner.state == partner.STATE_OPEN:
            partner.sendMessage(payload, isBinary)
        else:
            self.early.append((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        self._let_go()
        partner = self.partner
        if partner is not None and partner.state == partner.STATE_OPEN:
            _end_like(self, partner)


class RelayedSocket(StreamSocket):
    """The client's end of a relayed stream. Not pinged: which streams the client reads
    is the far end's knowledge (it pings us where it pings), and a ping the client does
    not answer would end a healthy session."""

    pinged = False
    relay_ended = False
    opened_once = False

    def __init__(self, upstream):
        super().__init__()
        self.upstream = upstream
        upstream.partner = self

    def opened(self):
        self.opened_once = True
        upstream = self.upstream
        if upstream.state == upstream.STATE_CLOSED:
            _end_like(upstream, self)
            return
        self.feed_from(upstream.transport)
        upstream.feed_from(self.transport)
        early, upstream.early = upstream.early, []
        upstream.transport.resumeProducing()
        for payload, binary in early:
            self.sendMessage(payload, binary)

    def message(self, payload, binary):
        self.upstream.send_relayed(payload, binary)

    def closed(self, abnormal):
        # A client that never got in (or left without a close frame) drops the far end.
        _end_like(self, self.upstream)
