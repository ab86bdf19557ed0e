"""`/1.0/events`: `lxc monitor`, pylxd's events websocket, type filters, many subscribers."""

import json
import os
import select
import subprocess
import threading
import time

import pylxd
from pylxd.client import EventType

from lxdtx import timeutil
from tests.integration.net import free_port


class Monitor:
    """`lxc monitor --format=json` in the background, its events read as they come."""

    def __init__(self, daemon, *types):
        argv = ["lxc", "monitor", "--format=json"] + [f"--type={t}" for t in types]
        self.proc = subprocess.Popen(argv, env=daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events = []
        self._buffer = b""

    def read(self, timeout):
        """Collect whatever events arrive within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            self._buffer += chunk
            self._parse()
        return self.events

    def _parse(self):
        decoder = json.JSONDecoder()
        text = self._buffer.decode("utf-8", "replace")
        position = 0
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            try:
                event, end = decoder.raw_decode(text, position)
            except ValueError:
                break
            self.events.append(event)
            position = end
        self._buffer = text[position:].encode()

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def _until(predicate, poke, timeout=20):
    """Call `poke` until `predicate()` holds (the subscriber may connect a little later)."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        poke(attempt)
        attempt += 1
        if predicate():
            return True
    return False


def test_lxc_monitor_lifecycle(daemon):
    """`lxc monitor` receives lifecycle events with a zoned timestamp."""
    monitor = Monitor(daemon, "lifecycle")
    try:
        def created():
            return [e for e in monitor.read(0.3) if e["metadata"].get("action") == "profile-created"]

        assert _until(created, lambda i: daemon.lxc("profile", "create", f"m{i}"))
        event = created()[0]
        assert event["type"] == "lifecycle"
        assert event["metadata"]["source"].startswith("/1.0/profiles/m")
        assert timeutil.parse(event["timestamp"]).tzinfo is not None
        assert {e["type"] for e in monitor.events} == {"lifecycle"}
    finally:
        monitor.close()


def test_lxc_monitor_logging(daemon):
    """Daemon log lines reach `lxc monitor --type=logging`."""
    monitor = Monitor(daemon, "logging")
    ports = [free_port() for _ in range(40)]
    try:
        def logged():
            return [e for e in monitor.read(0.3) if "HTTPS listener" in e["metadata"].get("message", "")]

        assert _until(logged, lambda i: daemon.lxc("config", "set", "core.https_address",
                                                   f"127.0.0.1:{ports[i % len(ports)]}"))
        event = logged()[0]
        assert event["type"] == "logging"
        assert event["metadata"]["level"] == "info"
    finally:
        monitor.close()


def _run_ws(ws):
    thread = threading.Thread(target=ws.run, daemon=True)
    thread.start()
    return thread


def test_pylxd_events(daemon):
    """pylxd's events websocket gets lifecycle events for the changes it makes."""
    client = pylxd.Client(endpoint=daemon.socket_path)
    ws = client.events(event_types={EventType.Lifecycle})
    ws.connect()
    thread = _run_ws(ws)
    try:
        client.profiles.create("evt")
        client.profiles.get("evt").delete()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(ws.messages) < 2:
            time.sleep(0.05)
        actions = [(m["metadata"]["action"], m["metadata"]["source"]) for m in ws.messages]
        assert actions == [("profile-created", "/1.0/profiles/evt"), ("profile-deleted", "/1.0/profiles/evt")]
        assert all(m["type"] == "lifecycle" for m in ws.messages)
    finally:
        ws.close()
        thread.join(10)


def test_many_subscribers_and_filters(daemon):
    """Several sockets at once each get every event they asked for, and nothing else."""
    client = pylxd.Client(endpoint=daemon.socket_path)
    everything = [client.events() for _ in range(5)]
    operations_only = client.events(event_types={EventType.Operation})
    sockets = everything + [operations_only]
    threads = []
    for ws in sockets:
        ws.connect()
        threads.append(_run_ws(ws))
    try:
        daemon.request("POST", "/1.0/profiles", {"name": "fan-out"})
        deadline = time.monotonic() + 20

        def lifecycle(ws):
            return [m for m in ws.messages if m["type"] == "lifecycle"]

        while time.monotonic() < deadline and not all(lifecycle(ws) for ws in everything):
            time.sleep(0.05)
        for ws in everything:
            assert [m["metadata"]["action"] for m in lifecycle(ws)] == ["profile-created"]
        assert lifecycle(operations_only) == []
        # The sockets stay open: a later event still arrives.
        daemon.request("DELETE", "/1.0/profiles/fan-out")
        while time.monotonic() < deadline and not all(len(lifecycle(ws)) == 2 for ws in everything):
            time.sleep(0.05)
        assert all(len(lifecycle(ws)) == 2 for ws in everything)
    finally:
        for ws in sockets:
            ws.close()
        for thread in threads:
            thread.join(10)
