"""Untrusted HTTPS clients: bodies answered before they are read, and the cap on their connections.

A client without a trusted certificate on a real HTTPS daemon (127.0.0.1):
a request it may not make is answered at once, before its body, and nothing
reaches the daemon's spool directory (DIR/tmp); a body larger than its route
lets an untrusted caller send is a 413 as soon as it is too large. Untrusted
connections are capped, in all and per address, and must finish their TLS
handshake in time; trusted clients are never refused.
"""

import json
import os
import socket
import ssl
import time

import pytest

from lxdtx.trust import UntrustedConnections
from tests import pki
from tests.daemonproc import wait_until
from tests.integration.net import client_context, free_port

pytestmark = pytest.mark.timeout(180)

GIB = 1 << 30
_DEFAULTS = UntrustedConnections()
PER_PEER, TOTAL, HANDSHAKE_TIMEOUT = _DEFAULTS.per_peer, _DEFAULTS.total, _DEFAULTS.handshake_timeout


@pytest.fixture
def https_daemon(daemon, workdir):
    """A daemon on HTTPS (127.0.0.1) with a trust password, plus a stranger's and a friend's certificate."""
    daemon.port = free_port()
    daemon.lxc("config", "set", "core.trust_password", "s3cret-pw")
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{daemon.port}")
    daemon.stranger = pki.client_cert("stranger").write(workdir, "stranger")
    friend = pki.client_cert("friend")
    daemon.friend = friend.write(workdir, "friend")
    assert daemon.request("POST", "/1.0/certificates", {"type": "client", "certificate": friend.b64}).status == 201
    return daemon


class Connection:
    """One TLS connection to the daemon (from `source`, any 127/8 address), closed on exit."""

    def __init__(self, port, cert=None, source="127.0.0.1", timeout=10):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        try:
            self.sock = client_context(cert).wrap_socket(raw)
        except BaseException:
            raw.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, path, headers=(), body=b""):
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def answer(self, timeout=5):
        """(status, headers, body, closed) of the next answer; `closed`: the server ended the
        connection after it. Fails (socket.timeout) if no whole answer comes within `timeout`."""
        self.sock.settimeout(timeout)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self._recv()
            if not chunk:
                raise ConnectionError(f"closed before an answer: {data!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = self._recv()
            if not chunk:
                break
            body += chunk
        closed = False
        if headers.get("connection", "").lower() == "close":
            closed = self._recv() == b""
        return status, headers, body[:length], closed

    def _recv(self):
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return b""


def _spool(daemon):
    return os.path.join(daemon.dir, "tmp")


def _spooled(daemon):
    """Entries of DIR/tmp and daemon fds open on files there (unlinked temporary files too)."""
    spool = _spool(daemon)
    found = [os.path.join(spool, name) for name in os.listdir(spool)]
    fd_dir = f"/proc/{daemon.proc.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith(spool + "/"):
            found.append(target)
    return found


def _head(method, path, *headers):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/octet-stream", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path", ["/1.0/profiles", "/1.0/images", "/1.0/containers"])
@pytest.mark.parametrize("cert", ["stranger", None])
def test_gigabyte_body_refused_unread(https_daemon, path, cert):
    """1 GiB announced, 64 KiB sent: a 403 within a couple of seconds, the connection closed,
    nothing spooled (the image and container routes take 64 GiB and 1 TiB from trusted callers)."""
    d = https_daemon
    assert _spooled(d) == []
    with Connection(d.port, getattr(d, cert) if cert else None) as conn:
        conn.send(_head("POST", path, f"Content-Length: {GIB}"))
        conn.send(b"\0" * 65536)
        started = time.monotonic()
        assert _spooled(d) == []
        status, headers, body, closed = conn.answer(timeout=5)
        assert time.monotonic() - started < 3
        assert status == 403, body
        assert body == b'{"type":"error","error":"not authorized","error_code":403}'
        assert headers["connection"] == "close" and closed
        assert _spooled(d) == []
    assert d.request("GET", "/1.0/profiles").status == 200  # the daemon goes on


def test_chunked_body_refused_unread(https_daemon):
    """The same for a chunked body: answered after the headers, whatever the chunks."""
    d = https_daemon
    with Connection(d.port, d.stranger) as conn:
        conn.send(_head("POST", "/1.0/images", "Transfer-Encoding: chunked"))
        conn.send(b"%x\r\n" % 65536 + b"\0" * 65536 + b"\r\n")
        started = time.monotonic()
        assert _spooled(d) == []
        status, _, _, closed = conn.answer(timeout=5)
        assert time.monotonic() - started < 3
        assert status == 403 and closed
    assert _spooled(d) == []


def test_open_route_caps_untrusted_bodies(https_daemon):
    """`POST /1.0/certificates` is open to untrusted callers with 64 KiB of body: 1 GiB announced
    is a 413 at once; a chunked body is a 413 once past 64 KiB; a small one is read as ever."""
    d = https_daemon
    with Connection(d.port, d.stranger) as conn:
        conn.send(_head("POST", "/1.0/certificates", f"Content-Length: {GIB}"))
        conn.send(b"{" + b" " * 65535)
        status, _, body, closed = conn.answer(timeout=5)
        assert status == 413 and closed, body
        assert b"larger than 65536 bytes" in body
    with Connection(d.port, d.stranger) as conn:
        conn.send(_head("POST", "/1.0/certificates", "Transfer-Encoding: chunked"))
        for _ in range(2):
            conn.send(b"%x\r\n" % 40000 + b" " * 40000 + b"\r\n")
        status, _, _, closed = conn.answer(timeout=5)
        assert status == 413 and closed
    with Connection(d.port, d.stranger) as conn:
        conn.request("POST", "/1.0/certificates", body=b'{"type": "client", "password": "wrong"}')
        status, _, body, _ = conn.answer(timeout=10)
        assert status == 403 and b"not authorized" in body
    with Connection(d.port, d.stranger) as conn:
        # A GET open to anyone takes no more than a token body.
        conn.request("GET", "/1.0", headers=["Content-Length: 5000"])
        conn.send(b" " * 5000)
        status, _, _, closed = conn.answer(timeout=5)
        assert status == 413 and closed
    assert _spooled(d) == []


def test_trusted_bodies_unchanged(https_daemon):
    """A trusted client over HTTPS keeps its routes' limits: 300 KiB of profile is read and served."""
    d = https_daemon
    with Connection(d.port, d.friend) as conn:
        conn.request("POST", "/1.0/profiles", body=b'{"name": "big", "description": "' + b"x" * 300000 + b'"}')
        status, _, body, _ = conn.answer(timeout=10)
        assert status == 201, body
        assert len(d.request("GET", "/1.0/profiles/big").metadata["description"]) == 300000
        conn.request("GET", "/1.0")
        status, _, body, _ = conn.answer(timeout=10)
        assert status == 200 and b'"auth":"trusted"' in body


def _untrusted(port, cert, source):
    """An untrusted connection the daemon has counted (a GET /1.0 answered on it)."""
    conn = Connection(port, cert, source)
    conn.request("GET", "/1.0")
    status, _, body, closed = conn.answer(timeout=10)
    assert status == 200 and not closed, body
    return conn


def test_untrusted_connection_cap(https_daemon):
    """At most PER_PEER untrusted connections per address and TOTAL in all: the next one is
    answered 503 and closed; trusted clients and other addresses are not refused; a closed
    connection makes room again."""
    d = https_daemon
    opened = []
    try:
        for _ in range(PER_PEER):
            opened.append(_untrusted(d.port, d.stranger, "127.0.0.1"))
        with Connection(d.port, d.stranger, "127.0.0.1") as extra:
            extra.request("GET", "/1.0")
            status, _, body, closed = extra.answer(timeout=10)
            assert status == 503 and closed
            assert b"Too many untrusted connections" in body
        with Connection(d.port, None, "127.0.0.1") as anonymous:
            anonymous.request("GET", "/1.0")
            assert anonymous.answer(timeout=10)[0] == 503
        with Connection(d.port, d.friend, "127.0.0.1") as friend:
            friend.request("GET", "/1.0/profiles")
            assert friend.answer(timeout=10)[0] == 200
        opened.append(_untrusted(d.port, d.stranger, "127.0.0.2"))

        opened.pop(0).close()

        def room():
            with Connection(d.port, d.stranger, "127.0.0.1") as conn:
                conn.request("GET", "/1.0")
                return conn.answer(timeout=10)[0] == 200

        assert wait_until(room, timeout=10)

        # Fill up the total from more addresses; then nobody new that is untrusted gets in.
        count = PER_PEER
        host = 10
        while count < TOTAL:
            for _ in range(min(PER_PEER, TOTAL - count)):
                opened.append(_untrusted(d.port, d.stranger, f"127.0.0.{host}"))
                count += 1
            host += 1
        with Connection(d.port, d.stranger, "127.0.0.200") as late:
            late.request("GET", "/1.0")
            assert late.answer(timeout=10)[0] == 503
        with Connection(d.port, d.friend, "127.0.0.200") as friend:
            friend.request("GET", "/1.0")
            assert friend.answer(timeout=10)[0] == 200
        assert "Refusing an untrusted connection" in d.log()
    finally:
        for conn in opened:
            conn.close()


def test_handshake_timeout(https_daemon):
    """A TCP connection that never starts its TLS handshake is dropped after the handshake timeout."""
    d = https_daemon
    with socket.create_connection(("127.0.0.1", d.port), timeout=HANDSHAKE_TIMEOUT + 10) as raw:
        started = time.monotonic()
        try:
            assert raw.recv(1) == b""
        except ConnectionResetError:
            pass
        waited = time.monotonic() - started
    assert HANDSHAKE_TIMEOUT - 1 < waited < HANDSHAKE_TIMEOUT + 5


def test_private_image_same_as_absent(https_daemon):
    """To an untrusted caller a private image is exactly an absent one: same status and text for
    the image, its export and an alias to it; listings show public images only."""
    from tests import imagefiles
    from tests.integration.test_images import import_raw

    d = https_daemon
    private = import_raw(d, imagefiles.unified("gzip"))["metadata"]["fingerprint"]
    public = import_raw(d, imagefiles.unified("gzip"), {"X-LXD-public": "true"})["metadata"]["fingerprint"]
    assert d.request("POST", "/1.0/images/aliases", {"name": "hidden", "target": private}).status == 201
    absent = "0" * 64

    def ask(path):
        with Connection(d.port, d.stranger) as conn:
            conn.request("GET", path)
            status, _, body, _ = conn.answer(timeout=10)
            return status, body

    for private_path, absent_path in [
        (f"/1.0/images/{private}", f"/1.0/images/{absent}"),
        (f"/1.0/images/{private[:12]}", f"/1.0/images/{absent[:12]}"),
        (f"/1.0/images/{private}/export", f"/1.0/images/{absent}/export"),
        (f"/1.0/images/{private}?secret={'1' * 64}", f"/1.0/images/{absent}?secret={'1' * 64}"),
        ("/1.0/images/aliases/hidden", "/1.0/images/aliases/nothing"),
    ]:
        seen, missing = ask(private_path), ask(absent_path)
        assert seen == missing, (private_path, seen, missing)
        assert seen[0] == 404
    status, body = ask("/1.0/images?recursion=1")
    assert status == 200
    listed = json.loads(body)["metadata"]
    assert [image["fingerprint"] for image in listed] == [public]
    assert private not in body.decode()
    # Trusted callers still get the specific answers.
    assert d.request("GET", f"/1.0/images/{absent}").json["error"] == f"Image '{absent}' not found"
