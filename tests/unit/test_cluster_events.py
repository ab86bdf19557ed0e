"""Another member's events re-emitted here (lxdtx.cluster.events): marked with the member's
id, never passed on when already forwarded, its operations remembered, and announced
failed when the member goes; subscriptions kept to the member list."""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.cluster import events as cluster_events
from lxdtx.cluster.peers import Peers
from lxdtx.events import EventHub
from lxdtx.state import Document


class Listener:
    types = frozenset({"operation", "lifecycle"})

    def __init__(self):
        self.frames = []

    def deliver(self, frame):
        self.frames.append(json.loads(frame))


class Store:
    def __init__(self, docs):
        self.docs = docs

    def list(self, kind):
        return list(self.docs) if kind == "cluster_member" else []


class Cluster:
    enabled = True
    member_id = "m1"

    def __init__(self, daemon):
        self.peers = Peers(daemon)


class Daemon:
    cert_path = key_path = None

    def __init__(self, docs):
        self.events = EventHub()
        self.store = Store(docs)
        self.reactor = Clock()
        self.cluster = Cluster(self)


def _member(name, member_id):
    return Document("cluster_member", name, {"id": member_id, "url": f"https://{name}:8443", "certificate": ""}, 1)


class FeedTests(SynchronousTestCase):
    def setUp(self):
        self.daemon = Daemon([_member("node1", "m1"), _member("node3", "m3")])
        self.listener = Listener()
        self.daemon.events.subscribe(self.listener)
        self.relay = cluster_events.MemberEvents(self.daemon, self.daemon.reactor)
        self.feed = cluster_events._Feed(self.relay, _member("node3", "m3"))

    def test_marked_with_the_member(self):
        event = {"type": "lifecycle", "timestamp": "t", "metadata": {"action": "container-started"}}
        self.feed.received(json.dumps(event).encode())
        self.assertEqual(self.listener.frames, [dict(event, node="m3")])

    def test_forwarded_ones_not_passed_on(self):
        """An event that already carries `node` came round: dropped."""
        self.feed.received(json.dumps({"type": "lifecycle", "metadata": {}, "node": "m2"}).encode())
        self.feed.received(b"not json")
        self.assertEqual(self.listener.frames, [])

    def test_operations_remembered_then_failed_when_gone(self):
        op = {"id": "op1", "status": "Running", "status_code": 103, "err": ""}
        self.feed.received(json.dumps({"type": "operation", "metadata": op}).encode())
        peers = self.daemon.cluster.peers
        self.assertEqual(peers.operations, {"op1": "node3"})
        peers.fail_operations_of(self.feed.doc)
        self.assertEqual(self.listener.frames[-1]["node"], "m3")
        failed = self.listener.frames[-1]["metadata"]
        self.assertEqual((failed["id"], failed["status_code"], failed["status"]), ("op1", 400, "Failure"))
        self.assertIn("node3", failed["err"])
        peers.fail_operations_of(self.feed.doc)  # already final: not announced twice
        self.assertEqual(len(self.listener.frames), 2)


class ReconcileTests(SynchronousTestCase):
    def test_one_feed_per_other_member(self):
        """Members other than this one get a feed; a removed member's feed is closed."""
        daemon = Daemon([_member("node1", "m1"), _member("node2", "m2"), _member("node3", "m3")])
        relay = cluster_events.MemberEvents(daemon, daemon.reactor)
        ticked = []
        self.patch(cluster_events._Feed, "tick", lambda feed: ticked.append(feed.doc.name))
        relay.reconcile()
        self.assertEqual(sorted(relay.feeds), ["m2", "m3"])
        gone = relay.feeds["m3"]
        daemon.store.docs = daemon.store.docs[:2]
        relay.reconcile()
        self.assertEqual(sorted(relay.feeds), ["m2"])
        self.assertTrue(gone.closed)
        self.assertEqual(sorted(ticked), ["node2", "node2", "node3"])
