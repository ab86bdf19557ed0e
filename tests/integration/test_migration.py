"""Containers between two daemons on loopback with the real `lxc` client (pull mode, stateless).

`lxc copy` and `lxc move` to another remote, in pull, push and relay mode: files (content, owners, modes), config,
snapshots with their own content, `--instance-only`, a snapshot copied as a container; a running container copied
with `--stateless`; live migration refused up front with the cause; a failed transfer
leaves nothing on the target.
"""

import os
import signal
import subprocess
import time

import pylxd
import pytest

from lxdtx import faults
from lxdtx.migration import sink, volumes
from tests import pki
from tests.daemonproc import Daemon, wait_until
from tests.integration.net import free_port

pytestmark = pytest.mark.timeout(600)
PASSWORD = "migrate-pw"


def _https(d):
    d.port = free_port()
    d.lxc("config", "set", "core.trust_password", PASSWORD)
    d.lxc("config", "set", "core.https_address", f"127.0.0.1:{d.port}")


@pytest.fixture(scope="module")
def pair():
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    one, two = Daemon(auto_init=True), Daemon(auto_init=True)
    try:
        for d in (one, two):
            d.start(timeout=120)
            _https(d)
        one.lxc("remote", "add", "two", f"https://127.0.0.1:{two.port}", "--password", PASSWORD,
                "--accept-certificate")
        yield one, two
    finally:
        for d in (one, two):
            d.cleanup()


def _exec(d, name, command):
    return d.lxc("exec", name, "--", "sh", "-c", command).stdout


def _names(d, path):
    return sorted(u.rsplit("/", 1)[-1] for u in d.request("GET", path).metadata or [])


def _nothing_of(d, name):
    """The target holds no row, volume, snapshot or path of `name`."""
    assert d.request("GET", f"/1.0/containers/{name}").status == 404
    for root in (os.path.join(d.dir, "storage-pools", "default", "containers"),
                 os.path.join(d.dir, "storage-pools", "default", "snapshots"), os.path.join(d.dir, "containers")):
        assert name not in (os.listdir(root) if os.path.isdir(root) else [])


def test_copy_with_snapshots_then_move(pair):
    one, two = pair
    one.lxc("launch", "busybox", "mig")
    try:
        _exec(one, "mig", "echo first > /root/data; mkdir -p /srv/own; chown 1234:4321 /srv/own; "
                          "chmod 0751 /srv/own")
        one.lxc("snapshot", "mig", "s1")
        _exec(one, "mig", "echo second > /root/data")
        one.lxc("snapshot", "mig", "s2")
        _exec(one, "mig", "echo third > /root/data")
        one.lxc("config", "set", "mig", "user.origin", "one")
        one.lxc("stop", "mig", "--force")

        one.lxc("copy", "mig", "two:mig2")
        assert _names(two, "/1.0/containers/mig2/snapshots") == ["s1", "s2"]
        assert two.request("GET", "/1.0/containers/mig2").metadata["config"]["user.origin"] == "one"
        two.lxc("start", "mig2")
        assert _exec(two, "mig2", "cat /root/data") == "third\n"
        assert _exec(two, "mig2", "stat -c '%u:%g %a' /srv/own").strip() == "1234:4321 751"
        two.lxc("restore", "mig2", "s1")
        assert _exec(two, "mig2", "cat /root/data") == "first\n"
        two.lxc("delete", "--force", "mig2")

        one.lxc("copy", "mig/s1", "two:fromsnap")
        assert _names(two, "/1.0/containers/fromsnap/snapshots") == []
        assert two.lxc("file", "pull", "fromsnap/root/data", "-").stdout == "first\n"
        two.lxc("delete", "fromsnap")

        one.lxc("copy", "mig", "two:only", "--instance-only")
        assert _names(two, "/1.0/containers/only/snapshots") == []
        two.lxc("delete", "only")

        one.lxc("move", "mig", "two:moved")
        assert one.request("GET", "/1.0/containers/mig").status == 404
        assert _names(two, "/1.0/containers/moved/snapshots") == ["s1", "s2"]
        two.lxc("start", "moved")
        assert _exec(two, "moved", "cat /root/data") == "third\n"
        two.lxc("delete", "--force", "moved")
    finally:
        one.lxc("delete", "--force", "mig", check=False)
        for name in ("mig2", "only", "moved", "fromsnap"):
            two.lxc("delete", "--force", name, check=False)


@pytest.mark.parametrize("mode", ["push", "relay"])
def test_modes(pair, mode):
    """`--mode push` (the source dials the target) and `--mode relay` (the client joins the two)."""
    one, two = pair
    name = f"m{mode}"
    one.lxc("init", "busybox", name)
    try:
        one.lxc("file", "push", "-", f"{name}/root/mode", input=f"{mode}\n")
        one.lxc("snapshot", name, "s1")
        one.lxc("copy", name, f"two:{name}", "--mode", mode)
        assert _names(two, f"/1.0/containers/{name}/snapshots") == ["s1"]
        assert two.lxc("file", "pull", f"{name}/root/mode", "-").stdout == f"{mode}\n"
        two.lxc("start", name)
        assert _exec(two, name, "cat /root/mode") == f"{mode}\n"
    finally:
        one.lxc("delete", "--force", name, check=False)
        two.lxc("delete", "--force", name, check=False)


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_custom_volume_copy_and_move(pair, mode):
    """`lxc storage volume copy` and `move` to the other remote: the files come along."""
    one, two = pair
    name = f"vol{mode}"
    one.lxc("storage", "volume", "create", "default", name)
    try:
        path = os.path.join(one.dir, "storage-pools", "default", "custom", name)
        with open(os.path.join(path, "data"), "w") as f:
            f.write(mode)
        os.chown(os.path.join(path, "data"), 100123, 100456)
        one.lxc("storage", "volume", "copy", f"default/{name}", f"two:default/{name}", "--mode", mode)
        got = os.path.join(two.dir, "storage-pools", "default", "custom", name, "data")
        with open(got) as f:
            assert f.read() == mode
        assert (os.stat(got).st_uid, os.stat(got).st_gid) == (100123, 100456)
        one.lxc("storage", "volume", "move", f"default/{name}", f"two:default/{name}2", "--mode", mode)
        assert one.request("GET", f"/1.0/storage-pools/default/volumes/custom/{name}").status == 404
        assert two.request("GET", f"/1.0/storage-pools/default/volumes/custom/{name}2").status == 200
    finally:
        one.lxc("storage", "volume", "delete", "default", name, check=False)
        for target in (name, f"{name}2"):
            two.lxc("storage", "volume", "delete", "default", target, check=False)


def test_running_container_stateless_and_live_refused(pair):
    one, two = pair
    one.lxc("launch", "busybox", "run1")
    try:
        _exec(one, "run1", "echo alive > /root/state")
        r = one.lxc("copy", "run1", "two:live1", check=False)
        # Refused before anything moves, naming why (no CRIU, or a container CRIU can't dump).
        assert r.returncode != 0 and "Unable to perform container live migration" in r.stderr
        _nothing_of(two, "live1")
        one.lxc("copy", "run1", "two:cold1", "--stateless")
        two.lxc("start", "cold1")
        assert _exec(two, "cold1", "cat /root/state") == "alive\n"
    finally:
        one.lxc("delete", "--force", "run1", check=False)
        two.lxc("delete", "--force", "cold1", check=False)


def test_name_taken_on_target_leaves_it_alone(pair):
    one, two = pair
    one.lxc("init", "busybox", "dup")
    two.lxc("init", "busybox", "dup")
    try:
        two.lxc("config", "set", "dup", "user.mine", "yes")
        r = one.lxc("copy", "dup", "two:dup", check=False)
        assert r.returncode != 0
        assert two.request("GET", "/1.0/containers/dup").metadata["config"]["user.mine"] == "yes"
    finally:
        one.lxc("delete", "dup", check=False)
        two.lxc("delete", "dup", check=False)


def _progress(d):
    """The `fs_progress` texts of the daemon's running operations."""
    ops = d.request("GET", "/1.0/operations?recursion=1").metadata or {}
    return [op["metadata"]["fs_progress"] for group in ops.values() for op in group or []
            if (op.get("metadata") or {}).get("fs_progress")]


def _big(d, name, mib=300):
    d.lxc("launch", "busybox", name)
    _exec(d, name, f"dd if=/dev/urandom of=/root/big bs=1048576 count={mib} 2>/dev/null; sync")
    d.lxc("stop", "--force", name)


def test_progress_then_source_killed_mid_transfer(pair):
    """The target's operation shows `fs_progress` while the bytes flow; a source killed with
    SIGKILL then leaves nothing of the container on the target, whose name is free again, and
    the target says so on its events stream."""
    one, two = pair
    _big(one, "big")
    monitor = copying = None
    # Slow enough to be caught mid-transfer, however fast the machine.
    one.lxc("storage", "set", "default", "rsync.bwlimit", "40MB")
    try:
        seen = []
        monitor = subprocess.Popen(["lxc", "monitor", "--type=logging"], env=two.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        copying = subprocess.Popen(["lxc", "copy", "big", "two:big"], env=one.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline and copying.poll() is None:
            seen = _progress(two)
            time.sleep(0.1)
        assert seen and seen[0].startswith("big: ") and seen[0].endswith("/s)"), seen
        one.stop(signal.SIGKILL)
        _, err = copying.communicate(timeout=60)
        assert copying.returncode != 0
        deadline = time.monotonic() + 30
        while two.request("GET", "/1.0/operations").metadata.get("running") and time.monotonic() < deadline:
            time.sleep(0.2)
        _nothing_of(two, "big")
        monitor.terminate()
        logged, _ = monitor.communicate(timeout=10)
        assert "Recovered from the failed container.migrate of big: undone" in logged
        two.lxc("init", "busybox", "big")
        two.lxc("delete", "big")
    finally:
        for proc in (monitor, copying):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if one.proc is None or one.proc.poll() is not None:
            one.start(timeout=120)
        one.lxc("storage", "unset", "default", "rsync.bwlimit", check=False)
        one.lxc("delete", "--force", "big", check=False)
        two.lxc("delete", "--force", "big", check=False)


@pytest.mark.parametrize("point", faults.points("container.migrate."))
def test_target_killed(pair, point):
    """The target killed at each step of receiving: its next start leaves nothing behind."""
    one, two = pair
    one.lxc("init", "busybox", "crash")
    one.lxc("snapshot", "crash", "s1")
    try:
        two.stop()
        two.start(crash_at=point)
        assert one.lxc("copy", "crash", "two:crash", check=False).returncode != 0
        two.proc.wait(30)
        assert two.proc.returncode == -signal.SIGKILL
        two.stop()
        two.start(timeout=120)
        _nothing_of(two, "crash")
        one.lxc("copy", "crash", "two:crash")
        assert _names(two, "/1.0/containers/crash/snapshots") == ["s1"]
    finally:
        if two.proc is None or two.proc.poll() is not None:
            two.start(timeout=120)
        one.lxc("delete", "crash", check=False)
        two.lxc("delete", "crash", check=False)


def test_target_killed_receiving_a_volume(pair):
    one, two = pair
    one.lxc("storage", "volume", "create", "default", "crashvol")
    try:
        two.stop()
        two.start(crash_at=volumes.RECORDED.name)
        assert one.lxc("storage", "volume", "copy", "default/crashvol", "two:default/crashvol",
                       check=False).returncode != 0
        two.proc.wait(30)
        assert two.proc.returncode == -signal.SIGKILL
        two.stop()
        two.start(timeout=120)
        assert two.request("GET", "/1.0/storage-pools/default/volumes/custom/crashvol").status == 404
        assert "crashvol" not in os.listdir(os.path.join(two.dir, "storage-pools", "default", "custom"))
        one.lxc("storage", "volume", "copy", "default/crashvol", "two:default/crashvol")
    finally:
        if two.proc is None or two.proc.poll() is not None:
            two.start(timeout=120)
        one.lxc("storage", "volume", "delete", "default", "crashvol", check=False)
        two.lxc("storage", "volume", "delete", "default", "crashvol", check=False)


def test_every_target_step_has_a_crash_point():
    assert faults.points("container.migrate.") == [sink.RECORDED.name, sink.RECEIVED.name]
    assert faults.points("volume.migrate.") == [volumes.RECORDED.name]


def test_pylxd_migrate(pair, tmp_path, monkeypatch):
    """pylxd's `Container.migrate(new_client, wait=True)`: the target pulls the container with
    its snapshot and files, and pylxd then deletes the source."""
    # requests lets these override a session's `verify`, which defeats pylxd's pinning.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    one, two = pair
    cert = pki.client_cert("pylxd-migrate")
    paths = cert.write(str(tmp_path), "pylxd")
    clients = []
    for d in pair:
        d.request("POST", "/1.0/certificates", {"type": "client", "certificate": cert.b64})
        clients.append(pylxd.Client(endpoint=f"https://127.0.0.1:{d.port}", cert=paths,
                                    verify=os.path.join(d.dir, "server.crt")))
    one.lxc("init", "busybox", "pym")
    try:
        one.lxc("file", "push", "-", "pym/root/data", input="pylxd\n")
        one.lxc("snapshot", "pym", "s1")
        one.lxc("config", "set", "pym", "user.origin", "one")
        moved = clients[0].containers.get("pym").migrate(clients[1], wait=True)
        assert moved.name == "pym"
        # pylxd deletes the source without waiting for that operation.
        assert wait_until(lambda: one.request("GET", "/1.0/containers/pym").status == 404)
        assert _names(two, "/1.0/containers/pym/snapshots") == ["s1"]
        assert two.request("GET", "/1.0/containers/pym").metadata["config"]["user.origin"] == "one"
        assert two.lxc("file", "pull", "pym/root/data", "-").stdout == "pylxd\n"
        two.lxc("start", "pym")
        assert _exec(two, "pym", "cat /root/data") == "pylxd\n"
    finally:
        one.lxc("delete", "--force", "pym", check=False)
        two.lxc("delete", "--force", "pym", check=False)
        for d in pair:
            d.request("DELETE", f"/1.0/certificates/{cert.fingerprint}")
