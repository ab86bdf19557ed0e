"""The intent journal: records before the host is touched, undoes or finishes, recovers."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.journal import KIND, Journal
from lxdtx.state import Put
from lxdtx.state.store import MemoryStore


class JournalTests(SynchronousTestCase):

    def setUp(self):
        self.store = MemoryStore()
        self.successResultOf(defer.Deferred.fromCoroutine(self.store.open()))
        self.journal = Journal(self.store)
        self.calls = []

        async def step(**args):
            self.calls.append(args)

        self.journal.handle("step", step)

    def run_(self, coroutine):
        return self.successResultOf(defer.Deferred.fromCoroutine(coroutine))

    def test_recorded_before_the_caller_acts_and_ended_with_its_commit(self):
        async def change():
            async with self.journal.begin("make", "x") as intent:
                await intent.will("step", n=1)
                seen = [d.value for d in self.journal.open()]
                await self.store.commit([Put("thing", "x", {}), intent.done()])
            return seen

        seen = self.run_(change())
        self.assertEqual(seen, [{"op": "make", "target": "x", "finish": False,
                                 "steps": [{"kind": "step", "args": {"n": 1}}]}])
        self.assertEqual(self.journal.open(), [])
        self.assertEqual(self.calls, [])

    def test_an_exception_undoes_the_steps_last_first(self):
        async def change():
            async with self.journal.begin("make", "x") as intent:
                await intent.will("step", n=1)
                await intent.will("step", n=2)
                raise ValueError("half way")

        failure = self.failureResultOf(defer.Deferred.fromCoroutine(change()), ValueError)
        self.assertEqual(str(failure.value), "half way")
        self.assertEqual(self.calls, [{"n": 2}, {"n": 1}])
        self.assertEqual(self.journal.open(), [])

    def test_recover_finishes_in_order_and_clears(self):
        async def interrupted():
            intent = self.journal.begin("remove", "y", finish=True)
            await self.store.commit([intent.record("step", n=1)])
            intent._step("step", {"n": 2})
            await self.store.commit([intent.record()])

        self.run_(interrupted())
        report = self.run_(self.journal.recover())
        self.assertEqual(report, [("remove", "y", "finished")])
        self.assertEqual(self.calls, [{"n": 1}, {"n": 2}])
        self.assertEqual(self.store.names(KIND), [])

    def test_a_step_that_fails_stays_for_the_next_start(self):
        async def broken(**args):
            raise OSError("device busy")

        self.journal.handle("broken", broken)

        async def interrupted():
            intent = self.journal.begin("remove", "z", finish=True)
            await self.store.commit([intent.record("broken")])

        self.run_(interrupted())
        report = self.run_(self.journal.recover())
        self.assertEqual(report, [("remove", "z", "left for the next start: device busy")])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(len(self.journal.open()), 1)
