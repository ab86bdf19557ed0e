"""Loopback helpers for integration tests: free ports, raw HTTPS requests with a client certificate."""

import http.client
import json
import socket
import ssl
import time

from tests.daemonproc import Result


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def wait_port(port, is_open, timeout=10):
    """Wait until the port is open (or closed); True when it got there in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port) == is_open:
            return True
        time.sleep(0.05)
    return port_open(port) == is_open


def client_context(cert=None):
    """A TLS client context that does not check the server and presents `cert` = (crt, key) if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


class HTTPSAnswer(Result):
    """A Result that also knows the TLS version it came over."""

    tls_version = None


def https_request(port, method, path, body=None, *, cert=None, headers=None, raw=None, timeout=30):
    """One HTTPS request to 127.0.0.1:port; `cert` is (cert path, key path) or None."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(cert), timeout=timeout)
    try:
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=payload, headers=headers or {})
        response = conn.getresponse()
        answer = HTTPSAnswer(response.status, dict(response.getheaders()), response.read())
        answer.tls_version = conn.sock.version() if conn.sock else None
        return answer
    finally:
        conn.close()
