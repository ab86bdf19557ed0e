# -*- test-case-name: tests.unit.test_websocket -*-
"""Websockets inside twisted.web, with Autobahn (imported on first use)."""

import re

from lxdtx.response import Response

_HOST_PORT = re.compile(rb"^(.*):([^\]:]*)$")


def _clean_host(request):
    """Drop a non-numeric port from Host (ws4py over unix sends `localhost:None`)."""
    host = request.getHeader(b"host") or b"unix.socket"
    m = _HOST_PORT.match(host)
    if m and not m.group(2).isdigit():
        host = m.group(1)
    request.requestHeaders.setRawHeaders(b"host", [host])


def _factory_class():
    from autobahn.twisted.websocket import WebSocketServerFactory

    class Factory(WebSocketServerFactory):
        """Builds the one protocol instance prepared for this upgrade."""

        def __init__(self, protocol):
            super().__init__()
            self._prepared = protocol
            # LXD streams are large and long-lived; pings keep idle NATs open.
            self.setProtocolOptions(
                maxFramePayloadSize=0, maxMessagePayloadSize=0,
                autoPingInterval=30, autoPingTimeout=60, openHandshakeTimeout=10,
                perMessageCompressionAccept=lambda offers: None,
            )

        def buildProtocol(self, addr):
            protocol = self._prepared
            protocol.factory = self
            return protocol

    return Factory


_FACTORY = None


def server_protocol_base():
    """Autobahn's server protocol class, for subclasses defined at use sites."""
    from autobahn.twisted.websocket import WebSocketServerProtocol

    return WebSocketServerProtocol


class Upgrade(Response):
    """Answer a request by handing its connection to `protocol` (an Autobahn server protocol)."""

    def __init__(self, protocol):
        self.protocol = protocol

    def render(self, request):
        global _FACTORY
        from autobahn.twisted.resource import WebSocketResource

        if _FACTORY is None:
            _FACTORY = _factory_class()
        _clean_host(request)
        return WebSocketResource(_FACTORY(self.protocol)).render(request)
