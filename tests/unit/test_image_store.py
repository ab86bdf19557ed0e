"""ImageStore lookups, resolution for containers, aliases and secrets, on an in-memory store."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.events import EventHub
from lxdtx.image.store import ALIAS_KIND, KIND, ImageStore
from lxdtx.journal import Journal
from lxdtx.operations import Operations
from lxdtx.state import Put
from lxdtx.state.store import MemoryStore

FP_A = "aa11" + "0" * 60
FP_B = "aa22" + "0" * 60
FP_C = "bb33" + "0" * 60


class Host:
    """The parts of a daemon an ImageStore reads in these tests."""

    def __init__(self):
        self.store = MemoryStore()
        self.journal = Journal(self.store)
        self.clock = Clock()
        self.operations = Operations(EventHub(), self.clock)
        self.dir = "/nonexistent"

    def path(self, *parts):
        return "/".join([self.dir, *parts])


def image(created, **properties):
    return {"architecture": "x86_64", "auto_update": False, "cached": False, "created_at": created,
            "expires_at": "1970-01-01T00:00:00+00:00", "filename": "f", "last_used_at": "0001-01-01T00:00:00Z",
            "properties": properties, "public": False, "size": 1, "uploaded_at": created, "format": "xz",
            "rootfs_format": None}


class ImageStoreTests(SynchronousTestCase):
    """Everything here runs without a reactor: the memory store commits at once."""

    def setUp(self):
        self.host = Host()
        self.images = ImageStore(self.host)
        self.done(self.host.store.commit([
            Put(KIND, FP_A, image("2020-01-01T00:00:00+00:00", os="debian", release="10")),
            Put(KIND, FP_B, image("2021-01-01T00:00:00+00:00", os="debian", release="11")),
            Put(KIND, FP_C, image("2019-01-01T00:00:00+00:00", os="alpine")),
            Put(ALIAS_KIND, "deb", {"target": FP_B, "description": "newest debian"}),
        ]))

    def done(self, coro):
        return self.successResultOf(defer.ensureDeferred(coro))

    def fails(self, coro, kind):
        return self.failureResultOf(defer.ensureDeferred(coro), kind).value

    def test_lookup(self):
        """Full fingerprints, unique prefixes (any case); ambiguous and unknown prefixes fail."""
        self.assertEqual(self.images.lookup(FP_A), FP_A)
        self.assertEqual(self.images.lookup("AA1"), FP_A)
        with self.assertRaises(errors.BadRequest) as cm:
            self.images.lookup("aa")
        self.assertEqual(cm.exception.message, "Partial fingerprint matches more than one image")
        with self.assertRaises(errors.NotFound):
            self.images.lookup("cc")

    def test_render(self):
        """The API object: fingerprint and aliases added, internal fields hidden."""
        obj = self.images.get(FP_B[:6])
        self.assertEqual(obj["fingerprint"], FP_B)
        self.assertEqual(obj["aliases"], [{"name": "deb", "description": "newest debian"}])
        self.assertNotIn("format", obj)
        self.assertNotIn("rootfs_format", obj)
        self.assertEqual(self.images.get(FP_A)["aliases"], [])

    def test_resolve(self):
        """By fingerprint, alias, or properties (the newest match)."""
        self.assertEqual(self.images.resolve({"type": "image", "fingerprint": "bb"}), FP_C)
        self.assertEqual(self.images.resolve({"type": "image", "alias": "deb"}), FP_B)
        self.assertEqual(self.images.resolve({"type": "image", "properties": {"os": "debian"}}), FP_B)
        self.assertEqual(self.images.resolve({"properties": {"os": "debian", "release": "10"}}), FP_A)

    def test_resolve_refusals(self):
        """Unknown aliases and properties are NotFound; no selector at all is a BadRequest."""
        with self.assertRaises(errors.NotFound) as cm:
            self.images.resolve({"alias": "nope"})
        self.assertIn("nope", cm.exception.message)
        with self.assertRaises(errors.NotFound):
            self.images.resolve({"properties": {"os": "gentoo"}})
        with self.assertRaises(errors.BadRequest) as cm:
            self.images.resolve({"type": "image"})
        self.assertIn("alias, fingerprint or properties", cm.exception.message)
        with self.assertRaises(errors.BadRequest):
            self.images.resolve("debian")

    def test_aliases(self):
        """Create (target by prefix), rename, conflicts and bad names."""
        self.done(self.images.create_alias("alp", "bb3", "alpine"))
        self.assertEqual(self.images.render_alias("alp", self.images.alias("alp").value),
                         {"name": "alp", "description": "alpine", "target": FP_C})
        self.assertIsInstance(self.fails(self.images.create_alias("alp", FP_A), errors.Conflict), errors.Conflict)
        self.fails(self.images.create_alias("new", "ffff"), errors.NotFound)
        self.fails(self.images.create_alias("a/b", FP_A), errors.BadRequest)
        self.fails(self.images.rename_alias("alp", "deb"), errors.Conflict)
        self.done(self.images.rename_alias("alp", "alpine"))
        self.assertEqual(self.images.alias_names(), ["alpine", "deb"])
        self.done(self.images.delete_alias("alpine"))
        self.fails(self.images.delete_alias("alpine"), errors.NotFound)

    def test_check_aliases(self):
        """Aliases asked for at creation must be free and distinct."""
        self.assertEqual(self.images.check_aliases([{"name": "x", "description": "d"}, "y"]),
                         [("x", "d"), ("y", "")])
        with self.assertRaises(errors.Conflict) as cm:
            self.images.check_aliases([{"name": "deb"}])
        self.assertEqual(cm.exception.message, "Alias already exists: deb")
        with self.assertRaises(errors.Conflict):
            self.images.check_aliases(["z", "z"])

    def test_update_and_mark_used(self):
        """Writable fields change with the right revision; mark_used sets last_used_at."""
        doc = self.host.store.get(KIND, FP_A)
        self.done(self.images.update(FP_A, public=True, auto_update=True, properties={"a": "b"},
                                    expect=doc.revision))
        obj = self.images.get(FP_A)
        self.assertEqual((obj["public"], obj["auto_update"], obj["properties"]), (True, True, {"a": "b"}))
        self.fails(self.images.update(FP_A, public=False, auto_update=False, properties={}, expect=doc.revision),
                   errors.PreconditionFailed)
        self.done(self.images.mark_used(FP_A))
        self.assertNotEqual(self.images.get(FP_A)["last_used_at"], "0001-01-01T00:00:00Z")

    def test_secret(self):
        """A token works for its image only; its first use cancels it, and it keeps
        matching while the finished operation is kept, then stops."""
        op = self.images.create_secret(FP_A)
        secret = op.metadata["secret"]
        self.assertEqual((op.cls, op.status_code, op.resources), ("token", 103, {"images": [FP_A]}))
        self.assertFalse(self.done(self.images.consume_secret(FP_B, secret)))
        self.assertFalse(self.done(self.images.consume_secret(FP_A, "0" * 64)))
        self.assertFalse(self.done(self.images.consume_secret(FP_A, "")))
        self.assertEqual(op.status_code, 103)
        self.assertTrue(self.done(self.images.consume_secret(FP_A, secret)))
        self.assertEqual(op.status_code, 401)
        self.assertTrue(self.done(self.images.consume_secret(FP_A, secret)))
        self.host.clock.advance(self.host.operations.keep + 1)
        self.assertFalse(self.done(self.images.consume_secret(FP_A, secret)))
