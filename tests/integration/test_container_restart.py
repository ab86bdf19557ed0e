"""Containers across daemon restarts and shutdowns: SIGTERM leaves them running, `lxdtx shutdown` stops them."""

import json
import os
import subprocess
import time

import pytest

from tests.daemonproc import LXDTX, Daemon


@pytest.fixture
def fresh():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = Daemon(auto_init=True).start(timeout=120)
    try:
        yield d
    finally:
        d.cleanup()


def _status(d, name):
    return d.request("GET", f"/1.0/containers/{name}").metadata["status"]


def test_sigterm_keeps_containers_running(fresh):
    """After SIGTERM and a restart the container still runs with the same pid and can be stopped."""
    d = fresh
    d.lxc("launch", "busybox", "keep1")
    pid = d.request("GET", "/1.0/containers/keep1/state").metadata["pid"]
    d.stop()
    assert os.path.exists(f"/proc/{pid}")
    d.start()
    assert _status(d, "keep1") == "Running"
    assert d.request("GET", "/1.0/containers/keep1/state").metadata["pid"] == pid
    d.lxc("stop", "keep1", "--force")
    assert _status(d, "keep1") == "Stopped"
    assert not os.path.exists(f"/proc/{pid}")


def test_shutdown_honours_stop_priority(fresh):
    """`lxdtx shutdown` stops higher boot.stop.priority first, then the daemon; next start restores them."""
    d = fresh
    d.lxc("launch", "busybox", "low", "-c", "boot.stop.priority=1", "-c", "boot.host_shutdown_timeout=5")
    d.lxc("launch", "busybox", "high", "-c", "boot.stop.priority=9", "-c", "boot.host_shutdown_timeout=5")
    events = subprocess.Popen(["lxc", "monitor", "--type", "lifecycle", "--format", "json"],
                              env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.5)
    try:
        result = subprocess.run([LXDTX, "shutdown", "--dir", d.dir, "--timeout", "60"],
                                capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        d.proc.wait(30)
    finally:
        events.terminate()
    out, _ = events.communicate(timeout=10)
    order = []
    for line in out.splitlines():
        if line.strip().startswith("{") and "container-shutdown" in line:
            order.append(json.loads(line)["metadata"]["source"].rsplit("/", 1)[-1])
    assert order == ["high", "low"], out
    lxcpath = os.path.join(d.dir, "lxc")
    for name in ("high", "low"):
        state = subprocess.run(["lxc-info", "-s", "-H", "-n", name, "-P", lxcpath], capture_output=True, text=True)
        assert state.stdout.strip() == "STOPPED"
    # Like after a host boot: the daemon starts them again (last state RUNNING).
    d.start(timeout=120)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {_status(d, "high"), _status(d, "low")} != {"Running"}:
        time.sleep(0.2)
    assert _status(d, "high") == "Running" and _status(d, "low") == "Running"


def test_autostart(fresh):
    """boot.autostart=true starts a stopped container when the daemon starts; false keeps it stopped."""
    d = fresh
    d.lxc("init", "busybox", "auto1", "-c", "boot.autostart=true")
    d.lxc("launch", "busybox", "manual1", "-c", "boot.autostart=false")
    d.lxc("stop", "manual1", "--force")
    d.restart()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _status(d, "auto1") != "Running":
        time.sleep(0.2)
    assert _status(d, "auto1") == "Running"
    assert _status(d, "manual1") == "Stopped"


def test_container_stopping_itself_is_noticed(fresh):
    """A container that powers off from inside is reported stopped; an ephemeral one is removed."""
    d = fresh
    d.lxc("launch", "busybox", "self1", "--ephemeral")
    pid = d.request("GET", "/1.0/containers/self1/state").metadata["pid"]
    os.kill(pid, 10)  # SIGUSR1: busybox init halts
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and d.request("GET", "/1.0/containers/self1").status != 404:
        time.sleep(0.2)
    assert d.request("GET", "/1.0/containers/self1").status == 404


def test_pylxd_lifecycle(fresh):
    """pylxd 2.4 (on /1.0/instances) creates, starts, stops and deletes containers and lists images."""
    import pylxd

    d = fresh
    client = pylxd.Client(endpoint=d.socket_path)
    assert any(a["name"] == "busybox" for img in client.images.all() for a in img.aliases)
    container = client.containers.create(
        {"name": "py1", "source": {"type": "image", "alias": "busybox"}}, wait=True)
    container.start(wait=True)
    container.sync()
    assert container.status == "Running"
    assert container.state().pid > 0
    container.stop(wait=True)
    container.sync()
    assert container.status == "Stopped"
    container.delete(wait=True)
    assert not client.containers.exists("py1")


def test_shutdown_forces_after_host_shutdown_timeout(fresh):
    """A container that ignores the halt signal is killed once boot.host_shutdown_timeout passes."""
    d = fresh
    d.lxc("launch", "busybox", "stubborn", "-c", "boot.host_shutdown_timeout=2",
          "-c", "raw.lxc=lxc.signal.halt = SIGWINCH")
    started = time.monotonic()
    result = subprocess.run([LXDTX, "shutdown", "--dir", d.dir, "--timeout", "60"],
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    d.proc.wait(30)
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 20, elapsed
    state = subprocess.run(["lxc-info", "-s", "-H", "-n", "stubborn", "-P", os.path.join(d.dir, "lxc")],
                           capture_output=True, text=True)
    assert state.stdout.strip() == "STOPPED"


def test_autostart_priority_order(fresh):
    """At daemon start, autostart containers start by descending boot.autostart.priority."""
    d = fresh
    d.lxc("init", "busybox", "first", "-c", "boot.autostart=true", "-c", "boot.autostart.priority=9")
    d.lxc("init", "busybox", "second", "-c", "boot.autostart=true", "-c", "boot.autostart.priority=1")
    d.stop()
    d.start(timeout=120)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {_status(d, "first"), _status(d, "second")} != {"Running"}:
        time.sleep(0.2)
    from lxdtx import timeutil

    started = {name: timeutil.parse(d.request("GET", f"/1.0/containers/{name}").metadata["last_used_at"])
               for name in ("first", "second")}
    assert started["first"] < started["second"], started
