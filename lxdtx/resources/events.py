# -*- test-case-name: tests.integration.test_server -*-
"""`/1.0/events`: the event stream as a websocket."""

from lxdtx.events import DEFAULT_TYPES
from lxdtx.router import Endpoint
from lxdtx.wsproto import Handshake, WebsocketProtocol


class EventsProtocol(WebsocketProtocol):
    """Sends events as text frames; never reads, never pings.

    Every `lxc` command opens one of these first, so it uses the lean websocket
    server of `lxdtx.wsproto`.
    """

    def __init__(self, hub, types):
        super().__init__()
        self.hub = hub
        self.types = types

    def on_open(self):
        self.hub.subscribe(self)

    def deliver(self, frame):
        self.send_message(frame, binary=False)

    def on_close(self, clean):
        self.hub.unsubscribe(self)


async def get_events(req):
    raw = req.query.get("type", "")
    types = frozenset(t.strip() for t in raw.split(",") if t.strip()) or DEFAULT_TYPES
    return Handshake(EventsProtocol(req.daemon.events, types))


ENDPOINTS = [Endpoint("/1.0/events", get=get_events)]
