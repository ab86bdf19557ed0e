"""InfiniBand devices from a sysfs tree (a fake one: no InfiniBand hardware here)."""

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.device import infiniband as device
from lxdtx.config.schema import ConfigError
from lxdtx.network import infiniband


class InfinibandTests(SynchronousTestCase):
    """HCA lookup, its character devices, and the liblxc lines for them."""

    def setUp(self):
        self.sysfs = tempfile.mkdtemp()
        self.dev = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.sysfs)
        self.addCleanup(shutil.rmtree, self.dev)
        os.makedirs(os.path.join(self.sysfs, "net", "ib0", "device", "infiniband", "mlx4_0"))
        for klass, entry, hca in (("infiniband_verbs", "uverbs0", "mlx4_0"), ("infiniband_verbs", "uverbs1", "mlx5_0"),
                                  ("infiniband_mad", "umad0", "mlx4_0"), ("infiniband_mad", "issm0", "mlx4_0")):
            os.makedirs(os.path.join(self.sysfs, klass, entry))
            with open(os.path.join(self.sysfs, klass, entry, "ibdev"), "w") as f:
                f.write(hca + "\n")

    def test_hca_and_devices(self):
        """The port's HCA, and only that HCA's verbs and MAD devices."""
        self.assertEqual(infiniband.hca_of("ib0", self.sysfs), "mlx4_0")
        self.assertEqual(infiniband.char_devices("mlx4_0", self.sysfs, self.dev),
                         [f"{self.dev}/uverbs0", f"{self.dev}/issm0", f"{self.dev}/umad0"])

    def test_not_infiniband(self):
        """A plain interface is refused by name."""
        os.makedirs(os.path.join(self.sysfs, "net", "eth0", "device"))
        with self.assertRaises(infiniband.InfinibandError) as raised:
            infiniband.hca_of("eth0", self.sysfs)
        self.assertIn("'eth0' is not an InfiniBand interface", str(raised.exception))

    def test_device_lines(self):
        """Each character device is allowed by number and bind-mounted at the same path."""
        lines = infiniband.device_lines(["/dev/null"])
        self.assertEqual(lines, [("lxc.cgroup.devices.allow", "c 1:3 rwm"),
                                 ("lxc.mount.entry", "/dev/null dev/null none bind,create=file 0 0")])
        self.assertRaises(infiniband.InfinibandError, infiniband.device_lines, ["/"])

    def test_validation(self):
        """infiniband devices: physical or sriov, with a parent, and only their keys."""
        device.validate("ib", {"type": "infiniband", "nictype": "sriov", "parent": "ib0", "mtu": "2044"})
        for config in ({"nictype": "bridged", "parent": "ib0"}, {"nictype": "physical"},
                       {"nictype": "physical", "parent": "ib0", "vlan": "1"}):
            self.assertRaises(ConfigError, device.validate, "ib", {"type": "infiniband", **config})
