"""One daemon per state directory, by an flock the kernel drops with the process: a second
daemon is refused and touches nothing; a daemon killed with -9 starts again at once, however
its pid is reused; a start that fails ends the dnsmasq it spawned."""

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.daemonproc import TWISTD, Daemon
from tests.integration.net import free_port

pytestmark = pytest.mark.timeout(600)


def _dnsmasq_pids(d):
    """pid of each live dnsmasq with a pid file under the daemon's networks/ (by name)."""
    pids = {}
    root = os.path.join(d.dir, "networks")
    for name in os.listdir(root):
        try:
            with open(os.path.join(root, name, "dnsmasq.pid")) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"--interface={name}".encode() in f.read().split(b"\0"):
                    pids[name] = pid
        except (OSError, ValueError):
            continue
    return pids


@pytest.fixture(scope="module")
def ld():
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    d = Daemon(auto_init=True).start(timeout=120)
    try:
        yield d
    finally:
        d.cleanup()


def test_second_daemon_refused_and_harmless(ld):
    """A second daemon on the same directory exits with a message naming the holder, and the
    first one's socket, dnsmasq and containers are untouched."""
    d = ld
    before = _dnsmasq_pids(d)
    assert before
    second = subprocess.run([TWISTD, "-n", "--pidfile=", "lxdtx", "--dir", d.dir], capture_output=True, text=True,
                            timeout=60, cwd=d.dir)
    log = second.stdout + second.stderr
    assert f"Another lxdtx daemon (pid {d.proc.pid}) is running on {d.dir}" in log, log
    assert "Traceback" not in log
    assert _dnsmasq_pids(d) == before
    assert d.request("GET", "/1.0").status == 200


def test_kill_9_restarts_while_containers_run(ld):
    """20 times: kill -9, start again within 5 s; the container stays running and execs,
    also when the lock file and the socket are left behind with a live pid in them."""
    d = ld
    d.lxc("launch", "busybox", "lk")
    try:
        init = d.request("GET", "/1.0/containers/lk/state").metadata["pid"]
        for round_ in range(20):
            d.stop(sig=signal.SIGKILL)
            if round_ % 2:
                # What an older daemon left: a pid link to a live process (ours), a socket file.
                lock_link = os.path.join(d.dir, "unix.socket.lock")
                if not os.path.lexists(lock_link):
                    os.symlink(str(os.getpid()), lock_link)
            start = time.monotonic()
            d.start(timeout=30)
            assert time.monotonic() - start < 5, f"start {round_} took {time.monotonic() - start:.1f}s"
            state = d.request("GET", "/1.0/containers/lk/state").metadata
            assert state["status"] == "Running" and state["pid"] == init
            assert d.lxc("exec", "lk", "--", "echo", f"r{round_}").stdout.strip() == f"r{round_}"
    finally:
        d.lxc("delete", "-f", "lk", check=False)


def test_failed_start_ends_its_dnsmasq(ld):
    """A start that fails after the networks came up (its HTTPS port is taken) leaves no dnsmasq
    of its own running; the next start brings them back."""
    d = ld
    port = free_port()
    d.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
    d.stop()
    blocker = socket.socket()
    try:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        with pytest.raises(RuntimeError, match="daemon exited"):
            d.start(timeout=60)
        assert "cannot listen on" in d.log()
        assert _dnsmasq_pids(d) == {}
    finally:
        blocker.close()
    d.start(timeout=60)
    try:
        assert _dnsmasq_pids(d)
    finally:
        d.lxc("config", "unset", "core.https_address")
