"""The download sink (backpressure, bounds, stalls), remote source specs, simplestreams parsing."""

import datetime
import hashlib

from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed

from lxdtx import errors
from lxdtx.image import download, simplestreams, sources


class _Transport:
    def __init__(self):
        self.paused = 0
        self.resumed = 0
        self.stopped = 0

    def pauseProducing(self):
        self.paused += 1

    def resumeProducing(self):
        self.resumed += 1

    def stopProducing(self):
        self.stopped += 1


class SinkTests(SynchronousTestCase):
    """Chunks go to the writer one batch at a time; the connection pauses while writes lag."""

    def make(self, limit=1 << 30):
        self.clock = task.Clock()
        self.writes = []
        self.pending = []

        def defer_to_thread(fn, data):
            d = defer.Deferred()
            self.pending.append((d, fn, data))
            return d

        sink = download._Sink(self.clock, self.writes.append, limit, defer_to_thread=defer_to_thread)
        sink.transport = _Transport()
        sink.connectionMade()
        return sink

    def finish_write(self):
        d, fn, data = self.pending.pop(0)
        fn(data)
        d.callback(None)

    def test_in_order_with_backpressure(self):
        """While one write runs the rest queue; past the high-water mark the connection pauses,
        and resumes when the queue is handed over. `done` fires after the last write."""
        sink = self.make()
        sink.dataReceived(b"a")
        sink.dataReceived(b"b" * (download._HIGH_WATER + 1))
        self.assertEqual(sink.transport.paused, 1)
        self.finish_write()
        self.assertEqual(sink.transport.resumed, 1)
        sink.connectionLost(Failure(ResponseDone()))
        self.assertNoResult(sink.done)
        self.finish_write()
        self.assertEqual(self.successResultOf(sink.done), download._HIGH_WATER + 2)
        self.assertEqual(b"".join(self.writes), b"a" + b"b" * (download._HIGH_WATER + 1))

    def test_limit(self):
        """More bytes than the limit stops the transfer with a clear error."""
        sink = self.make(limit=10)
        sink.dataReceived(b"x" * 11)
        self.assertEqual(sink.transport.stopped, 1)
        sink.connectionLost(Failure(ResponseDone()))
        failure = self.failureResultOf(sink.done, download.RemoteError)
        self.assertIn("larger than the 10 bytes", str(failure.value))

    def test_stall(self):
        """Nothing for IDLE_TIMEOUT seconds ends the transfer; data resets the timer."""
        sink = self.make()
        self.clock.advance(download.IDLE_TIMEOUT - 1)
        sink.dataReceived(b"x")
        self.clock.advance(download.IDLE_TIMEOUT - 1)
        self.assertEqual(sink.transport.stopped, 0)
        self.clock.advance(1)
        self.assertEqual(sink.transport.stopped, 1)
        self.finish_write()
        sink.connectionLost(Failure(ResponseFailed([Failure(ConnectionError("gone"))])))
        self.assertIn("stalled", str(self.failureResultOf(sink.done, download.RemoteError).value))

    def test_cut_short(self):
        """A body that ends without ResponseDone fails, after the running write returned."""
        sink = self.make()
        sink.dataReceived(b"x")
        sink.connectionLost(Failure(ResponseFailed([Failure(ConnectionError("reset"))])))
        self.assertNoResult(sink.done)
        self.finish_write()
        self.assertIn("cut short", str(self.failureResultOf(sink.done, download.RemoteError).value))

    def test_write_failure(self):
        """A failing write (disk full) stops the transfer and is the error reported."""
        sink = self.make()
        sink.dataReceived(b"x")
        d, _, _ = self.pending.pop(0)
        d.errback(OSError(28, "No space left on device"))
        self.assertEqual(sink.transport.stopped, 1)
        sink.connectionLost(Failure(ResponseDone()))
        self.failureResultOf(sink.done, OSError)


class SpecTests(SynchronousTestCase):
    """What a remote image source must look like."""

    def test_valid(self):
        spec = sources.check_spec({"type": "image", "server": "https://127.0.0.1:8443/", "alias": "bb",
                                   "protocol": "simplestreams"})
        self.assertEqual(spec, sources.Spec("https://127.0.0.1:8443", "simplestreams", "", "bb"))
        self.assertEqual(spec.update_source(), {"alias": "bb", "certificate": "", "protocol": "simplestreams",
                                                "server": "https://127.0.0.1:8443"})
        # lxc sends the alias in `fingerprint` when it copies by alias.
        self.assertEqual(sources.check_spec({"server": "https://h", "fingerprint": "bb"}).name, "bb")

    def test_refused(self):
        for source, word in [
            ({"server": "http://h", "alias": "a"}, "https://"),
            ({"server": "https://u:p@h", "alias": "a"}, "credentials"),
            ({"server": "https://h:99999", "alias": "a"}, "not a valid URL"),
            ({"server": "https://h", "alias": "a", "protocol": "direct"}, "source.protocol"),
            ({"server": "https://h", "alias": "a", "certificate": "x"}, "source.certificate"),
            ({"server": "https://h"}, "source.fingerprint or source.alias"),
            ({"server": "https://h", "alias": "a\n"}, "Invalid image name"),
            ({"server": "https://h", "alias": "a", "mode": "push"}, "source.mode"),
            ({"server": ["https://h"], "alias": "a"}, "source.server must be a string"),
        ]:
            with self.assertRaises(errors.BadRequest) as cm:
                sources.check_spec(source)
            self.assertIn(word, str(cm.exception.message), source)


def _item(ftype, data, **extra):
    return {"ftype": ftype, "path": f"images/x/{ftype}", "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data), **extra}


def _products(versions, arch="amd64", aliases="bb,busybox/edge"):
    return {"format": "products:1.0", "products": {"p": {"arch": arch, "aliases": aliases, "os": "Busybox",
                                                         "release": "edge", "versions": versions}}}


class SimpleStreamsTests(SynchronousTestCase):
    """Index and products files as LXD reads them."""

    def test_index(self):
        index = {"index": {"images": {"datatype": "image-downloads", "format": "products:1.0",
                                      "path": "streams/v1/images.json"},
                           "other": {"datatype": "content-download", "path": "x.json"}}}
        self.assertEqual(simplestreams.products_paths(index), ["streams/v1/images.json"])
        for bad in ({}, {"index": {}}, {"index": {"i": {"datatype": "image-downloads", "format": "products:1.0",
                                                        "path": "../../etc/passwd"}}}):
            with self.assertRaises(simplestreams.StreamError):
                simplestreams.products_paths(bad)

    def test_split_and_unified_images_and_aliases(self):
        """Split images get their combined fingerprint; the newest version takes the aliases;
        a unified image's fingerprint is its own sha256; broken items are left out."""
        meta, root, unified = b"meta", b"root", b"unified"
        combined = hashlib.sha256(meta + root).hexdigest()
        versions = {
            "20260101_00:00": {"items": {"lxd.tar.xz": _item("lxd.tar.xz", meta, combined_rootxz_sha256="a" * 64),
                                         "root.tar.xz": _item("root.tar.xz", root)}},
            "20260102_00:00": {"items": {"lxd.tar.xz": _item("lxd.tar.xz", meta, combined_sha256=combined),
                                         "root.tar.xz": _item("root.tar.xz", root)}},
            "20260103_00:00": {"items": {"lxd_combined.tar.gz": _item("lxd_combined.tar.gz", unified)}},
            "20260104_00:00": {"items": {"lxd.tar.xz": {"ftype": "lxd.tar.xz", "path": "/abs", "sha256": "0"}}},
        }
        found = simplestreams.images(_products(versions), host_architecture="x86_64")
        by_fp = {image.fingerprint: image for image in found}
        self.assertEqual(set(by_fp), {"a" * 64, combined, hashlib.sha256(unified).hexdigest()})
        newest = by_fp[hashlib.sha256(unified).hexdigest()]
        self.assertEqual(newest.aliases, ["bb", "busybox/edge"])
        self.assertIsNone(newest.rootfs)
        self.assertEqual(newest.created_at, datetime.datetime(2026, 1, 3, tzinfo=datetime.UTC))
        self.assertEqual(by_fp[combined].rootfs.path, "images/x/root.tar.xz")
        self.assertEqual(by_fp[combined].size, 8)
        self.assertEqual(by_fp[combined].properties["os"], "Busybox")
        catalog = simplestreams.Catalog(found)
        self.assertIs(catalog.find("bb"), newest)
        self.assertIs(catalog.find(combined[:12]), by_fp[combined])
        self.assertIsNone(catalog.find("nope"))

    def test_other_architectures(self):
        """Aliases of another architecture's product get an `/arch` suffix; unknown ones are left out."""
        meta = b"m"
        versions = {"20260101_00:00": {"items": {"lxd_combined.tar.gz": _item("lxd_combined.tar.gz", meta)}}}
        found = simplestreams.images(_products(versions, arch="arm64"), host_architecture="x86_64")
        self.assertEqual(found[0].aliases, ["bb/aarch64", "busybox/edge/aarch64"])
        self.assertEqual(simplestreams.images(_products(versions, arch="mips"), host_architecture="x86_64"), [])
