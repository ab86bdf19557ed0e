"""A websocket relayed to another (lxdtx.websocket.relay), in memory: messages both ways
(those of the far end that came before the client's end opened too), ends mirrored
(close codes kept, a drop dropped), back-pressure across."""

from autobahn.twisted.testing import create_memory_agent
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.websocket.relay import RelayClient, RelayedSocket
from lxdtx.websocket.server import StreamSocket
from tests.unit.test_websocket import Harness, _result


class FarEnd(StreamSocket):
    """Where the stream lives: records what the relay sends it."""

    def __init__(self):
        super().__init__()
        self.messages = []
        self.ended = None

    def message(self, payload, binary):
        self.messages.append((payload, binary))

    def closed(self, abnormal):
        self.ended = abnormal


class RelayTests(SynchronousTestCase):
    def setUp(self):
        self.far = FarEnd()
        self.harness = Harness(self, self._make)
        agent = create_memory_agent(self.harness.reactor, self.harness.pumps, self._far_server)
        self.upstream = _result(agent.open("ws://localhost:8443/far", {}, protocol_class=RelayClient))
        self.harness.pumps.flush()

    def _far_server(self):
        self.far.factory = self.harness.factories.for_protocol(self.far)
        return self.far

    def _make(self, name):
        return RelayedSocket(self.upstream)

    def _client(self):
        client = _result(self.harness.open("near"))
        self.near = self.harness.servers["near"]
        self.harness.pumps.flush()
        return client

    def test_early_messages_then_both_ways(self):
        """What the far end sent before the client's end opened arrives first, in order."""
        self.far.send(b"out")
        self.far.send_barrier()
        self.harness.pumps.flush()
        client = self._client()
        self.assertEqual(client.messages, [(b"out", True), (b"", False)])
        client.sendMessage(b"in", True)
        client.sendMessage(b'{"command": "signal"}', False)
        self.harness.pumps.flush()
        self.assertEqual(self.far.messages, [(b"in", True), (b'{"command": "signal"}', False)])

    def test_close_code_kept(self):
        client = self._client()
        self.far.sendClose(4000, "done")
        self.harness.pumps.flush()
        self.assertEqual(client.closed, (True, 4000))

    def test_drop_dropped(self):
        """The far end ends without a close frame (as exec sockets end): so does the client's."""
        client = self._client()
        self.far.drop()
        self.harness.pumps.flush()
        self.assertIsNotNone(client.closed)
        self.assertNotEqual(client.closed[1], 1000)

    def test_client_gone_drops_far_end(self):
        client = self._client()
        client.transport.loseConnection()
        self.harness.pumps.flush()
        self.assertTrue(self.far.ended)

    def test_far_end_gone_before_client(self):
        """A far end that ended before the client's end opened ends it at once."""
        self.far.drop()
        self.harness.pumps.flush()
        client = self._client()
        self.assertIsNotNone(client.closed)

    def test_back_pressure_across(self):
        """A client slow to read pauses reading the far end, and the other way round."""
        self._client()
        self.assertIs(self.near._source, self.upstream.transport)
        self.assertIs(self.upstream._source, self.near.transport)
        self.near.pauseProducing()
        self.assertTrue(self.near.held)
        self.near.resumeProducing()
        self.upstream.pauseProducing()
        self.assertTrue(self.upstream.held)
        self.upstream.resumeProducing()
        self.assertFalse(self.upstream.held)
