"""What makes a container checkpointable, and how CRIU is found and checked."""

import os
import tempfile

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from lxdtx.instance import checkpoint
from tests.unit.test_lxcconf import render, values


class ProblemTests(TestCase):
    def test_needs_the_key(self):
        """A container without migration.stateful is refused, naming the key."""
        self.assertIn("migration.stateful", checkpoint.problem_with({}, {}))

    def test_nic_refused(self):
        """A nic can't be restored: the refusal names the device."""
        reason = checkpoint.problem_with({"migration.stateful": "true"}, {"eth0": {"type": "nic"}})
        self.assertIn('"eth0"', reason)

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
