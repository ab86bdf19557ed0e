# -*- test-case-name: tests.unit.test_websocket -*-
"""The answer to an upgrade request: the connection handed to the one protocol instance a
handler made (lxdtx.websocket.server), through `autobahn.twisted.resource.WebSocketResource`
like any Autobahn server protocol. An HTTP answer, so apart from the protocols: what a
domain module serves over a websocket it hands over as a protocol, never as this."""

from autobahn.twisted.resource import WebSocketResource

from lxdtx.response import ErrorResponse, Response


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
