"""The daemon process: state survives a restart, SIGTERM and `lxdtx shutdown` stop it, `lxdtx waitready`."""

import os
import signal
import subprocess
import tempfile

import pytest

from tests import pki
from tests.daemonproc import LXDTX, Daemon
from tests.integration.net import free_port, https_request, port_open


def test_state_survives_restart(daemon):
    """Profiles, certificates and config (trust password, HTTPS address) are there after a restart."""
    port = free_port()
    daemon.lxc("profile", "create", "kept")
    daemon.lxc("profile", "set", "kept", "limits.cpu", "2")
    client = pki.client_cert("kept-client")
    cert_path, key_path = client.write(daemon.conf, "kept")
    daemon.lxc("config", "trust", "add", cert_path)
    daemon.lxc("config", "set", "core.trust_password", "s3cret")
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
    daemon.lxc("config", "set", "images.auto_update_interval", "3")
    before = daemon.request("GET", "/1.0/profiles/kept").metadata

    daemon.restart()

    assert daemon.request("GET", "/1.0/profiles/kept").metadata == before
    assert daemon.request("GET", f"/1.0/certificates/{client.fingerprint}").metadata["name"] == "kept.crt"
    assert daemon.request("GET", "/1.0").metadata["config"] == {
        "core.trust_password": True, "core.https_address": f"127.0.0.1:{port}",
        "images.auto_update_interval": "3"}
    assert port_open(port)
    # The stored certificate is trusted over HTTPS, and the stored password still admits a new client.
    assert https_request(port, "GET", "/1.0", cert=(cert_path, key_path)).metadata["auth"] == "trusted"
    newcomer = pki.client_cert("newcomer")
    paths = newcomer.write(daemon.conf, "newcomer")
    added = https_request(port, "POST", "/1.0/certificates", {"type": "client", "password": "s3cret"}, cert=paths)
    assert added.status == 201, added


def test_server_certificate_kept(daemon):
    """The server keypair is generated once and reused."""
    with open(os.path.join(daemon.dir, "server.crt")) as f:
        first = f.read()
    daemon.restart()
    with open(os.path.join(daemon.dir, "server.crt")) as f:
        assert f.read() == first
    assert oct(os.stat(os.path.join(daemon.dir, "unix.socket")).st_mode & 0o777) == "0o660"


def test_sigterm_stops_cleanly(daemon):
    """SIGTERM shuts down in order, without tracebacks; it starts again on the same dir.

    twistd reports a signal-initiated stop by ending with that signal (as systemd expects).
    """
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) in (0, -signal.SIGTERM)
    log = daemon.log()
    assert "Traceback" not in log and "Server Shut Down." in log
    assert not os.path.exists(os.path.join(daemon.dir, "unix.socket"))
    daemon.start()
    assert daemon.request("GET", "/1.0").status == 200


def test_lxdtx_shutdown(daemon):
    """`lxdtx shutdown --dir` stops the daemon and returns once it is gone."""
    result = subprocess.run([LXDTX, "shutdown", "--dir", daemon.dir, "--timeout", "30"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert daemon.proc.wait(30) == 0
    assert "Traceback" not in daemon.log()


def test_lxdtx_shutdown_without_daemon():
    """`lxdtx shutdown` on a directory without a daemon says so and fails."""
    empty = tempfile.mkdtemp(prefix="lxdtx-empty-", dir="/var/tmp")
    try:
        result = subprocess.run([LXDTX, "shutdown", "--dir", empty], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "cannot reach the daemon" in result.stderr
    finally:
        os.rmdir(empty)


def test_waitready(daemon):
    """`lxdtx waitready` returns 0 for a ready daemon."""
    result = subprocess.run([LXDTX, "waitready", "--dir", daemon.dir, "--timeout", "10"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_waitready_waits_for_start():
    """`lxdtx waitready` started before the daemon returns once the daemon is up."""
    d = Daemon()
    waiter = subprocess.Popen([LXDTX, "waitready", "--dir", d.dir, "--timeout", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        d.start()
        assert waiter.wait(60) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
        d.cleanup()


def test_waitready_timeout():
    """`lxdtx waitready` gives up after its timeout with a message."""
    empty = tempfile.mkdtemp(prefix="lxdtx-empty-", dir="/var/tmp")
    try:
        result = subprocess.run([LXDTX, "waitready", "--dir", empty, "--timeout", "0.5"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "not ready" in result.stderr
    finally:
        os.rmdir(empty)


def test_lxdtx_daemon_loads_tls_on_demand():
    """`lxdtx daemon` serves without TLS libraries mapped, and brings them in for HTTPS."""
    import http.client
    import ssl
    import time

    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = Daemon()
    d.command = [LXDTX, "daemon"]
    d.start()
    try:
        rust = lambda: any("_rust" in line for line in open(f"/proc/{d.proc.pid}/maps"))
        assert d.request("GET", "/1.0").status == 200
        assert not rust()
        port = free_port()
        d.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
                conn.request("GET", "/1.0")
                assert conn.getresponse().status == 200
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert rust()
    finally:
        d.cleanup()
