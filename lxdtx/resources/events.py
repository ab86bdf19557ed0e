# -*- test-case-name: tests.integration.test_server -*-
"""`/1.0/events`: the event stream as a websocket."""

import functools

from lxdtx.events import DEFAULT_TYPES
from lxdtx.router import Endpoint
from lxdtx.websocket import Upgrade, server_protocol_base


@functools.cache
def _protocol_class():
    class EventsProtocol(server_protocol_base()):
        """Sends events as text frames; never reads, never pings."""

        def __init__(self, hub, types):
            super().__init__()
            self.hub = hub
            self.types = types

        def onOpen(self):
            self.hub.subscribe(self)

        def deliver(self, frame):
            self.sendMessage(frame, isBinary=False)

        def onMessage(self, payload, isBinary):
            pass

        def onClose(self, wasClean, code, reason):
            self.hub.unsubscribe(self)

    return EventsProtocol


async def get_events(req):
    raw = req.query.get("type", "")
    types = frozenset(t.strip() for t in raw.split(",") if t.strip()) or DEFAULT_TYPES
    return Upgrade(_protocol_class()(req.daemon.events, types))


ENDPOINTS = [Endpoint("/1.0/events", get=get_events)]
