"""The start-up move of a cluster's custom volume documents to their member's key
(lxdtx.cluster.volumekeys) on a real etcd: two members moving at once each document
exactly once, and a member killed between two documents' commits leaving every document
under one key or the other, finished by the next start. The etcd process is the test's
own, on loopback, stopped by pid."""

import os

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from lxdtx.cluster import volumekeys
from lxdtx.state import Put
from lxdtx.state.etcd import EtcdStore
from lxdtx.state.etcdgateway import Endpoint, EtcdGateway
from tests.etcdproc import ETCD, EtcdMember
from tests.unit.test_store_etcd import eventually

LEGACY = {f"default/custom/v{i}": {"config": {}, "location": f"m{i % 3}"} for i in range(12)}


class Killed(Exception):
    pass


class RekeyOnEtcdTests(TestCase):

    timeout = 120

    def setUp(self):
        if not os.path.exists(ETCD):
            self.skipTest("etcd is not installed (Debian package etcd-server)")
        self.etcd = EtcdMember("m1")
        self.addCleanup(threads.deferToThread, self.etcd.cleanup)
        return threads.deferToThread(self.etcd.start)

    async def open_store(self):
        store = EtcdStore(EtcdGateway([Endpoint("m1", self.etcd.client_url)], reactor, timeout=10), reactor)
        await store.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
        return store

    async def legacy(self):
        store = await self.open_store()
        await store.commit([Put("pool", "default", {"driver": "dir", "config": {}, "status": "Created"}),
                            *[Put("volume", key, value) for key, value in LEGACY.items()]])
        return store

    def assert_moved(self, store):
        self.assertEqual(sorted(store.names("volume")),
                         sorted(f"{key}/{value['location']}" for key, value in LEGACY.items()))

    async def test_two_members_at_once(self):
        first = await self.legacy()
        second = await self.open_store()
        self.assertTrue(await eventually(lambda: len(second.names("volume")) == len(LEGACY)))
        moved = await defer.gatherResults([defer.Deferred.fromCoroutine(volumekeys.rekey(s))
                                           for s in (first, second)])
        self.assertEqual(sum(moved), len(LEGACY))  # each document once, by one of them
        self.assert_moved(await self.open_store())

    async def test_killed_half_way_then_finished(self):
        store = await self.legacy()
        commit, done = store.commit, []

        async def dying(changes):
            if len(done) == 5:
                raise Killed()
            done.append(await commit(changes))

        store.commit = dying
        with self.assertRaises(Killed):
            await volumekeys.rekey(store)
        after = await self.open_store()  # what the next start finds: each under one key
        names = set(after.names("volume"))
        for key, value in LEGACY.items():
            self.assertEqual(len(names & {key, f"{key}/{value['location']}"}), 1, key)
        self.assertEqual(len([n for n in names if n.count("/") == 3]), 5)
        self.assertEqual(await volumekeys.rekey(after), len(LEGACY) - 5)
        self.assert_moved(await self.open_store())
