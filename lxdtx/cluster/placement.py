# -*- test-case-name: tests.integration.test_cluster_containers -*-
"""Which member a new container goes to: the `target` the request names, else the least
busy online member. Either way only a member whose own part of the root disk's pool is
made (the pool `Created` with keys of that member): a member that lacks it, or a pool
still pending or errored, could not hold the container's volume.

The root disk is read from the request before anything is validated (its devices over its
profiles', a copy's source's under them); when it can't be told (a profile or the pool
that does not exist, no root disk) no member is ruled out, and the validation that follows
on the chosen member says what is wrong.
"""

from lxdtx import errors
from lxdtx.cluster.onall import CREATED, status
from lxdtx.device.disk import root_device
from lxdtx.instance import model

MEMBER = "cluster_member"


def root_pool(store, body):
    """The name of the pool a container created from request `body` would have its root
    disk on, or None when the request does not tell (yet)."""
    if not isinstance(body, dict):
        return None
    devices = body.get("devices") or {}
    profiles = body.get("profiles")
    source = body.get("source") if isinstance(body.get("source"), dict) else {}
    if source.get("type") == "copy" and isinstance(source.get("source"), str):
        parent, _, snapshot = source["source"].partition("/")
        copied = store.value("snapshot", f"{parent}/{snapshot}") if snapshot else store.value("container", parent)
        if isinstance(copied, dict) and isinstance(devices, dict):
            devices = {**(copied.get("devices") or {}), **devices}
            if profiles is None:
                profiles = copied.get("profiles")
    if profiles is None:
        profiles = ["default"]
    if not isinstance(devices, dict) or not isinstance(profiles, list):
        return None
    values = [store.value("profile", p) if isinstance(p, str) else None for p in profiles]
    if not all(isinstance(v, dict) for v in values) or not all(isinstance(d, dict) for d in devices.values()):
        return None
    try:
        _config, expanded = model.expand({"devices": devices}, values)
    except (TypeError, ValueError, AttributeError):
        return None
    _name, root = root_device(expanded)
    pool = root.get("pool") if root else None
    return pool if isinstance(pool, str) and store.exists("pool", pool) else None


def has_pool(store, member, pool):
    """Whether `member` (a cluster_member document) has its own part of `pool` made."""
    value = store.value("pool", pool) or {}
    return status(value) == CREATED and member.value["id"] in (value.get("members") or {})


def choose(cluster, target, pool):
    """The member document a new container goes to (`pool`: its root disk's, or None)."""
    store = cluster.daemon.store
    if target:
        member = cluster.get(target)
        if not cluster.online(member):
            raise errors.BadRequest(f"Cluster member '{target}' is offline")
        if pool is not None and not has_pool(store, member, pool):
            raise errors.BadRequest(f"Storage pool \"{pool}\" is not available on cluster member '{target}'")
        return member
    counts = {}
    for container in store.list("container"):
        location = container.value.get("location", "")
        counts[location] = counts.get(location, 0) + 1
    members = [m for m in store.list(MEMBER) if cluster.online(m)]
    if pool is not None:
        members = [m for m in members if has_pool(store, m, pool)]
        if not members:
            state = status(store.value("pool", pool) or {})
            raise errors.BadRequest(f"No online cluster member has storage pool \"{pool}\""
                                    + (f" (the pool is {state.lower()})" if state != CREATED else ""))
    if not members:
        raise errors.BadRequest("No cluster member is online")
    return min(members, key=lambda m: (counts.get(m.value["id"], 0), m.name))
