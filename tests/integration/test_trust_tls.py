"""HTTPS and trust: `lxc remote add` with the trust password, untrusted callers, pylxd, PKI mode."""

import os
import shutil
import tempfile

import pylxd
import pytest

from tests import pki
from tests.daemonproc import Daemon
from tests.integration.net import free_port, https_request

PASSWORD = "s3cret-pw"


@pytest.fixture
def https_daemon(daemon):
    """A daemon with a trust password and an HTTPS listener on a free loopback port."""
    daemon.port = free_port()
    daemon.lxc("config", "set", "core.trust_password", PASSWORD)
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{daemon.port}")
    return daemon


@pytest.fixture
def client_conf():
    """A separate LXD_CONF directory for a remote `lxc` client."""
    path = tempfile.mkdtemp(prefix="lxc-remote-conf-", dir="/var/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _certificates(daemon):
    return daemon.request("GET", "/1.0/certificates").metadata


def test_remote_add_with_password(https_daemon, client_conf):
    """A wrong password is refused; the right one makes the client trusted for TLS calls."""
    d = https_daemon
    remote = {"LXD_CONF": client_conf}
    url = f"https://127.0.0.1:{d.port}"
    wrong = d.lxc("remote", "add", "r", url, "--password", "not-it", "--accept-certificate",
                  check=False, env=remote)
    assert wrong.returncode != 0
    assert "not authorized" in wrong.stderr
    assert _certificates(d) == []

    d.lxc("remote", "add", "r", url, "--password", PASSWORD, "--accept-certificate", env=remote)
    assert len(_certificates(d)) == 1
    cert = d.request("GET", "/1.0/certificates?recursion=1").metadata[0]
    assert cert["name"] == "127.0.0.1" and cert["type"] == "client"
    with open(os.path.join(client_conf, "client.crt")) as f:
        assert cert["certificate"].strip() == f.read().strip()

    info = d.lxc("info", "r:", env=remote).stdout
    assert "auth: trusted" in info
    listing = d.lxc("profile", "list", "r:", env=remote).stdout
    assert "default" in listing
    d.lxc("profile", "create", "r:over-tls", env=remote)
    assert d.request("GET", "/1.0/profiles/over-tls").status == 200


def test_tls_13(https_daemon):
    """The listener speaks TLS 1.3 (the `lxc` 5.0.2 client insists)."""
    assert https_request(https_daemon.port, "GET", "/").tls_version == "TLSv1.3"


def test_untrusted_caller(https_daemon, workdir):
    """An unknown certificate reaches only `GET /`, `GET /1.0` (reduced) and `POST /1.0/certificates`."""
    d = https_daemon
    stranger = pki.client_cert("stranger").write(workdir, "stranger")
    info = https_request(d.port, "GET", "/1.0", cert=stranger)
    assert info.status == 200
    assert set(info.metadata) == {"api_extensions", "api_status", "api_version", "auth", "public", "auth_methods"}
    assert info.metadata["auth"] == "untrusted"
    assert "ETag" not in info.headers
    assert https_request(d.port, "GET", "/", cert=stranger).status == 200
    for method, path, body in [
        ("GET", "/1.0/profiles", None), ("POST", "/1.0/profiles", {"name": "intruder"}),
        ("PUT", "/1.0", {"config": {}}), ("PATCH", "/1.0", {"config": {"core.trust_password": "x"}}),
        ("GET", "/1.0/certificates", None), ("GET", "/1.0/events", None),
        ("GET", "/1.0/resources", None), ("GET", "/1.0/operations", None),
        ("DELETE", "/1.0/profiles/default", None),
    ]:
        answer = https_request(d.port, method, path, body, cert=stranger)
        assert answer.status == 403, (method, path, answer)
        assert answer.json == {"type": "error", "error": "not authorized", "error_code": 403}
    assert d.request("GET", "/1.0/profiles/intruder").status == 404
    assert d.request("GET", "/1.0").metadata["config"]["core.trust_password"] is True


def test_untrusted_add_rules(https_daemon, workdir):
    """Adding over TLS needs the right password; without a client certificate there is nothing to add."""
    d = https_daemon
    stranger = pki.client_cert("stranger")
    paths = stranger.write(workdir, "stranger")
    refused = https_request(d.port, "POST", "/1.0/certificates", {"type": "client", "password": "bad"}, cert=paths)
    assert refused.status == 403
    missing = https_request(d.port, "POST", "/1.0/certificates", {"type": "client"}, cert=paths)
    assert missing.status == 403
    no_cert = https_request(d.port, "POST", "/1.0/certificates", {"type": "client", "password": PASSWORD})
    assert no_cert.status == 400 and no_cert.json["error"] == "No client certificate provided"
    assert _certificates(d) == []
    added = https_request(d.port, "POST", "/1.0/certificates",
                          {"type": "client", "password": PASSWORD, "name": "ignored"}, cert=paths)
    assert added.status == 201
    assert added.headers["Location"] == f"/1.0/certificates/{stranger.fingerprint}"
    assert https_request(d.port, "GET", "/1.0", cert=paths).metadata["auth"] == "trusted"
    again = https_request(d.port, "POST", "/1.0/certificates", {"type": "client"}, cert=paths)
    assert again.status == 400 and again.json["error"] == "Certificate already in trust store"


def test_no_password_no_add(daemon, workdir):
    """Without a trust password no untrusted add succeeds, whatever is sent."""
    port = free_port()
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
    paths = pki.client_cert().write(workdir, "c")
    for password in ("", "anything", None):
        answer = https_request(port, "POST", "/1.0/certificates", {"type": "client", "password": password}, cert=paths)
        assert answer.status == 403
    assert _certificates(daemon) == []


def test_internal_endpoints_local_only(https_daemon, workdir):
    """Even a trusted TLS client cannot reach the internal endpoints."""
    d = https_daemon
    pair = pki.client_cert("trusted")
    paths = pair.write(workdir, "trusted")
    d.request("POST", "/1.0/certificates", {"type": "client", "certificate": pair.b64})
    assert https_request(d.port, "GET", "/1.0/profiles", cert=paths).status == 200
    assert https_request(d.port, "PUT", "/internal/shutdown", cert=paths).status == 403
    assert d.request("GET", "/1.0").status == 200


@pytest.fixture
def no_ca_bundle(monkeypatch):
    """requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a session's `verify`, which defeats
    pylxd's certificate pinning; clear them for pylxd over HTTPS."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def _pylxd_remote(daemon, cert):
    """A pylxd client over HTTPS that pins the daemon's certificate (as `lxc remote add` does)."""
    return pylxd.Client(endpoint=f"https://127.0.0.1:{daemon.port}", cert=cert,
                        verify=os.path.join(daemon.dir, "server.crt"))


def test_pylxd_authenticate(https_daemon, workdir, no_ca_bundle):
    """pylxd over HTTPS: untrusted at first, trusted after `authenticate(password)`."""
    d = https_daemon
    pair = pki.client_cert("pylxd")
    paths = pair.write(workdir, "pylxd")
    client = _pylxd_remote(d, paths)
    assert client.trusted is False
    client.authenticate(PASSWORD)
    assert client.trusted is True
    assert "default" in [p.name for p in client.profiles.all()]
    assert client.certificates.get(pair.fingerprint).fingerprint == pair.fingerprint


def test_pylxd_authenticate_wrong_password(https_daemon, workdir, no_ca_bundle):
    """pylxd with a wrong password gets an error and stays untrusted."""
    paths = pki.client_cert("pylxd").write(workdir, "pylxd")
    client = _pylxd_remote(https_daemon, paths)
    with pytest.raises(pylxd.exceptions.LXDAPIException):
        client.authenticate("wrong")
    assert _certificates(https_daemon) == []


@pytest.fixture
def pki_daemon(workdir):
    """A daemon started with DIR/server.ca and DIR/ca.crl, and the certificates to try on it."""
    ca = pki.certificate_authority()
    certs = {
        "signed": pki.client_cert("signed", ca),
        "revoked": pki.client_cert("revoked", ca),
        "unsigned": pki.client_cert("unsigned"),
        "newcomer": pki.client_cert("newcomer", ca),
    }
    state = tempfile.mkdtemp(prefix="lxdtx-test-pki-", dir="/var/tmp")
    with open(os.path.join(state, "server.ca"), "wb") as f:
        f.write(ca.cert_pem)
    with open(os.path.join(state, "ca.crl"), "wb") as f:
        f.write(pki.revocation_list(ca, [certs["revoked"]]))
    d = Daemon(state_dir=state)
    try:
        d.start()
        d.port = free_port()
        d.lxc("config", "set", "core.trust_password", PASSWORD)
        d.lxc("config", "set", "core.https_address", f"127.0.0.1:{d.port}")
        d.certs = certs
        d.paths = {name: pair.write(workdir, name) for name, pair in certs.items()}
        yield d
    finally:
        d.cleanup()


def test_pki_mode(pki_daemon):
    """In PKI mode a stored certificate is trusted only if the CA signed it and did not revoke it."""
    d = pki_daemon
    assert "auth_pki" in d.request("GET", "/1.0").metadata["api_extensions"]
    for name in ("signed", "revoked", "unsigned"):
        added = d.request("POST", "/1.0/certificates", {"type": "client", "certificate": d.certs[name].b64,
                                                        "name": name})
        assert added.status == 201, added
    signed = https_request(d.port, "GET", "/1.0", cert=d.paths["signed"])
    assert signed.metadata["auth"] == "trusted"
    assert https_request(d.port, "GET", "/1.0/profiles", cert=d.paths["signed"]).status == 200
    for name in ("revoked", "unsigned"):
        assert https_request(d.port, "GET", "/1.0", cert=d.paths[name]).metadata["auth"] == "untrusted", name
        assert https_request(d.port, "GET", "/1.0/profiles", cert=d.paths[name]).status == 403, name


def test_pki_mode_refuses_password_adds(pki_daemon):
    """In PKI mode the trust password does not add certificates, not even CA-signed ones."""
    d = pki_daemon
    answer = https_request(d.port, "POST", "/1.0/certificates", {"type": "client", "password": PASSWORD},
                           cert=d.paths["newcomer"])
    assert answer.status == 403, answer
    assert "CA mode" in answer.json["error"]
    assert d.request("GET", "/1.0/certificates").metadata == []
    assert "CA mode" in d.log()
