# -*- test-case-name: tests.integration.test_cluster_containers -*-
"""Requests whose object lives on another cluster member, forwarded there (which member:
lxdtx.cluster.peers.Peers.owner), and its answer relayed to our client as it came.

The request goes whole (method, path, query, body, the headers that matter) through the
member-to-member client (lxdtx.cluster.peers). An operation it started is remembered from
the answer, so that `/1.0/operations/ID` asked of this member goes there too. A websocket
(`/1.0/operations/ID/websocket?secret=`: exec, console) is relayed frame by frame
(lxdtx.websocket.relay): this member dials the owner's with its own certificate, pinning
the owner's, and joins the two. An answer that is not JSON (a file pulled, a log, an image
export) streams through at our client's pace.
"""

import json

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http import PotentialDataLoss
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from lxdtx import errors
from lxdtx.cluster.peers import ANY_HOLDER, CALL_TIMEOUT, FORWARDED, LOOKUP, MemberUnreachable, operation_id
from lxdtx.response import Response

RELAY_OPEN_TIMEOUT = 30  # the client's end of a relayed websocket must open within this
# Headers of a request that carry meaning to the member it is forwarded to.
_REQUEST_HEADERS = ("content-type", "if-match", "x-lxd-uid", "x-lxd-gid", "x-lxd-mode", "x-lxd-type",
                    "x-lxd-write", "range", "user-agent")
_RESPONSE_HEADERS = ("content-type", "etag", "location", "content-disposition", "x-lxd-uid", "x-lxd-gid",
                     "x-lxd-mode", "x-lxd-type", "content-range", "accept-ranges")

log = Logger()


async def forward(req, member):
    """Relay `req` to `member` (a cluster_member document, or Peers.owner's LOOKUP or
    ANY_HOLDER) and its answer back (a websocket: its frames)."""
    peers = req.daemon.cluster.peers
    http = req.http
    if member is ANY_HOLDER:
        return await _from_any_holder(peers, req)
    if member is LOOKUP:
        member = await peers.find_operation(operation_id(req.path))
    if member is None:
        raise errors.NotFound()
    if req.path.endswith("/websocket"):
        return await relay(req, member)
    headers = {}
    for name in _REQUEST_HEADERS:
        value = http.getHeader(name)
        if value is not None:
            headers[name] = value
    # The body as the router spooled it (in memory or a file), streamed from its start
    # (a handler may have read it to choose the member).
    body = req.body if http.method in (b"POST", b"PUT", b"PATCH") else None
    if body is not None:
        body.seek(0)
    path = http.uri.decode("utf-8", "replace")
    # An operation wait may last as long as the client asked: no timeout of ours then.
    timeout = None if "/wait" in path.split("?")[0] else CALL_TIMEOUT
    response = await peers.request(member, http.method.decode(), path, body, headers, timeout=timeout)
    if not response.headers.getRawHeaders("content-type", [""])[0].startswith("application/json"):
        return Streamed(response)  # a file pulled, a log: through, never whole in memory
    try:
        content = await response.content()
    except Exception as e:
        raise MemberUnreachable(member.name, getattr(e, "message", None) or type(e).__name__) from None
    try:
        answer = json.loads(content)
        op = answer.get("operation") or ""
    except (ValueError, AttributeError):
        op = ""
    if op:
        peers.remember_operation(op.rstrip("/").split("/")[-1], member.name, answer.get("metadata"))
    return Relayed(response.code, response.headers, content)


async def _from_any_holder(peers, req):
    """An image export relayed from the first other online member that has its files."""
    path = req.http.uri.decode("utf-8", "replace")
    for doc in peers.others():
        try:
            response = await peers.request(doc, "GET", path)
        except MemberUnreachable:
            continue
        if response.code == 200:
            return Streamed(response)
        await response.content()  # an error answer: read, then the next member
    raise errors.NotFound("The image's files are on no reachable cluster member")


async def relay(req, member):
    """A websocket of `member`'s (an operation's), relayed to the client of `req`.

    Not pinged: the owner's reader of a stream the client only writes (stdin, control)
    pauses while its command does not read, and would leave a ping unanswered. A member
    gone ends its connections, or its event stream (which is pinged) fails its
    operations here (lxdtx.cluster.events)."""
    from lxdtx.websocket import client
    from lxdtx.websocket.handshake import Handshake
    from lxdtx.websocket.relay import RelayClient, RelayedSocket

    daemon = req.daemon
    if (req.header("Upgrade") or "").lower() != "websocket":
        raise errors.BadRequest("websocket upgrade expected")
    certificate = member.value.get("certificate")
    if not certificate:
        raise MemberUnreachable(member.name, "its certificate is not known")
    url = "wss://" + member.value["url"].split("://", 1)[1] + req.http.uri.decode("utf-8", "replace")
    try:
        upstream = await client.connect(daemon.reactor, url, RelayClient,
                                        creator=daemon.cluster.peers.tls_creator(member),
                                        headers={FORWARDED: "1"}, ping=False)
    except client.HandshakeFailed as e:
        raise errors.BadRequest(f"Cluster member '{member.name}' refused the websocket: {e}") from None
    except Exception as e:
        raise MemberUnreachable(member.name, errors.describe(e)) from None
    if req.http._disconnected:
        upstream.drop()
        raise defer.CancelledError()
    upstream.expect_partner(daemon.reactor, RELAY_OPEN_TIMEOUT)
    return Handshake(daemon.websockets, RelayedSocket(upstream))


def _copy_head(request, code, headers, names=_RESPONSE_HEADERS):
    request.setResponseCode(code)
    for name in names:
        for value in headers.getRawHeaders(name, []):
            request.setHeader(name.encode(), value.encode() if isinstance(value, str) else value)


class Relayed(Response):
    """An answer of another member, as it came."""

    def __init__(self, code, headers, body):
        self.code, self.headers, self.body = code, headers, body

    def render(self, request):
        _copy_head(request, self.code, self.headers)
        return self.body


class Streamed(Response):
    """An answer of another member whose body goes through as it arrives, read only as fast
    as our client takes it."""

    def __init__(self, response):
        self.response = response

    def render(self, request):
        _copy_head(request, self.response.code, self.response.headers, (*_RESPONSE_HEADERS, "content-length"))
        self.response.deliverBody(_BodyPipe(request))
        return NOT_DONE_YET


@implementer(IPushProducer)
class _BodyPipe(Protocol):
    """A response body of another member into our request: its connection paused while our
    client's is full, stopped when our client goes; one cut short cuts our client's too
    (a shorter body than its length says, never taken for the whole)."""

    def __init__(self, request):
        self.request = request
        self.gone = False

    def connectionMade(self):
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(self._client_gone)

    def _client_gone(self, _):
        self.gone = True
        self.transport.stopProducing()

    def dataReceived(self, data):
        if not self.gone:
            self.request.write(data)

    def connectionLost(self, reason):
        from twisted.web.client import ResponseDone

        request = self.request
        if self.gone or request.finished:
            return
        request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
            return
        log.info("A relayed answer was cut short: {reason}", reason=reason.getErrorMessage())
        abort = getattr(request.channel, "abort", None)
        if abort is not None:
            abort()

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        self.transport.stopProducing()
