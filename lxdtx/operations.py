# -*- test-case-name: tests.unit.test_operations -*-
"""Background operations: the registry, their lifecycle, cancel, wait and events.

An operation is Pending when created, Running once started (just before the 202
is written), then Success, Failure or Cancelled. Every status change and every
metadata update emits an `operation` event carrying the whole object, which is
how the `lxc` client learns that its request finished. Finished operations stay
readable for `keep` seconds.
"""

import secrets
import uuid

from twisted.internet import defer
from twisted.logger import Logger

from lxdtx import errors, timeutil

PENDING, RUNNING, CANCELLING = 105, 103, 104
SUCCESS, FAILURE, CANCELLED = 200, 400, 401

STATUS_TEXT = {
    100: "Operation created", 101: "Started", 102: "Stopped", 103: "Running",
    104: "Cancelling", 105: "Pending", 106: "Starting", 107: "Stopping", 108: "Aborting",
    109: "Freezing", 110: "Frozen", 111: "Thawed", 112: "Error",
    200: "Success", 400: "Failure", 401: "Cancelled",
}

TASK, WEBSOCKET, TOKEN = "task", "websocket", "token"


def _progress_as_strings(metadata):
    """Metadata with every `*_progress` value a string: the `lxc` client type-asserts them."""
    if not isinstance(metadata, dict):
        return metadata
    return {key: str(value) if key.endswith("_progress") and not isinstance(value, str) else value
            for key, value in metadata.items()}


def container_resources(*names, **more):
    """Operation resources naming containers; the `instances` key is what pylxd 2.4 reads."""
    resources = {"containers": list(names), "instances": list(names)}
    resources.update(more)
    return resources


def new_secret():
    """A websocket or token secret: 64 lower-case hex characters."""
    return secrets.token_hex(32)


class Operation:
    """One background operation. `run(op)` is a coroutine function doing the work."""

    log = Logger()

    def __init__(self, registry, cls, description, resources, metadata, run, cancel, connect):
        self._registry = registry
        self.id = str(uuid.uuid4())
        self.url = f"/1.0/operations/{self.id}"
        self.cls = cls
        self.description = description
        self.resources = resources
        self.metadata = _progress_as_strings(metadata)
        self.status_code = PENDING
        self.err = ""
        self.created_at = self.updated_at = timeutil.now()
        self._run = run
        self._cancel = cancel
        self._connect = connect
        self._task = None
        self._waiters = []
        self.finished = defer.Deferred()  # fires with the final status code

    @property
    def may_cancel(self):
        return self.status_code == RUNNING and (self.cls == TOKEN or self._cancel is not None)

    @property
    def final(self):
        return self.status_code >= 200

    def render(self):
        resources = None
        if self.resources is not None:
            resources = {kind: [f"/1.0/{kind}/{name}" for name in names]
                         for kind, names in self.resources.items()}
        return {
            "id": self.id, "class": self.cls, "description": self.description,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "status": STATUS_TEXT[self.status_code], "status_code": self.status_code,
            "resources": resources, "metadata": self.metadata,
            "may_cancel": self.may_cancel, "err": self.err,
        }

    def _changed(self):
        self.updated_at = timeutil.now()
        self._registry.changed(self)

    def update_metadata(self, metadata):
        """Replace the metadata (merging is the caller's business) and tell listeners."""
        if self.final:
            return
        self.metadata = _progress_as_strings(metadata)
        self._changed()

    def update_resources(self, resources):
        self.resources = resources
        self._changed()

    def start(self):
        """Mark Running and begin the work; the caller answers 202 right after."""
        self.status_code = RUNNING
        self._changed()
        if self._run is None:
            return
        self._task = defer.Deferred.fromCoroutine(self._run(self))
        self._task.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, metadata):
        if metadata is not None:
            self.metadata = _progress_as_strings(metadata)
        self._finish(SUCCESS)

    def _failed(self, failure):
        if failure.check(defer.CancelledError):
            self._finish(CANCELLED)
            return
        if not failure.check(errors.ApiError):
            self.log.failure("Operation {description} failed", failure, description=self.description)
        # What the client reads: never a Python repr or a host path (those go to the log above).
        self.err = errors.to_api_error(failure.value).message
        self._finish(FAILURE)

    def done(self, metadata=None):
        """End a token or websocket operation that has no run coroutine."""
        self._succeeded(metadata)

    def fail(self, message):
        if not self.final:
            self.err = message
            self._finish(FAILURE)

    def _finish(self, status_code):
        if self.final:
            return
        self.status_code = status_code
        self._changed()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self.finished.callback(status_code)
        self._registry.retire(self)

    async def cancel(self):
        """DELETE /1.0/operations/<id>."""
        if self.status_code != RUNNING:
            raise errors.BadRequest("Only running operations can be cancelled")
        if not self.may_cancel:
            raise errors.BadRequest("This operation can't be cancelled")
        self.status_code = CANCELLING
        self._changed()
        if self._cancel is not None:
            try:
                await self._cancel(self)
            except BaseException:
                # The work goes on: say so, and tell the caller why it could not stop.
                if self.status_code == CANCELLING:
                    self.status_code = RUNNING
                    self._changed()
                raise
        if self._task is not None and not self._task.called:
            self._task.cancel()
        self._finish(CANCELLED)

    def wait(self, timeout=None):
        """A Deferred firing when the operation is final or `timeout` seconds passed."""
        if self.final:
            return defer.succeed(None)
        waiter = defer.Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(waiter)
        if timeout is not None and timeout >= 0:
            call = self._registry.clock.callLater(timeout, lambda: waiter.called or self._timeout(waiter))
            waiter.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return waiter

    def _timeout(self, waiter):
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        waiter.callback(None)

    async def connect(self, request, secret):
        """(protocol, claim) of a websocket connection for this operation (`/websocket?secret=`):
        the server protocol that serves it and what takes the secret once the handshake succeeds
        (lxdtx.websocket.handshake.Handshake)."""
        if self.cls != WEBSOCKET:
            raise errors.BadRequest("Only websocket operations can be connected")
        if self.status_code != RUNNING:
            raise errors.BadRequest("Only running operations can be connected")
        return await self._connect(self, request, secret)


class Operations:
    """The registry of live and recently finished operations."""

    def __init__(self, events, clock, keep=5.0):
        self.events = events
        self.clock = clock
        self.keep = keep
        self._ops = {}

    def create(self, description, *, cls=TASK, resources=None, metadata=None, run=None, cancel=None, connect=None):
        op = Operation(self, cls, description, resources, metadata, run, cancel, connect)
        self._ops[op.id] = op
        self.changed(op)
        return op

    def start(self, description, **kwargs):
        """Create and start an operation in one step."""
        op = self.create(description, **kwargs)
        op.start()
        return op

    def changed(self, op):
        self.events.send("operation", op.render())

    def retire(self, op):
        self.clock.callLater(self.keep, self._ops.pop, op.id, None)

    def get(self, op_id):
        op = self._ops.get(op_id)
        if op is None:
            raise errors.NotFound()
        return op

    def all(self):
        return list(self._ops.values())

    def running(self):
        return [op for op in self._ops.values() if not op.final]
