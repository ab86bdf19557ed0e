"""`POST /1.0/images` with a container or snapshot source: checks, and what the operation
hands to `daemon.instances.publish_source` and `daemon.images.create_from_directory`."""

import contextlib
import io
import json

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.events import EventHub
from lxdtx.image.store import KIND, ImageStore
from lxdtx.journal import Journal
from lxdtx.operations import Operations
from lxdtx.resources import images as resource
from lxdtx.state import Put
from lxdtx.state.store import MemoryStore

FP = "cd" * 32


class Instances:
    """Records publish_source calls; yields a directory name and notes when it is released."""

    def __init__(self):
        self.calls = []
        self.released = []

    @contextlib.asynccontextmanager
    async def publish_source(self, name, snapshot=None):  # the same shape as Instances.publish_source
        self.calls.append((name, snapshot))
        try:
            yield f"/exported/{name}"
        finally:
            self.released.append(name)


class Host:
    """A daemon with a memory store, real operations on a clock, and an image store."""

    def __init__(self):
        self.store = MemoryStore()
        self.journal = Journal(self.store)
        self.operations = Operations(EventHub(), Clock())
        self.dir = "/nonexistent"
        self.images = ImageStore(self)
        self.instances = Instances()
        self.published = []

        async def create_from_directory(directory, **kwargs):
            self.published.append((directory, kwargs))
            await self.store.commit([Put(KIND, FP, {"size": 1234, "format": "gzip", "properties": {}})])
            return FP

        self.images.create_from_directory = create_from_directory

    def path(self, *parts):
        return "/".join([self.dir, *parts])


class Request:
    """What the images handlers read of a request."""

    def __init__(self, daemon, body):
        self.daemon = daemon
        self.body = io.BytesIO(json.dumps(body).encode())
        self.trusted = True

    def header(self, name, default=None):
        return "application/json" if name.lower() == "content-type" else default


class PublishTests(SynchronousTestCase):
    """The JSON publish path of `POST /1.0/images`."""

    def post(self, host, body):
        return defer.ensureDeferred(resource.create_image(Request(host, body)))

    def test_container(self):
        """A container source: the operation publishes its directory with the request's fields
        and ends with a string fingerprint and size; the source is released."""
        host = Host()
        response = self.successResultOf(self.post(host, {
            "source": {"type": "container", "name": "c1"}, "public": True, "properties": {"os": "x"},
            "compression_algorithm": "none", "aliases": [{"name": "a", "description": "d"}],
            "filename": "f.tar", "expires_at": "2030-01-01T00:00:00Z"}))
        op = response.operation
        self.assertEqual(op.status_code, 200, op.err)
        self.assertEqual(op.metadata, {"fingerprint": FP, "size": "1234"})
        self.assertEqual(host.instances.calls, [("c1", None)])
        self.assertEqual(host.instances.released, ["c1"])
        directory, kwargs = host.published[0]
        self.assertEqual(directory, "/exported/c1")
        self.assertEqual(kwargs["properties"], {"os": "x"})
        self.assertEqual(kwargs["public"], True)
        self.assertEqual(kwargs["compression"], "none")
        self.assertEqual(kwargs["aliases"], [{"name": "a", "description": "d"}])
        self.assertEqual(kwargs["filename"], "f.tar")
        self.assertIs(kwargs["operation"], op)

    def test_snapshot(self):
        """A snapshot source `c1/s0` publishes that snapshot of c1."""
        host = Host()
        self.successResultOf(self.post(host, {"source": {"type": "snapshot", "name": "c1/s0"}}))
        self.assertEqual(host.instances.calls, [("c1", "s0")])

    def test_refusals(self):
        """Wrong names, types and values are 400s naming the field."""
        cases = [
            ({"source": {"type": "container", "name": "c1/s0"}}, "snapshot"),
            ({"source": {"type": "snapshot", "name": "c1"}}, "snapshot"),
            ({"source": {"type": "container"}}, "source.name"),
            ({"source": {"type": "container", "name": "c"}, "public": "yes"}, "public"),
            ({"source": {"type": "container", "name": "c"}, "properties": {"a": 1}}, "properties"),
            ({"source": {"type": "container", "name": "c"}, "aliases": "a"}, "aliases"),
            ({"source": {"type": "container", "name": "c"}, "compression_algorithm": "nope-zip"}, "nope-zip"),
            ({"source": {"type": "magic"}}, "source.type"),
        ]
        for body, message in cases:
            failure = self.failureResultOf(self.post(Host(), body), errors.BadRequest)
            self.assertIn(message, failure.value.message, body)

    def test_alias_taken(self):
        """An alias that exists already is refused before anything is published."""
        host = Host()
        self.successResultOf(defer.ensureDeferred(host.store.commit([
            Put(KIND, FP, {"size": 1, "format": "gzip"}), Put("alias", "a", {"target": FP})])))
        failure = self.failureResultOf(self.post(host, {"source": {"type": "container", "name": "c"},
                                                        "aliases": [{"name": "a"}]}), errors.Conflict)
        self.assertEqual(failure.value.message, "Alias already exists: a")
        self.assertEqual(host.instances.calls, [])
