"""Exec helpers: environment defaults, the lxc-attach command line, exit codes, recording expiry."""

import os
import tempfile

from twisted.internet import error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.exec import attach, recording
from lxdtx.exec.streams import exit_code


class EnvironmentTests(SynchronousTestCase):
    """LXD's exec environment rules."""

    def test_defaults(self):
        """PATH, HOME, USER and LANG are set; TERM only for interactive sessions."""
        env = attach.environment({}, {}, interactive=False)
        self.assertEqual(env, {"PATH": attach.DEFAULT_PATH, "HOME": "/root", "USER": "root", "LANG": "C.UTF-8"})
        self.assertEqual(attach.environment({}, {}, interactive=True)["TERM"], "xterm")

    def test_precedence(self):
        """The request overrides environment.* keys, which override the defaults."""
        config = {"environment.FOO": "container", "environment.HOME": "/home/x", "limits.cpu": "1"}
        env = attach.environment(config, {"FOO": "request", "TERM": "vt100"}, interactive=True)
        self.assertEqual(env["FOO"], "request")
        self.assertEqual(env["HOME"], "/home/x")
        self.assertEqual(env["TERM"], "vt100")
        self.assertNotIn("limits.cpu", env)

    def test_snap_path(self):
        """/snap/bin joins PATH when the container has /snap."""
        self.assertTrue(attach.environment({}, {}, False, has_snap=True)["PATH"].endswith(":/snap/bin"))

    def test_path_left_to_the_seed(self):
        """Not known whether there is a /snap: PATH stays unset unless someone set it."""
        self.assertNotIn("PATH", attach.environment({}, {}, False, has_snap=None))
        self.assertEqual(attach.environment({"environment.PATH": "/x"}, {}, False, has_snap=None)["PATH"], "/x")
        self.assertEqual(attach.environment({}, {"PATH": "/y"}, False, has_snap=None)["PATH"], "/y")

    def test_argv(self):
        """The helper clears the host environment and sets exactly the given variables."""
        line = attach.argv("c1", "/var/lib/x/lxc", ["sh", "-c", "echo $A"], {"A": "1 2"}, "/root")
        self.assertEqual(line, [attach.ENV, "-C", "/root", attach.ATTACH, "-n", "c1", "-P", "/var/lib/x/lxc", "--clear-env",
                                "-v", "A=1 2", "--", "sh", "-c", "echo $A"])

    def test_working_directory(self):
        """The helper starts in HOME when that is an absolute existing directory, else in /."""
        self.assertEqual(attach.working_directory("/"), "/")
        self.assertEqual(attach.working_directory("relative"), "/")
        self.assertEqual(attach.working_directory("/nonexistent-dir-for-test"), "/")

    def test_attached_pid_of_nothing(self):
        """A pid without children has no attached command."""
        self.assertIsNone(attach.attached_pid(os.getpid()))


class ExitCodeTests(SynchronousTestCase):
    """Exit codes of reaped helpers."""

    def test_codes(self):
        """0 for success, the status otherwise, 128+n for a signal."""
        self.assertEqual(exit_code(Failure(error.ProcessDone(0))), 0)
        self.assertEqual(exit_code(Failure(error.ProcessTerminated(3))), 3)
        self.assertEqual(exit_code(Failure(error.ProcessTerminated(None, 15))), 143)
        self.assertEqual(exit_code(Failure(error.ProcessTerminated(None, None))), -1)


class RecordingTests(SynchronousTestCase):
    """Expiry of recorded exec output."""

    def test_expire(self):
        """Only exec_* recordings older than the limit go; other logs stay."""
        root = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(root))
        os.makedirs(os.path.join(root, "c1"))
        names = ["exec_a1-b2.stdout", "exec_a1-b2.stderr", "lxc.log", "exec_new.stdout"]
        for name in names:
            with open(os.path.join(root, "c1", name), "w") as f:
                f.write("x")
        old = 1_000_000
        for name in names[:3]:
            os.utime(os.path.join(root, "c1", name), (old, old))
        removed = recording.expire(root, max_age=48 * 3600, now=old + 48 * 3600 + 1)
        self.assertEqual(sorted(os.path.basename(p) for p in removed), ["exec_a1-b2.stderr", "exec_a1-b2.stdout"])
        self.assertEqual(sorted(os.listdir(os.path.join(root, "c1"))), ["exec_new.stdout", "lxc.log"])

    def test_record_names(self):
        """Recordings are named after the operation."""
        self.assertEqual(recording.record_names("u1"), {"1": "exec_u1.stdout", "2": "exec_u1.stderr"})
