# -*- test-case-name: tests.unit.test_image_download -*-
"""HTTPS from the daemon to image servers, with treq: bounded JSON reads and file downloads.

Server certificates are checked as `lxdtx.tls.RemotePolicy` says: the certificate
the request names is pinned, else the system's CAs and service_identity's name
check decide. A download streams to a file: each received chunk is written and
hashed in a thread, one write at a time, and the connection is paused while
writes lag behind, so neither the image nor a backlog of it is ever held in
memory. Sizes are bounded, and a server that stops sending times out.
"""

import hashlib
import json
from urllib.parse import urljoin, urlsplit

from twisted.internet import defer, threads
from twisted.internet.protocol import Protocol
from twisted.web.http import PotentialDataLoss

from lxdtx import errors, tls

CONNECT_TIMEOUT = 30
# A server that sends nothing for this long is given up on.
IDLE_TIMEOUT = 60
# API answers are small; a simplestreams products file of a big server is a few MB.
MAX_JSON = 32 * 1024 * 1024
# Bytes queued for the writer thread before the connection is paused.
_HIGH_WATER = 4 * 1024 * 1024
USER_AGENT = "lxdtx"
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


class RemoteError(errors.BadRequest):
    """An image server could not be reached or gave something unusable; the message says which."""


def _agent(reactor, peer_pem, policy=None):
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    return Agent(reactor, contextFactory=policy or tls.RemotePolicy(peer_pem), connectTimeout=CONNECT_TIMEOUT,
                 pool=pool)


def _describe(url, failure_value):
    """What went wrong talking to `url`, for a client (no Python reprs)."""
    text = errors.describe(failure_value)
    inner = getattr(failure_value, "reasons", None)  # ResponseNeverReceived, RequestTransmissionFailed
    if inner:
        text = "; ".join(errors.describe(f.value) for f in inner)
    if "certificate verify failed" in text or "VerificationError" in text or "verification" in text.lower():
        text = f"the server's certificate is not trusted ({text})"
    return f"Failed to reach {url}: {text}"


async def _get(reactor, url, peer_pem, headers=None, policy=None):
    import treq

    all_headers = {b"User-Agent": [USER_AGENT.encode()]}
    for key, value in (headers or {}).items():
        all_headers[key.encode()] = [value.encode()]
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = await treq.get(url, headers=all_headers, agent=_agent(reactor, peer_pem, policy), unbuffered=True,
                                      timeout=IDLE_TIMEOUT, reactor=reactor, allow_redirects=False)
        except defer.CancelledError:
            raise RemoteError(f"Failed to reach {url}: no answer within {IDLE_TIMEOUT} seconds") from None
        except Exception as e:
            raise RemoteError(_describe(url, e)) from None
        location = response.headers.getRawHeaders("Location")
        if response.code not in _REDIRECTS or not location:
            return response
        response.deliverBody(_Drop())
        target = urljoin(url, location[0])
        # A redirect never leaves TLS: the certificate checks are the point.
        if urlsplit(target).scheme != "https":
            raise RemoteError(f"{url} redirects to {target[:200]!r}, which is not https")
        url = target
    raise RemoteError(f"{url}: more than {MAX_REDIRECTS} redirects")


class _Drop(Protocol):
    """Takes a body only to close its connection at once."""

    def connectionMade(self):
        self.transport.stopProducing()


class _Sink(Protocol):
    """Receives a response body: hands chunks to `write` (run in a thread, in order), pausing
    the connection while more than _HIGH_WATER bytes wait; fails past `limit` bytes or when
    nothing arrives for IDLE_TIMEOUT seconds. `done` fires with the byte count once the body
    ended and the last write returned (or with the first failure, then too)."""

    def __init__(self, reactor, write, limit, progress=None, what="download", defer_to_thread=threads.deferToThread):
        self.done = defer.Deferred()
        self._reactor = reactor
        self._defer_to_thread = defer_to_thread
        self._write = write
        self._limit = limit
        self._progress = progress
        self._what = what
        self._queue = []
        self._queued = 0
        self._writing = False
        self._paused = False
        self._ended = False
        self._failed = None
        self._idle = None
        self.received = 0
        self.written = 0

    def connectionMade(self):
        self._idle = self._reactor.callLater(IDLE_TIMEOUT, self._timed_out)

    def _timed_out(self):
        self._idle = None
        self._fail(RemoteError(f"The {self._what} stalled: nothing received for {IDLE_TIMEOUT} seconds"))

    def dataReceived(self, data):
        if self._failed is not None:
            return
        if self._idle is not None:
            self._idle.reset(IDLE_TIMEOUT)
        self.received += len(data)
        if self.received > self._limit:
            self._fail(RemoteError(f"The {self._what} is larger than the {self._limit} bytes expected"))
            return
        self._queue.append(data)
        self._queued += len(data)
        if self._queued > _HIGH_WATER and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        self._next()

    def _next(self):
        if self._writing or self._failed is not None or not self._queue:
            self._settle()
            return
        batch, self._queue, self._queued = b"".join(self._queue), [], 0
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        self._writing = True
        self._defer_to_thread(self._write, batch).addCallbacks(
            self._written, self._write_failed, callbackArgs=(len(batch),))

    def _written(self, _, size):
        self._writing = False
        self.written += size
        if self._progress is not None and self._failed is None:
            self._progress(self.written)
        self._next()

    def _write_failed(self, failure):
        self._writing = False
        self._fail(failure.value)

    def connectionLost(self, reason):
        if self._idle is not None:
            if self._idle.active():
                self._idle.cancel()
            self._idle = None
        self._ended = True
        from twisted.web.client import ResponseDone  # loaded with TLS only when a download runs

        if not reason.check(ResponseDone, PotentialDataLoss):
            self._fail(RemoteError(f"The {self._what} was cut short: {errors.describe(reason.value)}"))
        self._next()

    def _fail(self, exc):
        if self._failed is not None:
            return
        self._failed = exc
        self._queue, self._queued = [], 0
        if not self._ended:
            self.transport.stopProducing()
        self._settle()

    def _settle(self):
        if self.done.called or self._writing or not self._ended:
            return
        if self._failed is not None:
            self.done.errback(self._failed)
        elif not self._queue:
            self.done.callback(self.written)


async def _check_status(reactor, url, response, limit=64 * 1024):
    if response.code == 200:
        return
    body = await _read_body(reactor, response, limit, url)
    message = ""
    try:
        envelope = json.loads(body)
        if isinstance(envelope, dict):
            message = str(envelope.get("error") or "")
    except ValueError:
        pass
    detail = f": {message}" if message else ""
    if response.code == 404:
        raise RemoteError(f"Not found on the image server ({url}){detail}")
    raise RemoteError(f"The image server answered {response.code} for {url}{detail}")


async def _read_body(reactor, response, limit, url):
    chunks = []
    sink = _Sink(reactor, chunks.append, limit, what=f"answer of {url}")
    response.deliverBody(sink)
    await sink.done
    return b"".join(chunks)


async def get_json(reactor, url, *, peer_pem=None, limit=MAX_JSON):
    """The JSON document at `url`; RemoteError if unreachable, not 200, too big or not JSON."""
    response = await _get(reactor, url, peer_pem, {"Accept": "application/json"})
    await _check_status(reactor, url, response)
    body = await _read_body(reactor, response, limit, url)
    try:
        return json.loads(body)
    except ValueError:
        raise RemoteError(f"The image server sent no valid JSON for {url}") from None


class Written:
    """What a download wrote: its size, SHA-256 and the response headers it came with."""

    def __init__(self, size, sha256, headers):
        self.size = size
        self.sha256 = sha256
        self.headers = headers

    def header(self, name):
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


async def download(reactor, url, path, *, peer_pem=None, limit, hashers=(), progress=None, what="download",
                   policy=None, headers=None):
    """Stream the body at `url` into a new file `path`; a Written.

    `policy`: the agent's IPolicyForHTTPS instead of `peer_pem`'s (a cluster member
    calling another shows its certificate); `headers`: more request headers.

    Each of `hashers` (hashlib objects, e.g. one shared by the parts of a split image)
    is fed the bytes too. RemoteError past `limit` bytes, on a cut or stalled
    transfer; the caller removes `path` on failure (it lies in a private directory).
    """
    response = await _get(reactor, url, peer_pem, headers, policy)
    await _check_status(reactor, url, response)
    length = response.length if isinstance(response.length, int) else None
    if length is not None and length > limit:
        response.deliverBody(_Drop())
        raise RemoteError(f"The {what} is {length} bytes, more than the {limit} expected")
    own = hashlib.sha256()
    hashers = (own, *hashers)
    out = await threads.deferToThread(open, path, "xb")

    def write(data):
        out.write(data)
        for sha in hashers:
            sha.update(data)

    def report(written):
        if progress is not None:
            progress(written, length)

    sink = _Sink(reactor, write, limit, report, what)
    try:
        response.deliverBody(sink)
        size = await sink.done
    finally:
        await threads.deferToThread(out.close)
    if length is not None and size != length:
        raise RemoteError(f"The {what} ended after {size} of {length} bytes")
    return Written(size, own.hexdigest(), response.headers)
