"""The /dev/lxd guest API's pure parts: what a guest is told, who may ask."""

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.devlxd import callers, changes
from lxdtx.devlxd.server import GuestSocket


class ConfigTests(SynchronousTestCase):
    """Keys, meta-data and config events cover `user.*` keys only."""

    def test_user_keys(self):
        """Only `user.*` keys, sorted."""
        config = {"user.b": "1", "security.devlxd": "true", "user.a": "", "volatile.x": "y"}
        self.assertEqual(changes.user_keys(config), ["user.a", "user.b"])

    def test_meta_data(self):
        """The cloud-init header, then `user.meta-data` verbatim (a `%` too)."""
        self.assertEqual(changes.meta_data("c1", {"user.meta-data": "a: 100%\n"}),
                         "#cloud-config\ninstance-id: c1\nlocal-hostname: c1\na: 100%\n")
        self.assertEqual(changes.meta_data("c1", {}), "#cloud-config\ninstance-id: c1\nlocal-hostname: c1\n")

    def test_config_events(self):
        """One event per changed `user.*` key; other keys and unchanged ones are silent."""
        old = {"user.same": "1", "user.gone": "x", "user.changed": "a", "limits.cpu": "1"}
        new = {"user.same": "1", "user.new": "y", "user.changed": "b", "limits.cpu": "2"}
        self.assertEqual(changes.config_events(old, new), [
            {"key": "user.changed", "old_value": "a", "value": "b"},
            {"key": "user.gone", "old_value": "x", "value": ""},
            {"key": "user.new", "old_value": "", "value": "y"},
        ])

    def test_parse_types(self):
        """Default both; a comma list; unknown names match nothing."""
        self.assertEqual(changes.parse_types(""), frozenset({"config", "device"}))
        self.assertEqual(changes.parse_types("device, config"), frozenset({"config", "device"}))
        self.assertEqual(changes.parse_types("device,bogus"), frozenset({"device", "bogus"}))


class DeviceEventTests(SynchronousTestCase):
    """Device changes: removals, updates, additions, in that order."""

    def test_limits_only_is_an_update(self):
        """A change of only limits/addresses keys is `updated` with the new config."""
        old = {"eth0": {"type": "nic", "limits.ingress": "1Mbit"}}
        new = {"eth0": {"type": "nic", "limits.ingress": "2Mbit"}}
        self.assertEqual(changes.device_events(old, new),
                         [{"action": "updated", "name": "eth0", "config": new["eth0"]}])

    def test_other_change_is_remove_then_add(self):
        """Any other change is a removal (old config) and an addition (new config); order kept."""
        old = {"d": {"type": "disk", "path": "/a", "source": "/x"}, "gone": {"type": "none"},
               "n": {"type": "nic", "limits.egress": "1Mbit"}}
        new = {"d": {"type": "disk", "path": "/b", "source": "/x"}, "added": {"type": "none"},
               "n": {"type": "nic", "limits.egress": "5Mbit"}}
        self.assertEqual([(e["action"], e["name"]) for e in changes.device_events(old, new)],
                         [("removed", "d"), ("removed", "gone"), ("updated", "n"), ("added", "added"),
                          ("added", "d")])
        self.assertEqual(changes.device_events(old, new)[0]["config"], old["d"])

    def test_unchanged(self):
        """No change, no event."""
        self.assertEqual(changes.device_events({"a": {"type": "none"}}, {"a": {"type": "none"}}), [])


class CallerTests(SynchronousTestCase):
    """Who may ask: the container's root, while the container allows /dev/lxd."""

    def test_enabled_by_default(self):
        """Unset or true allows; false refuses."""
        self.assertTrue(callers.enabled({}))
        self.assertTrue(callers.enabled({"security.devlxd": "true"}))
        self.assertFalse(callers.enabled({"security.devlxd": "false"}))

    def test_root_ids(self):
        """Privileged: 0; unprivileged: container root's host ids; a broken map: nobody."""
        self.assertEqual(callers.root_ids({}), (0, 0))
        self.assertEqual(callers.root_ids({"volatile.last_state.idmap": "[]"}), (0, 0))
        idmap = json.dumps([{"Isuid": True, "Isgid": False, "Hostid": 100000, "Nsid": 0, "Maprange": 65536},
                            {"Isuid": False, "Isgid": True, "Hostid": 200000, "Nsid": 0, "Maprange": 65536}])
        self.assertEqual(callers.root_ids({"volatile.last_state.idmap": idmap}), (100000, 200000))
        self.assertIsNone(callers.root_ids({"volatile.last_state.idmap": "not json"}))

    def test_host_process_is_no_container(self):
        """The test's own process is in no container's pid namespace."""
        self.assertIsNone(callers.container_of(os.getpid(), {}))
        self.assertIsNone(callers.container_of(os.getpid(), {12345: "c"}))
        # Its own namespace named as a container's: found (this is how a guest is found).
        own = callers.pid_namespace(os.getpid())
        self.assertEqual(callers.container_of(os.getpid(), {own: "c"}), "c")


class ChangeReportTests(SynchronousTestCase):
    """A running container's change reaches its own guests' hub only."""

    def _socket(self):
        guests = GuestSocket.__new__(GuestSocket)
        guests._hubs = {}
        return guests

    def test_only_the_containers_own_hub(self):
        """Events go to the changed container's listeners; a container nobody listens to costs nothing."""
        guests = self._socket()
        frames = []

        class Listener:
            types = frozenset({"config", "device"})

            def deliver(self, frame):
                frames.append(json.loads(frame))

            def drop(self):
                pass

        guests.hub("mine").subscribe(Listener())
        guests.changed("other", ({}, {}), ({"user.x": "1"}, {}))
        self.assertEqual(frames, [])
        guests.changed("mine", ({}, {}), ({"user.x": "1"}, {"d": {"type": "none"}}))
        self.assertEqual([f["type"] for f in frames], ["config", "device"])
        guests.forget("mine")
        guests.changed("mine", ({}, {}), ({"user.x": "2"}, {}))
        self.assertEqual(len(frames), 2)

    def test_disallowed_ends_streams(self):
        """Set security.devlxd=false, a container's guests get no event and their streams end."""
        guests = self._socket()
        dropped = []

        class Listener:
            types = frozenset({"config"})

            def deliver(self, frame):
                raise AssertionError("no event once disallowed")

            def drop(self):
                dropped.append(True)

        guests.hub("c").subscribe(Listener())
        guests.changed("c", ({}, {}), ({"user.x": "1", "security.devlxd": "false"}, {}))
        self.assertEqual(dropped, [True])
