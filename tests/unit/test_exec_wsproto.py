"""The lean websocket server: framing, control frames, close handshake, the upgrade."""

import os
import struct

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import wsproto
from lxdtx.router import Endpoint
from tests.unit.fakes import exchange, make_site


def client_frame(opcode, payload, fin=True, mask=True):
    """A frame as a client sends it (masked)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + wsproto.unmask(key, payload)


def server_frames(data):
    """(opcode, payload) of each unmasked server frame in `data`."""
    frames = []
    while data:
        first, second = data[0], data[1]
        n, pos = second & 0x7F, 2
        if n == 126:
            n, pos = struct.unpack_from("!H", data, 2)[0], 4
        elif n == 127:
            n, pos = struct.unpack_from("!Q", data, 2)[0], 10
        frames.append((first & 0x0F, data[pos:pos + n]))
        data = data[pos + n:]
    return frames


class Recorder(wsproto.WebsocketProtocol):
    """Records what reaches the hooks."""

    def __init__(self):
        super().__init__()
        self.events = []

    def on_open(self):
        self.events.append(("open",))

    def on_message(self, payload, binary):
        self.events.append(("message", payload, binary))

    def on_close(self, clean):
        self.events.append(("close", clean))


def connected():
    protocol = Recorder()
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class FramingTests(SynchronousTestCase):
    """Frames in and out."""

    def test_messages_any_split(self):
        """Masked binary and text messages of every length class arrive whole, however split."""
        protocol, _ = connected()
        payloads = [b"", b"x" * 125, b"y" * 126, os.urandom(70000)]
        data = b"".join(client_frame(wsproto.BINARY, p) for p in payloads) + client_frame(wsproto.TEXT, b"")
        for i in range(0, len(data), 7):
            protocol.dataReceived(data[i:i + 7])
        messages = [e for e in protocol.events if e[0] == "message"]
        self.assertEqual(messages, [("message", p, True) for p in payloads] + [("message", b"", False)])

    def test_fragments(self):
        """Continuation frames are joined into one message."""
        protocol, _ = connected()
        protocol.dataReceived(client_frame(wsproto.BINARY, b"ab", fin=False)
                              + client_frame(wsproto.CONT, b"cd", fin=False) + client_frame(wsproto.CONT, b"e"))
        self.assertEqual(protocol.events[-1], ("message", b"abcde", True))

    def test_ping_and_send(self):
        """Pings are answered with pongs; messages go out unmasked."""
        protocol, transport = connected()
        protocol.dataReceived(client_frame(wsproto.PING, b"hi"))
        protocol.send_message(b"\x00" * 200)
        protocol.send_message(b"", binary=False)
        self.assertEqual(server_frames(transport.value()),
                         [(wsproto.PONG, b"hi"), (wsproto.BINARY, b"\x00" * 200), (wsproto.TEXT, b"")])

    def test_close_handshake(self):
        """A close frame is answered, the connection closes, and the close counts as clean."""
        protocol, transport = connected()
        protocol.dataReceived(client_frame(wsproto.CLOSE, struct.pack("!H", 1000) + b"bye"))
        self.assertEqual(server_frames(transport.value()), [(wsproto.CLOSE, struct.pack("!H", 1000))])
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertEqual(protocol.events[-1], ("close", True))

    def test_abnormal_close(self):
        """A connection lost without a close frame is not clean."""
        protocol, _ = connected()
        protocol.connectionLost(None)
        self.assertEqual(protocol.events[-1], ("close", False))

    def test_unmasked_frame_refused(self):
        """Client frames must be masked: otherwise close 1002."""
        protocol, transport = connected()
        protocol.dataReceived(client_frame(wsproto.BINARY, b"x", mask=False))
        self.assertEqual(server_frames(transport.value()), [(wsproto.CLOSE, struct.pack("!H", 1002))])
        self.assertNotIn(("message", b"x", True), protocol.events)

    def test_accept_key(self):
        """The RFC 6455 example key gives the RFC's accept value."""
        self.assertEqual(wsproto.accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")


class HandshakeTests(SynchronousTestCase):
    """The upgrade answered from a router endpoint."""

    def setUp(self):
        self.protocol = Recorder()

        async def upgrade(req):
            return wsproto.Handshake(self.protocol)

        self.site = make_site([Endpoint("/ws", get=upgrade)])

    def test_upgrade(self):
        """A valid request gets 101 with the accept key and the protocol takes the connection."""
        answer = exchange(self.site, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        self.assertEqual(answer.status, 101)
        self.assertEqual(answer.headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertEqual(self.protocol.events[0], ("open",))

    def test_not_an_upgrade(self):
        """A plain GET on a websocket endpoint is a 400."""
        answer = exchange(self.site, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(answer.status, 400)
        self.assertEqual(self.protocol.events, [])
