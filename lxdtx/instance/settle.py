# -*- test-case-name: tests.integration.test_crash_recovery -*-
"""Bring the host in line with the store for one container: the steps of interrupted changes.

Every container change that touches more than the store records one of these
steps in its intent (`lxdtx.journal`) before it starts. They look at what the
store says now, not at how far the change got, so each is right whether the
change never began, half ran, or ran to the end, and running one twice is
harmless:

- `container(name, pool)`: volumes of `name` on `pool` that no row owns go (the
  container's, when its row is missing, lives on another pool or on another cluster
  member; snapshots without their row); the paths of a container without a row here
  go; those of one with a row point at its volume.
- `rename(name, new_name, pool)` (containers or snapshots): a volume renamed
  before the rename was committed is renamed back; then both names are settled.
- `state(name, pool)`: a container's saved CRIU state (`lxc stop --stateful`) stays
  only while its row says `stateful` and it is stopped; a dump the row never took, or
  one restored already (the row then stops saying `stateful`), goes.
- `restore(name, snapshot)`: the snapshot's files are copied over the container's
  again and its config committed (a half-copied rootfs is never left).

The DHCP host entries need no step: the networks rebuild them from the rows
when they come up, after recovery.
"""

import os
import shutil

from twisted.internet import threads

from lxdtx.instance import model
from lxdtx.state import Put


def settle_steps(instances):
    """{journal step kind: its handler} of the containers' changes, registered by the daemon."""
    return {
        "container": lambda name, pool: container(instances, name, pool),
        "rename": lambda name, new_name, pool: rename(instances, name, new_name, pool),
        "restore": lambda name, snapshot: restore(instances, name, snapshot),
        "state": lambda name, pool: state(instances, name, pool),
    }


async def state(instances, name, pool):
    doc = instances.store.get(model.KIND, name)
    if doc is not None and doc.value.get("stateful"):
        if instances.records.status(name) == "Stopped":
            return  # still to be restored
        doc.value["stateful"] = False  # restored already: the row is told
        doc.value["config"]["volatile.last_state.power"] = "RUNNING"
        await instances.store.commit([Put(model.KIND, name, doc.value, expect=doc.revision)])
    if instances.store.exists("pool", pool):
        path = instances.state_dir(name, pool)
        await threads.deferToThread(shutil.rmtree, path, True)


async def container(instances, name, pool):
    store = instances.store
    pools = instances.daemon.pools
    if store.exists("pool", pool):
        driver = pools.driver(pool)
        doc = store.get(model.KIND, name)
        owned = doc is not None and doc.value.get("pool") == pool and model.is_local(instances.daemon, doc.value)
        for snapshot in await threads.deferToThread(driver.names_on_disk, "container", name):
            full = f"{name}/{snapshot}"
            if not (owned and store.exists(model.SNAPSHOT_KIND, full)):
                await driver.delete_volume("container", full)
        if not owned:
            await driver.delete_volume("container", name)
    doc = store.get(model.KIND, name)
    if doc is None or not model.is_local(instances.daemon, doc.value):  # gone, or on another member
        await instances.remove_links(name)
        await instances.backups.delete_all(name)
        instances.runtime.forget(name)
        return
    own = pools.driver(doc.value["pool"])
    path = own.mount_path("container", name)
    if await threads.deferToThread(os.path.isdir, path):
        await threads.deferToThread(instances.make_links, name, path)


async def rename(instances, name, new_name, pool):
    """`name`, `new_name`: of two containers, or of two snapshots (`c/s`) of one."""
    store = instances.store
    kind = model.SNAPSHOT_KIND if "/" in name else model.KIND
    if store.exists("pool", pool) and store.exists(kind, name) and not store.exists(kind, new_name):
        driver = instances.daemon.pools.driver(pool)
        old_path, new_path = driver.mount_path("container", name), driver.mount_path("container", new_name)
        if await threads.deferToThread(_moved, old_path, new_path):
            await driver.rename_volume("container", new_name, name)
    for container_name in dict.fromkeys((name.split("/")[0], new_name.split("/")[0])):
        await container(instances, container_name, pool)


def _moved(old_path, new_path):
    return os.path.isdir(new_path) and not os.path.lexists(old_path)


async def restore(instances, name, snapshot):
    store = instances.store
    doc = store.get(model.KIND, name)
    snap = store.get(model.SNAPSHOT_KIND, f"{name}/{snapshot}")
    if doc is None or snap is None:
        return  # deleted since: nothing left to restore into, or from
    await instances.daemon.pools.driver(doc.value["pool"]).restore_snapshot(name, snapshot)
    value = instances.snapshots.restored_value(doc.value, snap.value)
    await store.commit([Put(model.KIND, name, value, expect=doc.revision)])
