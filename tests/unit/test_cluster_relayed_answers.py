"""Answers of another cluster member streamed to our client (lxdtx.resources.forwarding.Streamed):
head copied, body in order and paced by our client, a cut answer cutting our client's."""

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from lxdtx.resources.forwarding import Streamed


class Transport:
    """The member's connection under a response body, recorded."""

    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


class Response:
    """A member's response whose body the test delivers by hand."""

    def __init__(self, code=200, headers=None):
        self.code = code
        self.headers = Headers(headers or {})
        self.protocol = None
        self.transport = Transport()

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class Channel:
    aborted = False

    def abort(self):
        self.aborted = True


class Request:
    """Our client's request, recorded."""

    def __init__(self):
        self.code = None
        self.headers = {}
        self.written = []
        self.finished = False
        self.producer = None
        self.channel = Channel()
        self._finish = defer.Deferred()

    def setResponseCode(self, code):
        self.code = code

    def setHeader(self, name, value):
        self.headers[name] = value

    def write(self, data):
        self.written.append(data)

    def finish(self):
        self.finished = True

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def notifyFinish(self):
        return self._finish


class StreamedTests(SynchronousTestCase):
    def setUp(self):
        self.response = Response(200, {"Content-Type": ["application/octet-stream"], "Content-Length": ["6"],
                                       "X-LXD-mode": ["0640"], "Set-Cookie": ["no"]})
        self.request = Request()
        self.assertIs(Streamed(self.response).render(self.request), NOT_DONE_YET)
        self.pipe = self.response.protocol

    def test_head_and_body(self):
        """Status and the answer headers that matter are copied; the body goes in order, then ends."""
        self.assertEqual(self.request.code, 200)
        self.assertEqual(self.request.headers, {b"content-type": b"application/octet-stream",
                                                b"content-length": b"6", b"x-lxd-mode": b"0640"})
        self.pipe.dataReceived(b"abc")
        self.pipe.dataReceived(b"def")
        self.pipe.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.request.written, [b"abc", b"def"])
        self.assertTrue(self.request.finished)
        self.assertIsNone(self.request.producer)

    def test_paced_by_our_client(self):
        """Our client's full connection pauses reading the member's."""
        self.assertIs(self.request.producer, self.pipe)
        self.request.producer.pauseProducing()
        self.request.producer.resumeProducing()
        self.assertEqual(self.response.transport.calls, ["pause", "resume"])

    def test_client_gone_stops_the_member(self):
        self.request._finish.errback(Failure(ConnectionError("gone")))
        self.pipe.dataReceived(b"late")
        self.pipe.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.response.transport.calls, ["stop"])
        self.assertEqual(self.request.written, [])
        self.assertFalse(self.request.finished)

    def test_cut_short_cuts_ours(self):
        """A body the member did not finish is not ended as if whole: our client's connection goes."""
        self.pipe.dataReceived(b"abc")
        self.pipe.connectionLost(Failure(ResponseFailed([Failure(ConnectionError("reset"))])))
        self.assertFalse(self.request.finished)
        self.assertTrue(self.request.channel.aborted)
