# -*- test-case-name: tests.integration.test_etcd_supervised -*-
"""This member's etcd: its command line, its files under the daemon's directory, its supervision.

    cluster/cluster.crt, cluster.key   the cluster certificate (a CA, see lxdtx.cluster.pki)
    cluster/etcd.crt, etcd.key         this member's etcd certificate, signed by it
    cluster/etcd/                      etcd's data directory
    cluster/etcd.log                   its stdout/stderr
    cluster/etcd.pid                   the pid of the etcd we started

etcd is the daemon's child (spawnProcess, never a fork of the daemon) and is restarted
with backoff whenever it dies. Both its client and its peer port speak TLS and want a
certificate signed by the cluster certificate. A daemon killed without stopping etcd
leaves it running; the next start ends that one (found by its pid file and checked by
its command line) before spawning its own.
"""

import json
import os
import shutil
import signal
import uuid

from twisted.internet import defer, error, protocol
from twisted.logger import Logger

from lxdtx.asyncutil import sleep

BINARY = "etcd"
HEARTBEAT_MS, ELECTION_MS = 200, 2000  # etcd's raft timing: a member down is noticed in ~2 s


class EtcdStartError(Exception):
    """etcd exited before it answered; the message carries its own explanation."""


class EtcdFiles:
    """Where one member's etcd keeps what."""

    def __init__(self, state_dir):
        self.dir = os.path.join(state_dir, "cluster")
        self.ca_cert = os.path.join(self.dir, "cluster.crt")
        self.ca_key = os.path.join(self.dir, "cluster.key")
        self.cert = os.path.join(self.dir, "etcd.crt")
        self.key = os.path.join(self.dir, "etcd.key")
        self.data = os.path.join(self.dir, "etcd")
        self.log = os.path.join(self.dir, "etcd.log")
        self.pid = os.path.join(self.dir, "etcd.pid")


def _url(address, port):
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"


class EtcdMemberSpec:
    """How this member's etcd is reached and which cluster it starts into (first start only)."""

    def __init__(self, name, address, peer_port, client_port, initial_cluster=None, state="new", member_id=None):
        self.name, self.address = name, address
        # Stable across renames: the heartbeat key and the member document's `id`.
        self.member_id = member_id or uuid.uuid4().hex
        self.peer_port, self.client_port = int(peer_port), int(client_port)
        self.initial_cluster = initial_cluster or {name: self.peer_url}
        self.state = state

    @property
    def peer_url(self):
        return _url(self.address, self.peer_port)

    @property
    def client_url(self):
        return _url(self.address, self.client_port)

    @property
    def local_client_url(self):
        return _url("127.0.0.1", self.client_port)

    def argv(self, files, binary=None):
        clients = [self.client_url]
        if self.address not in ("127.0.0.1", "::1", "localhost"):
            clients.append(self.local_client_url)
        cluster = ",".join(f"{name}={url}" for name, url in sorted(self.initial_cluster.items()))
        return [
            binary or shutil.which(BINARY) or f"/usr/bin/{BINARY}",
            "--name", self.name, "--data-dir", files.data,
            "--listen-client-urls", ",".join(clients), "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", self.state,
            "--initial-cluster-token", "lxdtx",
            "--cert-file", files.cert, "--key-file", files.key,
            "--client-cert-auth", "--trusted-ca-file", files.ca_cert,
            "--peer-cert-file", files.cert, "--peer-key-file", files.key,
            "--peer-client-cert-auth", "--peer-trusted-ca-file", files.ca_cert,
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            # Bounded history: a watch that falls behind further re-reads (see lxdtx.state.etcd).
            "--auto-compaction-mode", "revision", "--auto-compaction-retention", "10000",
            "--logger", "zap", "--log-outputs", "stderr",
        ]

    def to_json(self):
        return {"name": self.name, "address": self.address, "peer_port": self.peer_port,
                "client_port": self.client_port, "initial_cluster": self.initial_cluster, "state": self.state,
                "member_id": self.member_id}

    @classmethod
    def from_json(cls, data):
        return cls(data["name"], data["address"], data["peer_port"], data["client_port"],
                   data.get("initial_cluster"), data.get("state", "new"), data.get("member_id"))


def _is_our_etcd(pid, files):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return bool(args) and os.path.basename(args[0]) == BINARY.encode() and files.data.encode() in args


class EtcdSupervisor(protocol.ProcessProtocol):
    """One etcd member kept running; `start()` resolves once it answers on its client port."""

    log = Logger()
    ready_timeout = 30.0
    backoff_first, backoff_max, stable_after = 1.0, 30.0, 60.0

    def __init__(self, spec, files, reactor, probe):
        self.spec = spec
        self.files = files
        self.reactor = reactor
        self.probe = probe  # async () -> bool: does etcd answer (any answer) on its client port
        self.pid = None
        self.restarts = 0
        self._stopping = False
        self._starting = False
        self._ended = None
        self._started_at = None
        self._delay = self.backoff_first
        self._restart_call = None

    def _log_tail(self, limit=1500):
        try:
            with open(self.files.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    async def _end_leftover(self):
        """An etcd of ours that outlived a killed daemon still holds the ports: end it."""
        try:
            with open(self.files.pid) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        if not _is_our_etcd(pid, self.files):
            return
        self.log.info("Ending the etcd (pid {pid}) left by an earlier daemon", pid=pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            for _ in range(100):
                if not _is_our_etcd(pid, self.files):
                    return
                await sleep(0.05, self.reactor)

    def _spawn(self):
        os.makedirs(self.files.dir, mode=0o700, exist_ok=True)
        out = os.open(self.files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        argv = self.spec.argv(self.files)
        try:
            self._ended = defer.Deferred()
            transport = self.reactor.spawnProcess(
                self, argv[0], argv, env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
                childFDs={0: devnull, 1: out, 2: out})
        finally:
            os.close(out)
            os.close(devnull)
        self.pid = transport.pid
        self._started_at = self.reactor.seconds()
        with open(self.files.pid, "w") as f:
            f.write(f"{self.pid}\n")

    async def start(self):
        """Spawn etcd and wait until it answers; EtcdStartError if it exits first."""
        await self._end_leftover()
        self._stopping = False
        self._starting = True
        try:
            self._spawn()
            ended = self._ended
            deadline = self.reactor.seconds() + self.ready_timeout
            while True:
                if ended.called:
                    self._stopping = True
                    raise EtcdStartError(f"etcd of member {self.spec.name} failed to start: {self._log_tail()}")
                if await self.probe():
                    return
                if self.reactor.seconds() > deadline:
                    await self.stop()
                    raise EtcdStartError(f"etcd of member {self.spec.name} did not answer in "
                                         f"{self.ready_timeout:.0f}s: {self._log_tail()}")
                await sleep(0.1, self.reactor)
        finally:
            self._starting = False

    def processEnded(self, reason):
        pid, self.pid = self.pid, None
        ended, self._ended = self._ended, None
        if ended is not None:
            ended.callback(None)
        if self._stopping or self._starting:
            return
        if self.reactor.seconds() - (self._started_at or 0) >= self.stable_after:
            self._delay = self.backoff_first
        delay = self._delay
        self._delay = min(self._delay * 2, self.backoff_max)
        self.log.warn("etcd (pid {pid}) of member {name} exited ({reason}); restarting it in {delay:.0f}s",
                      pid=pid, name=self.spec.name, reason=reason.getErrorMessage(), delay=delay)
        self._restart_call = self.reactor.callLater(delay, self._restart)

    def _restart(self):
        self._restart_call = None
        if self._stopping:
            return
        self.restarts += 1
        try:
            self._spawn()
        except OSError as e:
            self.log.error("Could not restart etcd of member {name}: {error}", name=self.spec.name, error=e)
            self._restart_call = self.reactor.callLater(self._delay, self._restart)

    @property
    def running(self):
        return self.pid is not None

    async def stop(self, timeout=10.0):
        """Stop supervising and end etcd (SIGTERM, then SIGKILL)."""
        self._stopping = True
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        ended = self._ended
        if self.pid is None or ended is None:
            return
        for sig in ("TERM", "KILL"):
            try:
                self.transport.signalProcess(sig)
            except error.ProcessExitedAlready:
                break
            waited = 0.0
            while not ended.called and waited < timeout:
                await sleep(0.05, self.reactor)
                waited += 0.05
            if ended.called:
                break
        try:
            os.unlink(self.files.pid)
        except FileNotFoundError:
            pass


def save_spec(files, spec):
    os.makedirs(files.dir, mode=0o700, exist_ok=True)
    path = os.path.join(files.dir, "member.json")
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(spec.to_json(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".new", path)


def load_spec(files):
    """This member's etcd spec, or None when the daemon is not a cluster member."""
    try:
        with open(os.path.join(files.dir, "member.json")) as f:
            return EtcdMemberSpec.from_json(json.load(f))
    except FileNotFoundError:
        return None
