# -*- test-case-name: tests.unit.test_response -*-
"""The LXD response envelope. Handlers return these; the router renders them."""

import hashlib
import json

from twisted.web.server import NOT_DONE_YET

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_dumps_ascii = json.JSONEncoder(separators=(",", ":")).encode


def dumps(obj):
    """Compact JSON bytes, as the reference daemon writes them."""
    text = _dumps(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (a file name that is not UTF-8, say) has no UTF-8 form; escaped
        # it is still JSON, which clients decode to U+FFFD.
        return _dumps_ascii(obj).encode("ascii")


def etag_of(value):
    """The ETag of an object's writable state: SHA-256 hex of its canonical JSON."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Response:
    """Something the router can write to a twisted.web request."""

    def render(self, request):
        raise NotImplementedError


def _json(request, code, body, headers=()):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    for name, value in headers:
        request.setHeader(name, value)
    return body


class SyncResponse(Response):
    """`type: sync`; 200, or 201 with a Location for creations."""

    def __init__(self, metadata, code=200, *, etag=None, location=None, headers=None):
        self.metadata = metadata
        self.code = code
        self.etag = etag
        self.location = location
        self.headers = headers or {}

    def envelope(self):
        return {
            "type": "sync", "status": "Success", "status_code": 200,
            "operation": "", "error_code": 0, "error": "", "metadata": self.metadata,
        }

    def render(self, request):
        headers = [(k.encode(), str(v).encode()) for k, v in self.headers.items()]
        if self.etag:
            headers.append((b"etag", self.etag.encode()))
        if self.location:
            headers.append((b"location", self.location.encode()))
        return _json(request, self.code, dumps(self.envelope()), headers)


def empty():
    """The `{}` answer of most successful PUT/PATCH/DELETE calls."""
    return SyncResponse({})


def created(location):
    """201 with a Location and null metadata."""
    return SyncResponse(None, 201, location=location)


class CachedSyncResponse(Response):
    """A sync answer whose body was rendered ahead of time (hot read paths)."""

    def __init__(self, body, etag=None):
        self.body = body
        self.headers = [(b"etag", etag.encode())] if etag else []

    def render(self, request):
        return _json(request, 200, self.body, self.headers)


class AsyncResponse(Response):
    """202 with the operation object and its Location."""

    def __init__(self, operation):
        self.operation = operation

    def render(self, request):
        url = self.operation.url
        body = {
            "type": "async", "status": "Operation created", "status_code": 100,
            "operation": url, "error_code": 0, "error": "",
            "metadata": self.operation.render(),
        }
        return _json(request, 202, dumps(body), [(b"location", url.encode())])


class ErrorResponse(Response):
    """`type: error` with only the three keys the reference sends."""

    def __init__(self, code, message):
        self.code = code
        self.message = message

    def render(self, request):
        body = {"type": "error", "error": self.message, "error_code": self.code}
        return _json(request, self.code, dumps(body), [(b"x-content-type-options", b"nosniff")])


class RawResponse(Response):
    """Bytes that are not an envelope (logs, console buffer, small downloads)."""

    def __init__(self, body, content_type=b"application/octet-stream", headers=None, filename=None):
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})
        if filename:
            self.headers["Content-Disposition"] = f"inline;filename={filename}"

    def render(self, request):
        request.setResponseCode(200)
        request.setHeader(b"content-type", self.content_type)
        for name, value in self.headers.items():
            request.setHeader(name.encode(), str(value).encode())
        return self.body


class FileResponse(Response):
    """A file sent from disk (read in threads), with single-range support; headers as given."""

    def __init__(self, path, headers=None, filename=None, content_type="application/octet-stream"):
        self.path = path
        self.headers = dict(headers or {})
        if filename:
            self.headers["Content-Disposition"] = f"inline;filename={filename}"
        self.headers["Content-Type"] = content_type

    def render(self, request):
        from lxdtx.streaming import send_file

        return ProducerResponse(lambda request: send_file(request, self.path), self.headers).render(request)


class ProducerResponse(Response):
    """A body written by a coroutine: `await write(request)` then the router finishes."""

    def __init__(self, writer, headers=None, code=200):
        self.writer = writer
        self.headers = dict(headers or {})
        self.code = code

    def render(self, request):
        from twisted.internet import defer

        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name.encode(), str(value).encode())

        def done(_):
            if not request.finished and not getattr(request, "_disconnected", False):
                request.finish()

        d = defer.ensureDeferred(self.writer(request))
        d.addErrback(lambda f: request.channel and request.channel.loseConnection())
        d.addCallback(done)
        return NOT_DONE_YET
