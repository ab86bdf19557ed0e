"""The reverter: undo steps run last first when a change fails, never when it succeeds."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.revert import Reverter


class ReverterTests(SynchronousTestCase):
    def run_block(self, body):
        async def block():
            async with Reverter() as revert:
                await body(revert)

        return defer.Deferred.fromCoroutine(block())

    def test_failure_undoes_last_first_sync_async_and_deferred(self):
        done = []

        async def undo_async(name):
            done.append(name)

        async def body(revert):
            revert.add(done.append, "first")
            revert.add(undo_async, "second")
            revert.add(lambda: defer.succeed(done.append("third")))
            raise ValueError("step four failed")

        self.failureResultOf(self.run_block(body), ValueError)
        self.assertEqual(done, ["third", "second", "first"])

    def test_success_keeps_everything(self):
        done = []

        async def body(revert):
            revert.add(done.append, "undo")
            revert.success()

        self.successResultOf(self.run_block(body))
        self.assertEqual(done, [])

    def test_a_failing_undo_step_does_not_stop_the_others(self):
        done = []

        def broken():
            raise OSError("cannot undo")

        async def body(revert):
            revert.add(done.append, "kept going")
            revert.add(broken)
            raise RuntimeError("the change failed")

        failure = self.failureResultOf(self.run_block(body), RuntimeError)
        self.assertEqual(str(failure.value), "the change failed")  # the change's error, not the undo's
        self.assertEqual(done, ["kept going"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
