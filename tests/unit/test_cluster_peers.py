"""Which member a request goes to (lxdtx.cluster.peers.Peers.owner): containers to their
member, operations to where they live (asked of the members when unknown, for trusted
callers only), their websockets likewise, image exports to a member with the files;
nothing forwarded twice."""

from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.cluster.peers import ANY_HOLDER, FORWARDED, LOOKUP, Peers
from lxdtx.state import Document


class Http:
    def __init__(self, trusted=True, headers=None):
        self.caller_trusted = trusted
        self.headers = headers or {}

    def getHeader(self, name):
        return self.headers.get(name)


class Store:
    def __init__(self):
        self.docs = {("container", "here"): {"location": "m1"}, ("container", "there"): {"location": "m3"}}

    def value(self, kind, name):
        return self.docs.get((kind, name))


class Cluster:
    enabled = True
    member_id = "m1"

    def member_by_id(self, member_id):
        return Document("cluster_member", "node3", {"id": member_id}, 1) if member_id == "m3" else None

    def member_or_none(self, name):
        return Document("cluster_member", name, {"id": "m2"}, 1)


class Operations:
    def get(self, op_id):
        if op_id != "local":
            raise errors.NotFound()


class Images:
    def lookup(self, fingerprint):
        if fingerprint not in ("mine", "theirs"):
            raise errors.NotFound()
        return fingerprint

    def has_files(self, fingerprint):
        return fingerprint == "mine"


class Daemon:
    def __init__(self):
        self.cluster = Cluster()
        self.store = Store()
        self.operations = Operations()
        self.images = Images()


class OwnerTests(SynchronousTestCase):
    def setUp(self):
        self.peers = Peers(Daemon())

    def test_containers(self):
        self.assertIsNone(self.peers.owner(Http(), "/1.0/containers/here/exec"))
        self.assertEqual(self.peers.owner(Http(), "/1.0/containers/there/files").name, "node3")
        self.assertIsNone(self.peers.owner(Http(headers={FORWARDED: "1"}), "/1.0/containers/there"))

    def test_operations_and_their_websockets(self):
        self.peers.remember_operation("remembered", "node2")
        self.assertIsNone(self.peers.owner(Http(), "/1.0/operations/local/websocket"))
        self.assertEqual(self.peers.owner(Http(False), "/1.0/operations/remembered/websocket").name, "node2")
        self.assertEqual(self.peers.owner(Http(), "/1.0/operations/remembered/wait").name, "node2")
        self.assertIs(self.peers.owner(Http(), "/1.0/operations/unknown"), LOOKUP)
        # Not for an untrusted caller: it would make every member answer for it.
        self.assertIsNone(self.peers.owner(Http(False), "/1.0/operations/unknown/websocket"))

    def test_image_exports(self):
        self.assertIsNone(self.peers.owner(Http(), "/1.0/images/mine/export"))
        self.assertIs(self.peers.owner(Http(), "/1.0/images/theirs/export"), ANY_HOLDER)
        self.assertIsNone(self.peers.owner(Http(False), "/1.0/images/theirs/export"))
        self.assertIsNone(self.peers.owner(Http(), "/1.0/images/nosuch/export"))

    def test_remembered_operations_are_bounded(self):
        for i in range(1005):
            self.peers.remember_operation(f"op{i}", "node2", {"id": f"op{i}"})
        self.assertEqual(len(self.peers.operations), 1000)
        self.assertEqual(len(self.peers.states), 1000)
        self.assertNotIn("op0", self.peers.operations)
