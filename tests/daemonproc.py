"""Running a real lxdtx daemon for tests, and talking to it (the real `lxc` client, raw HTTP)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from lxdtx.cli import UnixHTTPConnection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
LXDTX = os.path.join(BIN, "lxdtx")


def wait_until(predicate, timeout=30, interval=0.1):
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


class Result:
    """An HTTP answer: status, headers, raw body and decoded JSON (or None)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def metadata(self):
        return self.json.get("metadata") if isinstance(self.json, dict) else None

    def __repr__(self):
        return f"<Result {self.status} {self.body[:300]!r}>"


class Daemon:
    """A daemon on a temporary state directory, with helpers to drive it."""

    def __init__(self, state_dir=None, https=None, auto_init=False):
        self.dir = state_dir or tempfile.mkdtemp(prefix="lxdtx-test-", dir="/var/tmp")
        self.conf = tempfile.mkdtemp(prefix="lxc-conf-", dir="/var/tmp")
        self.https = https
        self.auto_init = auto_init
        self.proc = None
        # A command prefix for the daemon and cleanup commands (e.g. nsenter into a network namespace).
        self.wrapper = []
        # Environment the daemon gets besides the test's own (e.g. LXDTX_IDMAPPED_MOUNTS).
        self.extra_env = {}
        # How the daemon is started: twistd with the plugin (or `lxdtx daemon`).
        self.command = [TWISTD, "-n", "--pidfile=", "lxdtx"]
        self.log_path = os.path.join(self.dir, "daemon.log")
        # More environment for the daemon process (e.g. SSL_CERT_FILE: the CAs it trusts).
        self.extra_env = {}

    # -- process ---------------------------------------------------------
    def start(self, timeout=30, crash_at=None):
        """Start and wait until ready; `crash_at` names a crash point the daemon dies at (lxdtx.faults)."""
        argv = [*self.wrapper, *self.command, "--dir", self.dir]
        if self.https:
            argv += ["--https", self.https]
        if self.auto_init:
            argv.append("--auto-init")
        env = {k: v for k, v in os.environ.items() if k != "LXDTX_CRASH_AT"}
        env.update(self.extra_env)
        if crash_at:
            env["LXDTX_CRASH_AT"] = crash_at
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.request("GET", "/internal/ready", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready after {timeout}s:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stop the daemon process (SIGTERM leaves containers running)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-20000:]
        except OSError:
            return ""

    def remove_containers(self):
        """Force-stop and delete every container (teardown; errors are ignored)."""
        try:
            names = self.request("GET", "/1.0/containers", timeout=10).metadata or []
        except OSError:
            return
        for url in names:
            name = url.rsplit("/", 1)[-1]
            try:
                result = self.request("PUT", f"/1.0/containers/{name}/state",
                                      {"action": "stop", "force": True}, timeout=30)
                if result.status == 202:
                    self.wait_operation(result, timeout=30)
                result = self.request("DELETE", f"/1.0/containers/{name}", timeout=30)
                if result.status == 202:
                    self.wait_operation(result, timeout=60)
            except (OSError, AssertionError):
                pass

    def kill_leftover_containers(self):
        """Kill containers still running from this daemon's lxcpath (daemon gone or stuck)."""
        lxcpath = os.path.join(self.dir, "lxc")
        if not os.path.isdir(lxcpath):
            return
        for name in os.listdir(lxcpath):
            subprocess.run(["lxc-stop", "-k", "-n", name, "-P", lxcpath], capture_output=True, timeout=30)

    def remove_networks(self):
        """Delete every managed network (teardown; errors are ignored)."""
        try:
            found = self.request("GET", "/1.0/networks?recursion=1", timeout=10).metadata or []
        except OSError:
            return
        for network in found:
            if network.get("managed"):
                try:
                    self.request("DELETE", f"/1.0/networks/{network['name']}", timeout=30)
                except OSError:
                    pass

    def kill_leftover_networks(self):
        """Networks the daemon could not remove: their dnsmasq (by pid file), bridge and nft table."""
        root = os.path.join(self.dir, "networks")
        if not os.path.isdir(root):
            return
        for name in os.listdir(root):
            try:
                with open(os.path.join(root, name, "dnsmasq.pid")) as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f"--interface={name}".encode() in f.read().split(b"\0"):
                        os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
            subprocess.run([*self.wrapper, "ip", "link", "del", name], capture_output=True)
            subprocess.run([*self.wrapper, "nft", "delete", "table", "inet", f"lxdtx-{name}"], capture_output=True)

    def cleanup(self):
        """Remove containers, stop the daemon, kill leftovers, remove all state."""
        if self.proc is not None and self.proc.poll() is None:
            self.remove_containers()
            self.remove_networks()
        self.stop()
        self.kill_leftover_containers()
        self.kill_leftover_networks()
        subprocess.run(["umount", "-R", "-l", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.conf, ignore_errors=True)

    def cgroup_name(self, name):
        """The cgroup directory name of this daemon's container `name` (in every hierarchy)."""
        from lxdtx.instance.runtime import cgroup_prefixes, scope_of

        return cgroup_prefixes(scope_of(self.dir))[0] + name

    def cgroup_file(self, name, controller, filename):
        """Host path of a cgroup file of this daemon's container `name` (v1, else unified)."""
        cgroup = self.cgroup_name(name)
        for root in (f"/sys/fs/cgroup/{controller}", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
            path = os.path.join(root, cgroup, filename)
            if os.path.exists(path):
                return path
        return os.path.join(f"/sys/fs/cgroup/{controller}", cgroup, filename)

    # -- clients ---------------------------------------------------------
    @property
    def socket_path(self):
        return os.path.join(self.dir, "unix.socket")

    def env(self, **extra):
        env = dict(os.environ, LXD_DIR=self.dir, LXD_CONF=self.conf)
        env.pop("LXD_SOCKET", None)
        env.update(extra)
        return env

    def lxc(self, *args, check=True, input=None, timeout=120, env=None):
        """Run the real `lxc` client against this daemon; returns CompletedProcess (text).

        A client still running after `timeout` gets SIGQUIT, so the failure shows
        where each of its goroutines waited (`lxc exec` forwards it instead and is
        then killed), with the end of the daemon's log.
        """
        text = isinstance(input, str) or input is None
        proc = subprocess.Popen(
            ["lxc", *args], env=self.env(**(env or {})), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text)
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGQUIT)
            try:
                stdout, stderr = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                # `lxc exec` forwards signals to the remote command instead of dying.
                proc.kill()
                stdout, stderr = proc.communicate()
            raise AssertionError(
                f"lxc {' '.join(args)} still running after {timeout}s; its goroutines:\n{stderr[-20000:]}"
                f"\n--- daemon log ---\n{self.log()[-5000:]}")
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise AssertionError(
                f"lxc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def request(self, method, path, body=None, headers=None, timeout=60, raw=None):
        """One HTTP request over the unix socket; JSON-encodes `body` unless `raw` bytes are given."""
        conn = UnixHTTPConnection(self.socket_path, timeout=timeout)
        try:
            payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, path, body=payload, headers=headers or {})
            response = conn.getresponse()
            return Result(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def wait_operation(self, result, timeout=120):
        """Wait for the operation of an async answer; returns the final operation object."""
        assert result.status == 202, result
        url = result.headers.get("Location") or result.json["operation"]
        final = self.request("GET", f"{url}/wait?timeout={timeout}", timeout=timeout + 10)
        return final.metadata
