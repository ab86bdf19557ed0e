"""Real etcd members for tests: on 127.0.0.1 (or a given address), free ports, a temporary
data directory; stopped by pid and removed afterwards."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EtcdMember:
    """One etcd process; `cluster` lists every member as name=peer URL."""

    def __init__(self, name="m1", host="127.0.0.1", root=None):
        self.name = name
        self.host = host
        self.root = root or tempfile.mkdtemp(prefix="lxdtx-etcd-")
        self.owns_root = root is None
        self.data = os.path.join(self.root, name)
        self.client_url = f"http://{host}:{free_port(host)}"
        self.peer_url = f"http://{host}:{free_port(host)}"
        self.proc = None
        self.log_path = os.path.join(self.root, f"{name}.log")

    def start(self, cluster=None, state="new", wait=True):
        cluster = cluster or f"{self.name}={self.peer_url}"
        args = [ETCD, "--name", self.name, "--data-dir", self.data,
                "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", cluster, "--initial-cluster-state", state,
                "--initial-cluster-token", "lxdtx-test",
                "--heartbeat-interval", "100", "--election-timeout", "1000"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        if wait and not self.wait_healthy():
            raise RuntimeError(f"etcd {self.name} did not start: {self.log_tail()}")
        return self

    def wait_healthy(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.client_url + "/health", timeout=2) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return True
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        return False

    def log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def cleanup(self):
        self.stop()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)


def three_member_cluster(root):
    """Three members on loopback forming one cluster; started."""
    members = [EtcdMember(f"m{i}", root=root) for i in (1, 2, 3)]
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.start(cluster=cluster, wait=False)
    for m in members:
        if not m.wait_healthy(60):
            raise RuntimeError(f"etcd {m.name} did not start: {m.log_tail()}")
    return members
