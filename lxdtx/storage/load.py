"""Driver names to driver classes, and which of them work on this host."""

from lxdtx.storage.btrfs import BtrfsDriver
from lxdtx.storage.ceph import CephDriver
from lxdtx.storage.dir import DirDriver
from lxdtx.storage.lvm import LvmDriver
from lxdtx.storage.zfs import ZfsDriver

DRIVERS = {"btrfs": BtrfsDriver, "ceph": CephDriver, "dir": DirDriver, "lvm": LvmDriver, "zfs": ZfsDriver}


def driver_class(name):
    return DRIVERS.get(name)


def available():
    """{name: version} of the drivers this host can run (blocking: reads /proc, runs --version)."""
    found = {}
    for name in sorted(DRIVERS):
        cls = DRIVERS[name]
        if cls.missing() is None:
            found[name] = cls.version()
    return found
