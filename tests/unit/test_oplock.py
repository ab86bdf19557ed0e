"""The per-container operation lock: one action at a time, the rest queue in order, and a
queued one gives up after the timeout naming the action that holds the container."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.instance.oplock import OperationLocks


class OperationLockTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.locks = OperationLocks(self.clock, timeout=10)

    def acquire(self, name, action):
        return defer.Deferred.fromCoroutine(self.locks.acquire(name, action))

    def test_queued_in_order(self):
        self.successResultOf(self.acquire("c1", "start"))
        second, third = self.acquire("c1", "stop"), self.acquire("c1", "delete")
        self.assertNoResult(second)
        self.assertEqual(self.locks.action("c1"), "start")
        self.locks.release("c1")
        self.successResultOf(second)
        self.assertNoResult(third)
        self.assertEqual(self.locks.action("c1"), "stop")
        self.locks.release("c1")
        self.successResultOf(third)
        self.locks.release("c1")
        self.assertIsNone(self.locks.action("c1"))

    def test_other_containers_do_not_wait(self):
        self.successResultOf(self.acquire("c1", "start"))
        self.successResultOf(self.acquire("c2", "start"))

    def test_timeout_names_the_holder_and_drops_only_that_waiter(self):
        self.successResultOf(self.acquire("c1", "snapshot"))
        waiting = self.acquire("c1", "stop")
        self.clock.advance(5)
        later = self.acquire("c1", "start")
        self.clock.advance(5)
        error = self.failureResultOf(waiting, errors.BadRequest).value
        self.assertEqual(error.message, "Container 'c1' is busy with another operation (snapshot)")
        self.assertNoResult(later)
        self.locks.release("c1")
        self.successResultOf(later)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # the served waiter's timer is gone

    def test_hold_releases_on_error(self):
        async def failing():
            async with self.locks.hold("c1", "update"):
                raise ValueError("bad config")

        self.failureResultOf(defer.Deferred.fromCoroutine(failing()), ValueError)
        self.assertIsNone(self.locks.action("c1"))
