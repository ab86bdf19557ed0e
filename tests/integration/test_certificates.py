"""The certificates API: `lxc config trust`, pylxd, the raw endpoints with ETags, and the trust
password's guards over HTTPS."""

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pylxd
import pytest

from lxdtx.resources.certificates import PASSWORD_ANSWER_TIME
from tests import pki
from tests.daemonproc import Result
from tests.integration.net import client_context, free_port


def _fingerprints(daemon):
    return [url.rsplit("/", 1)[1] for url in daemon.request("GET", "/1.0/certificates").metadata]


def test_lxc_config_trust(daemon, workdir):
    """`lxc config trust add/list/remove` with a certificate file."""
    alice = pki.client_cert("alice")
    cert_path, _ = alice.write(workdir, "alice")
    daemon.lxc("config", "trust", "add", cert_path)
    assert _fingerprints(daemon) == [alice.fingerprint]
    listing = daemon.lxc("config", "trust", "list").stdout
    assert alice.fingerprint[:12] in listing and "alice" in listing
    stored = daemon.request("GET", f"/1.0/certificates/{alice.fingerprint}").metadata
    assert stored["certificate"].encode().strip() == alice.cert_pem.strip()
    assert stored["type"] == "client" and stored["fingerprint"] == alice.fingerprint

    again = daemon.lxc("config", "trust", "add", cert_path, check=False)
    assert again.returncode != 0 and "already in trust store" in again.stderr

    daemon.lxc("config", "trust", "remove", alice.fingerprint)
    assert _fingerprints(daemon) == []
    missing = daemon.lxc("config", "trust", "remove", alice.fingerprint, check=False)
    assert missing.returncode != 0


def test_pylxd_certificates(daemon):
    """pylxd over the unix socket: create, list, get, delete."""
    client = pylxd.Client(endpoint=daemon.socket_path)
    assert client.trusted
    bob = pki.client_cert("bob")
    cert = client.certificates.create("", bob.cert_pem, name="bob")
    assert cert.fingerprint == bob.fingerprint
    assert cert.name == "bob" and cert.type == "client"
    assert [c.fingerprint for c in client.certificates.all()] == [bob.fingerprint]
    fetched = client.certificates.get(bob.fingerprint[:16])
    assert fetched.fingerprint == bob.fingerprint
    fetched.delete()
    assert client.certificates.all() == []


def test_add_and_read(daemon):
    """POST answers 201 with Location; GET takes a unique prefix; recursion lists objects."""
    carol = pki.client_cert("carol")
    added = daemon.request("POST", "/1.0/certificates", {"type": "client", "certificate": carol.b64, "name": "carol",
                                                         "restricted": False, "projects": [], "token": False})
    assert added.status == 201
    assert added.headers["Location"] == f"/1.0/certificates/{carol.fingerprint}"
    assert added.json["metadata"] is None
    assert daemon.request("GET", f"/1.0/certificates/{carol.fingerprint[:8]}").metadata["name"] == "carol"
    objects = daemon.request("GET", "/1.0/certificates?recursion=1").metadata
    assert [o["fingerprint"] for o in objects] == [carol.fingerprint]
    # Base64 with embedded newlines (what pylxd sends) is the same certificate.
    wrapped = "\n".join(carol.b64[i:i + 64] for i in range(0, len(carol.b64), 64))
    dup = daemon.request("POST", "/1.0/certificates", {"type": "client", "certificate": wrapped})
    assert dup.status == 400 and dup.json["error"] == "Certificate already in trust store"


def test_update_with_etag(daemon):
    """PUT and PATCH change the name; a stale ETag is 412 and changes nothing; the type stays client."""
    dave = pki.client_cert("dave")
    daemon.request("POST", "/1.0/certificates", {"type": "client", "certificate": dave.b64, "name": "dave"})
    url = f"/1.0/certificates/{dave.fingerprint}"
    first = daemon.request("GET", url)
    etag = first.headers["ETag"]
    assert daemon.request("PUT", url, {"name": "david", "type": "client"}, headers={"If-Match": etag}).status == 200
    stale = daemon.request("PUT", url, {"name": "mallory", "type": "client"}, headers={"If-Match": etag})
    assert stale.status == 412
    assert daemon.request("GET", url).metadata["name"] == "david"
    assert daemon.request("PATCH", url, {"name": "dave2"}).status == 200
    assert daemon.request("GET", url).metadata["name"] == "dave2"
    wrong_type = daemon.request("PATCH", url, {"type": "server"})
    assert wrong_type.status == 400 and wrong_type.json["error"] == "Unknown request type server"
    assert daemon.request("GET", url).metadata["type"] == "client"


def test_bad_certificates(daemon):
    """Not base64, not a certificate, a wrong type, no TLS peer on the socket: 400, nothing stored."""
    cases = [
        ({"type": "client", "certificate": "%%% not base64 %%%"}, "invalid certificate"),
        ({"type": "client", "certificate": "aGVsbG8="}, "invalid certificate"),
        ({"type": "metrics", "certificate": pki.client_cert().b64}, "Unknown request type metrics"),
        ({"type": "client"}, "Can't use TLS data on non-TLS link"),
    ]
    for body, message in cases:
        answer = daemon.request("POST", "/1.0/certificates", body)
        assert answer.status == 400, answer
        assert message in answer.json["error"]
    assert _fingerprints(daemon) == []


def test_unknown_certificate(daemon):
    """Unknown fingerprints are 404 for every method."""
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        assert daemon.request(method, "/1.0/certificates/deadbeef", {} if method in ("PUT", "PATCH") else None
                              ).status == 404, method


def test_ambiguous_prefix(daemon):
    """A prefix matching two certificates is refused rather than guessed."""
    pairs = [pki.client_cert(f"c{i}") for i in range(40)]
    for pair in pairs:
        daemon.request("POST", "/1.0/certificates", {"type": "client", "certificate": pair.b64})
    first = {}
    for pair in pairs:
        first.setdefault(pair.fingerprint[0], []).append(pair)
    shared = next(group for group in first.values() if len(group) > 1)
    answer = daemon.request("GET", f"/1.0/certificates/{shared[0].fingerprint[0]}")
    assert answer.status == 400 and answer.json["error"] == "More than one certificate matches"


# -- the trust password over HTTPS: guesses limited per address, answers in fixed time -------

PASSWORD = "s3cret-pw"
ANSWER_TIME = PASSWORD_ANSWER_TIME


@pytest.fixture
def https_daemon(daemon):
    """A daemon with a trust password and an HTTPS listener on a free loopback port."""
    daemon.port = free_port()
    daemon.lxc("config", "set", "core.trust_password", PASSWORD)
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{daemon.port}")
    return daemon


def _add(daemon, password, cert, source):
    """`POST /1.0/certificates` with `password`, from `source` (any 127/8 address); (answer, seconds)."""
    conn = http.client.HTTPSConnection("127.0.0.1", daemon.port, context=client_context(cert), timeout=30,
                                       source_address=(source, 0))
    try:
        started = time.monotonic()
        conn.request("POST", "/1.0/certificates", body=json.dumps({"type": "client", "password": password}))
        response = conn.getresponse()
        answer = Result(response.status, dict(response.getheaders()), response.read())
        return answer, time.monotonic() - started
    finally:
        conn.close()


def test_password_guesses_limited(https_daemon, workdir):
    """Five wrong passwords from an address, then it is refused at once for a while, even with the
    right one; another address gets in. Wrong and right take the same time; failures are logged
    with the address, never with the password."""
    d = https_daemon
    guesser = pki.client_cert("guesser").write(workdir, "guesser")
    times = []
    for i in range(5):
        answer, seconds = _add(d, f"wrong-guess-{i}", guesser, "127.0.0.2")
        assert (answer.status, answer.json["error"]) == (403, "not authorized")
        times.append(seconds)
    answer, seconds = _add(d, PASSWORD, guesser, "127.0.0.2")
    assert (answer.status, answer.json["error"]) == (403, "too many failed attempts")
    assert seconds < ANSWER_TIME
    assert d.request("GET", "/1.0/certificates").metadata == []

    friend = pki.client_cert("friend")
    answer, right = _add(d, PASSWORD, friend.write(workdir, "friend"), "127.0.0.3")
    assert answer.status == 201, answer
    assert _fingerprints(d) == [friend.fingerprint]
    assert all(ANSWER_TIME <= t < ANSWER_TIME + 1 for t in times + [right]), (times, right)
    assert max(times + [right]) - min(times + [right]) < 0.5, (times, right)

    log = d.log()
    assert log.count("Wrong trust password from 127.0.0.2") == 5
    assert "too many failed attempts" in log
    assert "wrong-guess" not in log and PASSWORD not in log


def test_parallel_guesses_limited(https_daemon, workdir):
    """A burst in parallel from one address gets no more tries than a row: the rest are refused."""
    d = https_daemon
    guesser = pki.client_cert("guesser").write(workdir, "guesser")
    # Eight at once: as many untrusted connections as one address may have open.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _add(d, f"guess-{i}", guesser, "127.0.0.4")[0], range(8)))
    assert all(a.status == 403 for a in answers), answers
    errors = sorted(a.json["error"] for a in answers)
    assert errors.count("not authorized") <= 5 and errors.count("too many failed attempts") >= 3, errors


def test_no_password_same_time(https_daemon, workdir):
    """Without a trust password set a guess takes as long as with one: the timing does not tell."""
    d = https_daemon
    cert = pki.client_cert("c").write(workdir, "c")
    _, with_password = _add(d, "nope", cert, "127.0.0.5")
    d.lxc("config", "unset", "core.trust_password")
    answer, without = _add(d, "nope", cert, "127.0.0.6")
    assert answer.status == 403
    answer, empty = _add(d, "", cert, "127.0.0.7")
    assert answer.status == 403
    for seconds in (with_password, without, empty):
        assert ANSWER_TIME <= seconds < ANSWER_TIME + 1, (with_password, without, empty)
    assert max(with_password, without, empty) - min(with_password, without, empty) < 0.5
