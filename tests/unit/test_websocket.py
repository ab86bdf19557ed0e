"""The daemon's websockets on Autobahn: exec session framing, secrets, pings, options and
the upgrade through the router. In memory (autobahn.twisted.testing), on a memory
reactor: no sockets, no global reactor."""

from autobahn.twisted.testing import MemoryReactorClockResolver, create_memory_agent
from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from txaio.testutil import replace_loop

from lxdtx.exec.session import ExecSession
from lxdtx.exec.streams import SessionSocket
from lxdtx.router import Endpoint
from lxdtx.websocket import options
from lxdtx.websocket.handshake import Handshake
from lxdtx.websocket.server import Factories, StreamSocket
from tests.unit.fakes import exchange, make_site


class Pumps:
    """The in-memory connections of one test, flushed by hand (no global reactor)."""

    def __init__(self):
        self.pumps = []

    def add(self, pump):
        self.pumps.append(pump)

    def flush(self):
        for _ in range(5):  # answers to answers (close handshakes)
            for pump in self.pumps:
                pump.flush()


class Client(WebSocketClientProtocol):
    """Records what the server sends."""

    def __init__(self):
        super().__init__()
        self.messages = []
        self.closed = None

    def onMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        self.closed = (wasClean, code)


class FakeCommand:
    """What an exec session drives, recorded."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name in ("write", "close_stdin", "signal", "kill", "resize", "abandon", "stream_stdin_from"):
            return lambda *args: self.calls.append((name, *args))
        raise AttributeError(name)


class Harness:
    """Server protocols made by `make(name)`, reached through Autobahn's memory agent.

    Autobahn's timers (pings, handshake timeouts) run on txaio's loop: the test's
    memory reactor for as long as the test runs."""

    def __init__(self, test, make, **timing):
        self.reactor = MemoryReactorClockResolver()
        loop = replace_loop(self.reactor)
        loop.__enter__()
        test.addCleanup(loop.__exit__, None, None, None)
        self.factories = Factories(self.reactor, **timing)
        self.pumps = Pumps()
        self.servers = {}
        self._make = make

    def open(self, name, client_options=None):
        def server():
            protocol = self._make(name)
            protocol.factory = self.factories.for_protocol(protocol)
            self.servers[name] = protocol
            return protocol

        agent = create_memory_agent(self.reactor, self.pumps, server)
        opened = agent.open("ws://localhost:8443/ws", client_options or {}, protocol_class=Client)
        self.pumps.flush()
        return opened


def _result(d):
    results = []
    d.addBoth(results.append)
    assert results, "the deferred has not fired"
    return results[0]


class ExecFramingTests(SynchronousTestCase):
    """An exec session's four sockets as the `lxc` client uses them."""

    def setUp(self):
        self.command = FakeCommand()
        clock = MemoryReactorClockResolver()
        self.session = ExecSession(clock, lambda session: self.command, interactive=False)
        self.harness = Harness(self, lambda name: SessionSocket(self.session, name))
        self.clients = {name: _result(self.harness.open(name)) for name in ("control", "0", "1", "2")}

    def test_output_then_barrier(self):
        """Output arrives as binary messages, each stream ends with an empty text message."""
        self.session.command_output(1, b"out")
        self.session.command_output(2, b"err")
        self.session.command_exited(3)
        self.session.command_output_ended(1)
        self.session.command_output_ended(2)
        self.harness.pumps.flush()
        self.assertEqual(self.clients["1"].messages, [(b"out", True), (b"", False)])
        self.assertEqual(self.clients["2"].messages, [(b"err", True), (b"", False)])
        self.assertEqual(_result(self.session.done), 3)

    def test_stdin_and_its_end(self):
        """Binary messages on 0 are the command's stdin; a text message ends it."""
        self.clients["0"].sendMessage(b"typed", True)
        self.clients["0"].sendMessage(b"", False)
        self.harness.pumps.flush()
        self.assertIn(("write", b"typed"), self.command.calls)
        self.assertIn(("close_stdin",), self.command.calls)

    def test_signal_and_resize_on_control(self):
        self.clients["control"].sendMessage(b'{"command":"signal","signal":15}', False)
        self.harness.pumps.flush()
        self.assertIn(("signal", 15), self.command.calls)

    def test_control_dropped_kills(self):
        """Control lost without a close frame kills the command, as LXD does."""
        self.clients["control"].transport.loseConnection()
        self.harness.pumps.flush()
        self.assertIn(("kill",), self.command.calls)

    def test_control_closed_cleanly_does_not_kill(self):
        self.clients["control"].sendClose(1000)
        self.harness.pumps.flush()
        self.assertNotIn(("kill",), self.command.calls)

    def test_only_read_sockets_are_pinged(self):
        """The client reads 1 and 2 (which can answer pings), never 0 or control."""
        pinged = {name: server.autoPingInterval > 0 for name, server in self.harness.servers.items()}
        self.assertEqual(pinged, {"control": False, "0": False, "1": True, "2": True})


class DeadPeerTests(SynchronousTestCase):
    """A peer that stops answering pings is dropped and its command killed; a peer that
    is only slow (its buffers full, our output held) is waited for."""

    def setUp(self):
        self.command = FakeCommand()
        self.clock = MemoryReactorClockResolver()
        self.session = ExecSession(self.clock, lambda session: self.command, interactive=False)
        self.harness = Harness(self, lambda name: SessionSocket(self.session, name), ping_interval=5, ping_timeout=5)
        self.clients = {name: _result(self.harness.open(name)) for name in ("control", "0", "1", "2")}

    def advance(self, seconds, answer=False):
        for _ in range(int(seconds)):
            self.harness.reactor.advance(1)
            if answer:
                self.harness.pumps.flush()

    def test_answering_peer_stays(self):
        self.advance(30, answer=True)
        self.assertNotIn(("kill",), self.command.calls)
        self.assertEqual(self.harness.servers["1"].state, StreamSocket.STATE_OPEN)

    def test_silent_peer_is_dropped_and_its_command_killed(self):
        self.advance(11)
        self.assertIn(("kill",), self.command.calls)

    def test_slow_peer_is_waited_for(self):
        for name in ("1", "2"):
            self.harness.servers[name].pauseProducing()  # what a full transport does
        self.advance(30)
        self.assertNotIn(("kill",), self.command.calls)
        for name in ("1", "2"):
            self.harness.servers[name].resumeProducing()
        self.harness.pumps.flush()  # the pongs arrive
        self.advance(30, answer=True)
        self.assertNotIn(("kill",), self.command.calls)


class OptionsTests(SynchronousTestCase):
    def test_server_options(self):
        factories = Factories(MemoryReactorClockResolver())
        for factory, ping in ((factories.pinged, True), (factories.unpinged, False)):
            self.assertEqual(factory.maxFramePayloadSize, options.MAX_FRAME)
            self.assertEqual(factory.maxMessagePayloadSize, options.MAX_MESSAGE)
            self.assertEqual(factory.openHandshakeTimeout, options.OPEN_HANDSHAKE_TIMEOUT)
            self.assertEqual(factory.closeHandshakeTimeout, options.CLOSE_HANDSHAKE_TIMEOUT)
            self.assertEqual(factory.autoPingInterval, options.PING_INTERVAL if ping else 0)
            self.assertEqual(factory.autoPingTimeout, options.PING_TIMEOUT if ping else 0)

    def test_oversized_message_refused(self):
        """A frame past the limit ends the connection (dropped, Autobahn's failByDrop) and
        never reaches the protocol."""
        received = []

        class Sink(StreamSocket):
            def message(self, payload, binary):
                received.append(payload)

        harness = Harness(self, lambda name: Sink())
        client = _result(harness.open("x"))
        client.sendMessage(b"x" * (options.MAX_FRAME + 1), True)
        harness.pumps.flush()
        self.assertEqual(received, [])
        self.assertEqual(client.closed, (False, 1006))
        self.assertEqual(harness.servers["x"].state, StreamSocket.STATE_CLOSED)


_UPGRADE = (b"GET /ws?secret=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class HandshakeTests(SynchronousTestCase):
    """The upgrade answered from a router endpoint, over the HTTP channel twisted.web parsed."""

    def setUp(self):
        self.factories = Factories(MemoryReactorClockResolver())
        self.session = ExecSession(MemoryReactorClockResolver(), lambda session: None, interactive=False)

        async def connect(req):
            secret = req.query.get("secret", "")
            name = self.session.check(secret)
            return Handshake(self.factories, SessionSocket(self.session, name),
                             claim=lambda: self.session.claim(secret))

        self.site = make_site([Endpoint("/ws", get=connect)])

    def upgrade(self, raw):
        return exchange(self.site, raw)

    def test_upgrade(self):
        """101 with the RFC 6455 accept value; the socket is the session's."""
        answer = self.upgrade(_UPGRADE % self.session.secrets["1"].encode())
        self.assertEqual(answer.status, 101)
        self.assertEqual(answer.headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertIn("1", self.session.sockets)

    def test_failed_handshakes_keep_the_secret(self):
        """No Upgrade header (400), a wrong version (refused by Autobahn) or a bad Host port
        leave the secret usable; the good handshake takes it, once."""
        secret = self.session.secrets["1"].encode()
        self.assertEqual(self.upgrade((_UPGRADE % secret).replace(b"Upgrade: websocket\r\n", b"")).status, 400)
        self.assertNotEqual(self.upgrade((_UPGRADE % secret).replace(b"Version: 13", b"Version: 8")).status, 101)
        self.assertNotIn("1", self.session.sockets)
        self.assertEqual(self.upgrade((_UPGRADE % secret).replace(b"Host: x", b"Host: localhost:None")).status, 101)
        again = self.upgrade(_UPGRADE % secret)
        self.assertEqual((again.status, again.json()["error"]), (403, "websocket already connected"))

    def test_claim_refused_is_the_answer(self):
        """Should the secret be taken between the check and the handshake (another
        connection won), the claim's error is the HTTP answer and no socket opens."""
        secret = self.session.secrets["2"]

        async def racing(req):
            self.session.check(secret)
            self.session.claim(secret)
            return Handshake(self.factories, StreamSocket(), claim=lambda: self.session.claim(secret))

        answer = exchange(make_site([Endpoint("/ws", get=racing)]), _UPGRADE % secret.encode())
        self.assertEqual(answer.status, 403)


class Source:
    """A producer, recorded."""

    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")


class BackPressureTests(SynchronousTestCase):
    """A socket holds its source while the peer is full, and lets go when it goes away."""

    def setUp(self):
        self.harness = Harness(self, lambda name: StreamSocket())
        self.client = _result(self.harness.open("x"))
        self.server = self.harness.servers["x"]
        self.source = Source()
        self.server.feed_from(self.source)

    def test_held_then_resumed(self):
        self.server.transport.producer.pauseProducing()
        self.assertTrue(self.server.held)
        self.server.transport.producer.resumeProducing()
        self.assertEqual(self.source.calls, ["pause", "resume"])

    def test_dropped_while_held_lets_the_source_go(self):
        """Else the command would block on a full pipe forever."""
        self.server.pauseProducing()
        self.client.transport.loseConnection()
        self.harness.pumps.flush()
        self.assertEqual(self.source.calls, ["pause", "resume"])

    def test_drop_lets_the_source_go(self):
        self.server.pauseProducing()
        self.server.drop()
        self.assertEqual(self.source.calls, ["pause", "resume"])


class SpeedupTests(SynchronousTestCase):
    def test_lazy_pformat_reads_the_same(self):
        """Autobahn's debug text is what pformat gives, only made when written."""
        from pprint import pformat

        import autobahn.websocket.protocol as autobahn_protocol

        table = [("autoPingInterval", 15.0, "WebSocketServerFactory")] * 3
        self.assertEqual(f"\n{autobahn_protocol.pformat(table)}", "\n" + pformat(table))
        timings = autobahn_protocol.Timings()
        timings.track("x")
        self.assertIsInstance(str(timings), str)

    def test_lazy_highlights_read_the_same(self):
        """Autobahn's highlighted debug values are what `hltype`/`hlval` give, made when written."""
        import autobahn.twisted.websocket as autobahn_websocket
        from autobahn import util

        for module in (autobahn_websocket, __import__("autobahn.websocket.protocol", fromlist=["x"])):
            self.assertEqual(str(module.hltype(self.test_lazy_highlights_read_the_same)),
                             util.hltype(self.test_lazy_highlights_read_the_same))
            self.assertEqual(f"{module.hlval(42)}", util.hlval(42))

    def test_websockets_leave_wamp_and_tls_unloaded(self):
        """The daemon's websocket server loads neither Autobahn's WAMP stack nor the TLS
        libraries (its client, which dials over TLS, does); both stay importable afterwards."""
        import subprocess
        import sys

        probe = ("import sys, lxdtx.websocket.server\n"
                 "loaded = [m for m in ('OpenSSL', 'cryptography', 'autobahn.wamp.auth') if m in sys.modules]\n"
                 "import OpenSSL.SSL, autobahn.util as u\n"
                 "print(loaded, u._is_tls_error(OpenSSL.SSL.Error()), u._is_tls_error(ValueError()))\n")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
        self.assertEqual(out.stdout.strip(), "[] True False")

    def test_endpoints_keep_tls(self):
        """Twisted's endpoints imported after the websocket modules still speak TLS."""
        import subprocess
        import sys

        probe = ("import lxdtx.websocket.server, lxdtx.websocket.client\n"
                 "from twisted.internet import endpoints\n"
                 "print(endpoints.TLSMemoryBIOFactory is not None)\n")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
        self.assertEqual(out.stdout.strip(), "True")
