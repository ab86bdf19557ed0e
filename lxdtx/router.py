# -*- test-case-name: tests.unit.test_router -*-
"""One router for every endpoint table: matching, trust, body limits, rendering.

Each resource module declares `ENDPOINTS`, a list of `Endpoint`s (path, one
`Action` per method). `Router` is the single twisted.web resource serving all of
them; handlers are `async def handler(req) -> Response` and never write to the
request themselves.
"""

import io
import json
import re
import tempfile
from urllib.parse import parse_qsl, unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import failure
from twisted.web import http, resource, server

from lxdtx import errors
from lxdtx.response import ErrorResponse, SyncResponse, etag_of

MAX_JSON_BODY = 4 * 1024 * 1024
_IN_MEMORY_BODY = 256 * 1024
METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE")


class Action:
    """How one method of an endpoint is served."""

    def __init__(self, handler, *, untrusted=False, local_only=False, max_body=MAX_JSON_BODY,
                 cancel_on_disconnect=False):
        self.handler = handler
        self.untrusted = untrusted
        self.local_only = local_only
        self.max_body = max_body
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


def _family(path):
    """The first two segments of a path: `/1.0/operations/x/wait` -> `/1.0/operations`."""
    return "/".join(path.split("/", 3)[:3])


class ApiRequest:
    """What a handler sees of one HTTP request."""

    def __init__(self, http, daemon, params, trusted):
        self.http = http
        self.daemon = daemon
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
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
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


_DATE = [0, b""]


def _http_date(now):
    """The Date header value, formatted once a second."""
    second = int(now)
    if _DATE[0] != second:
        _DATE[0], _DATE[1] = second, http.datetimeToString(second)
    return _DATE[1]


class ApiHTTPRequest(server.Request):
    """A request that knows its body limit before the body arrives."""

    _too_large = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Bodies are the handlers' business: twisted.web would read a whole
        # multipart upload (an image of many GB) into memory to fill `args`.
        self._parsePOSTFormSubmission = False

    def process(self):
        """Hand the request straight to the router (no resource tree to walk)."""
        self.site = self.channel.site
        self.setHeader(b"date", _http_date(self.channel.site.reactor_seconds()))
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

    def gotLength(self, length):
        if length == 0:  # no body: no limit to look up
            self._limit = self._received = 0
            self.content = io.BytesIO()
            return
        limit = self.channel.site.body_limit(self.channel._command, self.channel._path)
        self._limit = limit
        self._received = 0
        if length is not None and length > limit:
            self._too_large = True
            self.content = _Discard()
        elif length is not None and length > _IN_MEMORY_BODY:
            self.content = tempfile.TemporaryFile(dir=self.channel.site.spool_dir)
        else:
            # Most requests have no body or a small one; a chunked body that
            # grows large moves to a spool file when it does (handleContentChunk).
            self.content = io.BytesIO()

    def handleContentChunk(self, data):
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._too_large = True
            self.content.close()
            self.content = _Discard()
            return
        if self._received > _IN_MEMORY_BODY and isinstance(self.content, io.BytesIO):
            spool = tempfile.TemporaryFile(dir=self.channel.site.spool_dir)
            spool.write(self.content.getbuffer())
            self.content = spool
        self.content.write(data)


class Router(resource.Resource):
    """The single resource behind `/`: routes, checks trust, runs handlers, renders."""

    isLeaf = True
    log = Logger()

    def __init__(self, daemon, endpoints):
        super().__init__()
        self.daemon = daemon
        self.routes = Routes(endpoints)

    def body_limit(self, method, raw_uri):
        endpoint, _ = self.routes.match(raw_uri.partition(b"?")[0].decode("utf-8", "replace"))
        action = endpoint and endpoint.actions.get(method.decode("ascii", "replace"))
        return action.max_body if action else MAX_JSON_BODY

    def render(self, request):
        self.daemon.cors.apply(request)
        method = request.method.decode("ascii", "replace")
        if method == "OPTIONS":
            request.setResponseCode(200)
            return b""
        raw_path = request.path.decode("utf-8", "replace")
        endpoint, params = self.routes.match(raw_path)
        if endpoint is None:
            return self._write(request, ErrorResponse(404, "not found"))
        if not self.daemon.ready and not raw_path.startswith(("/internal/", "/1.0/events")) and raw_path != "/":
            return self._write(request, ErrorResponse(503, "LXD daemon setup in progress"))
        action = endpoint.actions.get(method)
        if action is None:
            if method in METHODS:
                request.setHeader(b"allow", ", ".join(sorted(endpoint.actions)).encode())
                return self._write(request, ErrorResponse(501, "not implemented"))
            return self._write(request, ErrorResponse(404, "not found"))
        trusted = self.daemon.trust.is_trusted(request)
        if (not trusted and not action.untrusted) or (action.local_only and not request.channel.site.local):
            return self._write(request, ErrorResponse(403, "not authorized"))
        if request._too_large:
            request.setHeader(b"connection", b"close")
            return self._write(request, ErrorResponse(413, f"request body larger than {action.max_body} bytes"))

        api = ApiRequest(request, self.daemon, params, trusted)
        d = defer.Deferred.fromCoroutine(self._call(action, api))
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

    async def _call(self, action, api):
        try:
            response = await action.handler(api)
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
            response = ErrorResponse(500, str(getattr(response, "value", response)))
        try:
            return response.render(request)
        except errors.ApiError as e:
            return ErrorResponse(e.code, e.message).render(request)

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
    """The HTTP site: our request class, no access log, body limits per route."""

    requestFactory = ApiHTTPRequest
    noisy = False

    def __init__(self, router, spool_dir=None, **kwargs):
        super().__init__(router, **kwargs)
        self.router = router
        self.spool_dir = spool_dir

    def body_limit(self, method, raw_uri):
        return self.router.body_limit(method, raw_uri)

    def reactor_seconds(self):
        return self.reactor.seconds()

    def log(self, request):
        pass
