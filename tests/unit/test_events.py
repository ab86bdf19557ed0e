"""The event hub: type filtering, frame shape, broken listeners, the log forwarder."""

import json

from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import timeutil
from lxdtx.events import DEFAULT_TYPES, EventHub, LogForwarder


class Listener:
    """Records the frames it is given."""

    def __init__(self, types, broken=False):
        self.types = frozenset(types)
        self.frames = []
        self.broken = broken

    def deliver(self, frame):
        if self.broken:
            raise ConnectionError("gone")
        self.frames.append(json.loads(frame))


class EventHubTests(SynchronousTestCase):
    """Events reach exactly the listeners that asked for their type."""

    def setUp(self):
        self.hub = EventHub()

    def test_filtering(self):
        """Each listener sees only its types; unknown types reach nobody."""
        everything = Listener(DEFAULT_TYPES)
        lifecycle = Listener({"lifecycle"})
        operations = Listener({"operation"})
        for listener in (everything, lifecycle, operations):
            self.hub.subscribe(listener)
        self.hub.send("operation", {"id": "1"})
        self.hub.lifecycle("profile-created", "/1.0/profiles/p1")
        self.hub.send("logging", {"message": "hi"})
        self.hub.send("mystery", {})
        self.assertEqual([f["type"] for f in everything.frames], ["operation", "lifecycle", "logging"])
        self.assertEqual([f["type"] for f in lifecycle.frames], ["lifecycle"])
        self.assertEqual([f["type"] for f in operations.frames], ["operation"])

    def test_frame_shape(self):
        """A frame is {metadata, timestamp (with zone), type}."""
        listener = Listener({"lifecycle"})
        self.hub.subscribe(listener)
        self.hub.lifecycle("profile-renamed", "/1.0/profiles/a", {"new_name": "b"})
        self.hub.lifecycle("profile-deleted", "/1.0/profiles/b")
        first, second = listener.frames
        self.assertEqual(set(first), {"metadata", "timestamp", "type"})
        self.assertEqual(first["metadata"], {"action": "profile-renamed", "source": "/1.0/profiles/a",
                                             "context": {"new_name": "b"}})
        self.assertEqual(second["metadata"], {"action": "profile-deleted", "source": "/1.0/profiles/b"})
        self.assertIsNotNone(timeutil.parse(first["timestamp"]).tzinfo)

    def test_forwarded_events_skip_member_subscriptions(self):
        """Another member's event reaches local listeners as it came (with `node`), never a
        member's subscription (local_only), which still gets this member's own events."""
        local = Listener({"lifecycle"})
        member = Listener({"lifecycle"})
        member.local_only = True
        self.hub.subscribe(local)
        self.hub.subscribe(member)
        event = {"metadata": {"action": "container-started", "source": "/1.0/containers/c"},
                 "timestamp": "2026-01-01T00:00:00Z", "type": "lifecycle", "node": "m3"}
        self.hub.forward(event)
        self.hub.forward(dict(event, type="logging"))
        self.hub.lifecycle("container-stopped", "/1.0/containers/d")
        self.assertEqual(local.frames[0], event)
        self.assertEqual([f["metadata"]["action"] for f in local.frames], ["container-started", "container-stopped"])
        self.assertEqual([f["metadata"]["action"] for f in member.frames], ["container-stopped"])

    def test_unsubscribe(self):
        """An unsubscribed listener hears nothing more."""
        listener = Listener({"lifecycle"})
        self.hub.subscribe(listener)
        self.hub.unsubscribe(listener)
        self.hub.unsubscribe(listener)
        self.hub.lifecycle("x", "/1.0")
        self.assertEqual(listener.frames, [])

    def test_broken_listener_dropped(self):
        """A listener that fails is dropped; the others still get the event."""
        broken = Listener({"lifecycle"}, broken=True)
        fine = Listener({"lifecycle"})
        self.hub.subscribe(broken)
        self.hub.subscribe(fine)
        self.hub.lifecycle("a", "/1.0")
        self.assertFalse(self.hub.wants("operation"))
        broken.broken = False
        self.hub.lifecycle("b", "/1.0")
        self.assertEqual(broken.frames, [])
        self.assertEqual(len(fine.frames), 2)

    def test_many_listeners(self):
        """Many subscribers at once each get every event."""
        listeners = [Listener({"operation"}) for _ in range(50)]
        for listener in listeners:
            self.hub.subscribe(listener)
        self.hub.send("operation", {"id": "x"})
        self.assertTrue(all(len(listener.frames) == 1 for listener in listeners))

    def test_wants(self):
        """`wants` says whether anyone listens for a type."""
        self.assertFalse(self.hub.wants("logging"))
        self.hub.subscribe(Listener({"logging"}))
        self.assertTrue(self.hub.wants("logging"))


class LogForwarderTests(SynchronousTestCase):
    """Daemon log events become `logging` events."""

    def setUp(self):
        self.hub = EventHub()
        self.forward = LogForwarder(self.hub)
        self.listener = Listener({"logging"})

    def test_levels_and_context(self):
        """Level names as the reference spells them; scalar fields become string context."""
        self.hub.subscribe(self.listener)
        self.forward({"log_format": "Started {name}", "log_level": LogLevel.warn, "name": "c1",
                      "log_namespace": "x", "count": 3, "obj": object()})
        self.forward({"log_format": "oops", "log_level": LogLevel.error})
        self.forward({"log_format": "dbg", "log_level": LogLevel.debug})
        self.forward({"log_format": "crit", "log_level": LogLevel.critical})
        first = self.listener.frames[0]["metadata"]
        self.assertEqual(first, {"message": "Started c1", "level": "warn",
                                 "context": {"name": "c1", "count": "3"}})
        self.assertEqual([f["metadata"]["level"] for f in self.listener.frames], ["warn", "eror", "dbug", "crit"])

    def test_nobody_listening(self):
        """Without a logging listener nothing is formatted or sent."""
        lifecycle = Listener({"lifecycle"})
        self.hub.subscribe(lifecycle)
        formatted = []

        class Field:
            def __format__(self, spec):
                formatted.append(spec)
                return "field"

            __str__ = __repr__ = lambda self: self.__format__("")

        self.forward({"log_format": "{boom", "log_level": LogLevel.info})
        self.forward({"log_format": "x={x}", "x": Field(), "log_level": LogLevel.info})
        self.assertEqual(formatted, [])
        self.assertEqual(lifecycle.frames, [])

    def test_no_recursion(self):
        """Logging while forwarding a log event does not loop."""
        forward = self.forward

        class Chatty(Listener):
            def deliver(self, frame):
                super().deliver(frame)
                forward({"log_format": "about logging", "log_level": LogLevel.info})

        chatty = Chatty({"logging"})
        self.hub.subscribe(chatty)
        self.forward({"log_format": "one", "log_level": LogLevel.info})
        self.assertEqual(len(chatty.frames), 1)
