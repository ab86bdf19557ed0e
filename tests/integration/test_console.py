"""`lxc console` on a real busybox container: banner, input, detach, the console log."""

import time

import pexpect
import pytest

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ct(busybox_daemon):
    """A freshly booted busybox container."""
    busybox_daemon.lxc("launch", "busybox", "con1")
    deadline = time.monotonic() + 20
    while b"booted" not in busybox_daemon.request("GET", "/1.0/containers/con1/console").body:
        assert time.monotonic() < deadline, "no boot banner in the console log"
        time.sleep(0.1)
    try:
        yield "con1"
    finally:
        busybox_daemon.lxc("delete", "-f", "con1", check=False)


def _detach(child):
    # The client looks at the first byte of each read: the escape and `q` must come apart.
    child.send("\x01")
    time.sleep(0.3)
    child.send("q")


def test_console_banner_input_detach(busybox_daemon, ct):
    """`lxc console` shows the boot banner, runs what is typed, and detaches on ctrl+a q."""
    child = pexpect.spawn("lxc", ["console", ct], env=busybox_daemon.env(), dimensions=(24, 80), timeout=20)
    try:
        child.expect(f"lxdtx busybox: booted {ct}")
        child.sendline("echo $((6*7))")
        child.expect("42")
        _detach(child)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    # Detaching ended the helper: a second attach works at once.
    child = pexpect.spawn("lxc", ["console", ct], env=busybox_daemon.env(), timeout=20)
    try:
        child.sendline("echo again-$((1+1))")
        child.expect("again-2")
        _detach(child)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_show_log_and_clear(busybox_daemon, ct):
    """`lxc console --show-log` prints the console log; DELETE clears it."""
    out = busybox_daemon.lxc("console", ct, "--show-log").stdout
    assert f"lxdtx busybox: booted {ct}" in out
    assert busybox_daemon.request("DELETE", f"/1.0/containers/{ct}/console").status == 200
    assert b"booted" not in busybox_daemon.request("GET", f"/1.0/containers/{ct}/console").body


def test_console_needs_running_container(busybox_daemon):
    """Attaching to a stopped container is a 400 that names the reason."""
    d = busybox_daemon
    d.lxc("init", "busybox", "con-stopped")
    try:
        result = d.request("POST", "/1.0/containers/con-stopped/console", {"width": 80, "height": 24})
        assert result.status == 400 and result.json["error"] == "Container is not running."
        assert d.request("GET", "/1.0/containers/con-stopped/console").status == 200
    finally:
        d.lxc("delete", "-f", "con-stopped", check=False)
