# -*- test-case-name: tests.unit.test_exec_wsproto -*-
"""A lean server side of RFC 6455 for the hot websockets (exec and console fds, events).

Exec opens four websockets per command, so the handshake is on the hot path:
this takes over the connection straight from the twisted.web request that
asked for the upgrade (no second HTTP parse) and frames with a few slices and
one big-integer XOR for unmasking. It speaks what LXD streams need: binary and
text messages (fragmented or not), ping/pong, and the close handshake.
"""

import base64
import hashlib
import struct

from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper

from lxdtx.response import ErrorResponse, Response

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# A frame larger than this is a protocol error (clients send at most a few MiB).
MAX_FRAME = 64 * 1024 * 1024


def accept_key(key):
    """The Sec-WebSocket-Accept value for a client key."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def unmask(mask, payload):
    """XOR `payload` with the repeated 4-byte `mask`."""
    n = len(payload)
    if not n:
        return b""
    stream = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame(opcode, payload=b""):
    """An unmasked, final server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head, payload


class WebsocketProtocol(Protocol):
    """Frames in and out; subclasses get `on_open`, `on_message(payload, binary)`, `on_close(clean)`."""

    def __init__(self):
        self._buffer = b""
        self._fragments = []
        self._fragment_opcode = None
        self._close_sent = False
        self._close_received = False
        self._closed = False

    # -- subclass hooks ---------------------------------------------------------
    def on_open(self):
        pass

    def on_message(self, payload, binary):
        pass

    def on_close(self, clean):
        pass

    # -- sending ------------------------------------------------------------------
    def send_message(self, payload, binary=True):
        if self.transport is None or self._close_sent:
            return
        self.transport.writeSequence(frame(BINARY if binary else TEXT, payload))

    def send_close(self, code=1000, reason=b""):
        if self.transport is None or self._close_sent:
            return
        self._close_sent = True
        self.transport.writeSequence(frame(CLOSE, struct.pack("!H", code) + reason if code else b""))

    # -- Protocol -------------------------------------------------------------------
    def connectionMade(self):
        self.on_open()

    def dataReceived(self, data):
        buffer = self._buffer + data if self._buffer else data
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            pos = offset + 2
            if length == 126:
                if size - pos < 2:
                    break
                length = struct.unpack_from("!H", buffer, pos)[0]
                pos += 2
            elif length == 127:
                if size - pos < 8:
                    break
                length = struct.unpack_from("!Q", buffer, pos)[0]
                pos += 8
            if length > MAX_FRAME or not second & 0x80 or first & 0x70:
                # Too large, unmasked (clients must mask) or reserved bits: a protocol error.
                self._fail(1002)
                return
            if size - pos < 4 + length:
                break
            mask = buffer[pos:pos + 4]
            payload = unmask(mask, buffer[pos + 4:pos + 4 + length])
            offset = pos + 4 + length
            self._frame(first & 0x80, first & 0x0F, payload)
            if self._closed or self.transport is None:
                return
        self._buffer = buffer[offset:] if offset < size else b""

    def _frame(self, fin, opcode, payload):
        if opcode >= 0x8:
            if opcode == CLOSE:
                self._close_received = True
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1000
                self.send_close(code if code in (1000, 1001) else 1000)
                self.transport.loseConnection()
            elif opcode == PING:
                self.transport.writeSequence(frame(PONG, payload))
            return
        if opcode == CONT:
            if self._fragment_opcode is None:
                self._fail(1002)
                return
            self._fragments.append(payload)
        else:
            if self._fragment_opcode is not None:
                self._fail(1002)
                return
            self._fragment_opcode = opcode
            self._fragments = [payload]
        if fin:
            opcode, self._fragment_opcode = self._fragment_opcode, None
            parts, self._fragments = self._fragments, []
            self.on_message(parts[0] if len(parts) == 1 else b"".join(parts), opcode == BINARY)

    def _fail(self, code):
        self.send_close(code)
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self._closed:
            self._closed = True
            self.on_close(self._close_received)


class Handshake(Response):
    """Answer an upgrade request with 101 and hand the raw connection to `protocol`."""

    def __init__(self, protocol):
        self.protocol = protocol

    def render(self, request):
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        connection = (request.getHeader(b"connection") or b"").lower()
        key = (request.getHeader(b"sec-websocket-key") or b"").strip()
        version = (request.getHeader(b"sec-websocket-version") or b"").strip()
        if upgrade != b"websocket" or b"upgrade" not in connection or not key:
            return ErrorResponse(400, "websocket upgrade expected").render(request)
        if version != b"13":
            request.setHeader(b"sec-websocket-version", b"13")
            return ErrorResponse(426, "unsupported websocket version").render(request)
        channel = request.channel
        transport = channel.transport
        if transport is None:
            return ErrorResponse(400, "websocket upgrade expected").render(request)
        channel.setTimeout(None)
        # The HTTP channel produces into the transport and may have paused it while
        # serving this request; from now on the connection is the protocol's alone.
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        channel.transport = None
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = self.protocol
        elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
            transport.protocol.wrappedProtocol = self.protocol
        else:
            transport.protocol = self.protocol
        self.protocol.makeConnection(transport)
        transport.resumeProducing()
        from twisted.web.server import NOT_DONE_YET

        return NOT_DONE_YET
