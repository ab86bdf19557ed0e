"""The daemon's wiring, seam by seam: each collaborator takes the others it uses when it is
built (or in one named `wire` step of the daemon), and uses exactly those.

Recording fakes stand in for the other side of each seam; no reactor runs and no real
daemon is built.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors, profiles
from lxdtx.daemon import Daemon
from lxdtx.instance import model
from lxdtx.instance.records import InstanceRecords
from lxdtx.journal import Journal
from lxdtx.migration import btrfsmigration
from lxdtx.network.dnsmasq import HostsFiles
from lxdtx.resources.answers import Answers
from lxdtx.router import ApiSite, Router
from lxdtx.state import Put
from lxdtx.state.store import MemoryStore
from lxdtx.storage.driver import Driver
from lxdtx.trust import Trust
from tests.unit.fakes import RecordingHub


def done(test, coroutine):
    return test.successResultOf(defer.Deferred.fromCoroutine(coroutine))


class Recorder:
    """Records ("name.method", args) of every call made on the fakes sharing it."""

    def __init__(self):
        self.calls = []

    def fake(self, name, **methods):
        recorder = self

        class Fake:
            def __getattr__(self, attr):
                if attr in methods:
                    value = methods[attr]
                    if not callable(value):
                        return value

                def record(*args, **kwargs):
                    recorder.calls.append((f"{name}.{attr}", args, kwargs))
                    return methods[attr](*args, **kwargs) if attr in methods else None
                return record
        return Fake()


class DaemonWireTests(SynchronousTestCase):
    """`Daemon._wire`: the links between collaborators the daemon built, made in one place."""

    def setUp(self):
        self.recorder = Recorder()
        fake = self.recorder.fake
        daemon = self.daemon = Daemon.__new__(Daemon)  # its collaborators are the fakes below
        self.handlers = {}

        def handle(kind, handler):
            self.handlers[kind] = handler

        daemon.journal = fake("journal", handle=handle)
        daemon.profiles = fake("profiles")
        daemon.images = fake("images", settle_steps=lambda: {"image": "images.settle",
                                                             "image.refresh": "images.refresh"})
        records = fake("records", profile_users="instances.users", profile_rename_changes="instances.renames")
        updates = fake("updates", profile_changing="instances.changing")
        daemon.instances = fake("instances", records=records, updates=updates)
        daemon.pools = fake("pools", settle="pools.settle", image_deleted="pools.image_deleted")
        daemon.networks = fake("networks", settle="networks.settle")
        daemon.store = daemon.cluster = None
        daemon._wire()

    def calls(self, name):
        return [(args, kwargs) for called, args, kwargs in self.recorder.calls if called == name]

    def test_journal(self):
        """Every kind of step an interrupted change records has its resolver, registered once."""
        self.assertEqual(sorted(self.handlers), sorted([
            btrfsmigration.STEP, "cluster-files", "container", "image", "image.refresh", "network", "pool",
            "rename", "restore", "state"]))
        self.assertEqual(self.handlers["pool"], "pools.settle")
        self.assertEqual(self.handlers["network"], "networks.settle")
        self.assertEqual(self.handlers["image"], "images.settle")
        self.assertEqual(len(self.calls("journal.handle")), len(self.handlers))

    def test_profiles(self):
        """Profiles ask the containers who uses them, how to rename them, and check a change
        with the containers here first, then with the other cluster members."""
        [(args, kwargs)] = self.calls("profiles.wire")
        self.assertEqual(args, ())
        self.assertEqual(kwargs["users"], "instances.users")
        self.assertEqual(kwargs["rename_changes"], "instances.renames")
        hooks = kwargs["change_hooks"]
        self.assertEqual(hooks[0], "instances.changing")
        self.assertEqual(len(hooks), 2)

    def test_images(self):
        """Before an image goes, the pools drop what they cached of it."""
        self.assertEqual(self.calls("images.wire"), [((), {"delete_hooks": ["pools.image_deleted"]})])


class DaemonRouterTests(SynchronousTestCase):
    """`Daemon._build_router`: the HTTP side built by the daemon's factory, not by the service."""

    def test_router(self):
        """The router serves every resource's endpoints to this daemon, with answers of its
        own whose trusted `GET /1.0` follows the daemon's store."""
        from lxdtx import resources

        daemon = Daemon.__new__(Daemon)  # only the store is asked of it
        watched = []
        daemon.store = Recorder().fake("store", watch=lambda callback: watched.append(callback))
        router = daemon._build_router()
        self.assertIs(router.daemon, daemon)
        for endpoint in resources.endpoints():
            for path in endpoint.paths:
                if "{" not in path:
                    self.assertIs(router.routes.match(path)[0], endpoint)
        self.assertEqual(watched, [router.answers.info.invalidate])
        self.assertIsNot(Daemon._build_router(daemon).answers, router.answers)


class ProfilesWireTests(SynchronousTestCase):
    """`Profiles.wire`: the hooks given are the ones a change runs, in order."""

    def test_change_hooks_in_order(self):
        """An update runs the change hooks in the order wired; a refusal stops the commit."""
        store, hub, seen = MemoryStore(), RecordingHub(), []
        p = profiles.Profiles(store, hub)
        done(self, p.ensure_default())
        done(self, p.create("web"))

        async def first(name, old, new):
            seen.append(("first", name, new["description"]))

        async def second(name, old, new):
            seen.append(("second", name, new["description"]))

        p.wire(users=lambda name: ["c1"], rename_changes=lambda old, new: [], change_hooks=[first, second])
        value = {"description": "d", "config": {}, "devices": {}}
        done(self, p.update("web", value, p.get("web").revision))
        self.assertEqual(seen, [("first", "web", "d"), ("second", "web", "d")])
        self.assertEqual(p.render("web", p.get("web").value)["used_by"], ["/1.0/containers/c1"])

    def test_unwired(self):
        """Before `wire`, a profile has no users and a change runs no hook."""
        p = profiles.Profiles(MemoryStore(), RecordingHub())
        self.assertEqual(p.users("x"), [])
        self.assertEqual(p.change_hooks, [])


class JournalMemberTests(SynchronousTestCase):
    """`Journal(member=...)`: intents name the member the callable gives at the time."""

    def test_member(self):
        """The member is asked when an intent begins, not when the journal is built."""
        member = [""]
        journal = Journal(MemoryStore(), member=lambda: member[0])
        self.assertNotIn("member", journal.begin("create", "c1").value)
        member[0] = "m2"
        self.assertEqual(journal.begin("create", "c1").value["member"], "m2")


class TrustCandidTests(SynchronousTestCase):
    """`Trust(candid=...)`: a request with macaroons is decided by the candid given."""

    def test_candid(self):
        """The candid passed at construction is asked, and its answer taken."""
        recorder = Recorder()
        candid = recorder.fake("candid", applies=lambda http: True, authenticate=lambda http: True)
        trust = Trust(MemoryStore(), self.mktemp(), candid=candid)
        self.assertIs(trust.candid, candid)


class CollaboratorsGivenTests(SynchronousTestCase):
    """Candid, the guest socket and image upkeep take the collaborators they use, not the daemon."""

    def test_candid(self):
        """The endpoint is read from the config given; the login's root keys live in the store given."""
        from lxdtx.candid import Candid

        recorder, store = Recorder(), MemoryStore()
        config = recorder.fake("config", get=lambda key: {"core.macaroon.endpoint": "https://candid.test"}[key])
        candid = Candid(config, store, Clock(), environ={})
        self.assertEqual(candid.endpoint, "https://candid.test")
        self.assertEqual(recorder.calls, [("config.get", ("core.macaroon.endpoint",), {})])
        self.assertIs(candid.login().root_keys._store, store)

    def test_guest_socket(self):
        """The guest API serves the instances and images given, its socket in the directory given."""
        from lxdtx.devlxd.server import SOCKET_NAME, GuestSocket

        instances, images, websockets, clock = object(), object(), object(), Clock()
        guests = GuestSocket(instances, images, websockets, clock, "/run/x/devlxd")
        self.assertEqual((guests.instances, guests.images, guests.websockets, guests.reactor),
                         (instances, images, websockets, clock))
        self.assertEqual(guests.path, f"/run/x/devlxd/{SOCKET_NAME}")

    def test_image_upkeep(self):
        """Upkeep follows the config given and prunes the images given."""
        from lxdtx.image.upkeep import ImageUpkeep

        recorder = Recorder()
        config = recorder.fake("config", get=lambda key: "0")
        images = recorder.fake("images", list=lambda: [])
        upkeep = ImageUpkeep(images, config, Clock())
        upkeep.startService()
        self.addCleanup(upkeep.stopService)
        self.assertEqual(done(self, upkeep.prune()), [])
        called = [name for name, _args, _kwargs in recorder.calls]
        self.assertIn("config.on_change", called)
        self.assertIn("images.list", called)


class DriverLookupTests(SynchronousTestCase):
    """A storage driver reads its volumes' own config through the reader it was built with."""

    def test_lookup_volume(self):
        """The reader given is the one used; without one, volumes have no config of their own."""
        asked = []

        def lookup(vol_type, name):
            asked.append((vol_type, name))
            return {"size": "1GiB"}

        self.assertEqual(Driver("p", {}, "/nonexistent").lookup_volume("container", "c1"), {})
        driver = Driver("p", {}, "/nonexistent", lookup_volume=lookup)
        self.assertEqual(driver.lookup_volume("container", "c1"), {"size": "1GiB"})
        self.assertEqual(asked, [("container", "c1")])


class AnswersTests(SynchronousTestCase):
    """The router's `Answers`: made once per router, not once per process."""

    def test_openapi_once(self):
        """The OpenAPI document is made from the endpoint tables on first use only."""
        made = []

        def endpoints():
            made.append(1)
            return []

        answers = Answers()
        first = answers.openapi(endpoints)
        self.assertIs(answers.openapi(endpoints), first)
        self.assertEqual(made, [1])
        self.assertEqual(Answers().openapi(endpoints), first)
        self.assertEqual(made, [1, 1])

    def test_router_hands_its_answers(self):
        """Each router holds the answers it was built with."""
        one, two = Answers(), Answers()
        self.assertIs(Router(None, [], one).answers, one)
        self.assertIs(Router(None, [], two).answers, two)


class SiteDateTests(SynchronousTestCase):
    """The Date header, formatted once a second by each site on its own clock."""

    def test_per_site(self):
        """Two sites on two clocks each give their own second."""
        one, two = Clock(), Clock()
        one.advance(86400)
        a = ApiSite(Router(None, [], Answers()), reactor=one)
        b = ApiSite(Router(None, [], Answers()), reactor=two)
        self.assertEqual(a.http_date(), b"Fri, 02 Jan 1970 00:00:00 GMT")
        self.assertEqual(b.http_date(), b"Thu, 01 Jan 1970 00:00:00 GMT")
        one.advance(1)
        self.assertEqual(a.http_date(), b"Fri, 02 Jan 1970 00:00:01 GMT")
        self.assertEqual(b.http_date(), b"Thu, 01 Jan 1970 00:00:00 GMT")


class HostsFilesTests(SynchronousTestCase):
    """`HostsFiles`: one lock per writer object, none shared by the module."""

    def test_own_lock(self):
        """Two writers do not share their lock."""
        self.assertIsNot(HostsFiles()._lock, HostsFiles()._lock)


class RecordsTests(SynchronousTestCase):
    """`InstanceRecords`: the container documents read through the store and runtime it was given."""

    def setUp(self):
        self.store = MemoryStore()
        self.asked = []
        runtime = Recorder().fake("runtime", status=lambda name: self.asked.append(name) or "Stopped")
        self.records = InstanceRecords(self.store, runtime, daemon=None)
        value = {"profiles": ["base"], "config": {"user.a": "1"}, "devices": {}}
        done(self, self.store.commit([Put("profile", "base", {"config": {"user.b": "2"}, "devices": {}}),
                                      Put(model.KIND, "c1", value)]))

    def test_lookups(self):
        """Names, documents and expanded config come from the store; status from the runtime."""
        self.assertEqual(self.records.names(), ["c1"])
        self.assertEqual(self.records.get("c1").value["config"], {"user.a": "1"})
        self.assertRaises(errors.NotFound, self.records.get, "c2")
        config, _devices = self.records.expanded(self.records.get("c1").value)
        self.assertEqual((config["user.a"], config["user.b"]), ("1", "2"))
        self.assertEqual(self.records.status("c1"), "Stopped")
        self.assertEqual(self.asked, ["c1"])

    def test_profiles(self):
        """Who uses a profile, and the changes renaming it in their documents."""
        self.assertEqual(self.records.profile_users("base"), ["c1"])
        [change] = self.records.profile_rename_changes("base", "other")
        self.assertEqual((change.kind, change.name, change.value["profiles"]), (model.KIND, "c1", ["other"]))


class PrivateCallsTests(SynchronousTestCase):
    """Other modules use Instances through its public methods (and its records and updates)."""

    def test_no_private_calls(self):
        """No module but lifecycle.py calls `instances._something`."""
        import ast
        import pathlib

        import lxdtx

        root = pathlib.Path(lxdtx.__file__).parent
        found = []
        for path in sorted(root.rglob("*.py")):
            if path.name == "lifecycle.py" and path.parent.name == "instance":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                        and not node.attr.startswith("__")):
                    continue
                owner = node.value
                owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if owner_name == "instances":
                    found.append(f"{path.relative_to(root)}:{node.lineno}: instances.{node.attr}")
        self.assertEqual(found, [])
