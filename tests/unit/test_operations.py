"""Operations: lifecycle and its events, metadata, retirement, wait and cancel, on a Clock."""

import uuid

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors, timeutil
from lxdtx.operations import (
    CANCELLED, CANCELLING, FAILURE, PENDING, RUNNING, SUCCESS, TOKEN, WEBSOCKET, Operations,
    new_secret,
)
from tests.unit.fakes import RecordingHub


def _run(test, coroutine):
    return test.successResultOf(defer.Deferred.fromCoroutine(coroutine))


class OperationTests(SynchronousTestCase):
    """One registry on a Clock, with a hub recording the `operation` events."""

    def setUp(self):
        self.clock = Clock()
        self.hub = RecordingHub()
        self.ops = Operations(self.hub, self.clock)

    def statuses(self):
        return [(meta["status"], meta["status_code"]) for kind, meta in self.hub.sent if kind == "operation"]

    def test_render(self):
        """The operation object has every field of the reference, resources as URLs."""
        op = self.ops.create("Creating container", resources={"containers": ["c1"]})
        doc = op.render()
        self.assertEqual(set(doc), {"id", "class", "description", "created_at", "updated_at", "status",
                                    "status_code", "resources", "metadata", "may_cancel", "err"})
        self.assertEqual(uuid.UUID(doc["id"]).version, 4)
        self.assertEqual(doc["class"], "task")
        self.assertEqual(doc["description"], "Creating container")
        self.assertEqual(doc["resources"], {"containers": ["/1.0/containers/c1"]})
        self.assertEqual((doc["status"], doc["status_code"]), ("Pending", PENDING))
        self.assertIsNone(doc["metadata"])
        self.assertEqual((doc["may_cancel"], doc["err"]), (False, ""))
        self.assertEqual(op.url, f"/1.0/operations/{op.id}")
        self.assertIsNone(self.ops.create("x").render()["resources"])

    def test_timestamps_have_zone(self):
        """created_at and updated_at are RFC 3339 with a zone."""
        doc = self.ops.create("x").render()
        for key in ("created_at", "updated_at"):
            self.assertIsNotNone(timeutil.parse(doc[key]).tzinfo, doc[key])
            self.assertTrue(doc[key].endswith("+00:00"), doc[key])

    def test_success_lifecycle(self):
        """pending → running → success, each with an event carrying the whole object."""
        async def work(op):
            return {"done": True}

        op = self.ops.start("Doing", run=work)
        self.assertEqual(self.statuses(), [("Pending", PENDING), ("Running", RUNNING), ("Success", SUCCESS)])
        self.assertEqual(op.metadata, {"done": True})
        self.assertEqual(self.hub.sent[-1][1]["metadata"], {"done": True})
        self.assertEqual(self.successResultOf(op.finished), SUCCESS)

    def test_waiting_work(self):
        """Work that waits keeps the operation running until it ends."""
        gate = defer.Deferred()

        async def work(op):
            await gate

        op = self.ops.start("Doing", run=work)
        self.assertEqual(op.status_code, RUNNING)
        self.assertEqual([op.id], [o.id for o in self.ops.running()])
        gate.callback(None)
        self.assertEqual(op.status_code, SUCCESS)
        self.assertEqual(self.ops.running(), [])
        self.assertIsNone(op.metadata)

    def test_failure(self):
        """A refused operation ends as Failure with `err`; API errors are not logged as crashes."""
        async def work(op):
            raise errors.BadRequest("Container 'c1' already exists")

        op = self.ops.start("Creating container", run=work)
        self.assertEqual((op.status_code, op.err), (FAILURE, "Container 'c1' already exists"))
        self.assertEqual(self.statuses()[-1], ("Failure", FAILURE))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_crash(self):
        """An unexpected exception fails the operation with its text and is logged."""
        async def work(op):
            raise RuntimeError("boom")

        op = self.ops.start("x", run=work)
        self.assertEqual((op.status_code, op.err), (FAILURE, "boom"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_metadata_updates(self):
        """Each update emits an event; `*_progress` values are strings, others kept as given."""
        op = self.ops.start("x", metadata={"download_progress": 5})
        self.assertEqual(op.metadata, {"download_progress": "5"})
        op.update_metadata({"download_progress": "rootfs: 50% (10MB/s)", "fds": {"0": "a"}, "count": 3})
        self.assertEqual(self.hub.sent[-1][1]["metadata"],
                         {"download_progress": "rootfs: 50% (10MB/s)", "fds": {"0": "a"}, "count": 3})
        op.update_metadata({"create_progress": 42.5})
        self.assertEqual(op.metadata, {"create_progress": "42.5"})
        op.update_resources({"containers": ["c2"]})
        self.assertEqual(self.hub.sent[-1][1]["resources"], {"containers": ["/1.0/containers/c2"]})
        op.done({"return": 0})
        count = len(self.hub.sent)
        op.update_metadata({"late": True})
        self.assertEqual(op.metadata, {"return": 0})
        self.assertEqual(len(self.hub.sent), count)

    def test_retired_after_five_seconds(self):
        """A finished operation stays readable for 5 s, then is gone (404)."""
        op = self.ops.start("x", run=self._instant)
        self.clock.advance(4.9)
        self.assertIs(self.ops.get(op.id), op)
        self.clock.advance(0.2)
        self.assertRaises(errors.NotFound, self.ops.get, op.id)
        self.assertEqual(self.ops.all(), [])

    async def _instant(self, op):
        return None

    async def _forever(self, op):
        await defer.Deferred()

    def test_running_not_retired(self):
        """Running operations stay however long they run."""
        op = self.ops.start("x", cls=TOKEN)
        self.clock.advance(3600)
        self.assertIs(self.ops.get(op.id), op)

    def test_unknown(self):
        """An unknown id is a 404."""
        self.assertRaises(errors.NotFound, self.ops.get, "nope")

    def test_wait_final(self):
        """Waiting on a finished operation returns at once."""
        op = self.ops.start("x", run=self._instant)
        self.successResultOf(op.wait())
        self.successResultOf(op.wait(0))

    def test_wait_until_done(self):
        """Waiting without a timeout ends when the operation does."""
        op = self.ops.start("x", cls=TOKEN)
        waiting = op.wait()
        self.clock.advance(1000)
        self.assertNoResult(waiting)
        op.done()
        self.successResultOf(waiting)

    def test_wait_timeout(self):
        """A timeout ends the wait, not the operation; its timer is cleared on completion."""
        op = self.ops.start("x", cls=TOKEN)
        waiting = op.wait(2)
        self.clock.advance(1.9)
        self.assertNoResult(waiting)
        self.clock.advance(0.2)
        self.successResultOf(waiting)
        self.assertEqual(op.status_code, RUNNING)
        early = op.wait(10)
        op.done()
        self.successResultOf(early)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.func != self.ops._ops.pop], [])

    def test_wait_cancelled(self):
        """A wait whose client left is forgotten."""
        op = self.ops.start("x", cls=TOKEN)
        waiting = op.wait()
        waiting.cancel()
        self.failureResultOf(waiting, defer.CancelledError)
        op.done()

    def test_cancel_not_running(self):
        """Only running operations can be cancelled."""
        op = self.ops.create("x", cls=TOKEN)
        failure = self.failureResultOf(defer.Deferred.fromCoroutine(op.cancel()), errors.BadRequest)
        self.assertEqual(failure.value.message, "Only running operations can be cancelled")
        op.start()
        op.done()
        self.failureResultOf(defer.Deferred.fromCoroutine(op.cancel()), errors.BadRequest)

    def test_cancel_not_cancellable(self):
        """A task without a cancel hook refuses cancellation and keeps running."""
        op = self.ops.start("x", run=self._forever)
        self.assertFalse(op.may_cancel)
        failure = self.failureResultOf(defer.Deferred.fromCoroutine(op.cancel()), errors.BadRequest)
        self.assertEqual(failure.value.message, "This operation can't be cancelled")
        self.assertEqual(op.status_code, RUNNING)

    def test_cancel(self):
        """Cancelling: the hook runs, the work is cancelled, events say Cancelling then Cancelled."""
        seen = []

        async def work(op):
            try:
                await defer.Deferred()
            except defer.CancelledError:
                seen.append("work cancelled")
                raise

        async def on_cancel(op):
            seen.append(("hook", op.status_code))

        op = self.ops.start("x", run=work, cancel=on_cancel)
        self.assertTrue(op.may_cancel)
        self.assertTrue(op.render()["may_cancel"])
        _run(self, op.cancel())
        self.assertEqual(seen, [("hook", CANCELLING), "work cancelled"])
        self.assertEqual(op.status_code, CANCELLED)
        self.assertEqual(self.statuses()[-2:], [("Cancelling", CANCELLING), ("Cancelled", CANCELLED)])
        self.assertEqual(self.successResultOf(op.finished), CANCELLED)
        self.clock.advance(5.1)
        self.assertEqual(self.ops.all(), [])

    def test_cancel_token(self):
        """Token operations are always cancellable."""
        op = self.ops.start("Image download token", cls=TOKEN, metadata={"secret": new_secret()})
        self.assertTrue(op.may_cancel)
        _run(self, op.cancel())
        self.assertEqual(op.status_code, CANCELLED)

    def test_cancel_hook_refuses(self):
        """When the cancel hook fails the operation goes back to Running."""
        async def on_cancel(op):
            raise errors.BadRequest("too late to stop")

        op = self.ops.start("x", run=self._forever, cancel=on_cancel)
        failure = self.failureResultOf(defer.Deferred.fromCoroutine(op.cancel()), errors.BadRequest)
        self.assertEqual(failure.value.message, "too late to stop")
        self.assertEqual(op.status_code, RUNNING)
        self.assertEqual(self.statuses()[-1], ("Running", RUNNING))

    def test_connect_rules(self):
        """Only running websocket operations accept connections."""
        task = self.ops.start("x", cls=TOKEN)
        failure = self.failureResultOf(defer.Deferred.fromCoroutine(task.connect(None, "s")), errors.ApiError)
        self.assertEqual((failure.value.code, failure.value.message),
                         (400, "Only websocket operations can be connected"))
        connected = []

        async def connect(op, request, secret):
            connected.append(secret)
            return "upgraded"

        ws = self.ops.create("Executing command", cls=WEBSOCKET, connect=connect)
        failure = self.failureResultOf(defer.Deferred.fromCoroutine(ws.connect(None, "s")), errors.ApiError)
        self.assertEqual(failure.value.message, "Only running operations can be connected")
        ws.start()
        self.assertEqual(_run(self, ws.connect(None, "s1")), "upgraded")
        self.assertEqual(connected, ["s1"])

    def test_secret(self):
        """Secrets are 64 lower-case hex characters, never repeated."""
        secret = new_secret()
        self.assertRegex(secret, r"^[0-9a-f]{64}$")
        self.assertNotEqual(secret, new_secret())

    def test_fail(self):
        """`fail` ends a websocket or token operation with a message."""
        op = self.ops.start("x", cls=TOKEN)
        op.fail("peer went away")
        self.assertEqual((op.status_code, op.err), (FAILURE, "peer went away"))
        op.fail("again")
        self.assertEqual(op.err, "peer went away")
