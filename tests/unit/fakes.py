"""Small stand-ins for unit tests: a daemon for the router, an in-memory HTTP exchange, inline threads."""

import shutil
import tempfile

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport

from twisted.python.failure import Failure

from lxdtx.resources.answers import Answers
from lxdtx.router import ApiSite, Router


class FakeCors:
    """Adds nothing."""

    def apply(self, request):
        pass


class FakeTrust:
    """Trusts every request, or none."""

    def __init__(self, trusted):
        self.trusted = trusted

    def is_trusted(self, request):
        return self.trusted

    def is_unix(self, request):
        return request.channel.site.local


class FakeDaemon:
    """What the router reads of a daemon: readiness, trust and CORS."""

    def __init__(self, trusted=True, ready=True):
        self.ready = ready
        self.trust = FakeTrust(trusted)
        self.cors = FakeCors()


class HTTPAnswer:
    """A parsed HTTP/1.1 response read back from a StringTransport."""

    def __init__(self, raw):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def json(self):
        import json

        return json.loads(self.body)


def make_site(endpoints, daemon=None, local=True, spool_dir=None):
    """An ApiSite over `endpoints` on a memory reactor."""
    router = Router(daemon or FakeDaemon(), endpoints, Answers())
    site = ApiSite(router, spool_dir=spool_dir, reactor=MemoryReactorClock())
    site.local = local
    return site


class _SocketTransport(StringTransport):
    """A StringTransport that, like a socket's, lets a producer be unregistered twice."""

    def unregisterProducer(self):
        if self.producer is not None:
            super().unregisterProducer()


def exchange(site, raw_request):
    """Feed raw request bytes to a fresh HTTP channel; the (synchronous) answer as HTTPAnswer."""
    channel = site.buildProtocol(None)
    transport = _SocketTransport()
    transport.protocol = channel  # as a socket transport has it (a websocket upgrade takes it over)
    channel.makeConnection(transport)
    channel.dataReceived(raw_request)
    answer = HTTPAnswer(transport.value())
    channel.connectionLost(Failure(ConnectionDone()))
    return answer


def request_bytes(method, path, body=b"", headers=()):
    """An HTTP/1.1 request with a Content-Length body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: unix.socket", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class InlineThreadPool:
    """A threadpool that runs work at once on the calling thread (for SQLiteStore in tests)."""

    def start(self):
        pass

    def stop(self):
        pass

    def callInThreadWithCallback(self, on_result, fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            from twisted.python.failure import Failure

            on_result(False, Failure())
        else:
            on_result(True, result)


class InlineReactor(MemoryReactorClock):
    """A memory reactor whose callFromThread runs the call immediately."""

    def callFromThread(self, fn, *args, **kwargs):
        fn(*args, **kwargs)


def inline_deferred_thread(fn, *args, **kwargs):
    """A stand-in for deferToThread that runs `fn` synchronously."""
    return defer.maybeDeferred(fn, *args, **kwargs)


class RecordingHub:
    """An event hub that records what it is sent."""

    def __init__(self):
        self.sent = []

    def send(self, kind, metadata):
        import copy

        self.sent.append((kind, copy.deepcopy(metadata)))

    def lifecycle(self, action, source, context=None):
        metadata = {"action": action, "source": source}
        if context:
            metadata["context"] = context
        self.send("lifecycle", metadata)


def temp_dir(test):
    """A fresh directory removed when `test` ends (trial's mktemp would litter the working directory)."""
    path = tempfile.mkdtemp(prefix="lxdtx-unit-")
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path
