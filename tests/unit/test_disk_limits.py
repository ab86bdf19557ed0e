"""Disk device io limits: parsing, the block devices behind a path (a fake /sys), cgroup files."""

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.instance import disklimits
from lxdtx.instance.cgroups import V1, V2


class FakeSys:
    """A /sys with block devices: `disk(name, number)`, `partition(disk, name, number)`,
    `mapper(name, number, members)`, in a temporary directory."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="lxdtx-fakesys-")
        os.makedirs(os.path.join(self.root, "class", "block"))
        os.makedirs(os.path.join(self.root, "dev", "block"))
        self.devices = os.path.join(self.root, "devices")

    def _add(self, directory, name, number, partition=False):
        os.makedirs(directory)
        with open(os.path.join(directory, "dev"), "w") as f:
            f.write(number + "\n")
        if partition:
            with open(os.path.join(directory, "partition"), "w") as f:
                f.write("1\n")
        os.symlink(directory, os.path.join(self.root, "class", "block", name))
        os.symlink(directory, os.path.join(self.root, "dev", "block", number))
        return directory

    def disk(self, name, number):
        return self._add(os.path.join(self.devices, name), name, number)

    def partition(self, disk, name, number):
        return self._add(os.path.join(self.devices, disk, name), name, number, partition=True)

    def mapper(self, name, number, members):
        directory = self._add(os.path.join(self.devices, name), name, number)
        os.makedirs(os.path.join(directory, "slaves"))
        for member in members:
            os.symlink(os.path.join(self.root, "class", "block", member), os.path.join(directory, "slaves", member))

    def cleanup(self):
        shutil.rmtree(self.root)


class ParseTests(SynchronousTestCase):
    """Limit values and a device's four limits."""

    def test_values(self):
        """Sizes are bytes per second, `Niops` operations per second, empty no limit."""
        self.assertEqual(disklimits.parse_limit("10MB"), (10 << 20, 0))  # the project's sizes: MB is 2**20
        self.assertEqual(disklimits.parse_limit("4096"), (4096, 0))
        self.assertEqual(disklimits.parse_limit("150iops"), (0, 150))
        self.assertEqual(disklimits.parse_limit(""), (0, 0))
        self.assertRaises(ValueError, disklimits.parse_limit, "xiops")
        self.assertRaises(ValueError, disklimits.parse_limit, "fast")

    def test_max_is_both(self):
        """limits.max sets read and write and wins over them."""
        self.assertEqual(disklimits.device_limits({"limits.max": "5MB", "limits.read": "1MB"}),
                         {"rbps": 5 << 20, "riops": 0, "wbps": 5 << 20, "wiops": 0})
        self.assertEqual(disklimits.device_limits({"limits.read": "1MB", "limits.write": "20iops"}),
                         {"rbps": 1 << 20, "riops": 0, "wbps": 0, "wiops": 20})


class BlocksTests(SynchronousTestCase):
    """The whole disks behind a block device, read from a fake /sys."""

    def setUp(self):
        self.sys = FakeSys()
        self.addCleanup(self.sys.cleanup)
        self.sys.disk("sda", "8:0")
        self.sys.partition("sda", "sda1", "8:1")
        self.sys.disk("sdb", "8:16")
        self.sys.disk("loop3", "7:3")
        self.sys.mapper("dm-0", "253:0", ["sda1", "sdb"])
        self.blocks = disklimits.Blocks(sys_root=self.sys.root, mountinfo=os.devnull)

    def test_whole_disks(self):
        """Partitions are no candidates; disks, loops and mapper devices are."""
        self.assertEqual(self.blocks.whole_disks(), {"8:0", "8:16", "7:3", "253:0"})

    def test_disks_of(self):
        """A disk is itself, a partition its disk, a mapper device its members' disks."""
        self.assertEqual(self.blocks.disks_of("8:16"), ["8:16"])
        self.assertEqual(self.blocks.disks_of("8:1"), ["8:0"])
        self.assertEqual(self.blocks.disks_of("253:0"), ["8:0", "8:16"])

    def test_mount_source(self):
        """An anonymous device (btrfs) is found through the mount naming it."""
        mountinfo = os.path.join(self.sys.root, "mountinfo")
        with open(mountinfo, "w") as f:
            f.write("22 27 0:21 / /proc rw - proc proc rw\n"
                    "40 27 0:45 / /srv/pool rw,relatime shared:1 - btrfs /dev/loop3 rw\n")
        blocks = disklimits.Blocks(sys_root=self.sys.root, mountinfo=mountinfo)
        self.assertEqual(blocks._mount_source(os.makedev(0, 45)), "/dev/loop3")
        self.assertIsNone(blocks._mount_source(os.makedev(0, 46)))


class FixedBlocks:
    """Blocks whose paths map to given disks."""

    def __init__(self, paths, disks):
        self.paths, self.disks = paths, disks

    def of_path(self, path):
        if self.paths[path] is None:
            raise ValueError("no block device")
        return self.paths[path]

    def whole_disks(self):
        return self.disks


class BlockLimitsTests(SynchronousTestCase):
    """A container's disk devices to limits per block device."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lxdtx-limits-")
        self.addCleanup(shutil.rmtree, self.dir)
        self.rootfs, self.data, self.tmp = (os.path.join(self.dir, n) for n in ("rootfs", "data", "tmp"))
        for path in (self.rootfs, self.data, self.tmp):
            os.mkdir(path)
        self.blocks = FixedBlocks({self.rootfs: ["8:0"], self.data: ["8:0", "8:16"], self.tmp: None},
                                  {"8:0", "8:16"})

    def limits(self, devices):
        return disklimits.block_limits(devices, self.rootfs, lambda c: c.get("source"), self.blocks)

    def test_average_on_a_shared_disk(self):
        """Two devices on one disk: each limit is the average of those setting it."""
        result = self.limits({
            "root": {"type": "disk", "path": "/", "pool": "p", "limits.read": "10MB"},
            "data": {"type": "disk", "path": "/d", "source": self.data, "limits.read": "20MB",
                     "limits.write": "50iops"},
            "eth0": {"type": "nic", "nictype": "p2p"},
        })
        self.assertEqual(result, {"8:0": {"rbps": 15 << 20, "riops": 0, "wbps": 0, "wiops": 50},
                                  "8:16": {"rbps": 20 << 20, "riops": 0, "wbps": 0, "wiops": 50}})

    def test_no_limits_no_blocks(self):
        """Disks without limits, and missing (optional) sources, add nothing."""
        self.assertEqual(self.limits({
            "root": {"type": "disk", "path": "/", "pool": "p"},
            "gone": {"type": "disk", "path": "/g", "source": os.path.join(self.dir, "nope"), "limits.max": "1MB"},
        }), {})

    def test_no_block_device(self):
        """A source without a block device (tmpfs) is refused, naming the device."""
        with self.assertRaises(errors.BadRequest) as raised:
            self.limits({"t": {"type": "disk", "path": "/t", "source": self.tmp, "limits.read": "1MB"}})
        self.assertIn('"t"', raised.exception.message)

    def test_not_a_whole_disk(self):
        """A block device the throttles do not take is refused."""
        self.blocks.disks = {"8:0"}
        with self.assertRaises(errors.BadRequest) as raised:
            self.limits({"d": {"type": "disk", "path": "/d", "source": self.data, "limits.read": "1MB"}})
        self.assertIn("8:16", raised.exception.message)


class FilesTests(SynchronousTestCase):
    """Limits as cgroup v1 and v2 files, at start and live."""

    LIMITS = {"8:0": {"rbps": 1000, "riops": 0, "wbps": 0, "wiops": 20}}

    def test_start_v1(self):
        """One line per set limit."""
        self.assertEqual(disklimits.start_files(self.LIMITS, V1),
                         [("blkio.throttle.read_bps_device", "8:0 1000"),
                          ("blkio.throttle.write_iops_device", "8:0 20")])

    def test_start_v2(self):
        """One io.max line with `max` for no limit."""
        self.assertEqual(disklimits.start_files(self.LIMITS, V2),
                         [("io.max", "8:0 rbps=1000 riops=max wbps=max wiops=20")])

    def test_current(self):
        """What a cgroup holds, read back from its files."""
        v1 = {"blkio.throttle.read_bps_device": "8:0 1000\n", "blkio.throttle.write_iops_device": "8:0 20\n"}
        self.assertEqual(disklimits.current(v1.get, V1), self.LIMITS)
        v2 = {"io.max": "8:0 rbps=1000 wbps=max riops=max wiops=20\n"}
        self.assertEqual(disklimits.current(v2.get, V2), self.LIMITS)
        self.assertEqual(disklimits.current({}.get, V1), {})

    def test_live(self):
        """Only what changes is written; a block no longer limited is reset."""
        wanted = {"8:16": {"rbps": 0, "riops": 0, "wbps": 5, "wiops": 0},
                  "8:0": {"rbps": 1000, "riops": 0, "wbps": 0, "wiops": 0}}
        self.assertEqual(disklimits.live_files(self.LIMITS, wanted, V1),
                         [("blkio.throttle.write_iops_device", "8:0 0"),
                          ("blkio.throttle.write_bps_device", "8:16 5")])
        self.assertEqual(disklimits.live_files(self.LIMITS, {}, V2),
                         [("io.max", "8:0 rbps=max riops=max wbps=max wiops=max")])
        self.assertEqual(disklimits.live_files(self.LIMITS, self.LIMITS, V1), [])
