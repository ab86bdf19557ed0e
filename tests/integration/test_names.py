"""Names a client gives or reaches: snapshot and backup names, log file paths, interface names.

Snapshot and backup names follow LXD's rules and more (each becomes a file name):
refused with a 400 naming the field on create and on rename. A log path reaches
only a plain file of the container's own log directory, whatever is percent-encoded
in it. An interface inside a container whose name is not UTF-8 does not break
the container's state.
"""

import os
import subprocess

import pytest

pytestmark = pytest.mark.timeout(300)

BAD_NAMES = [".", "..", "a/b", "../x", "a b", "tab\there", "line\nbreak", "nul\0", "del\x7f", "x" * 256,
             "é" * 128]


def _op(daemon, answer):
    assert answer.status == 202, answer
    return daemon.wait_operation(answer, timeout=120)


def _assert_bad_name(answer, name):
    assert answer.status == 400, (name, answer)
    assert answer.json["error"].startswith('Invalid value for "name"'), (name, answer.json)


def test_snapshot_names(busybox_daemon, container):
    """Bad snapshot names are refused on create and rename (400, nothing made); good ones work."""
    d = busybox_daemon
    base = f"/1.0/containers/{container}/snapshots"
    for name in BAD_NAMES:
        _assert_bad_name(d.request("POST", base, {"name": name}), name)
    assert d.request("GET", base).metadata == []
    for name in ("s0", "é" * 127, "with.dots-and_under", "ünïcode"):
        assert _op(d, d.request("POST", base, {"name": name}))["status"] == "Success", name
    assert _op(d, d.request("POST", base, {}))["status"] == "Success"  # named snap0
    for name in BAD_NAMES:
        _assert_bad_name(d.request("POST", f"{base}/s0", {"name": name}), name)
    _assert_bad_name(d.request("POST", f"{base}/s0", {"name": 5}), 5)
    assert _op(d, d.request("POST", f"{base}/s0", {"name": "renamed"}))["status"] == "Success"
    names = sorted(url.rsplit("/", 1)[1] for url in d.request("GET", base).metadata)
    assert "renamed" in names and "snap0" in names and "s0" not in names
    refused = d.lxc("snapshot", container, "a b", check=False)
    assert refused.returncode != 0 and 'Invalid value for "name"' in refused.stderr


def test_backup_names(busybox_daemon, container):
    """Bad backup names are refused on create and rename (400, nothing made); good ones work."""
    d = busybox_daemon
    base = f"/1.0/containers/{container}/backups"
    for name in BAD_NAMES:
        _assert_bad_name(d.request("POST", base, {"name": name, "container_only": True}), name)
    assert d.request("GET", base).metadata == []
    assert _op(d, d.request("POST", base, {"name": "b0", "container_only": True}))["status"] == "Success"
    for name in BAD_NAMES + [5]:
        _assert_bad_name(d.request("POST", f"{base}/b0", {"name": name}), name)
    assert _op(d, d.request("POST", f"{base}/b0", {"name": "b-1.ok"}))["status"] == "Success"
    assert d.request("GET", base).metadata == [f"{base}/b-1.ok"]
    assert _op(d, d.request("DELETE", f"{base}/b-1.ok"))["status"] == "Success"


@pytest.fixture
def outside(busybox_daemon):
    """Files a log path must never reach: DIR/secret/{lxc.log,config,exec_x.stdout}. Removed afterwards."""
    d = busybox_daemon
    secret = os.path.join(d.dir, "secret")
    os.makedirs(secret)
    for name in ("lxc.log", "config", "exec_x.stdout"):
        with open(os.path.join(secret, name), "w") as f:
            f.write("TOPSECRET\n")
    try:
        yield secret
    finally:
        for name in os.listdir(secret):
            os.unlink(os.path.join(secret, name))
        os.rmdir(secret)


def test_log_paths_stay_in_the_log_dir(busybox_daemon, container, outside):
    """`%2F`, `..`, NUL and links in a logs path reach nothing outside the container's log dir."""
    d = busybox_daemon
    escaping = "..%2Fsecret"  # DIR/logs/../secret = DIR/secret; DIR/lxc/../secret/config
    for method, path in [
        ("GET", f"/1.0/containers/{escaping}/logs"),
        ("GET", f"/1.0/containers/{escaping}/logs/lxc.log"),
        ("GET", f"/1.0/containers/{escaping}/logs/lxc.conf"),
        ("GET", f"/1.0/instances/{escaping}/logs/exec_x.stdout"),
        ("DELETE", f"/1.0/containers/{escaping}/logs/exec_x.stdout"),
        ("GET", f"/1.0/containers/..%2F..%2F..%2F..%2F..%2Fetc/logs/lxc.log"),
    ]:
        answer = d.request(method, path)
        assert answer.status == 404, (method, path, answer)
        assert b"TOPSECRET" not in answer.body
    assert sorted(os.listdir(outside)) == ["config", "exec_x.stdout", "lxc.log"]

    logs = f"/1.0/containers/{container}/logs"
    for name in ("exec_a%2F..%2F..%2F..%2Fsecret%2Fexec_x.stdout", "exec_..%2Fx", "exec_%00", "lxc.log%00",
                 "..", "exec_x%2Fy", "%2E%2E"):
        answer = d.request("GET", f"{logs}/{name}")
        assert answer.status in (400, 404), (name, answer)
        assert b"TOPSECRET" not in answer.body
        assert d.request("DELETE", f"{logs}/{name}").status in (400, 404)

    log_dir = os.path.join(d.dir, "logs", container)
    link = os.path.join(log_dir, "exec_link.stdout")
    os.symlink(os.path.join(outside, "lxc.log"), link)
    try:
        answer = d.request("GET", f"{logs}/exec_link.stdout")
        assert answer.status == 404 and b"TOPSECRET" not in answer.body
    finally:
        os.unlink(link)
    fifo = os.path.join(log_dir, "exec_fifo.stdout")
    os.mkfifo(fifo)
    try:
        assert d.request("GET", f"{logs}/exec_fifo.stdout", timeout=10).status == 404
    finally:
        os.unlink(fifo)

    # What belongs to the container is served as ever.
    assert d.request("GET", f"{logs}/lxc.conf").status == 200
    assert d.request("GET", f"{logs}/lxc.log").status == 200
    assert "Log:" in d.lxc("info", "--show-log", container).stdout


def test_non_utf8_interface_name(busybox_daemon, container):
    """An interface named with bytes that are not UTF-8 shows with U+FFFD, as LXD shows it, and
    the state, `lxc info` and `lxc list` still answer."""
    d = busybox_daemon
    pid = d.request("GET", f"/1.0/containers/{container}/state").metadata["pid"]
    subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "link", "add", b"\xffx", "type", "veth",
                    "peer", "name", b"p\xfe"], check=True, capture_output=True, timeout=30)
    try:
        state = d.request("GET", f"/1.0/containers/{container}/state")
        assert state.status == 200, state
        network = state.metadata["network"]
        assert "\ufffdx" in network and "p\ufffd" in network
        assert network["\ufffdx"]["type"] == "broadcast"
        assert container in d.lxc("list", container).stdout
        assert "\ufffdx" in d.lxc("info", container).stdout
        assert d.request("GET", "/1.0/containers?recursion=2").status == 200
    finally:
        subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "link", "del", b"\xffx"], capture_output=True,
                       timeout=30)
