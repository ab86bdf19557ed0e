"""Websockets under pressure: a stalled reader holds the command (not the daemon's memory),
a frozen peer is noticed by its pings, and event listeners lose nothing."""

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from lxdtx.websocket import options
from tests.daemonproc import ROOT, UnixHTTPConnection

pytestmark = pytest.mark.timeout(300)
GIB = 1 << 30


def _rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Driver:
    """A `tests.integration.wsdriver` process, read line by line."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.wsdriver", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._buffer = b""

    def line(self, timeout=60):
        # Unbuffered: a line already read into a buffer would not wake select().
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"the driver said nothing in {timeout}s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"the driver ended: {self.proc.stderr.read()[-3000:]}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    def end(self):
        if self.proc.poll() is None:
            self.proc.kill()  # also one that is stopped
        self.proc.wait(10)


def _exec(d, ct, command):
    result = d.request("POST", f"/1.0/containers/{ct}/exec", {
        "command": command, "wait-for-websocket": True, "interactive": False})
    return result.metadata


def test_stalled_reader_holds_the_command(busybox_daemon, container):
    """1 GiB to a client that reads nothing for 10 s: the daemon grows by under 32 MiB,
    then every byte arrives."""
    d = busybox_daemon
    op = _exec(d, container, ["head", "-c", str(GIB), "/dev/zero"])
    driver = Driver("exec", d.socket_path, op["id"], json.dumps(op["metadata"]["fds"]), "--pause", "10")
    try:
        assert driver.line() == "connected"
        assert driver.line() == "paused"
        base = peak = _rss(d.proc.pid)
        deadline = time.monotonic() + 9
        while time.monotonic() < deadline:
            peak = max(peak, _rss(d.proc.pid))
            time.sleep(0.2)
        resumed = driver.line()
        assert resumed.startswith("resumed ")
        held = int(resumed.split()[1])
        resumed = time.monotonic()
        print("read while held", held)
        counts = json.loads(driver.line(timeout=200))
        print(f"daemon RSS {base >> 20} MiB, +{(peak - base) >> 20} MiB while held; "
              f"1 GiB in {time.monotonic() - resumed:.1f} s after")
        assert counts == {"1": GIB, "2": 0}
        assert peak - base < 32 * 1024 * 1024, (base, peak)
        final = d.request("GET", f"/1.0/operations/{op['id']}/wait?timeout=30", timeout=40).metadata
        assert final["metadata"]["return"] == 0
    finally:
        driver.end()


def test_frozen_peer_is_noticed(busybox_daemon, container):
    """A client frozen mid-exec (no close, no answer) has its session ended within the
    ping interval and timeout, and its command killed (128+9)."""
    d = busybox_daemon
    op = _exec(d, container, ["sleep", "1000"])
    driver = Driver("exec", d.socket_path, op["id"], json.dumps(op["metadata"]["fds"]))
    try:
        assert driver.line() == "connected"
        os.kill(driver.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        bound = options.PING_INTERVAL + options.PING_TIMEOUT + 5
        final = d.request("GET", f"/1.0/operations/{op['id']}/wait?timeout={bound + 10}",
                          timeout=bound + 20).metadata
        assert time.monotonic() - started < bound
        assert final["metadata"]["return"] == 128 + 9
    finally:
        driver.end()


def _create_profiles(d, prefix, seconds, made):
    """Create profiles PREFIX-0, PREFIX-1, ... over one connection for `seconds`."""
    conn = UnixHTTPConnection(d.socket_path, timeout=30)
    deadline = time.monotonic() + seconds
    i = 0
    try:
        while time.monotonic() < deadline:
            name = f"{prefix}-{i}"
            conn.request("POST", "/1.0/profiles", body=json.dumps({"name": name}),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 201, response.status
            made.append(name)
            i += 1
    finally:
        conn.close()


def test_event_listeners_lose_nothing(daemon):
    """Three listeners, 10 s of lifecycle events from four writers: each listener gets every
    event, each writer's in order, and all three the same sequence."""
    d = daemon
    driver = Driver("events", d.socket_path, "3", "marker")
    try:
        assert driver.line() == "connected"
        made = {f"w{n}": [] for n in range(4)}
        writers = [threading.Thread(target=_create_profiles, args=(d, prefix, 10, names))
                   for prefix, names in made.items()]
        started = time.monotonic()
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(60)
        elapsed = time.monotonic() - started
        assert d.request("POST", "/1.0/profiles", {"name": "marker"}).status == 201
        listeners = json.loads(driver.line(timeout=60))
        total = sum(len(names) for names in made.values())
        print(f"{total} events in {elapsed:.1f} s ({total / elapsed:.0f}/s) to 3 listeners")
        assert listeners[0] == listeners[1] == listeners[2]
        assert len(listeners[0]) == total
        for prefix, names in made.items():
            assert [s.rsplit("/", 1)[1] for s in listeners[0] if s.startswith(f"/1.0/profiles/{prefix}-")] == names
    finally:
        driver.end()
