# -*- test-case-name: tests.integration.test_cluster_members -*-
"""Storage pools of a cluster: one definition, one local pool on every member
(lxdtx.cluster.onall has the document and the making and removal on all members).

1. `POST /1.0/storage-pools?target=M` defines the pool on M with M's node-specific keys
   (status `Pending`).
2. `POST /1.0/storage-pools` without target (and without node-specific keys) has every
   member make its local pool (`create_local`: the driver's defaults filled in with its own
   keys, the pool's intent step `pool` undoing it while the row is not `Created`).
3. `GET ...?target=M` shows M's config; without target the shared one.
4. `DELETE` removes the local pool on every member (the `pool` step with `delete`).
"""

from lxdtx import errors
from lxdtx.cluster import onall
from lxdtx.cluster.onall import CREATED, PENDING, local_config, status
from lxdtx.state import ABSENT, Put
from lxdtx.storage import keys
from lxdtx.storage.load import DRIVERS

POOL = "pool"
# The keys one member's pool may have of its own (LXD's node-specific storage pool keys).
NODE_SPECIFIC = ("size", "source", "volatile.initial_source", "zfs.pool_name", "lvm.vg_name",
                 "lvm.thinpool_name")
CREATE_LOCAL = "/internal/cluster/storage-pools/{}/create-local"
UPDATE_LOCAL = "/internal/cluster/storage-pools/{}/update-local"


def member_view(daemon, value, member):
    """The config of a pool as `member` (a cluster_member document) has it."""
    return onall.member_config(value, member.value["id"])


def locations(daemon, value):
    return onall.locations(daemon, value)


async def define(daemon, name, driver, config, description, target):
    member = daemon.cluster.get(target)
    cls = daemon.pools.check_driver(driver)
    onall.check_node_keys(config, NODE_SPECIFIC)
    keys.check_pool_config(cls, config, DRIVERS.values())
    doc = daemon.store.get(POOL, name)
    if doc is None:
        value = {"driver": driver, "config": {}, "description": description or "", "status": PENDING,
                 "members": {member.value["id"]: dict(config)}}
        await daemon.store.commit([Put(POOL, name, value, expect=ABSENT)])
        return
    if status(doc.value) != PENDING:
        raise errors.BadRequest(f"The storage pool \"{name}\" already exists")
    if doc.value["driver"] != driver:
        raise errors.BadRequest(f"The storage pool \"{name}\" is pending with driver \"{doc.value['driver']}\"")
    value = onall.pending_value(doc, member, config, "storage pool")
    await daemon.store.commit([Put(POOL, name, value, expect=doc.revision)])


async def create(daemon, name, driver, config, description):
    doc = daemon.store.get(POOL, name)
    if doc is None:
        raise errors.BadRequest("Pool not pending on any node (use --target <node> first)")
    if status(doc.value) == CREATED:
        raise errors.Conflict(f"Storage pool \"{name}\" already exists")
    if doc.value["driver"] != driver:
        raise errors.BadRequest(f"The storage pool \"{name}\" is pending with driver \"{doc.value['driver']}\"")
    onall.check_shared_keys(config, NODE_SPECIFIC)
    keys.check_pool_config(daemon.pools.check_driver(driver), config, DRIVERS.values())
    value = dict(doc.value, config=dict(config), description=description or doc.value.get("description", ""))
    await onall.make_on_all(daemon, POOL, name, value, doc.revision, CREATE_LOCAL.format(name),
                            lambda: create_local(daemon, name))
    daemon.pools.forget_driver(name)


async def create_local(daemon, name, coordinator=None):
    """This member's local pool of a pending pool: {"intent", "revision", "config" (our keys,
    filled in)}. The intent stays open: the `coordinator`'s commit ends it, or has it undone
    (or, when that member dies first, lxdtx.cluster.orphans)."""
    doc = daemon.pools.get(name)
    if status(doc.value) == CREATED and daemon.cluster.member_id in (doc.value.get("members") or {}):
        raise errors.Conflict(f"Storage pool \"{name}\" already exists")
    cls = daemon.pools.check_driver(doc.value["driver"])
    config = local_config(daemon, doc.value)
    keys.check_pool_config(cls, config, DRIVERS.values())
    config = cls(name, config, daemon.dir).fill_defaults(config)
    intent = onall.begin_local(daemon, "pool.create", name, coordinator)
    await intent.will("pool", name=name, driver=doc.value["driver"], config=config)
    try:
        await cls(name, config, daemon.dir).create()
    except Exception as e:
        await onall.resolve(daemon, intent.name)
        if isinstance(e, errors.ApiError):
            raise
        raise errors.InternalError(f"Failed to create storage pool \"{name}\": {errors.describe(e)}") from None
    shared = doc.value["config"]
    own = {k: v for k, v in config.items() if k in NODE_SPECIFIC or shared.get(k) != v}
    return onall.made_local(daemon, intent, own)


async def update_local(daemon, name, live):
    """Another member changed the pool's shared config: our pool takes the keys `live`."""
    if not isinstance(live, dict) or not all(isinstance(v, str) for v in live.values()):
        raise errors.BadRequest("config must be a map of strings")
    await daemon.pools.driver(name).update(live)


async def delete(daemon, name, doc):
    """Remove a clustered pool from every member (the caller checked that nothing uses it)."""
    def steps(member_id, config):
        return [{"kind": "pool", "args": {"name": name, "driver": doc.value["driver"], "config": config,
                                          "delete": True}}]

    await onall.remove_on_all(daemon, POOL, doc, steps)
    daemon.pools.forget_driver(name)
