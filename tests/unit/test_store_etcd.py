"""The etcd backend against a real etcd on loopback: several writers, the watch, and
what happens when etcd is not there (the contract itself is in test_store)."""

import os

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from lxdtx.state import ABSENT, Delete, Put, RevisionMismatch
from lxdtx.state.etcd import EtcdStore
from lxdtx.state.etcdgateway import Endpoint, EtcdGateway, EtcdUnavailable
from tests.etcdproc import ETCD, EtcdMember, free_port


async def eventually(predicate, timeout=10):
    """Poll `predicate` on the reactor until true; False after `timeout` seconds."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        await task.deferLater(reactor, 0.05, lambda: None)
    return predicate()


class EtcdStoreTests(TestCase):
    """Two daemons' stores on one etcd."""

    timeout = 90

    def setUp(self):
        if not os.path.exists(ETCD):
            self.skipTest("etcd is not installed (Debian package etcd-server)")
        return threads.deferToThread(self._start_member)

    def _start_member(self):
        self.member = EtcdMember("node1").start()
        self.addCleanup(threads.deferToThread, self.member.cleanup)

    async def open_store(self, endpoints=None):
        endpoints = endpoints or [Endpoint("node1", self.member.client_url)]
        store = EtcdStore(EtcdGateway(endpoints, reactor, timeout=5), reactor)
        await store.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
        return store

    async def test_changes_reach_other_stores(self):
        """What one store commits appears in another's mirror, with its revision, and its
        watchers hear it; deletions too."""
        a, b = await self.open_store(), await self.open_store()
        heard = []
        b.watch(lambda kind, name, value: heard.append((kind, name, value)))
        revision = await a.commit([Put("container", "c1", {"n": 1}), Put("profile", "p", {})])
        self.assertTrue(await eventually(lambda: b.exists("container", "c1") and b.exists("profile", "p")))
        self.assertEqual(b.get("container", "c1").revision, revision)
        self.assertEqual(b.value("container", "c1"), {"n": 1})
        await a.commit([Delete("profile", "p", expect=revision)])
        self.assertTrue(await eventually(lambda: not b.exists("profile", "p")))
        self.assertEqual(heard, [("container", "c1", {"n": 1}), ("profile", "p", {}), ("profile", "p", None)])
        self.assertGreaterEqual(b.revision, revision + 1)

    async def test_compare_and_swap_across_stores(self):
        """Two stores changing the same document from the same revision: exactly one wins;
        the loser is told which document changed and both end with the winner's value."""
        a, b = await self.open_store(), await self.open_store()
        revision = await a.commit([Put("container", "c1", {"v": 0})])
        self.assertTrue(await eventually(lambda: b.exists("container", "c1")))
        results = await defer.DeferredList([
            defer.Deferred.fromCoroutine(a.commit([Put("container", "c1", {"v": "a"}, expect=revision)])),
            defer.Deferred.fromCoroutine(b.commit([Put("container", "c1", {"v": "b"}, expect=revision)])),
        ], consumeErrors=True)
        won = [ok for ok, _ in results]
        self.assertEqual(sorted(won), [False, True])
        error = next(r for ok, r in results if not ok)
        error.trap(RevisionMismatch)
        self.assertEqual((error.value.kind, error.value.name, error.value.expected),
                         ("container", "c1", revision))
        winner = {"v": "a"} if won[0] else {"v": "b"}
        self.assertTrue(await eventually(lambda: a.value("container", "c1") == b.value("container", "c1") == winner))

    async def test_refused_txn_writes_nothing(self):
        """A commit refused on its last expectation leaves etcd itself untouched (a fresh
        store reading etcd sees none of it)."""
        a = await self.open_store()
        await a.commit([Put("k", "taken", {})])
        changes = [Put("k", f"n{i}", {"i": i}) for i in range(20)] + [Put("k", "taken", {"x": 1}, expect=ABSENT)]
        with self.assertRaises(RevisionMismatch):
            await a.commit(changes)
        fresh = await self.open_store()
        self.assertEqual(fresh.names("k"), ["taken"])
        self.assertEqual(fresh.value("k", "taken"), {})

    async def test_reopen_reads_everything(self):
        """A store opened later holds every document with its etcd mod_revision."""
        a = await self.open_store()
        first = await a.commit([Put("profile", "default", {"config": {}}), Put("profile", "x", {})])
        second = await a.commit([Put("certificate", "abc", {"name": "c"}), Delete("profile", "x")])
        fresh = await self.open_store()
        self.assertEqual(fresh.revision, second)
        self.assertEqual(fresh.names("profile"), ["default"])
        self.assertEqual(fresh.get("profile", "default").revision, first)
        self.assertEqual(fresh.get("certificate", "abc").revision, second)

    async def test_unreachable_etcd_named(self):
        """No etcd at the address: opening fails naming the member and why."""
        port = free_port()
        store = EtcdStore(EtcdGateway([Endpoint("node7", f"http://127.0.0.1:{port}")], reactor, timeout=5), reactor)
        with self.assertRaises(EtcdUnavailable) as caught:
            await store.open()
        self.assertEqual(caught.exception.code, 503)
        self.assertIn("etcd member 'node7'", caught.exception.message)
        self.assertIn("connection refused", caught.exception.message)
        await store.close()

    async def test_etcd_gone_and_back(self):
        """With etcd stopped a commit fails naming the member and changes nothing; when etcd
        is back the watch resumes and changes flow again."""
        a, b = await self.open_store(), await self.open_store()
        revision = await a.commit([Put("k", "a", {"v": 1})])
        await threads.deferToThread(self.member.stop)
        with self.assertRaises(EtcdUnavailable) as caught:
            await a.commit([Put("k", "a", {"v": 2}, expect=revision), Put("k", "b", {})])
        self.assertIn("'node1'", caught.exception.message)
        self.assertIn("applied whole or not at all", caught.exception.message)
        self.assertEqual((a.value("k", "a"), a.exists("k", "b")), ({"v": 1}, False))
        await threads.deferToThread(self.member.start)
        await a.commit([Put("k", "a", {"v": 2}, expect=revision)])
        self.assertTrue(await eventually(lambda: b.value("k", "a") == {"v": 2}, timeout=20))

    async def test_compacted_history_resyncs(self):
        """A watch that restarts past etcd's compacted history reads everything again: the
        mirror ends equal to etcd, deletions included, and watchers hear the difference."""
        a, b = await self.open_store(), await self.open_store()
        await a.commit([Put("k", "gone", {}), Put("k", "kept", {"v": 1})])
        self.assertTrue(await eventually(lambda: b.exists("k", "gone")))
        heard = []
        b.watch(lambda kind, name, value: heard.append((kind, name, value)))
        b._stop_watch()  # it restarts a second later, from where it was
        await a.commit([Delete("k", "gone")])
        latest = await a.commit([Put("k", "kept", {"v": 2}), Put("k", "new", {})])
        await a.gateway.call("/v3/kv/compaction", {"revision": str(latest), "physical": True})
        self.assertTrue(await eventually(lambda: b.names("k") == ["kept", "new"], timeout=20))
        self.assertEqual(b.value("k", "kept"), {"v": 2})
        self.assertEqual(sorted(heard, key=repr), sorted([("k", "gone", None), ("k", "kept", {"v": 2}),
                                                          ("k", "new", {})], key=repr))
        await a.commit([Put("k", "later", {})])
        self.assertTrue(await eventually(lambda: b.exists("k", "later")))
