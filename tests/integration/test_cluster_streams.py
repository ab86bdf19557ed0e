"""Streams across the members of a three-member cluster (three network namespaces, as
test_cluster_join, one cluster for the module): `lxc exec` (output, exit code, stdin,
a signal, a pty with a resize), `lxc console`, file push and pull, operation wait and
cancel asked of a member that does not hold the operation, every member's operations
listed by any member, every member's events on
any member's `/1.0/events` (`lxc monitor` too), `lxc launch --target` of an image that
only another member holds (and its export asked of a member without it), and a member stopped under a relayed exec, which ends the
client's session with an error rather than a hang. The client always talks to a member
other than the container's.

The storage pool is one `dir` pool, defined on each member with a source of its own and
then made on all; the busybox image is imported on node1 only."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pexpect
import pytest

from tests.daemonproc import wait_until
from tests.integration.test_cluster_join import PASSWORD, _join, _members, _pool_on_each, pytestmark, three_daemons  # noqa: F401
from tests.integration.wsclient import RawWebsocket

CT = "s3"  # on node3, driven from node1 and node2


@pytest.fixture(scope="module")
def cluster():
    yield from streams_cluster()


def streams_cluster():
    """(node1, node2, node3): bootstrapped and joined, a dir pool made on each, the
    default profile's root disk on it, the busybox image on node1 (bench/cluster_streams.py too)."""
    source = tempfile.mkdtemp(prefix="lxdtx-streams-pool-", dir="/var/tmp")
    shutil.rmtree(source)
    built = tempfile.mkdtemp(prefix="lxdtx-streams-image-", dir="/var/tmp")
    daemons = three_daemons()
    try:
        node1, node2, node3 = next(daemons)
        op = node1.request("PUT", "/1.0/cluster", {"server_name": "node1", "enabled": True})
        assert node1.wait_operation(op)["status"] == "Success"
        node1.lxc("config", "set", "core.trust_password", PASSWORD)
        assert _join(node1, node2, "node2")["status"] == "Success"
        assert _join(node1, node3, "node3")["status"] == "Success"
        for d in (node1, node2, node3):
            assert wait_until(lambda d=d: len(_members(d)) == 3
                              and all(m["status"] == "Online" for m in _members(d).values()), timeout=30)
        _pool_on_each(node1, source)
        node1.lxc("profile", "device", "add", "default", "root", "disk", "path=/", "pool=default")
        out = subprocess.run([sys.executable, "-m", "lxdtx.cli", "image", "busybox", built, "--compression", "gzip"],
                             capture_output=True, text=True, check=True, timeout=300).stdout.split()
        node1.lxc("image", "import", out[0], "--alias", "busybox")
        yield node1, node2, node3
    finally:
        daemons.close()
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(built, ignore_errors=True)


def _image_fingerprint(d):
    return d.request("GET", "/1.0/images/aliases/busybox").metadata["target"]


@pytest.fixture(scope="module")
def ct(cluster):
    """A running container on node3, launched through node1, which alone has the image."""
    node1, _, node3 = cluster
    fp = _image_fingerprint(node1)
    assert not os.path.exists(os.path.join(node3.dir, "images", fp))
    node1.lxc("launch", "busybox", CT, "--target", "node3")
    yield CT


def test_launch_target_fetches_image(cluster, ct):
    """`lxc launch busybox s3 --target node3` on node1: node3 got the image file from node1 first."""
    node1, node2, node3 = cluster
    fp = _image_fingerprint(node1)
    with open(os.path.join(node1.dir, "images", fp), "rb") as a, open(os.path.join(node3.dir, "images", fp), "rb") as b:
        assert a.read() == b.read()
    assert not os.path.exists(os.path.join(node2.dir, "images", fp))
    # node2 has no files of it: its export comes from a member that has them.
    exported = node2.request("GET", f"/1.0/images/{fp}/export")
    with open(os.path.join(node1.dir, "images", fp), "rb") as f:
        assert exported.status == 200 and exported.body == f.read()
    state = node2.request("GET", f"/1.0/containers/{ct}").metadata
    assert state["location"] == "node3" and state["status"] == "Running"


def test_exec_output_exit_code(cluster, ct):
    """Relayed through node1: separate stdout and stderr, the exit code."""
    node1 = cluster[0]
    result = node1.lxc("exec", ct, "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_exec_stdin(cluster, ct):
    """Two MiB of stdin through node2 come back intact (flow control both ways)."""
    node2 = cluster[1]
    data = os.urandom(1024 * 1024).hex()
    result = node2.lxc("exec", ct, "--", "cat", input=data, timeout=120)
    assert result.stdout == data


def test_exec_large_output(cluster, ct):
    """20 MB of output relayed to a client that reads it whole: nothing lost or reordered."""
    node1 = cluster[0]
    result = node1.lxc("exec", ct, "--", "sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' x; echo end",
                       timeout=120)
    assert len(result.stdout) == 20000004 and result.stdout.endswith("xxend\n")


def test_exec_signal(cluster, ct):
    """SIGTERM to `lxc exec` on node1 reaches the command on node3: exit 143."""
    node1 = cluster[0]
    proc = subprocess.Popen(["lxc", "exec", ct, "--", "sleep", "100"], env=node1.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: "sleep 100" in node1.lxc("exec", ct, "--", "ps").stdout, 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 143
        assert wait_until(lambda: "sleep 100" not in node1.lxc("exec", ct, "--", "ps").stdout, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stty(child):
    child.sendline("stty size")
    index = child.expect([r"\n(\d+ \d+)\r*\n", pexpect.TIMEOUT], timeout=2)
    return child.match.group(1).decode() if index == 0 else None


def test_exec_interactive_resize(cluster, ct):
    """A pty session through node1: input, a window resize, the exit code."""
    node1 = cluster[0]
    child = pexpect.spawn("lxc", ["exec", ct, "--", "sh"], env=node1.env(), dimensions=(24, 80), timeout=20)
    try:
        child.sendline("echo $((6*7))")
        child.expect("42")
        child.sendline("stty size")
        child.expect("24 80")
        child.setwinsize(40, 132)
        assert wait_until(lambda: _stty(child) == "40 132", 10)
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 5


def test_console(cluster, ct):
    """`lxc console` through node2: what is typed runs, ctrl+a q detaches."""
    node2 = cluster[1]
    child = pexpect.spawn("lxc", ["console", ct], env=node2.env(), dimensions=(24, 80), timeout=20)
    try:
        child.sendline("echo $((6*7))")
        child.expect("42")
        child.send("\x01")
        time.sleep(0.3)
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert node2.lxc("console", ct, "--show-log").returncode == 0


def test_file_push_pull(cluster, ct):
    """A file pushed through node2, pulled through node1 (both streamed through), mode kept."""
    node1, node2, _ = cluster
    work = tempfile.mkdtemp(prefix="lxdtx-streams-files-", dir="/var/tmp")
    try:
        src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
        payload = os.urandom(6 * 1024 * 1024)
        with open(src, "wb") as f:
            f.write(payload)
        node2.lxc("file", "push", src, f"{ct}/root/blob", "--mode", "0640")
        node1.lxc("file", "pull", f"{ct}/root/blob", dst)
        with open(dst, "rb") as f:
            assert f.read() == payload
        assert node1.lxc("exec", ct, "--", "stat", "-c", "%a", "/root/blob").stdout.strip() == "640"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tcp_opens(ns):
    """Connections a namespace's processes opened so far (its own /proc/net/snmp)."""
    lines = [line.split() for line in ns.exec("cat", "/proc/net/snmp").stdout.splitlines() if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("ActiveOpens")])


def test_forwarded_requests_keep_their_connection(cluster, ct):
    """Forty requests forwarded by node1 to node3 go over a kept connection, not a new TLS
    connection each."""
    node1 = cluster[0]
    before = _tcp_opens(node1.ns)
    for _ in range(40):
        assert node1.request("GET", f"/1.0/containers/{ct}").metadata["location"] == "node3"
    assert _tcp_opens(node1.ns) - before <= 2


def test_operation_wait_logs_and_cancel(cluster, ct):
    """An exec without websockets started through node2, waited for through node1 (which only
    knows it from node3's events), its recorded output read through node1; a token operation
    of node3 cancelled through node1; an unknown operation is 404 everywhere."""
    node1, node2, node3 = cluster
    op = node2.request("POST", f"/1.0/containers/{ct}/exec", {
        "command": ["sh", "-c", "echo recorded; exit 7"], "wait-for-websocket": False,
        "interactive": False, "record-output": True})
    assert op.status == 202, op
    op_id = op.metadata["id"]
    done = node1.request("GET", f"/1.0/operations/{op_id}/wait?timeout=30", timeout=40).metadata
    assert done["status"] == "Success" and done["metadata"]["return"] == 7, done
    log = node1.request("GET", done["metadata"]["output"]["1"])
    assert log.status == 200 and log.body == b"recorded\n"
    assert node2.request("GET", f"/1.0/operations/{op_id}").metadata["status"] == "Success"

    fp = _image_fingerprint(node1)
    token = node3.request("POST", f"/1.0/images/{fp}/secret", {})
    assert token.status == 202, token
    token_id = token.metadata["id"]
    assert node1.request("GET", f"/1.0/operations/{token_id}").metadata["status"] == "Running"
    # Every member's operations in any member's list (lxc operation list), node3's own once.
    assert f"/1.0/operations/{token_id}" in node1.request("GET", "/1.0/operations").metadata["running"]
    assert token_id in node2.lxc("operation", "list", "--format=csv").stdout
    assert node3.request("GET", "/1.0/operations").metadata["running"].count(f"/1.0/operations/{token_id}") == 1
    cancelled = node1.request("DELETE", f"/1.0/operations/{token_id}")
    assert cancelled.status == 200, cancelled
    assert node3.request("GET", f"/1.0/operations/{token_id}").metadata["status"] == "Cancelled"
    for d in cluster:
        assert d.request("GET", f"/1.0/operations/{uuid.uuid4()}").status == 404


def test_events_of_every_member(cluster, ct):
    """node1's `/1.0/events` carries node3's lifecycle events once each, marked with its
    member id; `lxc monitor` on node1 shows them."""
    node1 = cluster[0]
    monitor = subprocess.Popen(["lxc", "monitor", "--type=lifecycle", "--format=json"], env=node1.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ws = RawWebsocket(node1.socket_path, "/1.0/events?type=lifecycle", timeout=30)
    try:
        time.sleep(1)
        node1.lxc("config", "set", ct, "user.mark", "1")  # relayed to node3: container-updated there
        events = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not events:
            opcode, payload = ws.recv()
            if opcode == 1 and payload:
                event = json.loads(payload)
                if event["metadata"].get("source") == f"/1.0/containers/{ct}":
                    events.append(event)
        assert events and events[0]["metadata"]["action"] == "container-updated", events
        assert events[0].get("node"), events  # forwarded: the reference's member id field
        time.sleep(2)  # a duplicate (an event gone round the cluster) would come by now
    finally:
        monitor.send_signal(signal.SIGINT)
        try:
            out, _ = monitor.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            monitor.kill()
            out, _ = monitor.communicate()
        ws.sock.close()
    seen = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    updates = [e for e in seen if e["metadata"].get("source") == f"/1.0/containers/{ct}"
               and e["metadata"].get("action") == "container-updated"]
    assert len(updates) == 1, seen


def _lifecycle_event(ws, source, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        opcode, payload = ws.recv()
        if opcode == 1 and payload:
            event = json.loads(payload)
            if event["metadata"].get("source") == source:
                return event
    raise AssertionError(f"no lifecycle event for {source}")


def test_events_after_member_restart(cluster, ct):
    """node2 restarts: node1 subscribes to its events again and passes them on."""
    node1, node2, _ = cluster
    node2.restart()
    assert wait_until(lambda: all(m["status"] == "Online" for m in _members(node1).values()), timeout=30)
    ws = RawWebsocket(node1.socket_path, "/1.0/events?type=lifecycle", timeout=30)
    try:
        # Until node1's next round finds node2 back (every 2 s), its events are not there yet.
        deadline = time.monotonic() + 15
        ws.sock.settimeout(3)
        while True:
            name = f"p{uuid.uuid4().hex[:6]}"
            node2.lxc("profile", "create", name)
            try:
                event = _lifecycle_event(ws, f"/1.0/profiles/{name}", timeout=3)
                break
            except (AssertionError, OSError):
                assert time.monotonic() < deadline, "node2's events never came back to node1"
        assert event["metadata"]["action"] == "profile-created" and event.get("node")
    finally:
        ws.sock.close()


def test_member_stopped_under_exec(cluster, ct):
    """node3 stops while `lxc exec` through node1 and a pty session through node2 run there:
    both clients end with an error (node1's names the member), within bounds, rather than
    hang. (Last: node3 stays down.)"""
    node1, node2, node3 = cluster
    proc = subprocess.Popen(["lxc", "exec", ct, "--", "sleep", "300"], env=node1.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = pexpect.spawn("lxc", ["exec", ct, "--", "sh"], env=node2.env(), timeout=20)
    try:
        child.sendline("echo $((6*7))")
        child.expect("42")
        assert wait_until(lambda: "sleep 300" in node1.lxc("exec", ct, "--", "ps").stdout, 20)
        stopped = time.monotonic()
        node3.stop()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0 and "node3" in err, err
        child.expect(pexpect.EOF, timeout=60)  # the pty session through node2 ends too
        assert time.monotonic() - stopped < 30
    finally:
        child.close(force=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert child.exitstatus not in (None, 0), (child.exitstatus, child.signalstatus)
