# -*- test-case-name: tests.integration.test_storage -*-
"""Copies of containers on one host (`source.type: copy`) and moves between storage pools
(the requests for them: lxdtx.resources.copies).

The target pool is the one of the new container's root disk. Within one pool
whose driver copies fast (btrfs) every volume is a snapshot of its source;
otherwise rsync fills the target, snapshots oldest first, then the container.
The copied files keep the source's ownership: `volatile.last_state.idmap` of the
copy says which, so its first start shifts only if its own map differs.
"""

import copy

from lxdtx import errors, faults
from lxdtx.device import disk
from lxdtx.instance import devices as devices_rt
from lxdtx.instance import model, settle
from lxdtx.state import ABSENT, Delete, Put

# Volatile keys that travel with a copy: the image it came from and the ownership on disk.
_KEPT_VOLATILE = ("volatile.base_image", "volatile.last_state.idmap")

COPY_RECORDED = faults.point("container.copy.recorded")
COPY_VOLUMES = faults.point("container.copy.volumes")
COPY_LINKED = faults.point("container.copy.linked")
MOVE_RECORDED = faults.point("container.move.recorded")
MOVE_VOLUMES = faults.point("container.move.volumes")
MOVE_COMMITTED = faults.point("container.move.committed")


def merged_config(request_config, source_config):
    """The source's config under the request's, source volatile keys dropped but a few."""
    config = dict(request_config)
    for key, value in source_config.items():
        if key.startswith("volatile.") and key not in _KEPT_VOLATILE:
            continue
        config.setdefault(key, value)
    return config


async def copy_container(instances, name, parent, snapshot, params, container_only):
    """Create container `name` from container `parent` (or its snapshot), under both locks."""
    pools = instances.daemon.pools
    async with instances.locks.hold(parent, "copy"), instances.locks.hold(name, "create"):
        root = await instances.validate_new(config=params["config"], devices=params["devices"],
                                      profiles=params["profiles"])
        pool = root["pool"]
        source_doc = instances.records.get(parent)
        source_pool = source_doc.value["pool"]
        if snapshot:
            source_value = instances.snapshots.get(parent, snapshot).value
            volume = f"{parent}/{snapshot}"
            snapshot_docs = []
        else:
            source_value = source_doc.value
            volume = parent
            snapshot_docs = [] if container_only else instances.snapshots.documents(parent)
        snapshot_names = [d.name.split("/", 1)[1] for d in snapshot_docs]
        size = root.get("size") or ""
        config = dict(params["config"])
        config["volatile.last_state.idmap"] = source_value.get("config", {}).get("volatile.last_state.idmap", "[]")
        config.pop("volatile.idmap.next", None)
        config["volatile.apply_template"] = "copy"
        value = model.new_document(architecture=params["architecture"], config=config, devices=params["devices"],
                                   profiles=params["profiles"], ephemeral=params["ephemeral"],
                                   description=params["description"], pool=pool,
                                   location=model.here(instances.daemon))
        _, expanded_devices = instances.records.expanded(value)
        for key, item in devices_rt.fill_volatile(config, expanded_devices).items():
            config.setdefault(key, item)
        driver = pools.driver(pool)
        await instances.check_volume_free(pool, name)
        async with instances.daemon.journal.begin("container.copy", name) as intent:
            await intent.will("container", name=name, pool=pool)
            COPY_RECORDED()
            await pools.copy_container(source_pool, volume, pool, name, snapshot_names,
                                       {"size": size} if size else None)
            COPY_VOLUMES()
            await link_volume(instances, name, driver)
            COPY_LINKED()
            changes = [Put(model.KIND, name, value, expect=ABSENT),
                       pools.volume_changes(pool, "container", name, {"config": {}, "description": ""},
                                            expect=ABSENT)]
            for doc, snap in zip(snapshot_docs, snapshot_names, strict=False):
                full = f"{name}/{snap}"
                changes += [Put(model.SNAPSHOT_KIND, full, copy.deepcopy(doc.value), expect=ABSENT),
                            pools.volume_changes(pool, "container", full, {"config": {}, "description": ""},
                                                 expect=ABSENT)]
            await instances.store.commit(changes + [intent.done()])
    instances.events.lifecycle("container-created", f"/1.0/containers/{name}")


async def link_volume(instances, name, driver):
    """The container's links to its mounted volume (in a thread)."""
    from twisted.internet import threads

    await threads.deferToThread(instances.make_links, name, driver.mount_path("container", name))


async def move_to_pool(instances, name, new_name, pool, container_only):
    """Move a stopped container (and its snapshots) to another pool, maybe renaming it."""
    pools = instances.daemon.pools
    async with instances.locks.hold(name, "move"):
        doc = instances.records.get(name)
        if instances.records.status(name) != "Stopped":
            raise errors.BadRequest("The container must be stopped to move it to another storage pool")
        value = copy.deepcopy(doc.value)
        old_pool = value["pool"]
        _, expanded_devices = instances.records.expanded(value)
        root_name, root = disk.root_device(expanded_devices)
        value["devices"][root_name or "root"] = dict(root or {"type": "disk", "path": "/"}, pool=pool)
        await instances.validate_new(config=value["config"], devices=value["devices"], profiles=value["profiles"])
        value["pool"] = pool
        if new_name != name:
            value["config"]["volatile.apply_template"] = "rename"
        snapshot_docs = instances.snapshots.documents(name)
        kept = [] if container_only else snapshot_docs
        kept_names = [d.name.split("/", 1)[1] for d in kept]
        size = (root or {}).get("size") or ""
        journal = instances.daemon.journal
        # Until the commit the copy on the new pool is the one to drop; with it, the old pool's.
        await instances.check_volume_free(pool, new_name)
        async with journal.begin("container.move", new_name) as intent:
            await intent.will("container", name=new_name, pool=pool)
            MOVE_RECORDED()
            await pools.copy_container(old_pool, name, pool, new_name, kept_names, {"size": size} if size else None)
            MOVE_VOLUMES()
            changes = [pools.volume_changes(old_pool, "container", name)]
            if new_name != name:
                changes += [Delete(model.KIND, name, expect=doc.revision), Put(model.KIND, new_name, value,
                                                                                 expect=ABSENT)]
            else:
                changes.append(Put(model.KIND, name, value, expect=doc.revision))
            changes.append(pools.volume_changes(pool, "container", new_name, {"config": {}, "description": ""}))
            for snap in snapshot_docs:
                short = snap.name.split("/", 1)[1]
                changes += [Delete(model.SNAPSHOT_KIND, snap.name, expect=snap.revision),
                            pools.volume_changes(old_pool, "container", snap.name)]
                if snap in kept:
                    full = f"{new_name}/{short}"
                    snap_value = dict(snap.value, pool=pool)
                    changes += [Put(model.SNAPSHOT_KIND, full, snap_value),
                                pools.volume_changes(pool, "container", full, {"config": {}, "description": ""})]
            cleanup = journal.begin("container.move", name, finish=True)
            await instances.store.commit(changes + [intent.done(), cleanup.record("container", name=name,
                                                                                 pool=old_pool)])
        MOVE_COMMITTED()
        # The move is recorded; the old pool's copies are garbage now, and the paths move over.
        async with cleanup:
            if new_name != name:
                await instances.backups.rename_all(name, new_name)
            await settle.container(instances, name, old_pool)
            await settle.container(instances, new_name, pool)
    if new_name != name:
        instances.events.lifecycle("container-renamed", f"/1.0/containers/{name}", {"new_name": new_name})
    instances.events.lifecycle("container-updated", f"/1.0/containers/{new_name}")
