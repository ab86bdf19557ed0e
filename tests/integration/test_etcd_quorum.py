"""The etcd store on a three-member etcd cluster on loopback: a member down, quorum lost
(two of three stopped) and regained. Every etcd process is the test's own, stopped by pid."""

import os
import shutil
import tempfile

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from lxdtx.state import Put, RevisionMismatch
from lxdtx.state.etcd import EtcdStore
from lxdtx.state.etcdgateway import Endpoint, EtcdGateway, EtcdUnavailable
from tests.etcdproc import ETCD, three_member_cluster
from tests.unit.test_store_etcd import eventually


class QuorumTests(TestCase):
    """What the store says and keeps when etcd members go away."""

    timeout = 180

    def setUp(self):
        if not os.path.exists(ETCD):
            self.skipTest("etcd is not installed (Debian package etcd-server)")
        self.root = tempfile.mkdtemp(prefix="lxdtx-etcd-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        return threads.deferToThread(self._start)

    def _start(self):
        self.members = []
        self.addCleanup(threads.deferToThread, lambda: [m.stop() for m in self.members])
        self.members = three_member_cluster(self.root)

    async def open_store(self, *indexes):
        endpoints = [Endpoint(self.members[i].name, self.members[i].client_url) for i in indexes]
        store = EtcdStore(EtcdGateway(endpoints, reactor, timeout=10), reactor)
        await store.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
        return store

    async def test_one_member_down(self):
        """With one of three members stopped the cluster keeps its quorum: a store talking to
        the stopped member's address fails over to the next one it knows."""
        store = await self.open_store(0, 1)
        other = await self.open_store(2)
        await threads.deferToThread(self.members[0].stop)
        revision = await store.commit([Put("container", "c1", {"v": 1})])
        self.assertTrue(await eventually(lambda: other.get("container", "c1") is not None
                                         and other.get("container", "c1").revision == revision))

    async def test_quorum_loss_and_recovery(self):
        """Two of three stopped: commits fail naming the member asked and the lost quorum,
        nothing is written half, the mirror still answers reads; when the two return,
        commits work again and every store agrees."""
        store = await self.open_store(0)
        watcher = await self.open_store(0)
        first = await store.commit([Put("container", "c1", {"v": 1})])
        await threads.deferToThread(lambda: [m.stop() for m in self.members[1:]])
        with self.assertRaises(EtcdUnavailable) as caught:
            await store.commit([Put("container", "c1", {"v": 2}, expect=first)]
                               + [Put("container", f"n{i}", {}) for i in range(10)])
        message = caught.exception.message
        self.assertEqual(caught.exception.code, 503)
        self.assertIn("etcd member 'm1'", message)
        self.assertIn("no quorum", message)
        self.assertIn("applied whole or not at all", message)
        self.assertEqual(store.value("container", "c1"), {"v": 1})  # reads keep working
        for m in self.members[1:]:
            await threads.deferToThread(m.start, None, "new", False)
        for m in self.members[1:]:
            self.assertTrue(await threads.deferToThread(m.wait_healthy, 60), m.log_tail())
        # The refused commit either happened whole (etcd may still apply a timed-out
        # proposal) or not at all; in both cases a fresh store sees a consistent state.
        fresh = await self.open_store(1)
        names = set(fresh.names("container")) - {"c1"}
        if names:
            self.assertEqual((names, fresh.value("container", "c1")), ({f"n{i}" for i in range(10)}, {"v": 2}))
        else:
            self.assertEqual(fresh.value("container", "c1"), {"v": 1})
        current = fresh.get("container", "c1").revision
        with self.assertRaises(RevisionMismatch):
            await store.commit([Put("container", "c1", {"v": 3}, expect=current - 1)])
        latest = await store.commit([Put("container", "c1", {"v": 3}, expect=current)])
        self.assertTrue(await eventually(lambda: watcher.get("container", "c1").revision == latest, timeout=30))
        self.assertTrue(await eventually(lambda: fresh.value("container", "c1") == {"v": 3}, timeout=30))
