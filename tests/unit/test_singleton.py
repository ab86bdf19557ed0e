import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from lxdtx import singleton


class SingletonTests(SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lxdtx-lock-")
        self.addCleanup(shutil.rmtree, self.dir)

    def test_held_lock_refuses_and_names_the_holder(self):
        fd = singleton.acquire(self.dir)
        self.addCleanup(singleton.release, fd)
        with self.assertRaises(singleton.AlreadyRunning) as raised:
            singleton.acquire(self.dir)
        self.assertEqual(str(raised.exception), f"Another lxdtx daemon (pid {os.getpid()}) is running on {self.dir}")

    def test_released_lock_is_taken_again_and_rewritten(self):
        path = os.path.join(self.dir, singleton.NAME)
        with open(path, "w") as f:
            f.write("99999999 left by a dead daemon\n")
        singleton.release(singleton.acquire(self.dir))
        fd = singleton.acquire(self.dir)
        self.addCleanup(singleton.release, fd)
        with open(path) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")

    def test_link_in_its_place_is_not_followed(self):
        target = os.path.join(self.dir, "elsewhere")
        os.symlink(target, os.path.join(self.dir, singleton.NAME))
        with self.assertRaises(OSError):
            singleton.acquire(self.dir)
        self.assertFalse(os.path.exists(target))
