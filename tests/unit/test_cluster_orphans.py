"""The intents a dead coordinator left open on this member (lxdtx.cluster.orphans): picked
once their coordinator is offline or restarted, resolved here and ended."""

from types import SimpleNamespace

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.cluster import onall, orphans
from lxdtx.journal import KIND, Journal
from lxdtx.state.store import MemoryStore


class OrphanTests(SynchronousTestCase):

    def setUp(self):
        self.store = MemoryStore()
        self.run_(self.store.open())
        self.journal = Journal(self.store, member=lambda: "m2")
        self.undone = []

        async def pool(**args):
            self.undone.append(args["name"])

        self.journal.handle("pool", pool)
        self.since = {"m1": 1.0, "m2": 2.0, "m3": 3.0}  # member -> when its heartbeat began
        cluster = SimpleNamespace(enabled=True, member_id="m2", location_name=lambda i: f"node-{i}")
        liveness = SimpleNamespace(incarnation=self.since.get)
        self.daemon = SimpleNamespace(store=self.store, journal=self.journal, cluster=cluster,
                                      store_choice=SimpleNamespace(liveness=liveness))

    def run_(self, coroutine):
        return self.successResultOf(defer.Deferred.fromCoroutine(coroutine))

    def _open(self, name, coordinator):
        intent = onall.begin_local(self.daemon, "pool.create", name, coordinator)
        self.run_(intent.will("pool", name=name))
        return intent.name

    def test_only_a_coordinators_that_went_offline(self):
        by_m1 = self._open("a", "m1")
        self._open("b", "m3")
        self._open("c", None)  # this member's own: it coordinates, it ends it
        self.assertEqual(orphans.orphaned(self.daemon), [])
        del self.since["m1"]
        self.assertEqual([d.name for d in orphans.orphaned(self.daemon)], [by_m1])
        self.assertEqual(self.run_(orphans.resolve_orphans(self.daemon)), [by_m1])
        self.assertEqual(self.undone, ["a"])
        self.assertFalse(self.store.exists(KIND, by_m1))
        self.assertEqual(sorted(d.value["target"] for d in self.journal.open()), ["b", "c"])

    def test_a_coordinator_that_restarted_quicker_than_its_lease_lapsed(self):
        by_m1 = self._open("a", "m1")
        self.assertEqual(self.journal.open()[0].value["coordinator_since"], 1.0)
        self.since["m1"] = 5.0  # a new heartbeat: it forgot what it was coordinating
        self.assertEqual([d.name for d in orphans.orphaned(self.daemon)], [by_m1])

    def test_the_answer_names_the_revision_the_coordinator_expects(self):
        name = self._open("a", "m1")
        answer = onall.made_local(self.daemon, SimpleNamespace(name=name), {"source": "/x"})
        self.assertEqual(answer, {"intent": name, "revision": self.store.get(KIND, name).revision,
                                  "config": {"source": "/x"}})
