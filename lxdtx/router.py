# -*- test-case-name: tests.unit.test_router -*-
"""One router for every endpoint table: matching, trust, body limits, rendering.

Each resource module declares `ENDPOINTS`, a list of `Endpoint`s (path, one
`Action` per method). `Router` is the single twisted.web resource serving all of
them; handlers are `async def handler(req) -> Response` and never write to the
request themselves.

Whether a request may send a body, and how much, is decided from its request
line and its connection before any body byte is stored (`ApiHTTPRequest.gotLength`).
A request of a connection that is not trusted is answered there and then when
it would be refused anyway, or when its body is more than its route lets an
untrusted caller send: the answer goes out at once, the connection closes, and
the body is never read (`ApiChannel.answer_early`). Untrusted bodies stay in
memory; only trusted ones may be spooled to disk.
"""

import functools
import io
import json
import re
import tempfile
from urllib.parse import parse_qsl, unquote

from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.python import failure
from twisted.web import http, http_headers, resource, server
from zope.interface import implementer

from lxdtx import errors
from lxdtx.response import ErrorResponse, SyncResponse, dumps, etag_of

MAX_JSON_BODY = 4 * 1024 * 1024
# What an untrusted caller may send to a route open to it, unless the route says more
# (a certificate add takes 64 KiB): those routes are GETs, whose bodies are empty.
UNTRUSTED_MAX_BODY = 4 * 1024
_IN_MEMORY_BODY = 256 * 1024
METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE")
# After an early answer the connection closes; what the client still sends meanwhile is
# read and dropped, up to these bounds, then the connection is aborted.
LINGER_BYTES = 256 * 1024
LINGER_SECONDS = 2.0


class Action:
    """How one method of an endpoint is served.

    `max_body` bounds the body of a trusted caller; `untrusted_max_body` that of an
    untrusted one where `untrusted` lets it in (never more than `max_body`).

    `body` is what the request body holds, in the words of lxdtx.bodies (None: no
    body is read); `answers` what a success is: "sync" or "async" envelopes (None:
    either, by method), "raw" bytes (a download), or a "websocket" upgrade. Both
    are for the API's description (lxdtx.openapi), not checked here.
    """

    def __init__(self, handler, *, untrusted=False, local_only=False, max_body=MAX_JSON_BODY,
                 untrusted_max_body=UNTRUSTED_MAX_BODY, cancel_on_disconnect=False, body=None, answers=None):
        self.handler = handler
        self.body = body
        self.answers = answers
        self.untrusted = untrusted
        self.local_only = local_only
        self.max_body = max_body
        self.untrusted_max_body = min(max_body, untrusted_max_body) if untrusted else 0
        # Only handlers that merely wait may be cancelled when the client goes away:
        # cancelling one in the middle of a state change would leave it half done.
        self.cancel_on_disconnect = cancel_on_disconnect


class Endpoint:
    """A path pattern and its actions. `{name}` matches one segment, `{name:*}` the rest."""

    def __init__(self, path, *, aliases=(), **actions):
        self.path = path
        self.paths = (path, *aliases)
        self.actions = {}
        for method, action in actions.items():
            if action is None:
                continue
            if not isinstance(action, Action):
                action = Action(action)
            self.actions[method.upper()] = action


def _compile(path):
    parts = []
    for segment in path.strip("/").split("/"):
        m = re.fullmatch(r"\{(\w+)(:\*)?\}", segment)
        if m and m.group(2):
            parts.append(f"(?P<{m.group(1)}>.+)")
        elif m:
            parts.append(f"(?P<{m.group(1)}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("/" + "/".join(parts))


class Routes:
    """All endpoints, looked up by raw (still percent-encoded) path."""

    def __init__(self, endpoints):
        self._static = {}
        # Patterns by their first two segments (all of ours begin with literal ones, like
        # `/1.0/operations`): a path is tried only against its family's few. Any pattern
        # with a parameter there is tried for every path.
        self._families = {}
        self._anywhere = []
        order = 0
        for endpoint in endpoints:
            for path in endpoint.paths:
                if "{" not in path:
                    self._static[path] = endpoint
                    continue
                entry = (order, _compile(path), endpoint)
                order += 1
                family = _family(path)
                if "{" in family:
                    self._anywhere.append(entry)
                else:
                    self._families.setdefault(family, []).append(entry)

    def match(self, raw_path):
        """(endpoint, params) for a path, or (None, None)."""
        endpoint = self._static.get(raw_path)
        if endpoint is not None:
            return endpoint, {}
        candidates = self._families.get(_family(raw_path), ())
        if self._anywhere:
            candidates = sorted([*candidates, *self._anywhere], key=lambda entry: entry[0])
        for _, pattern, endpoint in candidates:
            m = pattern.fullmatch(raw_path)
            if m:
                return endpoint, {k: unquote(v) for k, v in m.groupdict().items()}
        return None, None


# Longer integers than Python converts by default (sys.int_info.default_max_str_digits).
_MAX_INT_DIGITS = 4300
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


# How deep a body may nest: LXD's objects need four levels or so; a bound here keeps
# every later walk over a value (validation, error texts, the store's JSON) within
# Python's recursion limit.
MAX_JSON_DEPTH = 64


def _too_deep(value):
    """Whether `value` nests more than MAX_JSON_DEPTH lists and maps (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return False


def _parse_int(text):
    if len(text) > _MAX_INT_DIGITS:
        raise ValueError("number too large")
    return int(text)


def _no_constant(name):
    raise ValueError(f"invalid value {name}")


def _replace_surrogates(value):
    """`value` with every lone surrogate as U+FFFD, as Go's encoding/json decodes them: text
    that cannot be encoded never reaches the state store or an answer."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def loads(raw):
    """A JSON document of bytes as the reference decodes one: UTF-8 only, no NaN or Infinity.

    ValueError with a message for the client otherwise (nesting too deep included).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"invalid UTF-8 at byte {e.start}") from None
    if text.startswith("\ufeff"):
        raise ValueError("unexpected byte order mark at byte 0")
    try:
        value = json.loads(text, parse_int=_parse_int, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    # Fewer brackets than the bound cannot nest deeper than it.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _too_deep(value):
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} deep")
    if _SURROGATE_ESCAPE.search(text):
        value = _replace_surrogates(value)
    return value


def _family(path):
    """The first two segments of a path: `/1.0/operations/x/wait` -> `/1.0/operations`."""
    return "/".join(path.split("/", 3)[:3])


class ApiRequest:
    """What a handler sees of one HTTP request."""

    def __init__(self, http, daemon, params, trusted, answers=None):
        self.http = http
        self.daemon = daemon
        self.answers = answers  # lxdtx.resources.answers.Answers of the router
        self.params = params
        self.trusted = trusted
        self.method = http.method.decode("ascii")
        self.path = http.path.decode("utf-8", "replace")
        self._query = None

    @property
    def query(self):
        """Query parameters, first value wins, decoded."""
        if self._query is None:
            raw = self.http.uri.partition(b"?")[2].decode("utf-8", "replace")
            self._query = {}
            for key, value in parse_qsl(raw, keep_blank_values=True):
                self._query.setdefault(key, value)
        return self._query

    def header(self, name, default=None):
        value = self.http.getHeader(name)
        return default if value is None else value

    @property
    def body(self):
        """The request body as a file positioned at its start."""
        content = self.http.content
        content.seek(0)
        return content

    def json(self):
        """The body parsed as a JSON object; a clear 400 otherwise (413 when too big for JSON)."""
        body = self.body
        size = body.seek(0, 2)
        body.seek(0)
        if size > MAX_JSON_BODY:
            raise errors.BodyTooLarge(f"JSON request body larger than {MAX_JSON_BODY} bytes")
        raw = body.read()
        if not raw.strip():
            return {}
        try:
            value = loads(raw)
        except ValueError as e:
            raise errors.BadRequest(f"invalid JSON body: {e}")
        if not isinstance(value, dict):
            raise errors.BadRequest("request body must be a JSON object")
        return value

    def check_etag(self, writable):
        """412 unless If-Match (when given) is the ETag of the current writable state."""
        given = self.header("If-Match")
        if not given:
            return
        have = etag_of(writable)
        if given.strip().strip('"') != have:
            raise errors.PreconditionFailed(f"ETag doesn't match: {have} vs {given}")

    @property
    def recursion(self):
        value = self.query.get("recursion", "0")
        try:
            return int(value)
        except ValueError:
            return 0

    @property
    def peer_certificate(self):
        """The client's TLS certificate (pyOpenSSL X509), or None."""
        transport = getattr(self.http.channel, "transport", None)
        get = getattr(transport, "getPeerCertificate", None)
        return get() if get else None

    @property
    def is_unix(self):
        return self.daemon.trust.is_unix(self.http)

    @property
    def auth_user(self):
        """(method, name) of a caller its request itself authenticated (a Candid login), or None."""
        return getattr(self.http, "auth_user", None)

    @property
    def remote_address(self):
        peer = self.http.getClientAddress()
        return getattr(peer, "host", "@")

    def base_url(self):
        return self.daemon.base_url_for(self.http)


class _Discard(io.RawIOBase):
    """Where the bytes of a refused body go; reads back as empty (twisted.web rewinds it)."""

    def write(self, data):
        return len(data)

    def writable(self):
        return True

    def readable(self):
        return True

    def readinto(self, buffer):
        return 0

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        return 0


def _too_large(limit):
    return ErrorResponse(413, f"request body larger than {limit} bytes")


class ApiHTTPRequest(server.Request):
    """A request that knows, before its body arrives, how much body it may send (if any)."""

    _too_large = False
    _untrusted = False
    # Whether the caller is trusted, once the router asked (None: not yet).
    caller_trusted = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Bodies are the handlers' business: twisted.web would read a whole
        # multipart upload (an image of many GB) into memory to fill `args`.
        self._parsePOSTFormSubmission = False

    def process(self):
        """Hand the request straight to the router (no resource tree to walk)."""
        self.site = self.channel.site
        self.setHeader(b"date", self.channel.site.http_date())
        self.prepath, self.postpath = [], []
        try:
            body = self.site.router.render(self)
        except BaseException:
            self.processingFailed(failure.Failure())
            return
        if body is server.NOT_DONE_YET:
            return
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(b"" if self.method == b"HEAD" else body)
        self.finish()

    def processingFailed(self, reason):
        """The LXD error envelope, not twisted.web's HTML page; the traceback goes to the log only."""
        self._log.failure("Request {method} {path} failed", failure=reason, method=self.method, path=self.path)
        if self.finished or self._disconnected:
            return reason
        if self.startedWriting:  # too late for another status: end what was begun
            self.finish()
            return reason
        body = dumps({"type": "error", "error": errors.InternalError().message, "error_code": 500})
        self.setResponseCode(http.INTERNAL_SERVER_ERROR)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()
        return reason

    def gotLength(self, length):
        """Decide from the request line and the connection alone, before any body byte is kept."""
        self._received = 0
        self.content = io.BytesIO()
        if length == 0:  # no body: nothing to decide before the request is whole
            self._limit = 0
            return
        channel = self.channel
        limit, trusted, refusal = channel.site.router.body_rule(self, channel._command, channel._path)
        self._limit = limit
        self._untrusted = not trusted
        if refusal is not None and getattr(refusal, "settle", None) is not None and not refusal.ready:
            # Its answer must wait (lxdtx.candid.DischargeRequired): the body is read and dropped.
            self._too_large = True
            self.content = _Discard()
            return
        if refusal is None and length is not None and length > limit:
            if trusted:
                # Trusted callers get their 413 once the body is in (and dropped).
                self._too_large = True
                self.content = _Discard()
                return
            refusal = _too_large(limit)
        if refusal is not None:
            channel.answer_early(self, refusal)
        elif trusted and length is not None and length > _IN_MEMORY_BODY:
            self.content = tempfile.TemporaryFile(dir=channel.site.spool_dir)
        # Otherwise in memory: most requests have no body or a small one; a trusted
        # chunked body that grows large moves to a spool file when it does.

    def handleContentChunk(self, data):
        channel = self.channel
        if self._too_large or channel is None or channel.answered_early:
            return
        self._received += len(data)
        if self._received > self._limit:
            if self._untrusted:
                channel.answer_early(self, _too_large(self._limit))
                return
            self._too_large = True
            self.content.close()
            self.content = _Discard()
            return
        if self._received > _IN_MEMORY_BODY and not self._untrusted and isinstance(self.content, io.BytesIO):
            spool = tempfile.TemporaryFile(dir=channel.site.spool_dir)
            spool.write(self.content.getbuffer())
            self.content = spool
        self.content.write(data)


@implementer(IHandshakeListener)
class ApiChannel(http.HTTPChannel):
    """HTTP/1.1 for the API: answers before the body, and bounds on connections not trusted.

    `answer_early` writes an answer to a request whose body has not been read,
    closes the connection and drops what the client still sends, within
    LINGER_BYTES and LINGER_SECONDS.

    On a site with `untrusted` limits (the HTTPS one; lxdtx.trust.UntrustedConnections)
    a connection counts from its accept: it has the handshake timeout to finish the
    TLS handshake; then, unless its certificate is trusted, it is refused with a 503
    past the caps, and must send each whole request within the request timeout of
    its handshake or of its previous answer. A request of it that is trusted (its
    certificate was just added) takes it out of the count for good.
    """

    answered_early = False
    _deadline = None
    _linger = None
    _dropped = 0
    _counted = False
    _gone = False

    @property
    def _limits(self):
        return getattr(self.site, "untrusted", None)

    def peer_host(self):
        return getattr(self.transport.getPeer(), "host", "")

    def abort(self):
        """Drop the connection now (nothing more is read or written)."""
        if not self._gone and self.transport is not None:
            self.transport.abortConnection()

    # -- connections not trusted ---------------------------------------------------
    def connectionMade(self):
        super().connectionMade()
        limits = self._limits
        if limits is not None:
            for oldest in limits.connecting(self):
                oldest.abort()
            self._arm(limits.handshake_timeout)

    def handshakeCompleted(self):
        """The TLS handshake is done: the client certificate (if any) says whether to count us."""
        limits = self._limits
        if limits is None or self._gone:
            return
        self._cancel_deadline()
        if self.site.router.daemon.trust.channel_trusted(self):
            limits.release(self)
            return
        host = self.peer_host()
        if not limits.admit(self, host):
            self._log.info("Refusing an untrusted connection of {peer}: too many open", peer=host)
            headers = http_headers.Headers({b"content-type": [b"application/json"],
                                            b"date": [self.site.http_date()]})
            body = dumps({"type": "error", "error": "Too many untrusted connections", "error_code": 503})
            self._answer_and_close(503, body, headers)
            return
        self._counted = True
        self._arm(limits.request_timeout)

    def request_trusted(self):
        """A request of this connection is trusted: the connection leaves the untrusted count."""
        if self._counted:
            self._counted = False
            self._cancel_deadline()
            self._limits.release(self)

    def upgraded(self):
        """The connection now belongs to a websocket (its secret let it in): no HTTP bounds of ours."""
        self._cancel_deadline()
        self._counted = False
        limits = self._limits
        if limits is not None:
            limits.release(self)

    def _arm(self, seconds):
        self._cancel_deadline()
        self._deadline = self.callLater(seconds, self._too_slow)

    def _cancel_deadline(self):
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _too_slow(self):
        self._deadline = None
        self._log.info("Dropping a connection of {peer}: no handshake or request in time", peer=self.peer_host())
        self.abort()

    # -- requests ----------------------------------------------------------------------
    def allContentReceived(self):
        if self.answered_early:
            return
        if self._counted:
            self._cancel_deadline()  # a whole request: the handler's time is not the client's
        super().allContentReceived()

    def requestDone(self, request):
        if self._counted and not self._gone:
            # Armed first: a pipelined request that is already here cancels it again.
            self._arm(self._limits.request_timeout)
        super().requestDone(request)

    def answer_early(self, request, response):
        """Answer `request` now, before (the rest of) its body, and close the connection."""
        if self.answered_early:
            return
        self.site.router.daemon.cors.apply(request)
        body = response.render(request)
        request.setHeader(b"date", self.site.http_date())
        self._answer_and_close(request.code, body, request.responseHeaders)

    def _answer_and_close(self, code, body, headers):
        self.answered_early = True
        self.persistent = False
        headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
        headers.setRawHeaders(b"connection", [b"close"])
        self.writeHeaders(b"HTTP/1.1", b"%d" % code, http.RESPONSES.get(code, b"Error"), headers)
        self.transport.write(body)
        self._cancel_deadline()
        self.setTimeout(None)
        self._linger = self.callLater(LINGER_SECONDS, self.abort)
        self.loseConnection()

    def _drop(self, data):
        self._dropped += len(data)
        if self._dropped > LINGER_BYTES:
            self.abort()

    def dataReceived(self, data):
        if self.answered_early:
            self._drop(data)
            return
        super().dataReceived(data)

    def lineReceived(self, line):
        if not self.answered_early:
            super().lineReceived(line)

    def rawDataReceived(self, data):
        if self.answered_early:
            self._drop(data)
            return
        super().rawDataReceived(data)

    def _send100Continue(self):
        if not self.answered_early:
            super()._send100Continue()

    def connectionLost(self, reason):
        self._gone = True
        self._cancel_deadline()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        limits = self._limits
        if limits is not None:
            limits.release(self)
        super().connectionLost(reason)


class Router(resource.Resource):
    """The single resource behind `/`: routes, checks trust, runs handlers, renders."""

    isLeaf = True
    log = Logger()

    def __init__(self, daemon, endpoints, answers):
        super().__init__()
        self.daemon = daemon
        self.routes = Routes(endpoints)
        self.answers = answers

    def trusted(self, request):
        """Whether the caller of `request` is trusted (asked of the trust store once per request)."""
        trusted = getattr(request, "caller_trusted", None)
        if trusted is None:
            trusted = self.daemon.trust.is_trusted(request)
            request.caller_trusted = trusted
            if trusted:
                note = getattr(request.channel, "request_trusted", None)
                if note is not None:
                    note()
        return trusted

    def body_rule(self, request, method, raw_uri):
        """(limit, trusted, refusal) for a request about to send a body, from its request line.

        `refusal` is the answer an untrusted caller gets without sending its body: the
        one it would get after it anyway. Trusted callers have none here: they get
        their answers as ever, once the body is in.
        """
        trusted = self.trusted(request)
        method = method.decode("ascii", "replace")
        raw_path = raw_uri.partition(b"?")[0].decode("utf-8", "replace")
        if method == "OPTIONS":
            return (MAX_JSON_BODY if trusted else UNTRUSTED_MAX_BODY), trusted, None
        endpoint, _ = self.routes.match(raw_path)
        action = endpoint.actions.get(method) if endpoint is not None else None
        if trusted:
            return (action.max_body if action else MAX_JSON_BODY), True, None
        refusal = self._refusal(request, method, raw_path, endpoint, action, trusted)
        return (action.untrusted_max_body if refusal is None else 0), False, refusal

    def _refusal(self, request, method, raw_path, endpoint, action, trusted):
        """The error answer for a request refused whatever its body, or None."""
        if endpoint is None:
            return ErrorResponse(404, "not found")
        if not self.daemon.ready and not raw_path.startswith(("/internal/", "/1.0/events")) and raw_path != "/":
            return ErrorResponse(503, "LXD daemon setup in progress")
        if action is None:
            if method in METHODS:
                request.setHeader(b"allow", ", ".join(sorted(endpoint.actions)).encode())
                return ErrorResponse(501, "not implemented")
            return ErrorResponse(404, "not found")
        if not trusted and (not action.untrusted or request.getHeader(b"x-lxd-authenticated") is not None):
            # A client that says it expects to be authenticated gets no untrusted answer.
            if getattr(request, "discharge_required", None) is not None:
                return self.daemon.trust.candid.refusal(request)  # log in with Candid first
            return ErrorResponse(403, "not authorized")
        if action.local_only and not request.channel.site.local:
            return ErrorResponse(403, "not authorized")
        return None

    def render(self, request):
        self.daemon.cors.apply(request)
        method = request.method.decode("ascii", "replace")
        if method == "OPTIONS":
            request.setResponseCode(200)
            return b""
        raw_path = request.path.decode("utf-8", "replace")
        endpoint, params = self.routes.match(raw_path)
        action = endpoint.actions.get(method) if endpoint is not None else None
        trusted = self.trusted(request)
        refusal = self._refusal(request, method, raw_path, endpoint, action, trusted)
        if refusal is not None:
            if getattr(refusal, "settle", None) is not None and not refusal.ready:
                # What the answer needs (a Candid key) is fetched first.
                d = defer.Deferred.fromCoroutine(refusal.settle())
                d.addCallback(self._finish_later, request)
                return server.NOT_DONE_YET
            return self._write(request, refusal)
        if request._too_large:
            request.setHeader(b"connection", b"close")
            return self._write(request, _too_large(action.max_body))

        api = ApiRequest(request, self.daemon, params, trusted, self.answers)
        handler = action.handler
        peers = getattr(getattr(self.daemon, "cluster", None), "peers", None)
        member = peers.owner(request, raw_path) if peers is not None else None
        if member is not None:  # its object lives on another cluster member (lxdtx.cluster.peers)
            from lxdtx.resources.forwarding import forward

            handler = functools.partial(forward, member=member)
        d = defer.Deferred.fromCoroutine(self._call(handler, api))
        if d.called:
            # The common case: the handler never waited, answer synchronously.
            result = []
            d.addBoth(result.append)
            return self._write(request, result[0])
        if action.cancel_on_disconnect:
            request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addCallback(self._finish_later, request)
        # Cancelled because the client left: nobody to answer, nothing to report.
        d.addErrback(lambda failure: failure.trap(defer.CancelledError) and None)
        return server.NOT_DONE_YET

    async def _call(self, handler, api):
        try:
            response = await handler(api)
        except errors.ApiError as e:
            return ErrorResponse(e.code, e.message)
        except defer.CancelledError:
            raise
        except Exception as e:
            self.log.failure("Handler for {method} {path} failed", method=api.method, path=api.path)
            e = errors.to_api_error(e)
            return ErrorResponse(e.code, e.message)
        return response if response is not None else SyncResponse({})

    def _write(self, request, response):
        if not hasattr(response, "render"):
            # A Failure the handler's coroutine let through: logged, answered without its repr.
            self.log.failure("Request {method} {path} failed", response, method=request.method, path=request.path)
            e = errors.to_api_error(getattr(response, "value", response))
            response = ErrorResponse(e.code, e.message)
        try:
            return response.render(request)
        except errors.ApiError as e:
            return ErrorResponse(e.code, e.message).render(request)
        except Exception:
            self.log.failure("Rendering the answer to {method} {path} failed", method=request.method,
                             path=request.path)
            return ErrorResponse(500, errors.InternalError().message).render(request)

    def _finish_later(self, response, request):
        if request._disconnected or request.finished:
            return
        body = self._write(request, response)
        if body is not server.NOT_DONE_YET:
            # Known length: no chunked framing for answers that were merely late.
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()


class ApiSite(server.Site):
    """The HTTP site: our channel and request classes, no access log.

    `untrusted`: the bounds on connections not trusted (lxdtx.trust.UntrustedConnections),
    for a site whose clients are not all trusted (HTTPS); None for the unix socket.
    """

    protocol = ApiChannel  # type: ignore[assignment]  # Twisted types it as a callable
    requestFactory = ApiHTTPRequest
    noisy = False

    def __init__(self, router, spool_dir=None, untrusted=None, **kwargs):
        super().__init__(router, **kwargs)
        self.router = router
        self.spool_dir = spool_dir
        self.untrusted = untrusted
        self._date = (None, b"")  # (second, Date header value of that second)

    def reactor_seconds(self):
        return self.reactor.seconds()

    def http_date(self):
        """The Date header value, formatted once a second."""
        second = int(self.reactor_seconds())
        if self._date[0] != second:
            self._date = (second, http.datetimeToString(second))
        return self._date[1]

    def log(self, request):
        pass
