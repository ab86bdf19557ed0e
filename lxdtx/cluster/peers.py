# -*- test-case-name: tests.integration.test_cluster_containers -*-
"""Requests from one cluster member to another, and which member a request's object lives
on (the forwarding itself, and the relayed answers, are lxdtx.resources.forwarding's).

Members trust each other by their server certificates: each member's document carries
its certificate (pinned by whoever calls it) and each member's certificate is in the
shared trust store (the joiner's by the trust password, the first member's added at
bootstrap), so a member calling another shows its own server certificate.

A request about a container whose `location` is another member, or about storage volumes
with `?target=` another member, belongs to that member (`Peers.owner`). An operation
started there lives on that member: its id is remembered here (from the forwarded answer,
and from the member's operation events, lxdtx.cluster.events) so that `/1.0/operations/ID`
(get, `/wait`, cancel, its websockets) asked of this member go there too; an id known
nowhere here is asked of the other members. A request that was forwarded carries
`FORWARDED` and is never forwarded again; a container list asked with it answers with this
member's containers only, an event stream only this member's events. An image export asked
of a member that lacks the image's files (a trusted caller's) comes from a member that has
them.
"""

import json
import re
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from lxdtx import errors, operations, timeutil, tls

FORWARDED = "X-Lxdtx-Forwarded"
REMOTE_OPERATIONS = 1000  # remembered operation ids, oldest dropped first
CALL_TIMEOUT = 30
# Open connections kept to each member, and how long one may idle (the members' own
# sites keep a connection far longer).
KEPT_CONNECTIONS, KEPT_IDLE = 8, 120

_CONTAINER_PATH = re.compile(r"^/1\.0/(?:containers|instances)/([^/]+)(?:/.*)?$")
_OPERATION_PATH = re.compile(r"^/1\.0/operations/([^/]+)(?:/.*)?$")
# Storage volumes asked of a `target` member are that member's; a custom volume without one is
# the one member's that has a volume of its name.
_VOLUME_PATH = re.compile(r"^/1\.0/storage-pools/[^/]+/volumes(?:/.*)?$")
_CUSTOM_VOLUME_PATH = re.compile(r"^/1\.0/storage-pools/([^/]+)/volumes/custom/([^/]+)(?:/.*)?$")
_EXPORT_PATH = re.compile(r"^/1\.0/images/([^/]+)/export$")
LOOKUP = object()  # owner(): an operation known nowhere here, to be asked of the other members
ANY_HOLDER = object()  # owner(): an image export whose files are not here, from a member that has them


def operation_id(path):
    """The operation id in `/1.0/operations/ID[/...]`."""
    return unquote(_OPERATION_PATH.match(path).group(1))


@implementer(IPolicyForHTTPS)
class _MemberPolicy:
    """One member's TLS connections, forwarded requests' and relayed websockets' alike: one
    context, and the session of the last handshake resumed by the next connection."""

    def __init__(self, url, peer_pem, cert_path, key_path):
        host = urlsplit(url).hostname or ""
        self.creator = tls.PinnedPeer(host, peer_pem, cert_path, key_path, resume=True)

    def creatorForNetloc(self, hostname, port):
        return self.creator


def _quiet_factory():
    """twisted.web's connection factory without its per-connection log lines (made for
    each member's pool, when the first call needs twisted.web.client and its TLS)."""
    from twisted.web.client import _HTTP11ClientFactory

    class Quiet(_HTTP11ClientFactory):
        noisy = False

    return Quiet


class MemberUnreachable(errors.ApiError):
    code = 503

    def __init__(self, name, reason):
        super().__init__(f"Cluster member '{name}' is unreachable: {reason}")


class Peers:
    """This member's HTTPS client to the other members."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.operations = {}  # operation id -> member name, for operations started through us
        self.states = {}  # operation id -> its last object seen here (answers, events)
        self._clients = {}  # member id -> ((url, certificate), its client, its connection pool, its TLS)

    def _client(self, member):
        """(the HTTPS client, the TLS connection creator) for `member`, kept with its pool of
        open connections: a new TLS handshake per forwarded request costs more than most
        requests, and a new connection (a relayed websocket's too) resumes the last session.
        A member whose address or certificate changed gets new ones; the old connections close."""
        import treq
        from twisted.web.client import Agent, HTTPConnectionPool

        certificate = member.value.get("certificate")
        if not certificate:
            raise MemberUnreachable(member.name, "its certificate is not known")
        member_id, key = member.value.get("id", member.name), (member.value["url"], certificate)
        kept = self._clients.get(member_id)
        if kept is not None and kept[0] == key:
            return kept[1], kept[3]
        if kept is not None:
            kept[2].closeCachedConnections()
        pool = HTTPConnectionPool(self.daemon.reactor, persistent=True)
        pool.maxPersistentPerHost = KEPT_CONNECTIONS
        pool.cachedConnectionTimeout = KEPT_IDLE
        pool._factory = _quiet_factory()  # every connection would log two lines otherwise
        policy = _MemberPolicy(member.value["url"], certificate, self.daemon.cert_path, self.daemon.key_path)
        agent = Agent(self.daemon.reactor, pool=pool, contextFactory=policy)
        client = treq.client.HTTPClient(agent)
        self._clients[member_id] = (key, client, pool, policy.creator)
        return client, policy.creator

    def tls_creator(self, member):
        """The TLS connection creator of `member`'s connections, for a relayed websocket: it
        resumes the session the last connection to the member made."""
        return self._client(member)[1]

    async def close(self):
        """Close the kept connections (the daemon stops)."""
        clients, self._clients = self._clients, {}
        for _key, _client, pool, _creator in clients.values():
            await pool.closeCachedConnections()

    async def request(self, member, method, path, body=None, headers=None, timeout=CALL_TIMEOUT):
        """The response (headers in, body unread) of `method path` on `member` (a
        cluster_member document); `body`: bytes or a file, streamed."""
        from twisted.web.client import FileBodyProducer

        sent = {FORWARDED: ["1"]}
        for name, value in (headers or {}).items():
            sent[name] = [value]
        if body is not None and not isinstance(body, bytes):
            body = FileBodyProducer(body)  # any file (a spooled body), read as it is sent
        try:
            return await self._client(member)[0].request(method, member.value["url"] + path, data=body,
                                                      headers=sent, timeout=timeout, unbuffered=True)
        except MemberUnreachable:
            raise
        except defer.CancelledError:
            raise
        except Exception as e:
            raise MemberUnreachable(member.name, getattr(e, "message", None) or type(e).__name__) from None

    async def call(self, member, method, path, body=None, headers=None, timeout=CALL_TIMEOUT):
        """(code, headers, body bytes) of `method path` on `member`."""
        response = await self.request(member, method, path, body, headers, timeout)
        try:
            content = await response.content()
        except Exception as e:
            raise MemberUnreachable(member.name, getattr(e, "message", None) or type(e).__name__) from None
        return response.code, response.headers, content

    async def get_json(self, member, path, timeout=CALL_TIMEOUT):
        code, _headers, content = await self.call(member, "GET", path, timeout=timeout)
        answer = json.loads(content)
        if code != 200:
            raise MemberUnreachable(member.name, answer.get("error") or f"status {code}")
        return answer["metadata"]

    def caller(self, req):
        """The member document of the cluster member making request `req` (by the TLS
        certificate it shows); 403 for anyone else."""
        from OpenSSL import crypto

        cert = req.peer_certificate
        cluster = getattr(self.daemon, "cluster", None)
        if cert is not None and cluster is not None and cluster.enabled:
            shown = tls.fingerprint(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert))
            for doc in self.daemon.store.list("cluster_member"):
                pem = doc.value.get("certificate")
                if pem and tls.fingerprint(tls.pem_to_der(pem)) == shown:
                    return doc
        raise errors.Forbidden("Only cluster members may call this")

    def others(self):
        """The documents of the other members that are online, by name."""
        cluster = self.daemon.cluster
        return sorted((doc for doc in self.daemon.store.list("cluster_member")
                       if doc.value.get("id") != cluster.member_id and cluster.online(doc)), key=lambda d: d.name)

    def remember_operation(self, op_id, member_name, state=None):
        self.operations[op_id] = member_name
        if isinstance(state, dict):
            self.states[op_id] = state
        while len(self.operations) > REMOTE_OPERATIONS:
            self.states.pop(next(iter(self.operations)), None)
            del self.operations[next(iter(self.operations))]

    def _running_of(self, member_name):
        return [op_id for op_id, name in list(self.operations.items())
                if name == member_name and self.states.get(op_id, {}).get("status_code", operations.SUCCESS)
                < operations.SUCCESS]

    def _announce(self, state, member):
        """An operation object of `member`'s to this member's listeners, as its events come."""
        self.states[state["id"]] = state
        self.daemon.events.forward({"metadata": state, "timestamp": timeutil.now(), "type": "operation",
                                    "node": member.value.get("id", "")})

    def _fail(self, op_id, member, why):
        self._announce(dict(self.states[op_id], status=operations.STATUS_TEXT[operations.FAILURE],
                            status_code=operations.FAILURE, may_cancel=False,
                            err=f"Cluster member '{member.name}' {why}"), member)

    def fail_operations_of(self, member):
        """The running operations of a member (document) that went away, as failed, to this
        member's listeners: a client waiting for one through our events (`lxc exec` does)
        is not left waiting for an event that will never come. The owner's own answer, if
        it comes back, still wins for whoever asks it."""
        for op_id in self._running_of(member.name):
            self._fail(op_id, member, "is unreachable")

    async def recheck_operations_of(self, member):
        """Once a member's event stream is (again) open: its operations seen running here
        that ended meanwhile, their events unheard, are announced as they ended; those it
        no longer knows (it restarted) as failed."""
        for op_id in self._running_of(member.name):
            try:
                code, _headers, content = await self.call(member, "GET", f"/1.0/operations/{op_id}", timeout=10)
            except MemberUnreachable:
                return
            if op_id not in self.states:
                continue
            if code == 404:
                self._fail(op_id, member, "restarted and lost the operation")
                continue
            try:
                state = json.loads(content)["metadata"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(state, dict) and state.get("status_code", 0) >= operations.SUCCESS:
                self._announce(state, member)

    # -- forwarding ------------------------------------------------------------------
    def owner(self, http, raw_path):
        """The member document a request should go to, or None to answer it here."""
        cluster = getattr(self.daemon, "cluster", None)
        if cluster is None or not cluster.enabled or http.getHeader(FORWARDED):
            return None
        m = _CONTAINER_PATH.match(raw_path)
        if m:
            value = self.daemon.store.value("container", unquote(m.group(1)))
            location = (value or {}).get("location")
            if not location or location == cluster.member_id:
                return None
            return cluster.member_by_id(location)
        if _VOLUME_PATH.match(raw_path):
            target = (http.args.get(b"target") or [b""])[0].decode("utf-8", "replace")
            member = cluster.member_or_none(target) if target else None
            m = _CUSTOM_VOLUME_PATH.match(raw_path)
            if member is None and m:
                # The one member that has it; several: asked here, which refuses to choose.
                holders = self.daemon.pools.custom_holders(unquote(m.group(1)), unquote(m.group(2)))
                member = cluster.member_by_id(holders[0]) if len(holders) == 1 and holders[0] else None
            if member is None or member.value["id"] == cluster.member_id:
                return None
            return member
        m = _OPERATION_PATH.match(raw_path)
        if m:
            op_id = unquote(m.group(1))
            try:
                self.daemon.operations.get(op_id)
                return None
            except errors.NotFound:
                pass
            if op_id in self.operations:
                return cluster.member_or_none(self.operations[op_id])
            # Asking every member costs them: only for trusted callers (an untrusted one connecting
            # a websocket has its operation remembered from the events of its member anyway).
            return LOOKUP if getattr(http, "caller_trusted", False) else None
        m = _EXPORT_PATH.match(raw_path)
        # Trusted callers only: who else may have an image is decided here, by its member.
        if m and getattr(http, "caller_trusted", False):
            images = self.daemon.images
            try:
                fingerprint = images.lookup(unquote(m.group(1)))
            except errors.ApiError:
                return None
            return None if images.has_files(fingerprint) else ANY_HOLDER
        return None

    async def find_operation(self, op_id):
        """The member document that has operation `op_id`, asking every other online member."""
        async def ask(doc):
            try:
                code, _headers, _content = await self.call(doc, "GET", f"/1.0/operations/{op_id}", timeout=10)
            except MemberUnreachable:
                return None
            return doc if code == 200 else None

        found = await defer.gatherResults([defer.Deferred.fromCoroutine(ask(doc)) for doc in self.others()])
        for doc in found:
            if doc is not None:
                self.remember_operation(op_id, doc.name)
                return doc
        raise errors.NotFound()
