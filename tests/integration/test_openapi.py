"""The OpenAPI document, served and fuzzed: schemathesis drives every operation of it.

`GET /1.0/openapi.json` serves the document made from the endpoint tables (trusted
callers only). schemathesis then generates requests for every operation of that
document, valid and invalid by its schemas, and sends them to a live daemon over
its unix socket (a trusted caller), with path parameters mostly the names of real
objects (the fixture world of test_fuzz: a container with a snapshot and a backup,
a profile, a network, a volume, the busybox image, a certificate) so requests get
past their 404s. No answer may be a 5xx (but the 501 of a feature not there), an error must be the error envelope, and
the state (the listings of test_fuzz's snapshot, the pool's directories, the
links) must be what it was after a refusal, and after a success once it is put
back. Bounded: EXAMPLES per operation (LXDTX_OPENAPI_EXAMPLES), and past
LXDTX_OPENAPI_SECONDS in all each operation runs just its first example.
"""

import json
import os
import socket
import time
from urllib.parse import unquote

import pytest
import requests
import schemathesis
import urllib3
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lxdtx import openapi
from lxdtx.resources import endpoints
from tests import pki
from tests.integration import test_fuzz as fuzz
from tests.integration.net import free_port, https_request
from tests.integration.netns import d, ns  # noqa: F401 (fixtures)
from tests.integration.test_fuzz import world  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(300)

EXAMPLES = int(os.environ.get("LXDTX_OPENAPI_EXAMPLES", "5"))
BUDGET_SECONDS = float(os.environ.get("LXDTX_OPENAPI_SECONDS", "420"))
DOCUMENT = openapi.document(endpoints())
schema = schemathesis.openapi.from_dict(DOCUMENT)
# DELETEs whose every parameter is real would remove a fixture object (as in test_fuzz).
PROTECTED_DELETES = {path.replace(":*}", "}") for path in fuzz.PROTECTED_DELETES}


def test_document_served_to_trusted(daemon):
    """Over the unix socket: the document of the tables, as JSON."""
    answer = daemon.request("GET", "/1.0/openapi.json")
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.body) == json.loads(json.dumps(DOCUMENT))


def test_document_refused_to_untrusted(daemon, workdir):
    """Over HTTPS: a trusted certificate gets it, an unknown one and none get the 403 envelope."""
    port = free_port()
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
    friend = pki.client_cert("friend")
    assert daemon.request("POST", "/1.0/certificates", {"type": "client", "certificate": friend.b64}).status == 201
    stranger = pki.client_cert("stranger").write(workdir, "stranger")
    for cert in (stranger, None):
        answer = https_request(port, "GET", "/1.0/openapi.json", cert=cert)
        assert answer.status == 403, answer
        assert answer.json == {"type": "error", "error": "not authorized", "error_code": 403}
    answer = https_request(port, "GET", "/1.0/openapi.json", cert=friend.write(workdir, "friend"))
    assert answer.status == 200 and json.loads(answer.body)["openapi"] == "3.1.0"


# -- the fuzz run -------------------------------------------------------------------------------
_STARTED = []
_RAN = set()


def _over_budget():
    if not _STARTED:
        _STARTED.append(time.monotonic())
    return time.monotonic() - _STARTED[0] > BUDGET_SECONDS


def _aim(world, case, data):
    """Make most path parameters the names of real objects; the strings sent, for the leak checks."""
    pattern = case.operation.path
    params = list(case.path_parameters or {})
    real = {}
    for param in params:
        choices = world.real(pattern.replace("/1.0/instances", "/1.0/containers", 1), param)
        if data.draw(st.integers(0, 4), label=f"{param} real?") < 3:
            choice = data.draw(st.sampled_from(choices), label=param)
            if choice in (fuzz.FINISHED_OP, fuzz.RUNNING_OP):
                choice = fuzz.operation(world, running=False)
            case.path_parameters[param] = choice
            real[param] = True
        else:
            real[param] = False
    if case.method == "DELETE" and pattern.replace("/1.0/instances", "/1.0/containers", 1) in PROTECTED_DELETES \
            and params and all(real.values()):
        case.path_parameters[params[-1]] = data.draw(st.sampled_from(["fz-none", "..", "x" * 300]), label="odd")
    sent = [unquote(str(v)) for v in (case.path_parameters or {}).values()]
    sent += [str(v) for v in (case.query or {}).values()]
    sent += list(fuzz._strings(case.body)) if isinstance(case.body, (dict, list, str)) else []
    return sent


class _Answer:
    """A requests answer as test_fuzz's checks read one."""

    def __init__(self, response):
        self.status = response.status_code
        self.headers = requests.structures.CaseInsensitiveDict(
            {name: values[-1] for name, values in response.headers.items()})
        self.body = response.content

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def metadata(self):
        return self.json.get("metadata")

    def __repr__(self):
        return f"<{self.status} {self.body[:500]!r}>"


class _UnixConnection(urllib3.connection.HTTPConnection):
    def __init__(self, path, **kwargs):
        super().__init__("localhost", **kwargs)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class _UnixPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def _new_conn(self):
        return _UnixConnection(self.socket_path, timeout=self.timeout.connect_timeout)


class _UnixAdapter(requests.adapters.HTTPAdapter):
    """requests over the daemon's unix socket, whatever the URL's host."""

    def __init__(self, path):
        super().__init__()
        self.pool = _UnixPool(path, timeout=120)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self.pool

    def close(self):
        self.pool.close()
        super().close()


BASE_URL = "http://lxdtx.invalid"


@pytest.fixture(scope="module")
def session(world):  # noqa: F811 (world is the fixture)
    with requests.Session() as s:
        s.mount(BASE_URL, _UnixAdapter(world.d.socket_path))
        yield s


@schema.parametrize()
@schema.given(data=st.data())
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_schemathesis(world, session, case, data):  # noqa: F811 (world is the fixture)
    """No 5xx, error envelopes, and the state as it was after a refusal (or put back after a success)."""
    label = (case.method, case.operation.path)
    if label in _RAN and _over_budget():
        return
    _RAN.add(label)
    d = world.d
    sent = _aim(world, case, data)
    response = case.call(base_url=BASE_URL, session=session, timeout=120)
    answer = _Answer(response)
    # 501 is LXD's answer for a feature not there (an image from a URL, live migration): a refusal.
    assert answer.status < 500 or answer.status == 501, f"{case.method} {response.request.url}: {answer!r}"
    changed = False
    if answer.status >= 400 and answer.status != 416:
        fuzz.check_error(world, answer, sent)
    elif answer.status == 202:
        op = fuzz._wait(d, answer)
        assert op["status"] in ("Success", "Failure", "Cancelled"), op
        if op["status"] == "Failure":
            fuzz.check_text(world, op["err"], sent)
        changed = op["status"] == "Success"
    elif answer.status < 300:
        changed = case.method != "GET"
    fuzz._settle(d)
    if changed:
        fuzz.undo(world)
    after = fuzz.snapshot(world)
    assert after == world.baseline, (
        f"{case.method} {response.request.url} "
        f"{'could not be undone' if changed else 'was refused and changed the state'}:\n"
        + "\n".join(fuzz._diff(world.baseline, after)))
