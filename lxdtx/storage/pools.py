# -*- test-case-name: tests.integration.test_containers -*-
"""The storage backend: pool and volume documents paired with driver calls, rolled back on failure."""

from twisted.logger import Logger

from lxdtx import errors
from lxdtx.revert import Reverter
from lxdtx.state import ABSENT, Delete, Put
from lxdtx.storage.load import driver_class

POOL = "pool"
VOLUME = "volume"


def volume_key(pool, vol_type, name):
    return f"{pool}/{vol_type}/{name}"


class Pools:
    """Every pool of this daemon and its driver."""

    log = Logger()

    def __init__(self, daemon):
        self._daemon = daemon
        self._store = daemon.store
        self._drivers = {}

    def names(self):
        return self._store.names(POOL)

    def get(self, name):
        doc = self._store.get(POOL, name)
        if doc is None:
            raise errors.NotFound(f"Storage pool '{name}' not found")
        return doc

    def driver(self, name):
        """The driver instance of a pool (config as stored)."""
        doc = self.get(name)
        driver = self._drivers.get(name)
        if driver is None or driver.config != doc.value["config"]:
            cls = driver_class(doc.value["driver"])
            driver = self._drivers[name] = cls(name, doc.value["config"], self._daemon.dir)
        return driver

    async def mount_all(self):
        """Bring every pool up at daemon start (after a host boot nothing is mounted)."""
        for name in self.names():
            try:
                await self.driver(name).mount()
            except Exception:
                self.log.failure("Could not mount storage pool {pool}", pool=name)

    async def create(self, name, driver_name, config=None, description=""):
        cls = driver_class(driver_name)
        if cls is None:
            raise errors.BadRequest(f"Unknown storage pool driver \"{driver_name}\"")
        if self._store.exists(POOL, name):
            raise errors.Conflict(f"Storage pool \"{name}\" already exists")
        driver = cls(name, {}, self._daemon.dir)
        config = driver.fill_defaults(config or {})
        driver = cls(name, config, self._daemon.dir)
        async with Reverter() as revert:
            await driver.create()
            revert.add(driver.delete)
            value = {"driver": driver_name, "config": config, "description": description}
            await self._store.commit([Put(POOL, name, value, expect=ABSENT)])
            revert.success()
        self._drivers[name] = driver

    def volume(self, pool, vol_type, name):
        return self._store.get(VOLUME, volume_key(pool, vol_type, name))

    def volume_changes(self, pool, vol_type, name, value=None, expect=None):
        """The store change that records (or, with value None, forgets) a volume."""
        key = volume_key(pool, vol_type, name)
        if value is None:
            return Delete(VOLUME, key, expect=expect)
        return Put(VOLUME, key, value, expect=expect)
