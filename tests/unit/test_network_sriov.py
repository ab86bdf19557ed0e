"""Picking SR-IOV virtual functions from a sysfs tree (a fake one: no SR-IOV hardware here)."""

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.network import sriov


class SriovTests(SynchronousTestCase):
    """VF discovery, enabling, choice and the MAC command."""

    def setUp(self):
        self.sysfs = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.sysfs)

    def device(self, parent, total, enabled, vfs):
        """A PF with `vfs` = {index: [interface names visible here]}."""
        device = os.path.join(self.sysfs, parent, "device")
        os.makedirs(device)
        with open(os.path.join(device, "sriov_totalvfs"), "w") as f:
            f.write(f"{total}\n")
        with open(os.path.join(device, "sriov_numvfs"), "w") as f:
            f.write(f"{enabled}\n")
        for index, names in vfs.items():
            net = os.path.join(device, f"virtfn{index}", "net")
            os.makedirs(net)
            for name in names:
                os.makedirs(os.path.join(net, name))

    def test_pick_free(self):
        """The first VF whose interface is still here (not in a container, not taken) is chosen."""
        self.device("eth0", 4, 3, {0: [], 1: ["eth0v1"], 2: ["eth0v2"], 10: ["eth0v10"]})
        self.assertEqual(sriov.virtual_functions("eth0", self.sysfs),
                         [(0, []), (1, ["eth0v1"]), (2, ["eth0v2"]), (10, ["eth0v10"])])
        self.assertEqual(sriov.pick("eth0", sysfs=self.sysfs), (1, "eth0v1"))
        self.assertEqual(sriov.pick("eth0", taken={"eth0v1"}, sysfs=self.sysfs), (2, "eth0v2"))

    def test_all_used(self):
        """No free VF: a clear error."""
        self.device("eth0", 2, 2, {0: [], 1: []})
        with self.assertRaises(sriov.SriovError) as raised:
            sriov.pick("eth0", sysfs=self.sysfs)
        self.assertIn("seem to be in use", str(raised.exception))

    def test_enables_vfs(self):
        """A PF with no VFs enabled gets all of them enabled."""
        self.device("eth0", 8, 0, {})
        self.assertRaises(sriov.SriovError, sriov.pick, "eth0", sysfs=self.sysfs)
        with open(os.path.join(self.sysfs, "eth0", "device", "sriov_numvfs")) as f:
            self.assertEqual(f.read(), "8\n")

    def test_not_sriov(self):
        """An interface without SR-IOV is refused by name."""
        os.makedirs(os.path.join(self.sysfs, "lo"))
        with self.assertRaises(sriov.SriovError) as raised:
            sriov.pick("lo", sysfs=self.sysfs)
        self.assertEqual(str(raised.exception), "Parent device 'lo' isn't SR-IOV enabled")
        self.device("eth1", 0, 0, {})
        self.assertRaises(sriov.SriovError, sriov.pick, "eth1", sysfs=self.sysfs)

    def test_mac_command(self):
        """The VF's MAC is set through its parent."""
        self.assertEqual(sriov.set_mac_argv("eth0", 3, "00:16:3e:00:00:01"),
                         ["ip", "link", "set", "dev", "eth0", "vf", "3", "mac", "00:16:3e:00:00:01"])
        self.assertEqual(sriov.reset_mac_argv("eth0", 3)[-1], "00:00:00:00:00:00")
