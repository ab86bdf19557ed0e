# -*- test-case-name: tests.integration.test_cluster_members -*-
"""Storage pools of a cluster: one definition, one local pool on every member.

A clustered pool's document keeps the config every member shares (`config`), each
member's own keys (`members`: member id -> config; only the node-specific keys may be
given there) and a `status`: `Pending` while it is being defined, then `Created`, or
`Errored` when a member failed to make it. A member's driver works with the shared config
and its own keys over it (`local_config`).

1. `POST /1.0/storage-pools?target=M` defines the pool on M (status `Pending`).
2. `POST /1.0/storage-pools` without target (and without node-specific keys) asks every
   member, this one too, to make its local pool (`create_local`). Each records an intent
   (its own member's, in the shared store) before touching its host and leaves it open;
   the commit that marks the pool `Created` with every member's filled-in keys ends them
   all. A member that fails or can't be reached has every other member undo theirs
   (`resolve`, the intents' `pool` step drops a pool whose row is not `Created`), and the
   pool is left `Errored`, naming the member. A member that can't be told undoes it at its
   next start, when it resolves its open intents.
3. Deleting a `Created` pool removes the row and records, in the same commit, one finishing
   intent per member to remove its local pool; each member is then asked to resolve its
   own (one that can't be reached does so at its next start).
"""

import json
import time
import uuid

from lxdtx import errors
from lxdtx.cluster.peers import MemberUnreachable
from lxdtx.state import ABSENT, Delete, Put
from lxdtx.storage import keys
from lxdtx.storage.load import DRIVERS

POOL = "pool"
INTENT = "intent"
PENDING, CREATED, ERRORED = "Pending", "Created", "Errored"
# The keys one member's pool may have of its own (LXD's node-specific storage pool keys).
NODE_SPECIFIC = ("size", "source", "volatile.initial_source", "zfs.pool_name", "lvm.vg_name",
                 "lvm.thinpool_name")
CREATE_LOCAL = "/internal/cluster/storage-pools/{}/create-local"
RESOLVE = "/internal/cluster/intents/{}/resolve"


def clustered(daemon):
    cluster = getattr(daemon, "cluster", None)
    return cluster is not None and cluster.enabled


def status(value):
    return value.get("status", CREATED)


def local_config(daemon, value):
    """The config this member's driver of a pool works with."""
    if not clustered(daemon):
        return value["config"]
    return {**value["config"], **(value.get("members") or {}).get(daemon.cluster.member_id, {})}


def member_view(daemon, value, member):
    """The config of a pool as `member` (a cluster_member document) has it."""
    return {**value["config"], **(value.get("members") or {}).get(member.value["id"], {})}


def locations(daemon, value):
    ids = set(value.get("members") or {})
    return sorted(daemon.cluster.location_name(i) for i in ids) or ["none"]


def _driver_class(daemon, driver):
    return daemon.pools.check_driver(driver)


# -- defining on one member ----------------------------------------------------------------------
async def define(daemon, name, driver, config, description, target):
    cluster = daemon.cluster
    member = cluster.get(target)
    cls = _driver_class(daemon, driver)
    for key in sorted(config):
        if key not in NODE_SPECIFIC:
            raise errors.BadRequest(f"Config key '{key}' may not be used as node-specific key")
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
    members = dict(doc.value.get("members") or {})
    if member.value["id"] in members:
        raise errors.BadRequest(f"The storage pool already defined on node {target}")
    members[member.value["id"]] = dict(config)
    await daemon.store.commit([Put(POOL, name, dict(doc.value, members=members), expect=doc.revision)])


# -- making it on every member -------------------------------------------------------------------
async def create(daemon, name, driver, config, description):
    cluster = daemon.cluster
    doc = daemon.store.get(POOL, name)
    if doc is None:
        raise errors.BadRequest("Pool not pending on any node (use --target <node> first)")
    if status(doc.value) == CREATED:
        raise errors.Conflict(f"Storage pool \"{name}\" already exists")
    if doc.value["driver"] != driver:
        raise errors.BadRequest(f"The storage pool \"{name}\" is pending with driver \"{doc.value['driver']}\"")
    for key in sorted(config):
        if key in NODE_SPECIFIC:
            raise errors.BadRequest(f"Config key '{key}' is node-specific")
    cls = _driver_class(daemon, driver)
    keys.check_pool_config(cls, config, DRIVERS.values())
    members = [cluster.get(n) for n in cluster.names()]
    for member in members:
        if not cluster.online(member):
            raise MemberUnreachable(member.name, "offline")
    value = dict(doc.value, config=dict(config), description=description or doc.value.get("description", ""),
                 status=PENDING)
    await daemon.store.commit([Put(POOL, name, value, expect=doc.revision)])
    made = {}  # member id -> (member, intent name, its config)
    try:
        for member in members:
            made[member.value["id"]] = (member, *await _create_on(daemon, member, name))
    except Exception as e:
        for member, intent, _config in made.values():
            await _resolve_on(daemon, member, intent)
        doc = daemon.store.get(POOL, name)
        if doc is not None:
            await daemon.store.commit([Put(POOL, name, dict(doc.value, status=ERRORED), expect=doc.revision)])
        raise errors.to_api_error(e) from None
    doc = daemon.store.get(POOL, name)
    final = dict(doc.value, status=CREATED, members={mid: c for mid, (_m, _i, c) in made.items()})
    await daemon.store.commit([Put(POOL, name, final, expect=doc.revision),
                               *[Delete(INTENT, intent) for _m, intent, _c in made.values()]])
    daemon.pools.forget_driver(name)


async def _create_on(daemon, member, name):
    if member.value["id"] == daemon.cluster.member_id:
        answer = await create_local(daemon, name)
    else:
        answer = await _call(daemon, member, CREATE_LOCAL.format(name), {})
    return answer["intent"], answer["config"]


async def _resolve_on(daemon, member, intent):
    try:
        if member.value["id"] == daemon.cluster.member_id:
            await resolve(daemon, intent)
        else:
            await _call(daemon, member, RESOLVE.format(intent), {})
    except Exception as e:  # it resolves its intent at its next start
        daemon.cluster.log.warn("Cluster member {member} could not resolve {intent} now: {error}",
                                member=member.name, intent=intent, error=e)


async def _call(daemon, member, path, body):
    code, _headers, content = await daemon.cluster.peers.call(member, "POST", path, json.dumps(body).encode(),
                                                              {"content-type": "application/json"})
    try:
        answer = json.loads(content)
    except ValueError:
        answer = {}
    if code != 200:
        raise errors.BadRequest(f"Cluster member '{member.name}': {answer.get('error') or f'status {code}'}")
    return answer.get("metadata") or {}


async def create_local(daemon, name):
    """This member's local pool of a pending pool: {"intent", "config" (our keys, filled in)}.
    The intent stays open: the coordinator's commit ends it, or has it undone."""
    doc = daemon.pools.get(name)
    if status(doc.value) == CREATED:
        raise errors.Conflict(f"Storage pool \"{name}\" already exists")
    cls = _driver_class(daemon, doc.value["driver"])
    config = local_config(daemon, doc.value)
    keys.check_pool_config(cls, config, DRIVERS.values())
    config = cls(name, config, daemon.dir).fill_defaults(config)
    intent = daemon.journal.begin("pool.create", name)
    await intent.will("pool", name=name, driver=doc.value["driver"], config=config)
    try:
        await cls(name, config, daemon.dir).create()
    except Exception as e:
        await resolve(daemon, intent.name)
        if isinstance(e, errors.ApiError):
            raise
        raise errors.InternalError(f"Failed to create storage pool \"{name}\": {errors.describe(e)}") from None
    shared = doc.value["config"]
    own = {k: v for k, v in config.items() if k in NODE_SPECIFIC or shared.get(k) != v}
    return {"intent": intent.name, "config": own}


async def resolve(daemon, intent_name):
    """Resolve one of this member's open intents now (undo it, or finish it)."""
    doc = daemon.store.get(INTENT, intent_name)
    if doc is None:
        return
    if doc.value.get("member", "") != daemon.journal.member():
        raise errors.BadRequest(f"Intent {intent_name} is another member's")
    await daemon.journal.resolve(doc.value)
    await daemon.store.commit([Delete(INTENT, intent_name)])


# -- removal ------------------------------------------------------------------------------------
async def delete(daemon, name, doc):
    """Remove a clustered pool (the caller checked that nothing uses it)."""
    value = doc.value
    if status(value) != CREATED:
        await daemon.store.commit([Delete(POOL, name, expect=doc.revision)])
        return
    cluster = daemon.cluster
    intents = {}  # member id -> (intent name, value): the member's removal of its local pool
    for member_id, own in (value.get("members") or {}).items():
        config = {**value["config"], **own}
        intents[member_id] = (f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", {
            "op": "pool.delete", "target": name, "finish": True, "member": member_id,
            "steps": [{"kind": "pool", "args": {"name": name, "driver": value["driver"], "config": config,
                                                "delete": True}}]})
    await daemon.store.commit([Delete(POOL, name, expect=doc.revision),
                               *[Put(INTENT, n, v) for n, v in intents.values()]])
    daemon.pools.forget_driver(name)
    for member_id, (intent_name, _v) in intents.items():
        member = cluster.member_by_id(member_id)
        if member is not None:
            await _resolve_on(daemon, member, intent_name)
