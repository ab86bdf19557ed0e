# -*- test-case-name: tests.integration.test_cluster_bootstrap -*-
"""`/1.0/cluster` and `/1.0/cluster/members` (see lxdtx.cluster.membership)."""

from lxdtx import bodies, errors
from lxdtx.cluster import join
from lxdtx.resources.common import string
from lxdtx.response import AsyncResponse, SyncResponse, empty, etag_of
from lxdtx.router import Action, Endpoint


def _cluster(daemon):
    return {"server_name": daemon.cluster.name, "enabled": daemon.cluster.enabled}


async def get_cluster(req):
    info = _cluster(req.daemon)
    return SyncResponse(info, etag=etag_of(info))


def _bool(body, key):
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise errors.BadRequest(f"Invalid value for \"{key}\": must be a boolean")
    return value


async def put_cluster(req):
    body = req.json()
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object")
    req.check_etag(_cluster(req.daemon))
    name = string(body, "server_name")
    enabled = _bool(body, "enabled")
    address = string(body, "cluster_address")
    string(body, "cluster_certificate")
    cluster = req.daemon.cluster
    if enabled and not name:
        raise errors.BadRequest("ServerName is required when enabling clustering")
    if not enabled:
        if name:
            raise errors.BadRequest("ServerName must be empty when disabling clustering")
        if cluster.enabled:
            raise errors.BadRequest("Leaving a cluster is not supported: remove this member from another one")
        return empty()
    if address:
        certificate = string(body, "cluster_certificate")
        join.check_join(req.daemon, name, address, certificate)

        async def run_join(op):
            await join.join(req.daemon, name, address, certificate)

        return AsyncResponse(req.daemon.operations.start("Joining cluster", resources={"cluster": []}, run=run_join))
    cluster.check_bootstrap(name)

    async def run(op):
        await cluster.bootstrap(name)

    return AsyncResponse(req.daemon.operations.start("Creating bootstrap node", resources={"cluster": []},
                                                     run=run))


async def accept_member(req):
    body = req.json()
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object")
    return SyncResponse(await join.accept(req.daemon, string(body, "name"), string(body, "address")))


async def list_members(req):
    cluster = req.daemon.cluster
    names = cluster.names()
    if req.recursion:
        return SyncResponse([cluster.render(n, cluster.get(n).value) for n in names])
    return SyncResponse([f"/1.0/cluster/members/{n}" for n in names])


async def get_member(req):
    cluster = req.daemon.cluster
    name = req.params["name"]
    info = cluster.render(name, cluster.get(name).value)
    return SyncResponse(info, etag=etag_of(info))


async def rename_member(req):
    body = req.json()
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object")
    await req.daemon.cluster.rename(req.params["name"], string(body, "server_name"))
    return empty()


async def delete_member(req):
    force = req.query.get("force", "") in ("1", "true")
    await req.daemon.cluster.delete(req.params["name"], force=force)
    return empty()


# -- member to member -----------------------------------------------------------------
async def _json_object(req):
    """The body of another member's call, once our state has reached what it had committed."""
    from lxdtx.cluster import onall

    req.daemon.cluster.peers.caller(req)
    body = req.json()
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object")
    await onall.caught_up(req.daemon, body.get("store_revision", body.get("revision")))
    return body


async def move_in(req):
    from lxdtx.cluster import move

    return AsyncResponse(move.start_move_in(req.daemon, req.params["name"], await _json_object(req)))


async def resolve_intent(req):
    """Undo or finish one of this member's open intents now (lxdtx.cluster.onall)."""
    from lxdtx.cluster import onall

    await _json_object(req)
    await onall.resolve(req.daemon, req.params["name"])
    return empty()


async def profile_changing(req):
    from lxdtx.cluster import notify

    body = await _json_object(req)
    value = body.get("value")
    if not isinstance(value, dict):
        raise errors.BadRequest("Invalid value for \"value\": must be an object")
    await notify.apply_profile(req.daemon, string(body, "profile"), value)
    return empty()


ENDPOINTS = [
    Endpoint("/1.0/cluster", get=get_cluster,
             put=Action(put_cluster, body=bodies.fields(server_name=bodies.STRING, enabled=bodies.BOOLEAN,
                                                        cluster_address=bodies.STRING,
                                                        cluster_certificate=bodies.STRING))),
    Endpoint("/1.0/cluster/members", get=list_members),
    Endpoint("/1.0/cluster/members/{name}", get=get_member, post=Action(rename_member, body=bodies.fields(server_name=bodies.STRING)), delete=delete_member),
    # A joining server, whose certificate the cluster trusts, asks a member to add it.
    Endpoint("/internal/cluster/accept", post=accept_member),
    # Another member, by its certificate: take a container moved here, apply a profile change.
    Endpoint("/internal/cluster/containers/{name}/move-in", post=move_in),
    Endpoint("/internal/cluster/profile-changing", post=profile_changing),
    Endpoint("/internal/cluster/intents/{name}/resolve", post=resolve_intent),
]
