# -*- test-case-name: tests.integration.test_storage -*-
"""Container snapshots: create, list, get, rename, delete, restore.

A snapshot is a document of kind `snapshot` named `<container>/<snapshot>`
holding the container's document as it was (config, devices, profiles, and
`created_at` = the snapshot's time), plus a container volume of the same name
in the container's pool. Its files keep the ownership the container had, which
its `volatile.last_state.idmap` records, so a restore or a copy carries that
map along and the next start shifts only if needed.
"""

import copy
import os
import re

from lxdtx import errors, faults, timeutil
from lxdtx.device import disk
from lxdtx.instance import checkpoint, model, settle
from lxdtx.state import ABSENT, Delete, Put

KIND = model.SNAPSHOT_KIND
_AUTO = re.compile(r"snap(\d+)")

CREATE_RECORDED = faults.point("snapshot.create.recorded")
CREATE_COPIED = faults.point("snapshot.create.copied")
DELETE_COMMITTED = faults.point("snapshot.delete.committed")
RENAME_RECORDED = faults.point("snapshot.rename.recorded")
RENAME_MOVED = faults.point("snapshot.rename.moved")
RESTORE_RECORDED = faults.point("snapshot.restore.recorded")
RESTORE_COPIED = faults.point("snapshot.restore.copied")


class Snapshots:
    """The snapshots of every container of one daemon."""

    def __init__(self, instances):
        self.instances = instances

    @property
    def store(self):
        return self.instances.store

    @property
    def pools(self):
        return self.instances.daemon.pools

    @property
    def journal(self):
        return self.instances.daemon.journal

    # -- reading -------------------------------------------------------------------
    def documents(self, container):
        """The container's snapshot documents, oldest first."""
        prefix = container + "/"
        docs = [d for d in self.store.list(KIND) if d.name.startswith(prefix)]
        return sorted(docs, key=lambda d: (d.value.get("created_at", ""), d.name))

    def names(self, container):
        return [d.name.split("/", 1)[1] for d in self.documents(container)]

    def dirs(self, container):
        """[(snapshot name, directory)], oldest first."""
        doc = self.instances.records.get(container)
        driver = self.pools.driver(doc.value["pool"])
        return [(d.name.split("/", 1)[1], driver.mount_path("container", d.name)) for d in self.documents(container)]

    def get(self, container, snapshot):
        doc = self.store.get(KIND, f"{container}/{snapshot}")
        if doc is None:
            raise errors.NotFound()
        return doc

    def render(self, name, value):
        config, devices = self.instances.records.expanded(value)
        return model.render_snapshot(name, value, config, devices)

    def list(self, container, recursion):
        self.instances.records.get(container)
        docs = self.documents(container)
        if recursion:
            return [self.render(d.name, d.value) for d in docs]
        return [f"/1.0/containers/{container}/snapshots/{d.name.split('/', 1)[1]}" for d in docs]

    def next_name(self, container):
        """`snap<N>`, N one more than the highest in use (0 for the first)."""
        numbers = [int(m.group(1)) for m in (_AUTO.fullmatch(n) for n in self.names(container)) if m]
        return f"snap{max(numbers) + 1 if numbers else 0}"

    def check_new(self, container, snapshot):
        model.check_snapshot_name(snapshot)
        if self.store.exists(KIND, f"{container}/{snapshot}"):
            raise errors.Conflict(f"Snapshot '{snapshot}' already exists")

    # -- changes ---------------------------------------------------------------------
    async def check_stateful(self, container):
        """Refuse, naming why, a stateful snapshot of `container` that CRIU can't take."""
        instances = self.instances
        if instances.records.status(container) == "Stopped":
            raise errors.BadRequest("Unable to create a stateful snapshot. The container isn't running")
        reason = await instances.checkpoint_problem(container, instances.records.get(container).value)
        if reason is not None:
            raise errors.BadRequest(f"Unable to create a stateful snapshot. {reason}")

    async def create(self, container, snapshot, stateful=False):
        """A snapshot of the container's files; `stateful`: with a CRIU dump of its running
        processes (taken first, leaving them running), kept in the snapshot's `state`."""
        instances = self.instances
        async with instances.locks.hold(container, "snapshot"):
            if stateful:
                await self.check_stateful(container)
            doc = instances.records.get(container)
            snapshot = snapshot or self.next_name(container)
            self.check_new(container, snapshot)
            pool = doc.value["pool"]
            driver = self.pools.driver(pool)
            full = f"{container}/{snapshot}"
            value = copy.deepcopy(doc.value)
            value["created_at"] = timeutil.now()
            value["stateful"] = stateful
            async with self.journal.begin("snapshot.create", full) as intent:
                await intent.will("container", name=container, pool=pool)
                if stateful:  # the dump goes beside the rootfs, into the snapshot with it, then away
                    await intent.will("state", name=container, pool=pool)
                CREATE_RECORDED()
                await driver.mount_volume("container", container)
                if stateful:
                    await instances.dump(container, instances.state_dir(container, pool), stop=False)
                await driver.create_snapshot(container, snapshot)
                if stateful:
                    await settle.state(instances, container, pool)
                CREATE_COPIED()
                await self.store.commit([
                    Put(KIND, full, value, expect=ABSENT),
                    self.pools.volume_changes(pool, "container", full, {"config": {}, "description": ""},
                                              expect=ABSENT),
                    intent.done(),
                ])
        instances.events.lifecycle("container-snapshot-created", f"/1.0/containers/{container}",
                                   {"snapshot_name": full})
        return snapshot

    async def import_all(self, container, pool, stage, names, documents, revert, received=False):
        """Volumes for a backup's snapshots (`stage/snapshots/<name>`); returns their store changes.

        Each volume made is registered with the caller's `revert`; the caller
        commits the changes together with the container's.
        """
        driver = self.pools.driver(pool)
        by_name = {d.get("name"): d for d in documents if isinstance(d, dict)}
        changes = []
        for snapshot in names:
            model.check_snapshot_name(snapshot)
            full = f"{container}/{snapshot}"
            await driver.import_volume("container", full, os.path.join(stage, "snapshots", snapshot), received)
            revert.add(driver.delete_volume, "container", full)
            value = {k: v for k, v in (by_name.get(snapshot) or {}).items() if k != "name"}
            value.setdefault("created_at", timeutil.now())
            value["pool"] = pool
            changes += [Put(KIND, full, value, expect=ABSENT),
                        self.pools.volume_changes(pool, "container", full, {"config": {}, "description": ""},
                                                  expect=ABSENT)]
        return changes

    async def delete(self, container, snapshot):
        instances = self.instances
        async with instances.locks.hold(container, "snapshot-delete"):
            doc = instances.records.get(container)
            snap = self.get(container, snapshot)
            await self._delete(doc.value["pool"], snap)
        instances.events.lifecycle("container-snapshot-deleted", f"/1.0/containers/{container}",
                                   {"snapshot_name": snap.name})

    async def _delete(self, pool, snap):
        # The rows go first, with the intent to remove the volume they owned.
        async with self.journal.begin("snapshot.delete", snap.name, finish=True) as intent:
            await self.store.commit([Delete(KIND, snap.name, expect=snap.revision),
                                     self.pools.volume_changes(pool, "container", snap.name),
                                     intent.record("container", name=snap.name.split("/", 1)[0], pool=pool)])
            DELETE_COMMITTED()
            await self.pools.driver(pool).delete_volume("container", snap.name)

    async def rename(self, container, snapshot, new_name):
        instances = self.instances
        async with instances.locks.hold(container, "snapshot-rename"):
            doc = instances.records.get(container)
            snap = self.get(container, snapshot)
            self.check_new(container, new_name)
            pool = doc.value["pool"]
            driver = self.pools.driver(pool)
            old_full, new_full = snap.name, f"{container}/{new_name}"
            async with self.journal.begin("snapshot.rename", old_full) as intent:
                await intent.will("rename", name=old_full, new_name=new_full, pool=pool)
                RENAME_RECORDED()
                await driver.rename_volume("container", old_full, new_full)
                RENAME_MOVED()
                volume = self.pools.volume(pool, "container", old_full)
                await self.store.commit([
                    Delete(KIND, old_full, expect=snap.revision),
                    Put(KIND, new_full, snap.value, expect=ABSENT),
                    self.pools.volume_changes(pool, "container", old_full),
                    self.pools.volume_changes(pool, "container", new_full,
                                              volume.value if volume else {"config": {}, "description": ""}),
                    intent.done(),
                ])
        instances.events.lifecycle("container-snapshot-renamed", f"/1.0/containers/{container}",
                                   {"new_name": new_name, "snapshot_name": old_full})

    async def restore(self, container, snapshot, stateful=False):
        """Put the container back to the snapshot: files, config, devices, profiles.

        A running container is stopped first and started again after. Drivers that
        can only go back to the latest snapshot (zfs) drop the later ones when the
        pool allows it (`volume.zfs.remove_snapshots`), else refuse.
        """
        instances = self.instances
        snapshot = snapshot.split("/")[-1]
        async with instances.locks.hold(container, "restore"):
            doc = instances.records.get(container)
            snap = self.get(container, snapshot)
            if stateful and not snap.value.get("stateful"):
                raise errors.BadRequest(f"Snapshot '{snapshot}' is not stateful")
            if stateful:
                reason = await instances.criu.problem() or checkpoint.problem_with(
                    *instances.records.expanded(self.restored_value(doc.value, snap.value)))
                if reason is not None:
                    raise errors.BadRequest(f"Unable to restore the snapshot statefully. {reason}")
            await instances.file_agents.stopped(container)
            pool = doc.value["pool"]
            driver = self.pools.driver(pool)
            later = self._later(container, snap.name)
            if later and driver.info.restore_latest_only:
                if not driver.may_remove_snapshots():
                    raise errors.BadRequest(
                        f"Snapshot '{snapshot}' cannot be restored due to subsequent snapshot(s). "
                        "Set zfs.remove_snapshots to override")
                for doc_later in later:
                    await self._delete(pool, doc_later)
            was_running = instances.records.status(container) != "Stopped"
            if was_running:
                await instances.stop_locked(container, -1, True)
            # Once begun a restore is finished, at the next start if need be: a rootfs
            # half way between the container and the snapshot is no state to leave.
            async with self.journal.begin("snapshot.restore", snap.name, finish=True) as intent:
                await intent.will("restore", name=container, snapshot=snapshot)
                RESTORE_RECORDED()
                await settle.restore(instances, container, snapshot)
                RESTORE_COPIED()
            value = instances.records.get(container).value
            _config, devices = instances.records.expanded(value)
            _, root = disk.root_device(devices)
            if root and root.get("size"):
                await self.pools.apply_root_size(pool, container, root["size"])
            state = instances.state_dir(container, pool)
            if stateful:  # its processes, from the dump the files brought back
                try:
                    await instances.restore_from(container, value, state)
                finally:
                    await settle.state(instances, container, pool)
                doc = instances.records.get(container)
                doc.value["config"]["volatile.last_state.power"] = "RUNNING"
                await instances.save(container, doc.value, doc.revision)
                instances.events.lifecycle("container-started", f"/1.0/containers/{container}")
            else:
                await settle.state(instances, container, pool)  # a stateful snapshot's dump, unused
                if was_running:
                    await instances.start_locked(container)
        instances.events.lifecycle("container-snapshot-restored", f"/1.0/containers/{container}",
                                   {"snapshot_name": snap.name})

    def _later(self, container, full):
        docs = self.documents(container)
        names = [d.name for d in docs]
        return docs[names.index(full) + 1:] if full in names else []

    @staticmethod
    def restored_value(current, snapshot):
        value = dict(current)
        for key in ("architecture", "devices", "profiles", "ephemeral", "description"):
            if key in snapshot:
                value[key] = copy.deepcopy(snapshot[key])
        config = dict(snapshot.get("config", {}))
        # The files now carry the snapshot's ownership; the power state is the container's.
        config["volatile.last_state.idmap"] = snapshot.get("config", {}).get("volatile.last_state.idmap", "[]")
        if "volatile.last_state.power" in current.get("config", {}):
            config["volatile.last_state.power"] = current["config"]["volatile.last_state.power"]
        value["config"] = config
        value["stateful"] = False  # a dump of the container's own would not match these files
        return value

    def rename_changes(self, container, new_name, pool):
        """Store changes following a container rename (volumes were renamed with the container)."""
        changes = []
        for snap in self.documents(container):
            new_full = f"{new_name}/{snap.name.split('/', 1)[1]}"
            volume = self.pools.volume(pool, "container", snap.name)
            changes += [Delete(KIND, snap.name, expect=snap.revision), Put(KIND, new_full, snap.value, expect=ABSENT),
                        self.pools.volume_changes(pool, "container", snap.name),
                        self.pools.volume_changes(pool, "container", new_full,
                                                  volume.value if volume else {"config": {}, "description": ""})]
        return changes
