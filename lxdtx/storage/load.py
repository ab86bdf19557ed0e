"""Driver names to driver classes."""

from lxdtx.storage.dir import DirDriver

DRIVERS = {"dir": DirDriver}


def driver_class(name):
    return DRIVERS.get(name)
