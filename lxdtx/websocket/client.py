# -*- test-case-name: tests.integration.test_websocket_client -*-
"""The client side of the daemon's websockets, on Autobahn: what migration and
remote operations dial, cluster members' event streams and relayed websockets, and
what the tests drive the daemon with.

`connect` opens `wss://HOST:PORT/PATH` with the peer's certificate pinned and ours
presented (`lxdtx.tls.client_creator`), or `ws+unix://SOCKET:/PATH` for a local
daemon, and returns the protocol once its opening handshake is done. The protocol
is any `autobahn.twisted.websocket.WebSocketClientProtocol` (`StreamClient` for
LXD's streams); the options are the server side's (`lxdtx.websocket.options`).
"""

from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, UNIXClientEndpoint

from lxdtx import tls
from lxdtx.websocket import options

CONNECT_TIMEOUT = 30


class HandshakeFailed(Exception):
    """The connection ended before its websocket opened (refused, timed out, not pinned)."""


class StreamClient(WebSocketClientProtocol):
    """One LXD stream, client side: binary messages and text messages (the barrier) in,
    recorded for whoever reads them; `received` fires with the stream at its barrier."""

    def __init__(self):
        super().__init__()
        self.chunks = []
        self.texts = []
        self.received = defer.Deferred()

    def onMessage(self, payload, isBinary):
        if isBinary:
            self.chunks.append(payload)
        elif not payload and not self.received.called:
            self.received.callback(b"".join(self.chunks))
        else:
            self.texts.append(payload)

    def onClose(self, wasClean, code, reason):
        if not self.received.called:
            self.received.callback(b"".join(self.chunks))


class FeedClient(WebSocketClientProtocol):
    """A stream of text messages (an event stream), each handed to `feed.received(payload)`
    as it comes, and its end to `feed.ended(protocol)`; nothing is kept here."""

    feed = None

    def onMessage(self, payload, isBinary):
        if self.feed is not None and not isBinary:
            self.feed.received(payload)

    def onClose(self, wasClean, code, reason):
        if self.feed is not None:
            self.feed.ended(self)


def _endpoint(reactor, url, peer_pem, cert_path, key_path, creator=None):
    if url.startswith("ws+unix://"):
        # ws+unix:///path/to/unix.socket:/1.0/events
        socket_path, _, path = url[len("ws+unix://"):].partition(":")
        return UNIXClientEndpoint(reactor, socket_path, timeout=CONNECT_TIMEOUT), f"ws://localhost{path}"
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)
    if parts.scheme == "wss":
        creator = creator or tls.client_creator(host, peer_pem, cert_path, key_path)
        return SSL4ClientEndpoint(reactor, host, port, creator, timeout=CONNECT_TIMEOUT), url
    if parts.scheme == "ws":
        return TCP4ClientEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT), url
    raise ValueError(f"not a websocket URL: {url}")


async def connect(reactor, url, protocol=StreamClient, *, peer_pem=None, cert_path=None, key_path=None,
                  ping=True, headers=None, creator=None, **timing):
    """The open websocket at `url`: an instance of `protocol` whose handshake completed
    (`creator`: the TLS connections of a `wss` URL, instead of one made from `peer_pem`).
    Raises HandshakeFailed (or the connection's error)."""
    endpoint, ws_url = _endpoint(reactor, url, peer_pem, cert_path, key_path, creator)
    factory = WebSocketClientFactory(ws_url, headers=headers, reactor=reactor)
    factory.setProtocolOptions(**options.client(ping, **timing))
    factory.protocol = protocol
    factory.noisy = False  # no "Starting factory" line in the log for each connection
    proto = await endpoint.connect(factory)
    opened = defer.Deferred()

    def handshake_done(_):
        if not opened.called:
            opened.callback(proto)

    def ended(_):
        if not opened.called:
            opened.errback(HandshakeFailed(proto.wasNotCleanReason or "the connection closed during the handshake"))

    proto.is_open.addCallback(handshake_done)
    proto.is_closed.addBoth(ended)
    return await opened
