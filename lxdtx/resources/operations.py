# -*- test-case-name: tests.unit.test_operations -*-
"""`/1.0/operations`: list, get, cancel, wait and websocket connect."""

from twisted.internet import defer

from lxdtx import errors
from lxdtx.cluster.peers import FORWARDED, MemberUnreachable
from lxdtx.operations import STATUS_TEXT
from lxdtx.response import SyncResponse, empty
from lxdtx.router import Action, Endpoint
from lxdtx.websocket.handshake import Handshake


async def list_operations(req):
    """This member's operations; in a cluster, asked of a client (not forwarded), every
    online member's too (one unreachable is left out, as LXD leaves it)."""
    grouped = {}
    for op in req.daemon.operations.all():
        entry = op.render() if req.recursion else op.url
        grouped.setdefault(STATUS_TEXT[op.status_code].lower(), []).append(entry)
    cluster = req.daemon.cluster
    if cluster.enabled and not req.header(FORWARDED):
        for theirs in await defer.gatherResults([defer.Deferred.fromCoroutine(
                _of_member(cluster.peers, doc, req.recursion)) for doc in cluster.peers.others()]):
            for status, entries in theirs.items():
                grouped.setdefault(status, []).extend(entries)
    return SyncResponse(grouped)


async def _of_member(peers, member, recursion):
    try:
        found = await peers.get_json(member, f"/1.0/operations?recursion={1 if recursion else 0}", timeout=10)
    except (MemberUnreachable, ValueError):
        return {}
    return {status: entries for status, entries in found.items()
            if isinstance(entries, list)} if isinstance(found, dict) else {}


async def get_operation(req):
    return SyncResponse(req.daemon.operations.get(req.params["id"]).render())


async def cancel_operation(req):
    await req.daemon.operations.get(req.params["id"]).cancel()
    return empty()


async def wait_operation(req):
    op = req.daemon.operations.get(req.params["id"])
    timeout = req.query.get("timeout", "-1")
    try:
        timeout = float(timeout)
    except ValueError:
        raise errors.BadRequest(f"invalid timeout: {timeout}")
    await op.wait(None if timeout < 0 else timeout)
    return SyncResponse(op.render())


async def connect_operation(req):
    op = req.daemon.operations.get(req.params["id"])
    secret = req.query.get("secret")
    if not secret:
        raise errors.BadRequest("missing secret")
    protocol, claim = await op.connect(req.http, secret)
    return Handshake(req.daemon.websockets, protocol, claim=claim)


ENDPOINTS = [
    Endpoint("/1.0/operations", get=list_operations),
    Endpoint("/1.0/operations/{id}", get=get_operation, delete=cancel_operation),
    Endpoint("/1.0/operations/{id}/wait", get=Action(wait_operation, cancel_on_disconnect=True)),
    Endpoint("/1.0/operations/{id}/websocket", get=Action(connect_operation, untrusted=True, answers="websocket")),
]
