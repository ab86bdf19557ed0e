# -*- test-case-name: tests.unit.test_events -*-
"""The event hub behind `/1.0/events`: operation, logging and lifecycle events."""

import json

from twisted.logger import LogLevel, formatEvent

from lxdtx import timeutil

DEFAULT_TYPES = frozenset({"logging", "operation", "lifecycle"})

_LEVELS = {
    LogLevel.debug: "dbug", LogLevel.info: "info", LogLevel.warn: "warn",
    LogLevel.error: "eror", LogLevel.critical: "crit",
}


class EventHub:
    """Fans events out to listeners; a listener has `types` and `deliver(bytes)`, and
    `local_only` when it is another cluster member's subscription (it gets this member's
    own events, never those forwarded here: no event goes round the cluster)."""

    def __init__(self):
        self._listeners = set()

    def subscribe(self, listener):
        self._listeners.add(listener)

    def unsubscribe(self, listener):
        self._listeners.discard(listener)

    def wants(self, kind):
        return any(kind in listener.types for listener in self._listeners)

    def send(self, kind, metadata):
        """Deliver one event to every listener that asked for its type."""
        targets = [listener for listener in self._listeners if kind in listener.types]
        if not targets:
            return
        frame = json.dumps(
            {"metadata": metadata, "timestamp": timeutil.now(), "type": kind},
            separators=(",", ":"),
        ).encode("utf-8")
        for listener in targets:
            try:
                listener.deliver(frame)
            except Exception:
                # A listener whose connection broke is dropped, as the reference does.
                self._listeners.discard(listener)

    def forward(self, event):
        """An event of another cluster member (it carries `node`, as the reference's do),
        for this member's own listeners."""
        kind = event.get("type")
        targets = [listener for listener in self._listeners
                   if kind in listener.types and not getattr(listener, "local_only", False)]
        if not targets:
            return
        frame = json.dumps(event, separators=(",", ":")).encode("utf-8")
        for listener in targets:
            try:
                listener.deliver(frame)
            except Exception:
                self._listeners.discard(listener)

    def lifecycle(self, action, source, context=None):
        """A `lifecycle` event (`event_lifecycle`)."""
        metadata = {"action": action, "source": source}
        if context:
            metadata["context"] = context
        self.send("lifecycle", metadata)


class LogForwarder:
    """A twisted.logger observer turning daemon log events into `logging` events."""

    def __init__(self, hub):
        self._hub = hub
        self._busy = False

    def __call__(self, event):
        if self._busy or not self._hub.wants("logging"):
            return
        self._busy = True  # never log about logging
        try:
            level = _LEVELS.get(event.get("log_level"), "info")
            message = formatEvent(event)
            context = {
                key: str(value) for key, value in event.items()
                if not key.startswith("log_") and isinstance(value, (str, int, float))
            }
            self._hub.send("logging", {"message": message, "level": level, "context": context})
        finally:
            self._busy = False
