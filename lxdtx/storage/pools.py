# -*- test-case-name: tests.integration.test_storage -*-
"""The storage backend: pool and volume documents paired with driver calls, rolled back on failure.

Documents: kind `pool` named after the pool ({"driver", "config",
"description"}), kind `volume` named `<pool>/<type>/<name>` ({"config",
"description"}) for container volumes (snapshots too, `c/snap`) and custom
volumes. Image volumes are caches a driver keeps on disk: the driver lists them.
"""

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import asyncutil, errors, faults
from lxdtx.revert import Reverter
from lxdtx.state import ABSENT, Delete, Put
from lxdtx.storage import keys
from lxdtx.storage.errors import InUse
from lxdtx.storage.load import DRIVERS, available, driver_class

POOL = "pool"
VOLUME = "volume"

CREATE_RECORDED = faults.point("pool.create.recorded")
CREATE_MADE = faults.point("pool.create.made")
DELETE_COMMITTED = faults.point("pool.delete.committed")


def volume_key(pool, vol_type, name, member=""):
    """A volume's document name. In a cluster a custom volume of a local pool is one member's
    (another member may have one of the same name): its member's id follows the name (which
    holds no "/")."""
    key = f"{pool}/{vol_type}/{name}"
    return f"{key}/{member}" if member else key


def split_volume_key(key):
    """(pool, type, name, member id or "") of a volume's document name."""
    pool, vol_type, name = key.split("/", 2)
    member = ""
    if vol_type == "custom" and "/" in name:
        name, member = name.split("/", 1)
    return pool, vol_type, name, member


class Pools:
    """Every pool of this daemon and its driver."""

    log = Logger()

    def __init__(self, daemon):
        self._daemon = daemon
        self._store = daemon.store
        self._drivers = {}
        self.available = {}  # driver name -> version, probed at start-up
        from lxdtx.storage.volumes import CustomVolumes

        self.custom = CustomVolumes(self, daemon)
        self._journal = daemon.journal

    @property
    def store(self):
        return self._store

    def names(self):
        return self._store.names(POOL)

    def get(self, name):
        doc = self._store.get(POOL, name)
        if doc is None:
            raise errors.NotFound(f"Storage pool '{name}' not found")
        return doc

    def driver(self, name):
        """The driver instance of a pool (config as stored)."""
        from lxdtx.cluster.onall import local_config

        doc = self.get(name)
        driver = self._drivers.get(name)
        config = local_config(self._daemon, doc.value)  # a cluster member's: with its own keys
        if driver is None or driver.config != config:
            cls = driver_class(doc.value["driver"])
            lookup = lambda vol_type, vol, pool=name: self._volume_config(pool, vol_type, vol)  # noqa: E731
            driver = self._drivers[name] = cls(name, config, self._daemon.dir, lookup_volume=lookup)
        return driver

    def forget_driver(self, name):
        self._drivers.pop(name, None)

    def _volume_config(self, pool, vol_type, name):
        doc = self.volume(pool, vol_type, name)
        return doc.value.get("config", {}) if doc else {}

    # -- start-up ----------------------------------------------------------------
    async def mount_all(self):
        """Bring every pool up at daemon start (after a host boot nothing is mounted)."""
        self.available = await available(asyncutil.run, threads.deferToThread)
        from lxdtx.cluster.onall import made_here

        for name in self.names():
            if not made_here(self._daemon, self.get(name).value):
                continue  # a cluster's pool still being made, or not made on this member
            try:
                await self.driver(name).mount()
            except Exception:
                self.log.failure("Could not mount storage pool {pool}", pool=name)

    def environment(self):
        """`storage`/`storage_version` of `GET /1.0`: the drivers that work on this host."""
        names = sorted(self.available)
        return {"storage": " | ".join(names),
                "storage_version": " | ".join(self.available[n] for n in names)}

    # -- pools -------------------------------------------------------------------
    def check_driver(self, driver_name):
        cls = driver_class(driver_name) if isinstance(driver_name, str) else None
        if cls is None:
            raise errors.BadRequest(f"Unknown storage pool driver \"{driver_name}\" "
                                    f"(supported: {', '.join(sorted(DRIVERS))})")
        missing = cls.missing()
        if missing is not None:
            raise errors.BadRequest(f"The \"{driver_name}\" storage driver can't be used on this host: {missing}")
        return cls

    async def create(self, name, driver_name, config=None, description=""):
        cls = self.check_driver(driver_name)
        if self._store.exists(POOL, name):
            raise errors.Conflict(f"Storage pool \"{name}\" already exists")
        config = dict(config or {})
        keys.check_pool_config(cls, config, DRIVERS.values())
        config = cls(name, config, self._daemon.dir).fill_defaults(config)
        value = {"driver": driver_name, "config": config, "description": description}
        async with self._journal.begin("pool.create", name) as intent:
            await intent.will("pool", name=name, driver=driver_name, config=config)
            CREATE_RECORDED()
            try:
                await cls(name, config, self._daemon.dir).create()
            except errors.ApiError:
                raise
            except Exception as e:
                raise errors.InternalError(f"Failed to create storage pool \"{name}\": {errors.describe(e)}")
            CREATE_MADE()
            await self._store.commit([Put(POOL, name, value, expect=ABSENT), intent.done()])
        self._drivers.pop(name, None)

    async def settle(self, name, driver, config, delete=False):
        """A step of an interrupted pool create or delete (lxdtx.journal): with no row for the
        pool, its image volumes go, then the pool as `lxc storage delete` removes it (`delete`)
        or, for a create, only what the daemon made for it (a source the user named stays).
        A cluster's pool whose row is not `Created` with this member's keys (lxdtx.cluster.onall)
        counts as no row."""
        from lxdtx.cluster.onall import made_here

        doc = self._store.get(POOL, name)
        if doc is not None and made_here(self._daemon, doc.value):
            return
        cls = driver_class(driver)
        if cls is None:
            raise LookupError(f"unknown storage driver {driver}")
        self._drivers.pop(name, None)
        target = cls(name, config, self._daemon.dir)
        try:
            images = await target.image_volumes()
        except OSError:
            images = []
        for fingerprint in images:
            await target.delete_image(fingerprint)
        await (target.delete() if delete else target.abandon())

    async def update(self, name, config, description, revision=None):
        """Replace a pool's config; only the driver's changeable keys may differ."""
        doc = self.get(name)
        value = doc.value
        cls = driver_class(value["driver"])
        if not isinstance(config, dict):
            raise errors.BadRequest("config must be a map")
        from lxdtx.cluster import onall
        from lxdtx.cluster import pools as cluster_pools

        clustered = onall.clustered(self._daemon)
        if clustered:  # the shared config: a member's own keys stay as they are
            own = onall.local_config(self._daemon, value)
            for key in sorted(config):
                if key in cluster_pools.NODE_SPECIFIC and config[key] != own.get(key, ""):
                    raise errors.BadRequest(f"node-specific config key {key} can't be changed")
            config = {k: v for k, v in config.items() if k not in cluster_pools.NODE_SPECIFIC}
        # Keys the daemon filled in stay when the client leaves them out.
        merged = dict(config)
        for key in ("source", "volatile.initial_source", "size"):
            if key in value["config"] and key not in config:
                merged[key] = value["config"][key]
        keys.check_pool_config(cls, merged, DRIVERS.values())
        changed = keys.changed_keys(value["config"], merged)
        fixed = sorted(k for k in changed if k not in cls.changeable and not k.startswith("user."))
        if fixed:
            raise errors.BadRequest(
                f"The [{' '.join(fixed)}] properties cannot be changed for \"{value['driver']}\" storage pools")
        driver = self.driver(name)
        new_value = dict(value, config=merged, description=description)
        live = {k: merged.get(k, "") for k in changed if not k.startswith("user.")}
        if live:
            await driver.update(live)
        try:
            if live and clustered:  # every member's pool takes it live too
                await onall.apply_on_others(self._daemon, cluster_pools.UPDATE_LOCAL.format(name), {"config": live},
                                            {"config": {k: value["config"].get(k, "") for k in live}})
            await self._store.commit([Put(POOL, name, new_value, expect=revision or doc.revision)])
        except BaseException:
            if live:
                await driver.update({k: value["config"].get(k, "") for k in live})
            raise

    def _profiles_using(self, name):
        found = []
        for doc in self._store.list("profile"):
            for device in doc.value.get("devices", {}).values():
                if device.get("type") == "disk" and device.get("pool") == name:
                    found.append(doc.name)
                    break
        return found

    def volume_documents(self, pool, vol_type=None):
        """[(type, name, value)] of the pool's recorded volumes."""
        found = []
        for doc in self._store.list(VOLUME):
            p, t, n, _member = split_volume_key(doc.name)
            if p == pool and (vol_type is None or t == vol_type):
                found.append((t, n, doc.value))
        return found

    async def delete(self, name):
        from lxdtx.cluster import pools as cluster_pools
        from lxdtx.cluster.onall import clustered

        doc = self.get(name)
        if any(t in ("container", "custom") for t, _, _ in self.volume_documents(name)):
            raise InUse(f"storage pool \"{name}\" has volumes attached to it")
        profiles = self._profiles_using(name)
        if profiles:
            raise InUse(f"Storage pool \"{name}\" has profiles using it:\n" + "\n".join(profiles))
        if clustered(self._daemon):
            await cluster_pools.delete(self._daemon, name, doc)
            return
        # The row goes first, with the intent to remove the rest: a start after a kill
        # finishes the removal instead of mounting half a pool.
        value = doc.value
        async with self._journal.begin("pool.delete", name, finish=True) as intent:
            await self._store.commit([Delete(POOL, name, expect=doc.revision),
                                      intent.record("pool", name=name, driver=value["driver"],
                                                    config=value["config"], delete=True)])
            DELETE_COMMITTED()
            await self.settle(name, value["driver"], value["config"], delete=True)

    async def used_by(self, name):
        urls = []
        for vol_type, vol_name, _ in self.volume_documents(name):
            if vol_type == "container":
                if "/" in vol_name:
                    container, snapshot = vol_name.split("/", 1)
                    urls.append(f"/1.0/containers/{container}/snapshots/{snapshot}")
                else:
                    urls.append(f"/1.0/containers/{vol_name}")
            elif vol_type == "custom":
                urls.append(f"/1.0/storage-pools/{name}/volumes/custom/{vol_name}")
        for fingerprint in await self.image_volumes(name):
            urls.append(f"/1.0/images/{fingerprint}")
        urls += [f"/1.0/profiles/{p}" for p in self._profiles_using(name)]
        return sorted(urls)

    async def usage(self, name):
        return await self.driver(name).usage()

    # -- volumes -----------------------------------------------------------------
    def volume_member(self, pool, vol_type):
        """The member id in the document names of `pool`'s volumes of `vol_type` on this member
        (volume_key): this member's for a custom volume of a local pool in a cluster, else ""."""
        from lxdtx.cluster.onall import clustered

        if vol_type != "custom" or not clustered(self._daemon):
            return ""
        cls = driver_class((self._store.value(POOL, pool) or {}).get("driver", ""))
        return "" if cls is not None and cls.info.remote else self._daemon.cluster.member_id

    def volume(self, pool, vol_type, name):
        """The document of a volume of this member (a remote pool's: the cluster's)."""
        return self._store.get(VOLUME, volume_key(pool, vol_type, name, self.volume_member(pool, vol_type)))

    def custom_holders(self, pool, name):
        """The ids of the members that have a custom volume `name` in `pool` ("" for one of a
        remote pool, or of a lone daemon)."""
        prefix = volume_key(pool, "custom", name)
        found = []
        for doc in self._store.list(VOLUME):
            if doc.name == prefix:
                found.append(doc.value.get("location", ""))
            elif doc.name.startswith(prefix + "/"):
                found.append(doc.name[len(prefix) + 1:])
        return found

    def volume_changes(self, pool, vol_type, name, value=None, expect=None):
        """The store change that records (or, with value None, forgets) a volume."""
        key = volume_key(pool, vol_type, name, self.volume_member(pool, vol_type))
        if value is None:
            return Delete(VOLUME, key, expect=expect)
        if vol_type == "custom":  # in a cluster, the member whose pool has it (lxdtx.cluster.peers)
            from lxdtx.instance.model import here

            value = dict(value, location=here(self._daemon))
        return Put(VOLUME, key, value, expect=expect)

    async def image_volumes(self, pool):
        try:
            return await self.driver(pool).image_volumes()
        except OSError:
            return []

    async def delete_image_volume(self, pool, fingerprint):
        """`DELETE .../volumes/image/<fp>`: drop a pool's copy of an image."""
        driver = self.driver(pool)
        if fingerprint not in await driver.image_volumes():
            raise errors.NotFound(f"Storage volume \"{fingerprint}\" of type image not found in pool \"{pool}\"")
        await driver.delete_image(fingerprint)

    async def image_deleted(self, fingerprint):
        for name in self.names():
            try:
                await self.driver(name).forget_image(fingerprint)
            except Exception:
                self.log.failure("Could not drop image {fp} from pool {pool}", fp=fingerprint, pool=name)

    async def apply_root_size(self, pool, name, size):
        """Carry a root disk `size` to the container's volume where the driver has quotas."""
        driver = self.driver(pool)
        if not driver.info.quotas:
            return
        await driver.set_quota("container", name, size or "")

    async def transfer(self, source_pool, vol_type, name, target_pool, new_name, config=None):
        """Copy one volume into a pool (maybe the same one): the driver's fast path when the
        pool is shared, rsync otherwise. Leaves nothing behind on failure."""
        source = self.driver(source_pool)
        target = self.driver(target_pool)
        if source_pool == target_pool and source.info.fast_copies:
            await target.copy_volume(vol_type, name, new_name, config)
            return
        async with Reverter() as revert:
            await target.create_volume(vol_type, new_name, config or {})
            revert.add(target.delete_volume, vol_type, new_name)
            await source.mount_volume(vol_type, name)
            await target.mount_volume(vol_type, new_name)
            await target.rsync_from(source, vol_type, name, new_name)
            revert.success()

    async def copy_container(self, source_pool, name, target_pool, new_name, snapshots=(), config=None):
        """Copy a container volume and the named snapshots (oldest first) to `new_name`.

        Within a pool with fast copies each one is a snapshot of its source; across
        pools the target is filled from each snapshot in turn and snapshotted, then
        from the container itself (the way LXD moves containers between pools).
        """
        source = self.driver(source_pool)
        target = self.driver(target_pool)
        async with Reverter() as revert:
            if source_pool == target_pool and source.info.fast_copies and (
                    source.info.copies_snapshots or not snapshots):
                for snapshot in snapshots:
                    await target.copy_volume("container", f"{name}/{snapshot}", f"{new_name}/{snapshot}")
                    revert.add(target.delete_volume, "container", f"{new_name}/{snapshot}")
                await target.copy_volume("container", name, new_name, config)
                revert.add(target.delete_volume, "container", new_name)
            else:
                await target.create_volume("container", new_name, config or {})
                revert.add(target.delete_volume, "container", new_name)
                await target.mount_volume("container", new_name)
                for snapshot in snapshots:
                    await target.rsync_from(source, "container", f"{name}/{snapshot}", new_name)
                    await target.create_snapshot(new_name, snapshot)
                    revert.add(target.delete_volume, "container", f"{new_name}/{snapshot}")
                await source.mount_volume("container", name)
                await target.rsync_from(source, "container", name, new_name)
            revert.success()
