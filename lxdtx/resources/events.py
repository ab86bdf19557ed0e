# -*- test-case-name: tests.integration.test_server -*-
"""`/1.0/events`: the event stream as a websocket."""

from twisted.logger import Logger

from lxdtx.cluster.peers import FORWARDED
from lxdtx.events import DEFAULT_TYPES
from lxdtx.router import Action, Endpoint
from lxdtx.websocket.handshake import Handshake
from lxdtx.websocket.server import StreamSocket

# Events queued for a listener that stopped reading; past this it is dropped (as LXD
# drops a listener it cannot write to), so no listener grows the daemon's memory.
MAX_BACKLOG = 8 * 1024 * 1024
log = Logger()


class EventsSocket(StreamSocket):
    """Sends events as text messages; what the client sends is ignored."""

    def __init__(self, hub, types, local_only=False):
        super().__init__()
        self.hub = hub
        self.types = types
        self.local_only = local_only
        self._backlog = 0

    def opened(self):
        self.hub.subscribe(self)
        self.transport.registerProducer(self, True)

    def pauseProducing(self):
        super().pauseProducing()
        self._backlog = 0

    def deliver(self, frame):
        if self.held:
            self._backlog += len(frame)
            if self._backlog > MAX_BACKLOG:
                log.warn("Dropped an event listener that stopped reading ({peer})", peer=self.peer)
                self.hub.unsubscribe(self)
                self.drop()
                return
        self.send_text(frame)

    def closed(self, abnormal):
        self.hub.unsubscribe(self)


async def get_events(req):
    raw = req.query.get("type", "")
    types = frozenset(t.strip() for t in raw.split(",") if t.strip()) or DEFAULT_TYPES
    # Another member's subscription (lxdtx.cluster.events) gets this member's own events only.
    local_only = bool(req.header(FORWARDED))
    return Handshake(req.daemon.websockets, EventsSocket(req.daemon.events, types, local_only))


ENDPOINTS = [Endpoint("/1.0/events", get=Action(get_events, answers="websocket"))]
