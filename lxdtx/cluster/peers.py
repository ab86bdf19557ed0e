# -*- test-case-name: tests.integration.test_cluster_containers -*-
"""Requests from one cluster member to another, and requests forwarded to the member
that owns their object.

Members trust each other by their server certificates: each member's document carries
its certificate (pinned by whoever calls it) and each member's certificate is in the
shared trust store (the joiner's by the trust password, the first member's added at
bootstrap), so a member calling another shows its own server certificate.

A request about a container whose `location` is another member, or about storage volumes
with `?target=` another member, is proxied there whole
(method, path, query, body, the headers that matter) and its answer relayed as it came.
An operation it started lives on that member: its id is remembered here so that
`/1.0/operations/ID` (and `/wait`) asked of this member go there too. A request that was
forwarded carries `FORWARDED` and is never forwarded again; a container list asked with
it answers with this member's containers only.
"""

import json
import re
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from lxdtx import errors, tls
from lxdtx.response import Response

FORWARDED = "X-Lxdtx-Forwarded"
REMOTE_OPERATIONS = 1000  # remembered operation ids, oldest dropped first
CALL_TIMEOUT = 30
# Headers of a request that carry meaning to the member it is forwarded to.
_REQUEST_HEADERS = ("content-type", "if-match", "x-lxd-uid", "x-lxd-gid", "x-lxd-mode", "x-lxd-type",
                    "x-lxd-write", "range", "user-agent")
_RESPONSE_HEADERS = ("content-type", "etag", "location", "content-disposition", "x-lxd-uid", "x-lxd-gid",
                     "x-lxd-mode", "x-lxd-type", "content-range", "accept-ranges")

_CONTAINER_PATH = re.compile(r"^/1\.0/(?:containers|instances)/([^/]+)(?:/.*)?$")
_OPERATION_PATH = re.compile(r"^/1\.0/operations/([^/]+)(?:/.*)?$")
# Storage volumes asked of a `target` member are that member's; a custom volume is its row's
# `location`'s.
_VOLUME_PATH = re.compile(r"^/1\.0/storage-pools/[^/]+/volumes(?:/.*)?$")
_CUSTOM_VOLUME_PATH = re.compile(r"^/1\.0/storage-pools/([^/]+)/volumes/custom/([^/]+)(?:/.*)?$")

log = Logger()


@implementer(IPolicyForHTTPS)
class _MemberPolicy:
    def __init__(self, peer_pem, cert_path, key_path):
        self.peer_pem, self.cert_path, self.key_path = peer_pem, cert_path, key_path

    def creatorForNetloc(self, hostname, port):
        host = hostname.decode("ascii") if isinstance(hostname, bytes) else hostname
        return tls.client_creator(host.strip("[]"), self.peer_pem, self.cert_path, self.key_path)


class MemberUnreachable(errors.ApiError):
    code = 503

    def __init__(self, name, reason):
        super().__init__(f"Cluster member '{name}' is unreachable: {reason}")


class Peers:
    """This member's HTTPS client to the other members."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.operations = {}  # operation id -> member name, for operations started through us

    def _client(self, member):
        import treq
        from twisted.web.client import Agent, HTTPConnectionPool

        certificate = member.value.get("certificate")
        if not certificate:
            raise MemberUnreachable(member.name, "its certificate is not known")
        pool = HTTPConnectionPool(self.daemon.reactor, persistent=False)
        agent = Agent(self.daemon.reactor, pool=pool,
                      contextFactory=_MemberPolicy(certificate, self.daemon.cert_path, self.daemon.key_path))
        return treq.client.HTTPClient(agent)

    async def call(self, member, method, path, body=None, headers=None, timeout=CALL_TIMEOUT):
        """(code, headers, body bytes) of `method path` on `member` (a cluster_member document)."""
        sent = {FORWARDED: ["1"]}
        for name, value in (headers or {}).items():
            sent[name] = [value]
        try:
            response = await self._client(member).request(method, member.value["url"] + path, data=body,
                                                           headers=sent, timeout=timeout)
            content = await response.content()
        except MemberUnreachable:
            raise
        except defer.CancelledError:
            raise
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

    def remember_operation(self, op_id, member_name):
        self.operations[op_id] = member_name
        while len(self.operations) > REMOTE_OPERATIONS:
            del self.operations[next(iter(self.operations))]

    # -- forwarding ------------------------------------------------------------------
    def owner(self, http, raw_path):
        """The member document a request should go to, or None to answer it here."""
        cluster = getattr(self.daemon, "cluster", None)
        if cluster is None or not cluster.enabled or http.getHeader(FORWARDED):
            return None
        if raw_path.endswith("/websocket"):
            return None  # websockets are not proxied member to member (yet): answered here
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
                key = f"{unquote(m.group(1))}/custom/{unquote(m.group(2))}"
                location = (self.daemon.store.value("volume", key) or {}).get("location")
                member = cluster.member_by_id(location) if location else None
            if member is None or member.value["id"] == cluster.member_id:
                return None
            return member
        m = _OPERATION_PATH.match(raw_path)
        if m and m.group(1) in self.operations:
            try:
                self.daemon.operations.get(m.group(1))
                return None
            except errors.NotFound:
                pass
            return cluster.member_or_none(self.operations[m.group(1)])
        return None

    async def forward(self, req, member):
        """Relay `req` to `member` and its answer back."""
        http = req.http
        headers = {}
        for name in _REQUEST_HEADERS:
            value = http.getHeader(name)
            if value is not None:
                headers[name] = value
        body = req.body.read() if http.method in (b"POST", b"PUT", b"PATCH") else None
        path = http.uri.decode("utf-8", "replace")
        # An operation wait may last as long as the client asked: no timeout of ours then.
        timeout = None if "/wait" in path.split("?")[0] else CALL_TIMEOUT
        code, answer_headers, content = await self.call(member, http.method.decode(), path, body, headers,
                                                        timeout=timeout)
        if answer_headers.getRawHeaders("content-type", [""])[0].startswith("application/json"):
            try:
                op = json.loads(content).get("operation") or ""
            except (ValueError, AttributeError):
                op = ""
            if op:
                self.remember_operation(op.rstrip("/").split("/")[-1], member.name)
        return Relayed(code, answer_headers, content)


class Relayed(Response):
    """An answer of another member, as it came."""

    def __init__(self, code, headers, body):
        self.code, self.headers, self.body = code, headers, body

    def render(self, request):
        request.setResponseCode(self.code)
        for name in _RESPONSE_HEADERS:
            for value in self.headers.getRawHeaders(name, []):
                request.setHeader(name.encode(), value.encode() if isinstance(value, str) else value)
        return self.body
