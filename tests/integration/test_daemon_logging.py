"""The daemon's log as JSON lines at a chosen level, and `logging` events on a real events websocket."""

import json
import os
import socket
import subprocess
import time

import pytest

from tests.daemonproc import LXDTX, Daemon
from tests.integration.net import free_port
from tests.integration.wsclient import RawWebsocket


def _daemon(*options):
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root")
    d = Daemon()
    d.command = [LXDTX, "daemon", *options]
    return d


def _json_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def test_json_log_on_stdout_and_sd_notify(workdir, monkeypatch):
    """`lxdtx daemon --logformat json`: every line of its output is one JSON event; under
    systemd ($NOTIFY_SOCKET) it says READY=1 once it serves and STOPPING=1 on SIGTERM."""
    notify_path = os.path.join(workdir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", notify_path)
    d = _daemon("--logformat", "json")
    try:
        d.start(timeout=120)
        assert notify.recv(100) == b"READY=1\nSTATUS=ready"
        d.stop()
        assert notify.recv(100) == b"STOPPING=1"
        events = _json_lines(d.log_path)
        ready = [e for e in events if e.get("log_format", "").startswith("lxdtx ready on")]
        assert ready and ready[0]["dir"] == d.dir
        assert ready[0]["log_level"]["name"] == "info"
        assert ready[0]["log_namespace"] == "lxdtx.service.LxdtxService"
        assert any(e.get("log_format") == "Server Shut Down." for e in events)
    finally:
        notify.close()
        d.cleanup()


def test_level_filters_the_log_not_the_events(workdir, monkeypatch):
    """--loglevel warn keeps info lines out of --logfile; the events stream still carries them.

    As in LXD, `logging` events go out at every level and the client filters
    (`lxc monitor --loglevel`).
    """
    logfile = os.path.join(workdir, "lxdtx.log")
    # A service manager socket that is not there: the daemon warns once it is ready.
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(workdir, "no-such-socket"))
    d = _daemon("--logformat", "json", "--loglevel", "warn", "--logfile", logfile)
    try:
        d.start(timeout=120)
        ws = RawWebsocket(d.socket_path, "/1.0/events?type=logging", timeout=30)
        try:
            port = free_port()
            d.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
            deadline = time.monotonic() + 30
            event = None
            while event is None and time.monotonic() < deadline:
                opcode, payload = ws.recv()
                assert opcode == 0x1
                frame = json.loads(payload)
                assert frame["type"] == "logging"
                if "HTTPS listener" in frame["metadata"]["message"]:
                    event = frame
        finally:
            ws.abort()
        assert event is not None
        assert event["metadata"]["level"] == "info"
        assert set(event["metadata"]) == {"message", "level", "context"}
        d.stop()
        events = _json_lines(logfile)
        assert [e for e in events if e.get("log_format", "").startswith("Could not notify the service manager")]
        assert all(e["log_level"]["name"] in ("warn", "error", "critical") for e in events)
        assert not [e for e in events if "HTTPS listener" in e.get("log_format", "") and
                    e["log_level"]["name"] == "info"]
    finally:
        d.cleanup()


def test_bad_logformat_refused():
    """An unknown --logformat stops the daemon before it starts, naming the option."""
    out = subprocess.run([LXDTX, "daemon", "--dir", "/nonexistent/lxdtx", "--logformat", "xml"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "--logformat must be one of text, json" in out.stdout + out.stderr
    assert not os.path.exists("/nonexistent/lxdtx")
