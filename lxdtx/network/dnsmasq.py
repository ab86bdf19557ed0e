# -*- test-case-name: tests.unit.test_network_dnsmasq -*-
"""dnsmasq for one managed bridge: its command line, its static host entries, its supervision.

One dnsmasq per network serves DHCP (v4, v6), router advertisements and DNS on
that bridge only (`--bind-interfaces`, `--interface`, `--except-interface=lo`).
Its files live in the network's directory under the daemon's state directory:

    dnsmasq.leases   the lease database (kept across restarts: addresses stay)
    dnsmasq.hosts/   one file per container: `hwaddr[,ipv4][,[ipv6]][,name]` lines
    dnsmasq.raw      `raw.dnsmasq` (also keeps dnsmasq from reading /etc/dnsmasq.conf)
    dnsmasq.pid      written by dnsmasq once its sockets are bound
    dnsmasq.log      its stdout/stderr

dnsmasq is not tied to the daemon by pipes, so it keeps serving while the daemon
restarts; the daemon then replaces it (found through the pid file) with a child
of its own, which `Supervisor` restarts with backoff whenever it dies.
"""

import os
import pwd
import signal
import threading

from twisted.internet import defer, error, protocol, threads
from twisted.logger import Logger

from lxdtx.asyncutil import sleep
from lxdtx.network import addresses, schema

LEASES, HOSTS, RAW, PID, LOG = "dnsmasq.leases", "dnsmasq.hosts", "dnsmasq.raw", "dnsmasq.pid", "dnsmasq.log"
BINARY = "dnsmasq"


def needed(config):
    """Whether the network runs a dnsmasq (it has an IPv4 or IPv6 address, or is a fan)."""
    return (config.get("bridge.mode") == "fan"
            or config.get("ipv4.address", "") not in addresses.NONE_VALUES
            or config.get("ipv6.address", "") not in addresses.NONE_VALUES)


def unprivileged_user():
    """The account dnsmasq drops to: Debian's `dnsmasq`, else `nobody`."""
    for name in ("dnsmasq", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def argv(name, config, directory, user=None):
    """dnsmasq's command line for network `name` with `config` (auto values already resolved)."""
    path = lambda filename: os.path.join(directory, filename)  # noqa: E731
    args = [BINARY, "--keep-in-foreground", "--strict-order", "--bind-interfaces",
            "--except-interface=lo", "--no-ping", f"--interface={name}",
            "--dhcp-rapid-commit", "--quiet-dhcp", "--quiet-dhcp6", "--quiet-ra",
            f"--pid-file={path(PID)}", "--log-facility=-"]
    mtu = schema.mtu(config)
    dhcp_files = ["--dhcp-no-override", "--dhcp-authoritative", f"--dhcp-leasefile={path(LEASES)}",
                  f"--dhcp-hostsfile={path(HOSTS)}"]

    v4 = addresses.interface(config.get("ipv4.address", ""))
    if v4 is not None:
        args.append(f"--listen-address={v4.ip}")
        if schema.is_enabled(config, "ipv4.dhcp"):
            args += dhcp_files
            if config.get("ipv4.dhcp.gateway"):
                args.append(f"--dhcp-option-force=3,{config['ipv4.dhcp.gateway']}")
            if mtu != 1500:
                args.append(f"--dhcp-option-force=26,{mtu}")
            expiry = schema.get(config, "ipv4.dhcp.expiry")
            if config.get("ipv4.dhcp.ranges"):
                for first, last in addresses.parse_ranges(config["ipv4.dhcp.ranges"], 4):
                    args += ["--dhcp-range", f"{first},{last},{expiry}"]
            else:
                network = v4.network
                args += ["--dhcp-range", f"{addresses.host(network, 2)},{addresses.host(network, -2)},{expiry}"]

    v6 = addresses.interface(config.get("ipv6.address", ""))
    if v6 is not None:
        args += [f"--listen-address={v6.ip}", "--enable-ra"]
        if schema.is_enabled(config, "ipv6.dhcp"):
            if "--dhcp-no-override" not in args:
                args += dhcp_files
            expiry = schema.get(config, "ipv6.dhcp.expiry")
            prefix = v6.network.prefixlen
            if schema.is_enabled(config, "ipv6.dhcp.stateful"):
                if config.get("ipv6.dhcp.ranges"):
                    for first, last in addresses.parse_ranges(config["ipv6.dhcp.ranges"], 6):
                        args += ["--dhcp-range", f"{first},{last},{prefix},{expiry}"]
                else:
                    network = v6.network
                    args += ["--dhcp-range",
                             f"{addresses.host(network, 2)},{addresses.host(network, -1)},{prefix},{expiry}"]
            else:
                args += ["--dhcp-range", f"::,constructor:{name},ra-stateless,ra-names"]
        else:
            args += ["--dhcp-range", f"::,constructor:{name},ra-only"]

    dns_mode = schema.get(config, "dns.mode")
    if dns_mode != "none":
        domain = schema.get(config, "dns.domain")
        args += ["-s", domain, "-S", f"/{domain}/"]
    args.append(f"--conf-file={path(RAW)}")
    if user:
        args.append(f"--user={user}")
    return args


def host_lines(container, nics, dns_mode):
    """The static host lines of one container: `nics` is [(hwaddr, ipv4, ipv6)] on this network.

    With dns.mode `managed` every nic gets the container's name (the DNS record is
    LXD's, not the client's); otherwise only nics with a static address get a line.
    """
    lines = []
    for hwaddr, ipv4, ipv6 in nics:
        if not hwaddr:
            continue
        fields = [hwaddr.lower()]
        if ipv4:
            fields.append(ipv4)
        if ipv6:
            fields.append(f"[{ipv6}]")
        if dns_mode == "managed":
            fields.append(container)
        elif len(fields) == 1:
            continue
        lines.append(",".join(fields))
    return lines


class HostsFiles:
    """Writes `dnsmasq.hosts/` directories one at a time.

    Containers starting and stopping at once rewrite the same directory from several
    pool threads: unlocked, one's sweep removes another's `.new` file before its rename.
    """

    def __init__(self):
        self._lock = threading.Lock()

    def write(self, directory, entries):
        """Make `dnsmasq.hosts/` hold exactly `entries` ({container: [lines]}); True if anything changed.

        Blocking; call from a thread.
        """
        with self._lock:
            return _write_hosts(directory, entries)


def _write_hosts(directory, entries):
    """`HostsFiles.write` under its lock."""
    hosts = os.path.join(directory, HOSTS)
    os.makedirs(hosts, mode=0o755, exist_ok=True)
    changed = False
    wanted = {name: "".join(f"{line}\n" for line in lines) for name, lines in entries.items() if lines}
    for existing in os.listdir(hosts):
        if existing not in wanted:
            os.unlink(os.path.join(hosts, existing))
            changed = True
    for name, text in wanted.items():
        path = os.path.join(hosts, name)
        try:
            with open(path) as f:
                if f.read() == text:
                    continue
        except FileNotFoundError:
            pass
        with open(path + ".new", "w") as f:
            f.write(text)
        os.chmod(path + ".new", 0o644)
        os.replace(path + ".new", path)
        changed = True
    return changed


def write_raw(directory, config):
    path = os.path.join(directory, RAW)
    with open(path, "w") as f:
        f.write(config.get("raw.dnsmasq", "") + "\n")
    os.chmod(path, 0o644)


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def stale_pid(directory, name):
    """The pid of a dnsmasq still serving `name` from an earlier daemon run, or None."""
    try:
        with open(os.path.join(directory, PID)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    args = _cmdline(pid)
    if args and os.path.basename(args[0]) == BINARY.encode() and f"--interface={name}".encode() in args:
        return pid
    return None


class StartError(Exception):
    """dnsmasq exited before it was ready; the message carries its own explanation."""


class Supervisor(protocol.ProcessProtocol):
    """One dnsmasq, kept running: restarted with backoff when it dies, with a warning each time.

    `start()` resolves once dnsmasq has bound its sockets (its pid file names it), or
    fails with its log output when it exits first (say a host dnsmasq holds port 53).
    """

    log = Logger()
    ready_timeout = 10.0
    backoff_first, backoff_max, stable_after = 1.0, 30.0, 60.0

    def __init__(self, network, argv, directory, reactor, on_restart=None):
        self.network = network
        self.argv = list(argv)
        self.directory = directory
        self.reactor = reactor
        self.on_restart = on_restart  # called with no arguments after each restart
        self.pid = None
        self._stopping = False
        self._starting = False  # start() waits for readiness; a death then is its failure, not a restart
        self._ended = None  # Deferred fired when the current process ends
        self._started_at = None
        self._delay = self.backoff_first
        self._restart_call = None
        self.restarts = 0

    # -- files ---------------------------------------------------------------
    @property
    def pid_path(self):
        return os.path.join(self.directory, PID)

    @property
    def log_path(self):
        return os.path.join(self.directory, LOG)

    def _log_tail(self, limit=2000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    # -- running ----------------------------------------------------------------
    def _spawn(self):
        try:
            os.unlink(self.pid_path)
        except FileNotFoundError:
            pass
        out = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            self._ended = defer.Deferred()
            # Files, not pipes: dnsmasq must outlive the daemon (SIGTERM leaves networks up).
            transport = self.reactor.spawnProcess(
                self, self.argv[0], self.argv, env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
                childFDs={0: devnull, 1: out, 2: out})
        finally:
            os.close(out)
            os.close(devnull)
        self.pid = transport.pid
        self._started_at = self.reactor.seconds()

    def _pid_written(self):
        # dnsmasq creates the file and then writes it: ready means it names our child.
        try:
            with open(self.pid_path) as f:
                return f.read().strip() == str(self.pid)
        except OSError:
            return False

    async def start(self):
        """Spawn dnsmasq and wait until it serves; StartError if it exits first."""
        self._stopping = False
        self._starting = True
        try:
            self._spawn()
            ended = self._ended
            waited = 0.0
            while not self._pid_written():
                if ended.called:
                    self._stopping = True
                    raise StartError(f"dnsmasq for network {self.network} failed to start: {self._log_tail()}")
                if waited > self.ready_timeout:
                    await self.stop()
                    raise StartError(f"dnsmasq for network {self.network} did not get ready in "
                                     f"{self.ready_timeout:.0f}s")
                await sleep(0.05, self.reactor)
                waited += 0.05
        finally:
            self._starting = False

    def processEnded(self, reason):
        pid, self.pid = self.pid, None
        ended, self._ended = self._ended, None
        if ended is not None:
            ended.callback(None)
        if self._stopping or self._starting:
            return
        ran = self.reactor.seconds() - (self._started_at or 0)
        if ran >= self.stable_after:
            self._delay = self.backoff_first
        delay = self._delay
        self._delay = min(self._delay * 2, self.backoff_max)
        self.log.warn("dnsmasq (pid {pid}) of network {network} exited ({reason}); restarting it in {delay:.0f}s",
                      pid=pid, network=self.network, reason=reason.getErrorMessage(), delay=delay)
        self._restart_call = self.reactor.callLater(delay, self._restart)

    def _restart(self):
        self._restart_call = None
        if self._stopping:
            return
        self.restarts += 1
        try:
            self._spawn()
        except OSError as e:
            self.log.error("Could not restart dnsmasq of network {network}: {error}", network=self.network, error=e)
            self._restart_call = self.reactor.callLater(self._delay, self._restart)
            return
        if self.on_restart is not None:
            self.on_restart()

    @property
    def running(self):
        return self.pid is not None

    def reload(self):
        """SIGHUP: dnsmasq re-reads its host entries."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    def detach(self):
        """Stop supervising but leave dnsmasq serving (the daemon is going away, the network stays)."""
        self._stopping = True
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None

    async def stop(self, timeout=5.0):
        """Stop supervising and end the process (SIGTERM, then SIGKILL)."""
        self._stopping = True
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        ended = self._ended
        if self.pid is None or ended is None:
            return
        for sig, wait in (("TERM", timeout), ("KILL", timeout)):
            try:
                self.transport.signalProcess(sig)
            except error.ProcessExitedAlready:
                pass
            waited = 0.0
            while not ended.called and waited < wait:
                await sleep(0.05, self.reactor)
                waited += 0.05
            if ended.called:
                return


def _orphan_pids(state_dir, name):
    """dnsmasq processes serving `name` with their pid file under `state_dir`."""
    prefix = f"--pid-file={os.path.join(state_dir, 'networks')}/".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        args = _cmdline(entry)
        if not args or os.path.basename(args[0]) != BINARY.encode():
            continue
        if f"--interface={name}".encode() in args and any(a.startswith(prefix) for a in args):
            found.append(int(entry))
    return found


async def end_orphan(state_dir, name, reactor):
    """End the dnsmasq of a network whose daemon and state directory are gone."""
    for pid in await threads.deferToThread(_orphan_pids, state_dir, name):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


async def end_stale(directory, name, reactor, timeout=5.0):
    """End a dnsmasq left serving `name` by an earlier daemon run (found by its pid file)."""
    pid = stale_pid(directory, name)
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        waited = 0.0
        while waited < timeout:
            if stale_pid(directory, name) != pid or not os.path.exists(f"/proc/{pid}"):
                return
            await sleep(0.05, reactor)
            waited += 0.05
