"""A minimal blocking websocket client over the daemon's unix socket, for protocol edge cases."""

import base64
import os
import socket
import struct


class RawWebsocket:
    """Handshake, send and receive frames; `abort()` drops TCP without a close frame."""

    def __init__(self, socket_path, resource, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(socket_path)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {resource} HTTP/1.1\r\nHost: unix.socket\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during handshake")
            head += chunk
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            raise ConnectionError(f"handshake refused: {head!r}")

    def send(self, payload, binary=True):
        opcode = 0x2 if binary else 0x1
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def recv(self):
        """(opcode, payload) of the next frame."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def read_stream(self):
        """Binary payloads until the barrier (empty text frame) or a close."""
        out = b""
        while True:
            opcode, payload = self.recv()
            if opcode == 0x2:
                out += payload
            elif opcode == 0x1 and not payload:
                return out
            elif opcode == 0x8:
                return out

    def abort(self):
        self.sock.close()
