"""Driver names to driver classes, and which of them work on this host."""

from lxdtx.storage.btrfs import BtrfsDriver
from lxdtx.storage.ceph import CephDriver
from lxdtx.storage.dir import DirDriver
from lxdtx.storage.lvm import LvmDriver
from lxdtx.storage.zfs import ZfsDriver

DRIVERS = {"btrfs": BtrfsDriver, "ceph": CephDriver, "dir": DirDriver, "lvm": LvmDriver, "zfs": ZfsDriver}


def driver_class(name):
    return DRIVERS.get(name)


async def available(run, in_thread):
    """{name: version} of the drivers this host can run (`missing()` reads /proc: in a thread)."""
    found = {}
    for name in sorted(DRIVERS):
        cls = DRIVERS[name]
        if await in_thread(cls.missing) is None:
            found[name] = await cls.version(run)
    return found
