"""Custom volume documents keyed by member: the key scheme, and the start-up move of a
cluster's documents from their cluster-wide key to their member's (one commit each)."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.cluster import volumekeys
from lxdtx.state import Put
from lxdtx.state.store import MemoryStore
from lxdtx.storage.pools import split_volume_key, volume_key


class KeyTests(SynchronousTestCase):

    def test_member_follows_the_name_of_a_custom_volume_only(self):
        self.assertEqual(volume_key("p", "custom", "v", "m1"), "p/custom/v/m1")
        self.assertEqual(split_volume_key("p/custom/v/m1"), ("p", "custom", "v", "m1"))
        self.assertEqual(split_volume_key("p/custom/v"), ("p", "custom", "v", ""))
        # A container's snapshot volume keeps its "/" in the name.
        self.assertEqual(split_volume_key("p/container/c/snap"), ("p", "container", "c/snap", ""))


class RekeyTests(SynchronousTestCase):

    def setUp(self):
        self.store = MemoryStore()
        self.run_(self.store.open())
        self.run_(self.store.commit([
            Put("pool", "local", {"driver": "dir", "config": {}}),
            Put("pool", "shared", {"driver": "ceph", "config": {}}),
            Put("volume", "local/custom/a", {"config": {"size": "1GB"}, "location": "m1"}),
            Put("volume", "local/custom/b/m2", {"config": {}, "location": "m2"}),
            Put("volume", "local/container/c1", {"config": {}}),
            Put("volume", "shared/custom/s", {"config": {}, "location": "m1"}),
            Put("volume", "local/custom/lone", {"config": {}}),
        ]))

    def run_(self, coroutine):
        return self.successResultOf(defer.Deferred.fromCoroutine(coroutine))

    def test_moves_a_local_pools_custom_volumes_to_their_members_key(self):
        self.assertEqual(self.run_(volumekeys.rekey(self.store)), 1)
        self.assertEqual(sorted(self.store.names("volume")), [
            "local/container/c1", "local/custom/a/m1", "local/custom/b/m2", "local/custom/lone",
            "shared/custom/s"])
        self.assertEqual(self.store.value("volume", "local/custom/a/m1"), {"config": {"size": "1GB"},
                                                                          "location": "m1"})
        self.assertEqual(self.run_(volumekeys.rekey(self.store)), 0)  # again: nothing left

    def test_a_bootstrap_gives_the_lone_daemons_volumes_to_the_first_member(self):
        self.run_(volumekeys.rekey(self.store, "m9"))
        self.assertEqual(self.store.value("volume", "local/custom/lone/m9"), {"config": {}, "location": "m9"})
        self.assertFalse(self.store.exists("volume", "local/custom/lone"))

    def test_a_document_another_member_moved_first_is_left_to_it(self):
        moved = self.store.get("volume", "local/custom/a")
        real_list = self.store.list

        def racing(kind):
            docs = real_list(kind)
            if kind == "volume" and self.store.exists("volume", "local/custom/a"):
                # Another member changes it after our read, before our commit.
                self.run_(self.store.commit([Put("volume", "local/custom/a", dict(moved.value, raced=True))]))
            return docs

        self.store.list = racing
        self.assertEqual(self.run_(volumekeys.rekey(self.store)), 0)
        self.assertTrue(self.store.exists("volume", "local/custom/a"))
        self.assertFalse(self.store.exists("volume", "local/custom/a/m1"))
