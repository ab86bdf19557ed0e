"""The daemon's websocket client (`lxdtx.websocket.client`) against a daemon: over its unix
socket, and over HTTPS with the server's certificate pinned and a client certificate."""

import os

from tests import pki
from tests.integration.net import free_port
from tests.integration.test_websocket_flow import Driver


def _open(*args):
    driver = Driver("open", *args)
    try:
        return driver.line(timeout=60)
    finally:
        driver.end()


def test_unix_socket(daemon):
    assert _open(f"ws+unix://{daemon.socket_path}:/1.0/events") == "open"


def test_pinned_https(daemon, workdir):
    """The right pin with a trusted certificate opens; a wrong pin, or an untrusted
    certificate (events need trust), do not."""
    port = free_port()
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
    trusted = pki.client_cert("ws-client")
    cert, key = trusted.write(workdir, "trusted")
    assert daemon.request("POST", "/1.0/certificates", {"type": "client", "certificate": trusted.b64}).status == 201
    stranger_cert, stranger_key = pki.client_cert("stranger").write(workdir, "stranger")
    other_pin = os.path.join(workdir, "other.crt")
    with open(other_pin, "wb") as f:
        f.write(pki.client_cert("not-the-server").cert_pem)
    server_pin = os.path.join(daemon.dir, "server.crt")
    url = f"wss://127.0.0.1:{port}/1.0/events"

    assert _open(url, server_pin, cert, key) == "open"
    assert _open(url, other_pin, cert, key).startswith("failed")
    refused = _open(url, server_pin, stranger_cert, stranger_key)
    assert refused.startswith("failed") and "403" in refused, refused
