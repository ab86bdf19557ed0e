"""Candid logins (`core.macaroon.endpoint`, macaroon_authentication) with the real `lxc` client.

A small Candid (tests/candid.py) runs on loopback; `lxc remote add --auth-type=candid`
logs in through its form, typed at the client's terminal prompts (pexpect).
"""

import base64
import glob
import io
import json
import os
import shutil
import subprocess
import tempfile
import time

import pexpect
import pytest

from tests import pki
from tests.candid import Candid, wait_started
from tests.daemonproc import Daemon
from tests.integration.net import free_port, https_request

USER, PASSWORD = "alice", "wonder-land"
# Macaroons minted by the short-lived daemon live this long (LXD: 300 s), so that expiry can be seen.
# (The `lxc` client itself drops a macaroon cookie that expires within a minute.)
EXPIRY = 4


@pytest.fixture
def candid():
    server = Candid({USER: PASSWORD}).start()
    try:
        assert wait_started(server)
        yield server
    finally:
        server.stop()


def _candid_daemon(candid, expiry=None):
    """A daemon on HTTPS (loopback, free port) whose core.macaroon.endpoint is the test Candid."""
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root")
    d = Daemon()
    if expiry is not None:
        d.extra_env["LXDTX_MACAROON_EXPIRY"] = str(expiry)
    d.start(timeout=120)
    try:
        d.port = free_port()
        d.lxc("config", "set", "core.https_address", f"127.0.0.1:{d.port}")
        d.lxc("config", "set", "core.macaroon.endpoint", candid.url)
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def candid_daemon(candid):
    yield from _candid_daemon(candid)


@pytest.fixture
def short_lived(candid):
    """Such a daemon whose macaroons expire after EXPIRY seconds."""
    yield from _candid_daemon(candid, EXPIRY)


@pytest.fixture
def client_conf():
    """A separate LXD_CONF directory for the remote `lxc` client."""
    path = tempfile.mkdtemp(prefix="lxc-candid-conf-", dir="/var/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _lxc_with_login(daemon, conf, args, password=PASSWORD, user=USER):
    """Run `lxc args` on a terminal, answering the Candid form it shows; (exit status, transcript)."""
    child = pexpect.spawn("lxc", args, env=daemon.env(LXD_CONF=conf), encoding="utf-8", timeout=60)
    seen = io.StringIO()
    child.logfile_read = seen
    try:
        child.expect_exact("Press return to select a default value.")
        # The form's fields, in the order the client asks them (sorted by name).
        # (lxc 5.0.2 reads it with the terminal's echo on, the field's `secret` notwithstanding.)
        child.expect_exact("password: ")
        child.sendline(password)
        child.expect_exact("username: ")
        child.sendline(user)
        child.expect(pexpect.EOF)
        child.close()
        return child.exitstatus, seen.getvalue()
    finally:
        if child.isalive():
            child.terminate(force=True)


def _remote_add(daemon, conf, password=PASSWORD, user=USER):
    """`lxc remote add r https://... --auth-type=candid`, answering the Candid form; (exit status, transcript)."""
    args = ["remote", "add", "r", f"https://127.0.0.1:{daemon.port}", "--auth-type=candid", "--accept-certificate"]
    return _lxc_with_login(daemon, conf, args, password, user)


def _jar_cookie(conf):
    """The `macaroon-auth` cookie the client keeps for the remote (its persistent cookie jar)."""
    for path in glob.glob(os.path.join(conf, "jars", "*")):
        with open(path) as f:
            for cookie in json.load(f):
                if cookie["Name"] == "macaroon-auth":
                    return cookie
    return None


def _bakery_request(daemon, cookie_value, path="/1.0", method="GET", body=None):
    headers = {"Bakery-Protocol-Version": "3", "X-LXD-authenticated": "true"}
    if cookie_value is not None:
        headers["Cookie"] = f"macaroon-auth={cookie_value}"
    return https_request(daemon.port, method, path, body, headers=headers)


def _assert_discharge_required(answer, candid):
    """A 401 asking for a fresh login macaroon, addressed to the Candid endpoint."""
    assert answer.status == 401, answer
    assert answer.headers.get("WWW-Authenticate") == "Macaroon"
    body = answer.json
    assert body["Code"] == "macaroon discharge required"
    assert body["Info"]["CookieNameSuffix"] == "auth"
    assert body["Info"]["MacaroonPath"] == "/"
    macaroon = body["Info"]["Macaroon"]
    caveats = macaroon["m"]["c"]
    assert any(c.get("i", "").startswith("time-before ") for c in caveats)
    assert [c["l"] for c in caveats if c.get("l")] == [candid.url]
    return macaroon


def test_untrusted_sees_candid(candid_daemon):
    """With the key set, the untrusted `GET /1.0` offers candid besides tls."""
    info = https_request(candid_daemon.port, "GET", "/1.0").metadata
    assert info["auth"] == "untrusted"
    assert info["auth_methods"] == ["tls", "macaroons", "candid"]


def test_login_with_remote_add(candid_daemon, candid, client_conf):
    """`lxc remote add --auth-type=candid` logs in through the form; list, info and query work;
    no certificate is added; the user's name is on `GET /1.0`."""
    d = candid_daemon
    status, transcript = _remote_add(d, client_conf)
    assert status == 0, transcript + d.log()[-3000:]
    assert "Error" not in transcript
    # A candid login prints nothing after the form (no "Client certificate now trusted").
    assert transcript.endswith(f"username: {USER}\r\n"), transcript
    # Candid was asked for its key, then the discharge, which wanted the form login first.
    assert candid.paths()[:5] == ["/discharge/info", "/discharge", "/form", "/form", "/discharge"]
    assert d.request("GET", "/1.0/certificates").metadata == []
    assert not os.path.exists(os.path.join(client_conf, "client.crt"))

    remote = {"LXD_CONF": client_conf}
    info = d.lxc("info", "r:", env=remote).stdout
    assert "auth: trusted" in info
    listing = d.lxc("list", "r:", env=remote).stdout
    assert "NAME" in listing
    server = json.loads(d.lxc("query", "r:/1.0", env=remote).stdout)
    assert server["auth"] == "trusted"
    assert server["auth_user_method"] == "candid"
    assert server["auth_user_name"] == USER
    # The events websocket too: the client sends its macaroons on the upgrade.
    monitor = subprocess.Popen(["lxc", "monitor", "r:", "--type=lifecycle"], env=d.env(LXD_CONF=client_conf),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        d.lxc("profile", "create", "r:over-candid", env=remote)
        assert d.request("GET", "/1.0/profiles/over-candid").status == 200
        time.sleep(1)
    finally:
        monitor.terminate()
        events, errors = monitor.communicate(timeout=10)
    assert "source: /1.0/profiles/over-candid" in events, errors
    # Nobody else logged in meanwhile: one login, one discharge.
    assert candid.paths().count("/form") == 2


def test_bad_password(candid_daemon, candid, client_conf):
    """A wrong password: a clear error, no remote, no access."""
    d = candid_daemon
    status, transcript = _remote_add(d, client_conf, password="not-it")
    assert status != 0
    assert "invalid username or password" in transcript
    assert d.lxc("remote", "list", env={"LXD_CONF": client_conf}).stdout.count("127.0.0.1") == 0
    assert _jar_cookie(client_conf) is None
    assert d.request("GET", "/1.0/certificates").metadata == []


def test_discharge_refused(candid_daemon, candid, client_conf):
    """Candid refuses the discharge: the client says so, and gets no access."""
    candid.refuse = True
    status, transcript = _remote_add(candid_daemon, client_conf)
    assert status != 0
    assert f"user {USER} may not log in here" in transcript
    assert _jar_cookie(client_conf) is None


def test_forged(candid_daemon, candid, client_conf):
    """A forged macaroon, none, or garbage gets 401 and a fresh discharge-required answer; nothing changes."""
    d = candid_daemon
    assert _remote_add(d, client_conf)[0] == 0
    cookie = _jar_cookie(client_conf)
    assert cookie is not None and cookie["Path"] == "/"
    good = _bakery_request(d, cookie["Value"])
    assert good.status == 200 and good.metadata["auth"] == "trusted", good

    # Forged: the discharge's signature changed (the root macaroon and its caveats untouched).
    macaroons = json.loads(base64.b64decode(cookie["Value"]))
    signature = bytearray(base64.urlsafe_b64decode(macaroons[1]["s64"] + "=="))
    signature[0] ^= 1
    macaroons[1]["s64"] = base64.urlsafe_b64encode(bytes(signature)).decode().rstrip("=")
    forged = base64.b64encode(json.dumps(macaroons).encode()).decode()
    _assert_discharge_required(_bakery_request(d, forged), candid)
    # The root macaroon alone (not discharged), no macaroon at all, and garbage for one.
    alone = base64.b64encode(json.dumps(macaroons[:1]).encode()).decode()
    _assert_discharge_required(_bakery_request(d, alone), candid)
    _assert_discharge_required(_bakery_request(d, None), candid)
    _assert_discharge_required(_bakery_request(d, "bm90IGEgbWFjYXJvb24"), candid)
    # Refused requests change nothing (this one is answered before its body is read).
    refused = _bakery_request(d, forged, "/1.0/profiles", "POST", {"name": "forged"})
    _assert_discharge_required(refused, candid)
    assert [p.rsplit("/", 1)[-1] for p in d.request("GET", "/1.0/profiles").metadata] == ["default"]


def test_expired(short_lived, candid, client_conf):
    """A login macaroon past its time-before gets 401 and a fresh discharge-required answer;
    the `lxc` client then logs in again."""
    d = short_lived
    asked = _assert_discharge_required(_bakery_request(d, None), candid)
    cookie = candid.login_cookie(asked, USER)
    good = _bakery_request(d, cookie)
    assert good.status == 200 and good.metadata["auth_user_name"] == USER, good
    time.sleep(EXPIRY + 1)
    _assert_discharge_required(_bakery_request(d, cookie), candid)

    assert _remote_add(d, client_conf)[0] == 0
    time.sleep(EXPIRY + 1)
    status, transcript = _lxc_with_login(d, client_conf, ["list", "r:"])
    assert status == 0 and "| NAME |" in transcript, transcript


def test_login_survives_restart(candid_daemon, candid, client_conf):
    """Root keys are in the state store: a macaroon minted before a restart still verifies."""
    d = candid_daemon
    assert _remote_add(d, client_conf)[0] == 0
    cookie = _jar_cookie(client_conf)
    d.restart()
    after = _bakery_request(d, cookie["Value"])
    assert after.status == 200 and after.metadata["auth_user_name"] == USER, after
    assert "NAME" in d.lxc("list", "r:", env={"LXD_CONF": client_conf}).stdout


def test_tls_clients_unchanged(candid_daemon, workdir):
    """With Candid on, a client with a trusted certificate is trusted as before; a stranger is not."""
    d = candid_daemon
    carol = pki.client_cert("carol")
    added = d.request("POST", "/1.0/certificates", {"type": "client", "certificate": carol.b64})
    assert added.status in (200, 201), added
    paths = carol.write(workdir, "carol")
    assert https_request(d.port, "GET", "/1.0", cert=paths).metadata["auth"] == "trusted"
    assert https_request(d.port, "GET", "/1.0/profiles", cert=paths).status == 200
    stranger = pki.client_cert("stranger").write(workdir, "stranger")
    refused = https_request(d.port, "GET", "/1.0/profiles", cert=stranger)
    assert refused.status == 403 and refused.json["error"] == "not authorized"


def test_unset_turns_it_off(candid_daemon, candid, client_conf):
    """Unsetting the key: candid is no longer offered and logged-in clients are refused."""
    d = candid_daemon
    assert _remote_add(d, client_conf)[0] == 0
    cookie = _jar_cookie(client_conf)
    d.lxc("config", "unset", "core.macaroon.endpoint")
    assert https_request(d.port, "GET", "/1.0").metadata["auth_methods"] == ["tls"]
    refused = _bakery_request(d, cookie["Value"], "/1.0/profiles")
    assert refused.status == 403 and refused.json["error"] == "not authorized"
    failed = d.lxc("list", "r:", env={"LXD_CONF": client_conf}, check=False)
    assert failed.returncode != 0


def test_bad_endpoint_value(candid_daemon):
    """core.macaroon.endpoint must be an http(s) URL; a bad one changes nothing."""
    d = candid_daemon
    before = d.request("GET", "/1.0").metadata["config"]["core.macaroon.endpoint"]
    bad = d.request("PATCH", "/1.0", {"config": {"core.macaroon.endpoint": "candid.example"}})
    assert bad.status == 400 and "core.macaroon.endpoint" in bad.json["error"], bad
    assert d.request("GET", "/1.0").metadata["config"]["core.macaroon.endpoint"] == before


def test_candid_unreachable(candid_daemon, candid):
    """When Candid can't be reached for its key, a client is told so (500 naming it), not left hanging."""
    d = candid_daemon
    gone = f"http://127.0.0.1:{free_port()}"
    d.lxc("config", "set", "core.macaroon.endpoint", gone)
    answer = _bakery_request(d, None)
    assert answer.status == 500, answer
    assert gone in answer.json["error"]
    # With a body too: it is read and dropped while the key is looked for.
    answer = _bakery_request(d, None, "/1.0/profiles", "POST", {"name": "unreached"})
    assert answer.status == 500 and gone in answer.json["error"], answer
    assert d.request("GET", "/1.0/profiles/unreached").status == 404
