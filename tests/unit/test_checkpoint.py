"""What makes a container checkpointable, and how CRIU is found and checked."""

import os
import tempfile

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from lxdtx.instance import checkpoint, checkpointnet
from tests.unit.test_lxcconf import render, values


class ProblemTests(TestCase):
    def test_needs_the_key(self):
        """A container without migration.stateful is refused, naming the key."""
        self.assertIn("migration.stateful", checkpoint.problem_with({}, {}))

    def test_veth_nics_taken(self):
        """Bridged and p2p nics (veth pairs, made before the restore) are no obstacle."""
        config = {"migration.stateful": "true"}
        for nictype in ("bridged", "p2p"):
            self.assertIsNone(checkpoint.problem_with(config, {"eth0": {"type": "nic", "nictype": nictype}}))

    def test_other_nics_refused(self):
        """Other nics (and infiniband) can't be restored: the refusal names the device and its kind."""
        config = {"migration.stateful": "true"}
        reason = checkpoint.problem_with(config, {"eth1": {"type": "nic", "nictype": "macvlan"}})
        self.assertIn('macvlan nic device "eth1"', reason)
        reason = checkpoint.problem_with(config, {"ib0": {"type": "infiniband", "nictype": "physical"}})
        self.assertIn('infiniband device "ib0"', reason)

    def test_fine(self):
        """The key set and no nic: nothing in the way."""
        config = {"migration.stateful": "true"}
        self.assertIsNone(checkpoint.problem_with(config, {"root": {"type": "disk", "path": "/"}}))


class RenderTests(TestCase):
    def test_checkpointable_config(self):
        """No console and, without AppArmor, no AppArmor key; the ordinary config keeps both."""
        text = render(checkpointable=True).text
        self.assertEqual(values(text, "lxc.console.path"), ["none"])
        self.assertEqual(values(text, "lxc.console.logfile"), [])
        self.assertEqual(values(text, "lxc.apparmor.profile"), [])
        plain = render().text
        self.assertEqual(values(plain, "lxc.console.path"), [])
        self.assertEqual(values(plain, "lxc.apparmor.profile"), ["unconfined"])


class CriuTests(TestCase):
    def test_env(self):
        """liblxc finds the prefix's criu first on PATH, with the config file of the action."""
        criu = checkpoint.Criu("/opt/x")
        self.assertTrue(criu.env("dump")["PATH"].startswith("/opt/x/sbin:"))
        self.assertEqual(criu.env("dump")["CRIU_CONFIG_FILE"], "/opt/x/etc/criu.conf")
        self.assertEqual(criu.env("restore")["CRIU_CONFIG_FILE"], "/opt/x/etc/criu-restore.conf")

    @defer.inlineCallbacks
    def test_missing(self):
        """No binary under the prefix: the reason says CRIU isn't installed, naming the path."""
        prefix = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, prefix)
        reason = yield defer.Deferred.fromCoroutine(checkpoint.Criu(prefix).problem())
        self.assertIn("CRIU isn't installed", reason)
        self.assertIn(prefix, reason)

    @defer.inlineCallbacks
    def test_failing_check(self):
        """A criu whose check fails: the reason carries its last line."""
        prefix = tempfile.mkdtemp()
        os.makedirs(os.path.join(prefix, "sbin"))
        binary = os.path.join(prefix, "sbin", "criu")
        with open(binary, "w") as f:
            f.write("#!/bin/sh\necho 'Looks bad: no vDSO' >&2\nexit 1\n")
        os.chmod(binary, 0o755)
        self.addCleanup(lambda: (os.unlink(binary), os.rmdir(os.path.dirname(binary)), os.rmdir(prefix)))
        reason = yield defer.Deferred.fromCoroutine(checkpoint.Criu(prefix).problem())
        self.assertIn("Looks bad: no vDSO", reason)


class RestoredNicsTests(TestCase):
    LINES = [("lxc.net.0.type", "veth"), ("lxc.net.0.flags", "up"), ("lxc.net.0.link", "br0"),
             ("lxc.net.0.veth.pair", "vethaaaa"), ("lxc.net.0.name", "eth0"), ("lxc.net.0.mtu", "1400"),
             ("lxc.net.1.type", "macvlan"), ("lxc.net.1.link", "eno1"), ("lxc.net.1.name", "eth1"),
             ("lxc.net.2.type", "veth"), ("lxc.net.2.veth.pair", "vethbbbb"), ("lxc.net.2.name", "eth2"),
             ("lxc.mount.entry", "a b none bind 0 0")]

    def test_veths(self):
        """The veth nics of liblxc's lines: container name, host end, bridge, MTU; others left out."""
        found = checkpointnet.veths(self.LINES)
        self.assertEqual([(n.name, n.host, n.link, n.mtu) for n in found],
                         [("eth0", "vethaaaa", "br0", "1400"), ("eth2", "vethbbbb", None, None)])
        self.assertNotEqual(found[0].peer, found[1].peer)
        self.assertLessEqual(len(found[0].peer), 15)

    def test_config_text(self):
        """The restore's config: the prefix's options first, then one netdev external per nic."""
        found = checkpointnet.veths(self.LINES)
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write("mntns-compat-mode")
            f.flush()
            text = checkpointnet.config_text(f.name, found)
        self.assertEqual(text.splitlines(), ["mntns-compat-mode", f"external netdev[eth0]:{found[0].peer}",
                                             f"external netdev[eth2]:{found[1].peer}"])
        self.assertEqual(checkpointnet.config_text("/nonexistent/criu.conf", []), "")

    def test_host_names_kept(self):
        """A veth nic's host end keeps its recorded name; one named by its device, and other nics, as they are."""
        config = {"volatile.eth0.host_name": "vethold", "volatile.eth1.host_name": "vethone",
                  "volatile.eth2.host_name": "vf0"}
        devices = {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br0"},
                   "eth1": {"type": "nic", "nictype": "p2p", "host_name": "mine"},
                   "eth2": {"type": "nic", "nictype": "sriov", "parent": "eno1"}, "root": {"type": "disk"}}
        kept = checkpointnet.keep_host_names(config, devices)
        self.assertEqual(kept["eth0"]["host_name"], "vethold")
        self.assertEqual(kept["eth1"]["host_name"], "mine")
        self.assertNotIn("host_name", kept["eth2"])
        self.assertNotIn("host_name", devices["eth0"])
