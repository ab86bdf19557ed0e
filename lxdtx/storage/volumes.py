# -*- test-case-name: tests.integration.test_storage -*-
"""Custom volumes: create, update, rename, copy, move, delete, and their users.

A custom volume is used by the containers and profiles that have a `disk`
device with `pool=<pool>` and `source=<volume>`. Its files are owned for the id
map of the last container that used it (`volatile.idmap.last`); attaching it to
a container with another map re-owns them first.
"""

import os

from twisted.internet import threads

from lxdtx import errors, faults
from lxdtx.instance import idmap as idmaps
from lxdtx.state import ABSENT, Put
from lxdtx.storage import keys
from lxdtx.storage.errors import InUse
from lxdtx.storage.load import DRIVERS, driver_class

_NO_MAP = "[]"

CREATE_RECORDED = faults.point("volume.create.recorded")
CREATE_MADE = faults.point("volume.create.made")
DELETE_COMMITTED = faults.point("volume.delete.committed")
RENAME_MOVED = faults.point("volume.rename.moved")
COPY_MADE = faults.point("volume.copy.made")


def check_volume_name(name):
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("No name provided")
    if "/" in name or name in (".", ".."):
        raise errors.BadRequest(f"Invalid storage volume name \"{name}\"")


def render(pool, vol_type, name, value, used_by, location="none"):
    """`location`: the name of the cluster member that has the volume ("none": not clustered)."""
    return {"name": name, "type": vol_type, "description": value.get("description", ""),
            "config": value.get("config", {}), "used_by": used_by, "location": location}


def _uses(device, pool, name):
    return (device.get("type") == "disk" and device.get("path") != "/" and device.get("pool") == pool
            and device.get("source") == name)


class CustomVolumes:
    """The custom volumes of every pool."""

    def __init__(self, pools, daemon):
        self._pools = pools
        self._daemon = daemon
        self._journal = daemon.journal
        self._journal.handle("volume", self.settle)
        self._journal.handle("volume-rename", self._settle_rename)

    @property
    def _store(self):
        return self._pools.store

    def get(self, pool, name):
        self._pools.get(pool)
        doc = self._pools.volume(pool, "custom", name)
        if doc is None:
            raise errors.NotFound(f"Storage volume \"{name}\" of type custom not found in pool \"{pool}\"")
        return doc

    # -- users -------------------------------------------------------------------
    def users(self, pool, name):
        """(container names, profile names) using the volume. In a cluster, containers of this
        member only when the volume is one member's (another's of its name is theirs)."""
        from lxdtx.instance.model import is_local

        containers = []
        instances = self._daemon.instances
        own = bool(self._pools.volume_member(pool, "custom"))
        for doc in self._store.list("container"):
            if own and not is_local(self._daemon, doc.value):
                continue
            _, devices = instances.records.expanded(doc.value)
            if any(_uses(d, pool, name) for d in devices.values()):
                containers.append(doc.name)
        profiles = [doc.name for doc in self._store.list("profile")
                    if any(_uses(d, pool, name) for d in doc.value.get("devices", {}).values())]
        return containers, profiles

    def used_by(self, pool, name):
        containers, profiles = self.users(pool, name)
        return [f"/1.0/containers/{c}" for c in containers] + [f"/1.0/profiles/{p}" for p in profiles]

    def _running_users(self, pool, name):
        containers, _ = self.users(pool, name)
        return [c for c in containers if self._daemon.instances.records.status(c) != "Stopped"]

    # -- steps of interrupted changes (lxdtx.journal) ------------------------------
    async def settle(self, pool, name):
        """The custom volume `name` of `pool` stays if its row does, else it goes."""
        if self._store.exists("pool", pool) and self._pools.volume(pool, "custom", name) is None:
            await self._pools.driver(pool).delete_volume("custom", name)

    async def _settle_rename(self, pool, name, new_name):
        """A volume renamed but not committed as renamed is renamed back."""
        if not self._store.exists("pool", pool):
            return
        driver = self._pools.driver(pool)
        if self._pools.volume(pool, "custom", name) is not None and self._pools.volume(pool, "custom", new_name) is None:
            old_path, new_path = driver.mount_path("custom", name), driver.mount_path("custom", new_name)
            if await threads.deferToThread(lambda: os.path.lexists(new_path) and not os.path.lexists(old_path)):
                await driver.rename_volume("custom", new_name, name)
        await self.settle(pool, new_name)

    # -- create / update / delete ------------------------------------------------
    def _check_config(self, pool, config):
        cls = driver_class(self._pools.get(pool).value["driver"])
        keys.check_volume_config(cls, config, DRIVERS.values())

    def check_new(self, pool, name, config):
        """400 for a bad name or config, 409 if the pool has a custom volume `name` already."""
        check_volume_name(name)
        self._check_config(pool, config)
        if self._pools.volume(pool, "custom", name) is not None:
            raise errors.Conflict(f"Storage volume \"{name}\" of type custom already exists in pool \"{pool}\"")

    async def create(self, pool, name, config=None, description=""):
        config = dict(config or {})
        self.check_new(pool, name, config)
        driver = self._pools.driver(pool)
        value = {"config": config, "description": description or ""}
        async with self._journal.begin("volume.create", f"{pool}/{name}") as intent:
            await intent.will("volume", pool=pool, name=name)
            CREATE_RECORDED()
            await driver.create_volume("custom", name, config)
            CREATE_MADE()
            await self._store.commit([self._pools.volume_changes(pool, "custom", name, value, expect=ABSENT),
                                      intent.done()])

    async def update(self, pool, name, config, description, revision=None):
        doc = self.get(pool, name)
        if not isinstance(config, dict):
            raise errors.BadRequest("config must be a map")
        config = dict(config)
        for key, item in doc.value.get("config", {}).items():
            if key.startswith("volatile.") and key not in config:
                config[key] = item
        self._check_config(pool, config)
        changed = {k: config.get(k, "") for k in keys.changed_keys(doc.value.get("config", {}), config)
                   if not k.startswith(("user.", "volatile."))}
        driver = self._pools.driver(pool)
        if changed:
            await driver.update_volume("custom", name, changed)
        value = dict(doc.value, config=config, description=description or "")
        await self._store.commit([self._pools.volume_changes(pool, "custom", name, value,
                                                             expect=revision or doc.revision)])

    async def delete(self, pool, name):
        doc = self.get(pool, name)
        if any(self.users(pool, name)):
            raise InUse("The storage volume is still in use")
        await self._delete(pool, name, doc.revision)

    async def _delete(self, pool, name, revision, changes=()):
        """The row goes (with `changes`) and the intent to remove the volume comes, then it goes."""
        async with self._journal.begin("volume.delete", f"{pool}/{name}", finish=True) as intent:
            await self._store.commit([self._pools.volume_changes(pool, "custom", name, expect=revision), *changes,
                                      intent.record("volume", pool=pool, name=name)])
            DELETE_COMMITTED()
            await self._pools.driver(pool).delete_volume("custom", name)

    # -- rename / copy / move ----------------------------------------------------
    def _user_changes(self, pool, name, new_pool, new_name):
        """Store changes pointing every user's disk devices at the volume's new place."""
        changes = []
        for kind in ("container", "profile"):
            for doc in self._store.list(kind):
                devices = doc.value.get("devices", {})
                hits = [d for d in devices if _uses(devices[d], pool, name)]
                if not hits:
                    continue
                devices = {d: dict(c) for d, c in devices.items()}
                for d in hits:
                    devices[d].update(pool=new_pool, source=new_name)
                changes.append(Put(kind, doc.name, dict(doc.value, devices=devices), expect=doc.revision))
        return changes

    async def rename(self, pool, name, new_name):
        check_volume_name(new_name)
        doc = self.get(pool, name)
        if self._pools.volume(pool, "custom", new_name) is not None:
            raise errors.Conflict(f"Storage volume \"{new_name}\" of type custom already exists in pool \"{pool}\"")
        if self._running_users(pool, name):
            raise InUse("Volume is still in use by running containers")
        driver = self._pools.driver(pool)
        async with self._journal.begin("volume.rename", f"{pool}/{name}") as intent:
            await intent.will("volume-rename", pool=pool, name=name, new_name=new_name)
            await driver.rename_volume("custom", name, new_name)
            RENAME_MOVED()
            await self._store.commit([
                self._pools.volume_changes(pool, "custom", name, expect=doc.revision),
                self._pools.volume_changes(pool, "custom", new_name, doc.value, expect=ABSENT),
                *self._user_changes(pool, name, pool, new_name),
                intent.done(),
            ])

    async def copy(self, source_pool, source_name, pool, name, config=None, description=None):
        """A new custom volume `pool/name` with the content (and config) of another."""
        check_volume_name(name)
        source = self.get(source_pool, source_name)
        if self._pools.volume(pool, "custom", name) is not None:
            raise errors.Conflict(f"Storage volume \"{name}\" of type custom already exists in pool \"{pool}\"")
        target_cls = driver_class(self._pools.get(pool).value["driver"])
        merged = dict(source.value.get("config", {}))
        merged.update(config or {})
        # Keys the target driver does not know are dropped, as a copy between drivers converts.
        accepted = {**target_cls.volume_keys}
        merged = {k: v for k, v in merged.items()
                  if k.startswith(("user.", "volatile.")) or k in accepted}
        self._check_config(pool, merged)
        value = {"config": merged,
                 "description": source.value.get("description", "") if description is None else description}
        async with self._journal.begin("volume.copy", f"{pool}/{name}") as intent:
            await intent.will("volume", pool=pool, name=name)
            await self._pools.transfer(source_pool, "custom", source_name, pool, name, merged)
            COPY_MADE()
            await self._store.commit([self._pools.volume_changes(pool, "custom", name, value, expect=ABSENT),
                                      intent.done()])

    async def move(self, source_pool, source_name, pool, name):
        """Copy to another pool, repoint the users, then drop the original."""
        if pool == source_pool:
            return await self.rename(source_pool, source_name, name)
        doc = self.get(source_pool, source_name)
        if self._running_users(source_pool, source_name):
            raise InUse("Volume is still in use by running containers")
        await self.copy(source_pool, source_name, pool, name)
        try:
            await self._delete(source_pool, source_name, doc.revision,
                               self._user_changes(source_pool, source_name, pool, name))
        except BaseException:
            if self._pools.volume(source_pool, "custom", source_name) is not None:
                target = self.get(pool, name)  # the original stays: the copy goes
                await self._delete(pool, name, target.revision)
            raise

    # -- id maps -------------------------------------------------------------------
    async def prepare(self, pool, name, idmap):
        """Own the volume's files for `idmap` (None: privileged) before a container mounts it."""
        doc = self._pools.volume(pool, "custom", name)
        if doc is None:
            return
        driver = self._pools.driver(pool)
        await driver.mount_volume("custom", name)
        wanted = idmap.to_json() if idmap is not None else _NO_MAP
        last = doc.value.get("config", {}).get("volatile.idmap.last") or _NO_MAP
        if last == wanted:
            return
        old = idmaps.IdMap.from_json(last) if last != _NO_MAP else None
        await threads.deferToThread(idmaps.shift_tree, driver.mount_path("custom", name), old, idmap)
        config = dict(doc.value.get("config", {}))
        config["volatile.idmap.last"] = wanted
        config["volatile.idmap.next"] = wanted
        await self._store.commit([self._pools.volume_changes(pool, "custom", name,
                                                             dict(doc.value, config=config),
                                                             expect=doc.revision)])
