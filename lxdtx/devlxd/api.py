# -*- test-case-name: tests.integration.test_devlxd -*-
"""The guest API served on the /dev/lxd socket.

Plain HTTP without the LXD envelope: answers are bare JSON or raw bytes, errors
plain text with their status (as Go's `http.Error` writes them). Only GET is
served, on exact paths. Each connection is bound, when accepted, to the
container of its peer (lxdtx.devlxd.callers); every answer is about that
container alone, and only while it still allows /dev/lxd.
"""

from urllib.parse import unquote

from twisted.logger import Logger
from twisted.web import http, resource, server

from lxdtx import errors
from lxdtx.config.types import is_true
from lxdtx.devlxd import callers, changes
from lxdtx.instance import model
from lxdtx.resources.events import EventsSocket
from lxdtx.response import ErrorResponse, dumps
from lxdtx.websocket.handshake import Handshake

# What a guest may send as a body (only GETs are served: the body is never read); more
# closes the connection, so no guest fills the host's memory or disk.
MAX_GUEST_BODY = 4096
# An idle guest connection (not an event stream) is closed after this.
IDLE_TIMEOUT = 60


def _text(request, code, message):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return message.encode("utf-8") + b"\n"


def _json(request, value):
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"application/json")
    return dumps(value) + b"\n"


def _raw(request, data):
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"application/octet-stream")
    return data.encode("utf-8")


class GuestEventsSocket(EventsSocket):
    """A guest's event stream: not pinged (the reference never pings its guests)."""

    pinged = False


class GuestChannel(http.HTTPChannel):
    """An HTTP connection on the guest socket; knows its peer from the moment it is accepted."""

    def connectionMade(self):
        super().connectionMade()
        try:
            self.credentials = callers.peer_credentials(self.transport.getHandle())
        except OSError:
            self.credentials = None
        self.container = self.site.guests.container_of(self.credentials)


class GuestRequest(server.Request):
    """A guest request; a body over MAX_GUEST_BODY ends the connection before it is stored."""

    def gotLength(self, length):
        self._received = 0
        if length is not None and length > MAX_GUEST_BODY:
            self.channel._respondToBadRequestAndDisconnect()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        self._received += len(data)
        if self._received > MAX_GUEST_BODY:
            self.channel.transport.abortConnection()
            return
        super().handleContentChunk(data)


class GuestSite(server.Site):
    """The site of the guest socket; no access log."""

    protocol = GuestChannel  # type: ignore[assignment]  # Twisted types it as a callable
    requestFactory = GuestRequest
    noisy = False

    def __init__(self, guests):
        super().__init__(GuestResource(guests), timeout=IDLE_TIMEOUT)
        self.guests = guests

    def log(self, request):
        pass


class GuestResource(resource.Resource):
    """Every guest path, answered for the calling connection's container."""

    isLeaf = True
    log = Logger()

    def __init__(self, guests):
        super().__init__()
        self.guests = guests

    def render(self, request):
        try:
            return self._render(request)
        except errors.ApiError as e:
            return _text(request, e.code, e.message)
        except Exception:
            self.log.failure("Guest request {path} failed", path=request.path)
            return _text(request, 500, "internal server error")

    def _render(self, request):
        channel = request.channel
        credentials, name = channel.credentials, channel.container
        if name is None:
            pid = credentials.pid if credentials else 0
            return _text(request, 500, f"pid {pid} is not in a container")
        doc = self.guests.instances.store.get(model.KIND, name)
        if doc is None:
            return _text(request, 404, "not found")
        config, _ = self.guests.instances.records.expanded(doc.value)
        if not callers.enabled(config):
            return _text(request, 403, "not authorized")
        root = callers.root_ids(doc.value["config"])
        if root is None or credentials.uid != root[0]:
            return _text(request, 401, "Access denied for non-root user")
        if request.method != b"GET":
            return _text(request, 405, "method not allowed")
        path = request.path.decode("utf-8", "replace")
        if path == "/":
            return _json(request, ["/1.0"])
        if path == "/1.0":
            return _json(request, {"api_version": "1.0"})
        if path == "/1.0/config":
            return _json(request, [f"/1.0/config/{key}" for key in changes.user_keys(config)])
        if path.startswith("/1.0/config/") and "/" not in path[len("/1.0/config/"):]:
            key = unquote(path[len("/1.0/config/"):])
            if not key.startswith("user."):
                return _text(request, 403, "not authorized")
            if key not in config:
                return _text(request, 404, "not found")
            return _raw(request, config[key])
        if path == "/1.0/meta-data":
            return _raw(request, changes.meta_data(name, config))
        if path == "/1.0/events":
            types = changes.parse_types(request.args.get(b"type", [b""])[0].decode("utf-8", "replace"))
            socket = GuestEventsSocket(self.guests.hub(name), types)
            return Handshake(self.guests.websockets, socket).render(request)
        parts = path.split("/")
        if len(parts) == 5 and parts[:3] == ["", "1.0", "images"] and parts[4] == "export":
            return self._export(request, config, unquote(parts[3]))
        return _text(request, 404, "404 page not found")

    def _export(self, request, config, fingerprint):
        if not is_true(config.get("security.devlxd.images") or ""):
            return _text(request, 403, "not authorized")
        images = self.guests.images
        try:
            doc = images.document(fingerprint)
        except errors.ApiError:
            doc = None
        # Exactly one image, named in full, that any host client could fetch anyway.
        if doc is None or doc.name != fingerprint or not (doc.value.get("public") or doc.value.get("cached")):
            return ErrorResponse(404, "not found").render(request)
        from twisted.internet import defer

        from lxdtx.resources.images import export_response

        d = defer.Deferred.fromCoroutine(export_response(images, doc))
        d.addCallback(self._write_export, request)
        d.addErrback(self._export_failed, request)
        return server.NOT_DONE_YET

    def _write_export(self, response, request):
        if request.finished or request._disconnected:
            return
        body = response.render(request)
        if body is not server.NOT_DONE_YET:
            request.write(body)
            request.finish()

    def _export_failed(self, failure, request):
        if request.finished or request._disconnected:
            return
        if failure.check(errors.ApiError):
            body = ErrorResponse(failure.value.code, failure.value.message).render(request)
        else:
            self.log.failure("Guest image export failed", failure)
            body = _text(request, 500, "internal server error")
        request.write(body)
        request.finish()

