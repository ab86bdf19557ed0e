"""Profiles as domain objects: names, validation, the default profile, renames, lifecycle events."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors, profiles
from lxdtx.config.schema import ConfigError
from lxdtx.state.store import MemoryStore
from tests.unit.fakes import RecordingHub


class ProfileTests(SynchronousTestCase):
    """Profiles over a memory store, recording lifecycle events."""

    def setUp(self):
        self.store = MemoryStore()
        self.hub = RecordingHub()
        self.profiles = profiles.Profiles(self.store, self.hub)
        self.done(self.profiles.ensure_default())

    def done(self, coroutine):
        return self.successResultOf(defer.Deferred.fromCoroutine(coroutine))

    def refused(self, coroutine, kind=errors.ApiError):
        return self.failureResultOf(defer.Deferred.fromCoroutine(coroutine), kind).value

    def actions(self):
        return [(meta["action"], meta["source"]) for kind, meta in self.hub.sent]

    def test_default(self):
        """The default profile exists once, and can be neither renamed nor deleted."""
        self.done(self.profiles.ensure_default())
        self.assertEqual(self.profiles.names(), ["default"])
        self.assertEqual(self.profiles.render("default", self.profiles.get("default").value), {
            "name": "default", "description": "Default LXD profile", "config": {}, "devices": {}, "used_by": []})
        error = self.refused(self.profiles.delete("default"))
        self.assertEqual((error.code, error.message), (403, 'The "default" profile cannot be deleted'))
        error = self.refused(self.profiles.rename("default", "other"))
        self.assertEqual(error.code, 403)

    def test_create(self):
        """A created profile is stored and announced."""
        self.done(self.profiles.create("web", "Web servers", {"limits.cpu": "2"},
                                      {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br0"}}))
        value = self.profiles.get("web").value
        self.assertEqual(value["config"], {"limits.cpu": "2"})
        self.assertEqual(value["description"], "Web servers")
        self.assertEqual(self.actions(), [("profile-created", "/1.0/profiles/web")])

    def test_create_refused(self):
        """Bad names, duplicates, bad config or devices: a 400 and nothing stored."""
        self.done(self.profiles.create("p"))
        cases = [
            (("",), "No name provided"),
            (("a/b",), "Profile names may not contain slashes"),
            ((".",), 'Invalid profile name "."'),
            (("..",), 'Invalid profile name ".."'),
            (("a b",), "Profile names may not contain spaces"),
            (("p",), "The profile already exists"),
            (("q", "", {"nope": "1"}), "Unknown configuration key: nope"),
            (("q", "", {"volatile.eth0.hwaddr": "x"}), "Volatile keys can only be set on containers."),
            (("q", "", {}, {"d": {"type": "floppy"}}), "Invalid device type for device 'd'"),
        ]
        for args, message in cases:
            error = self.refused(self.profiles.create(*args))
            self.assertEqual((error.code, error.message), (400, message), args)
        self.assertEqual(self.profiles.names(), ["default", "p"])

    @given(st.text(min_size=1, max_size=30).filter(lambda n: "/" not in n and n not in (".", "..")
                                                  and not any(c.isspace() for c in n)))
    def test_names(self, name):
        """Any name without slashes or spaces, other than . and .., is acceptable."""
        profiles.check_name(name)

    def test_update(self):
        """An update is validated, guarded by the revision and announced; hooks may refuse it."""
        self.done(self.profiles.create("p"))
        doc = self.profiles.get("p")
        value = {"description": "d", "config": {"security.nesting": "true"}, "devices": {}}
        self.done(self.profiles.update("p", value, doc.revision))
        self.assertEqual(self.profiles.get("p").value, value)
        self.refused(self.profiles.update("p", value, doc.revision), errors.PreconditionFailed)
        bad = dict(value, config={"security.nesting": "perhaps"})
        self.refused(self.profiles.update("p", bad, self.profiles.get("p").revision), ConfigError)

        async def veto(name, old, new):
            raise errors.BadRequest("a running container can't take that")

        self.profiles.change_hooks.append(veto)
        self.refused(self.profiles.update("p", dict(value, description="x"), self.profiles.get("p").revision))
        self.assertEqual(self.profiles.get("p").value, value)
        self.assertEqual(self.actions()[-1], ("profile-updated", "/1.0/profiles/p"))

    def test_empty_value_unsets(self):
        """A key given as "" is removed (`lxc profile unset` sends it that way)."""
        self.done(self.profiles.create("p", "", {"limits.cpu": "1", "user.x": ""}))
        self.assertEqual(self.profiles.get("p").value["config"], {"limits.cpu": "1"})
        value = {"description": "", "config": {"limits.cpu": ""}, "devices": {}}
        self.done(self.profiles.update("p", value, self.profiles.get("p").revision))
        self.assertEqual(self.profiles.get("p").value["config"], {})

    def test_rename(self):
        """A rename moves the document in one commit; the target name must be free."""
        self.done(self.profiles.create("a"))
        self.done(self.profiles.create("b"))
        error = self.refused(self.profiles.rename("a", "b"))
        self.assertEqual((error.code, error.message), (409, "Name 'b' already in use"))
        self.refused(self.profiles.rename("missing", "c"), errors.NotFound)
        self.refused(self.profiles.rename("a", "c/d"), errors.BadRequest)
        self.done(self.profiles.rename("a", "c"))
        self.assertEqual(self.profiles.names(), ["b", "c", "default"])
        self.assertEqual(self.hub.sent[-1][1], {"action": "profile-renamed", "source": "/1.0/profiles/a",
                                                "context": {"new_name": "c"}})

    def test_delete(self):
        """Deleting removes the profile; an unknown one is 404; a used one is refused."""
        self.done(self.profiles.create("a"))
        self.done(self.profiles.create("used"))
        self.profiles.users = lambda name: ["c1"] if name == "used" else []
        self.assertEqual(self.profiles.render("used", {})["used_by"], ["/1.0/containers/c1"])
        error = self.refused(self.profiles.delete("used"))
        self.assertEqual((error.code, error.message), (400, "Profile is currently in use"))
        self.done(self.profiles.delete("a"))
        self.refused(self.profiles.delete("a"), errors.NotFound)
        self.assertEqual(self.profiles.names(), ["default", "used"])

    def test_writable(self):
        """The ETag covers config, description and devices."""
        self.assertEqual(profiles.writable({"config": {"a": "1"}, "description": "d", "devices": {}}),
                         [{"a": "1"}, "d", {}])
