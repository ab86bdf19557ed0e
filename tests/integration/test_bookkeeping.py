"""The daemon's bookkeeping does not grow per request: after a few hundred requests, execs
and operations, every structure `GET /internal/debug/counts` reports returns to its size
before them, once the finished operations have aged out (they are kept a bounded time)."""

import inspect
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lxdtx.operations import Operations
from tests import pki
from tests.daemonproc import wait_until
from tests.integration.net import free_port, https_request, wait_port

pytestmark = pytest.mark.timeout(600)

KEEP = inspect.signature(Operations).parameters["keep"].default  # seconds a finished operation stays
NAME = "bk1"


@pytest.fixture(scope="module")
def ct(busybox_daemon):
    busybox_daemon.lxc("launch", "busybox", NAME)
    try:
        yield NAME
    finally:
        busybox_daemon.lxc("delete", "-f", NAME, check=False)


def _counts(d):
    answer = d.request("GET", "/internal/debug/counts?collect=1")
    assert answer.status == 200, answer
    return answer.metadata


def _exec(d, command):
    started = d.request("POST", f"/1.0/containers/{NAME}/exec",
                        {"command": command, "wait-for-websocket": False, "interactive": False,
                         "record-output": False})
    final = d.wait_operation(started)
    assert final["status"] == "Success" and final["metadata"]["return"] == 0, final


def _snapshot_round(d, i):
    made = d.request("POST", f"/1.0/containers/{NAME}/snapshots", {"name": f"s{i}"})
    assert d.wait_operation(made)["status"] == "Success"
    gone = d.request("DELETE", f"/1.0/containers/{NAME}/snapshots/s{i}")
    assert d.wait_operation(gone)["status"] == "Success"


def _round(d, size):
    """`size` reads, a tenth as many REST execs, a few client execs and snapshot rounds."""
    with ThreadPoolExecutor(4) as pool:
        reads = [pool.submit(d.request, "GET", path) for _ in range(size)
                 for path in ("/1.0", "/1.0/containers", f"/1.0/containers/{NAME}/state", "/1.0/operations")]
        assert all(f.result().status == 200 for f in reads)
        execs = [pool.submit(_exec, d, ["true"]) for _ in range(size // 10)]
        for f in execs:
            f.result()
    for _ in range(max(1, size // 50)):
        assert d.lxc("exec", NAME, "--", "echo", "hi").stdout.strip() == "hi"
        assert d.lxc("exec", NAME, "--", "sh", "-c", "cat", input="x").stdout == "x"
    for i in range(max(1, size // 50)):
        _snapshot_round(d, i)
    assert d.lxc("list", "--format", "csv", "-c", "n").stdout.split() == [NAME]


def _settled(d, baseline):
    """Keys whose count is still above the baseline (empty once settled)."""
    now = _counts(d)
    return {k: (baseline.get(k), v) for k, v in now.items() if v > baseline.get(k, 0)}


def test_counts_local_only(busybox_daemon, workdir):
    """The counts are for the host's root only: a trusted TLS client gets 403."""
    d = busybox_daemon
    port = free_port()
    d.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
    try:
        assert wait_port(port, True)
        pair = pki.client_cert("trusted")
        paths = pair.write(workdir, "trusted")
        assert d.request("POST", "/1.0/certificates", {"type": "client", "certificate": pair.b64}).status < 300
        assert https_request(port, "GET", "/1.0", cert=paths).status == 200
        assert https_request(port, "GET", "/internal/debug/counts", cert=paths).status == 403
        counts = _counts(d)
        assert "operations._ops" in counts and "events._listeners" in counts
        assert counts["live.lxdtx.operations.Operations"] == 1
    finally:
        d.lxc("config", "unset", "core.https_address")


def test_counts_return_to_baseline(busybox_daemon, ct):
    """Hundreds of requests, execs and operations leave nothing behind; operations are
    kept KEEP seconds after they finish, and no longer."""
    d = busybox_daemon
    _round(d, 20)  # warm-up: caches and pools reach their working size
    time.sleep(KEEP + 1)
    baseline = _counts(d)
    started = time.monotonic()
    _round(d, 200)
    elapsed = time.monotonic() - started
    after = _counts(d)
    # 20 REST execs and 8 snapshot operations and 4 client execs ran: only those of the
    # last KEEP seconds may still be kept (one operation per exec, two per snapshot round).
    assert after["operations._ops"] - baseline["operations._ops"] <= 20 + 4 * 2 + 4 * 2, (after, elapsed)
    assert wait_until(lambda: not _settled(d, baseline), timeout=KEEP + 20), _settled(d, baseline)
