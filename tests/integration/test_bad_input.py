"""Bad input gets a clear LXD error and changes nothing."""

import shutil
import socket
import tempfile

import pytest

from tests import pki
from tests.integration.net import free_port, https_request

MAX_JSON_BODY = 4 * 1024 * 1024


def _error(answer, code):
    assert answer.status == code, answer
    assert set(answer.json) == {"type", "error", "error_code"}, answer
    assert answer.json["type"] == "error" and answer.json["error_code"] == code
    assert answer.headers["Content-Type"] == "application/json"
    return answer.json["error"]


def _state(daemon):
    """Everything a refused request must leave as it was."""
    return (
        daemon.request("GET", "/1.0/profiles?recursion=1").metadata,
        daemon.request("GET", "/1.0/certificates?recursion=1").metadata,
        daemon.request("GET", "/1.0").metadata["config"],
    )


@pytest.fixture
def seeded(shared_daemon):
    """The shared daemon with a known profile and config, compared before and after each test."""
    d = shared_daemon
    if d.request("GET", "/1.0/profiles/keep").status == 404:
        d.request("POST", "/1.0/profiles", {"name": "keep", "config": {"limits.cpu": "1"}})
        d.request("PATCH", "/1.0", {"config": {"images.auto_update_interval": "7"}})
    before = _state(d)
    yield d
    assert _state(d) == before
    assert d.request("GET", "/1.0").status == 200


def test_malformed_json(seeded):
    """Broken JSON and non-object bodies are 400s that say so."""
    for path, method in (("/1.0/profiles", "POST"), ("/1.0/profiles/keep", "PUT"), ("/1.0", "PATCH"),
                         ("/1.0/certificates", "POST")):
        message = _error(seeded.request(method, path, raw=b'{"name": "x", '), 400)
        assert "invalid JSON" in message
    assert _error(seeded.request("POST", "/1.0/profiles", raw=b'["x"]'), 400) == "request body must be a JSON object"
    assert _error(seeded.request("POST", "/1.0/profiles", raw=b"\xff\xfe\x00"), 400)


def test_unknown_config_key(seeded):
    """Unknown server and profile keys are named; several errors are counted."""
    assert _error(seeded.request("PATCH", "/1.0", {"config": {"core.bogus": "1"}}), 400) == \
        "cannot set 'core.bogus' to '1': unknown key"
    message = _error(seeded.request("PUT", "/1.0", {"config": {"a.b": "1", "c.d": "2", "e.f": "3"}}), 400)
    assert message == "cannot set 'a.b' to '1': unknown key (and 2 more errors)"
    assert _error(seeded.request("PATCH", "/1.0/profiles/keep", {"config": {"limits.bogus": "1"}}), 400) == \
        "Unknown configuration key: limits.bogus"
    assert _error(seeded.request("POST", "/1.0/profiles", {"name": "new", "config": {"bogus": "1"}}), 400) == \
        "Unknown configuration key: bogus"


def test_bad_value(seeded):
    """Bad values name the key; a valid key in the same request is not applied either."""
    message = _error(seeded.request("PATCH", "/1.0", {"config": {
        "images.auto_update_interval": "soon", "core.https_allowed_origin": "*"}}), 400)
    assert "images.auto_update_interval" in message
    assert "invalid type" in _error(seeded.request("PATCH", "/1.0", {"config": {"images.auto_update_cached": False}}), 400)
    assert "limits.memory" in _error(seeded.request("PATCH", "/1.0/profiles/keep", {"config": {"limits.memory": "lots"}}), 400)
    assert "eth0" in _error(seeded.request("PATCH", "/1.0/profiles/keep", {"devices": {"eth0": {"type": "nic"}}}), 400)
    assert _error(seeded.request("POST", "/1.0/profiles", {"name": "x", "config": ["a"]}), 400) == 'Invalid value for "config": must be a map'
    assert _error(seeded.request("POST", "/1.0/profiles", {"name": 7}), 400) == 'Invalid value for "name": must be a string'
    assert _error(seeded.request("POST", "/1.0/profiles", {"name": "a/b"}), 400) == "Profile names may not contain slashes"


def test_wrong_etag(seeded):
    """A wrong If-Match is 412 on the server config and on profiles."""
    assert "ETag" in _error(seeded.request("PUT", "/1.0", {"config": {}}, headers={"If-Match": "0" * 64}), 412)
    assert "ETag" in _error(seeded.request("PATCH", "/1.0/profiles/keep", {"description": "x"},
                                           headers={"If-Match": "f" * 64}), 412)
    right = seeded.request("GET", "/1.0").headers["ETag"]
    assert seeded.request("PATCH", "/1.0", {"config": {"images.auto_update_interval": "7"}},
                          headers={"If-Match": right}).status == 200


def test_unknown_path(seeded):
    """Unknown paths (and trailing slashes) are 404 `not found`; a missing method is 501."""
    for path in ("/1.0/nothing", "/1.0/profiles/", "/1.0/", "/2.0", "/1.0/profiles/keep/extra"):
        assert _error(seeded.request("GET", path), 404) == "not found", path
    assert _error(seeded.request("GET", "/1.0/profiles/missing"), 404) == "not found"
    assert _error(seeded.request("DELETE", "/1.0"), 501) == "not implemented"


def test_get_with_empty_object_body(seeded):
    """A GET carrying `{}` (some clients send it) is served normally."""
    assert seeded.request("GET", "/1.0/profiles", body={}).status == 200


def test_oversized_body(seeded):
    """A body above the cap is 413, whether announced by Content-Length or chunked; the daemon stays up."""
    huge = b'{"name": "huge", "description": "' + b"x" * (MAX_JSON_BODY + 1024) + b'"}'
    message = _error(seeded.request("POST", "/1.0/profiles", raw=huge), 413)
    assert str(MAX_JSON_BODY) in message

    def chunks():
        for i in range(0, len(huge), 256 * 1024):
            yield huge[i:i + 256 * 1024]

    _error(seeded.request("POST", "/1.0/profiles", raw=chunks()), 413)
    assert seeded.request("GET", "/1.0/profiles/huge").status == 404
    # Certificates take much less.
    _error(seeded.request("POST", "/1.0/certificates", raw=b'{"certificate": "' + b"A" * 100000 + b'"}'), 413)


def test_large_body_within_cap(seeded):
    """A large but allowed body is accepted (and removed again)."""
    description = "d" * (1024 * 1024)
    assert seeded.request("POST", "/1.0/profiles", {"name": "big", "description": description}).status == 201
    assert seeded.request("GET", "/1.0/profiles/big").metadata["description"] == description
    assert seeded.request("DELETE", "/1.0/profiles/big").status == 200


def test_garbage_http(seeded):
    """A connection speaking garbage is closed; the daemon keeps serving."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(seeded.socket_path)
        s.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
        try:
            s.recv(65536)
        except OSError:
            pass
    assert seeded.request("GET", "/1.0").status == 200


def test_untrusted_caller(shared_daemon):
    """Over HTTPS an unknown certificate is 403 on trusted endpoints, and nothing changes."""
    d = shared_daemon
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lxdtx-certs-", dir="/var/tmp")
    before = _state(d)
    try:
        d.request("PATCH", "/1.0", {"config": {"core.https_address": f"127.0.0.1:{port}"}})
        stranger = pki.client_cert("stranger").write(workdir, "stranger")
        for method, path, body in [("POST", "/1.0/profiles", {"name": "intruder"}),
                                   ("PUT", "/1.0/profiles/keep", {"config": {}}),
                                   ("PATCH", "/1.0", {"config": {"core.https_address": ""}}),
                                   ("DELETE", "/1.0/certificates/00", None)]:
            assert _error(https_request(port, method, path, body, cert=stranger), 403) == "not authorized"
    finally:
        d.request("PATCH", "/1.0", {"config": {"core.https_address": None}})
        shutil.rmtree(workdir, ignore_errors=True)
    assert _state(d) == before
