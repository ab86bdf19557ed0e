"""dnsmasq: its command line per config, static host files, and the supervisor's restart discipline."""

import os
import tempfile
import threading

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.network import dnsmasq

D = "/var/lib/lxdtx/networks/br0"


def argv(config, user=None):
    return dnsmasq.argv("br0", config, D, user)


def pairs(args, flag):
    """The values following each occurrence of a two-word flag."""
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


class ArgvTests(SynchronousTestCase):
    """What each key changes on dnsmasq's command line."""

    def test_ipv4_defaults(self):
        """One interface, its address, DHCP over .2-.254 for 1h, files under the network's directory."""
        args = argv({"ipv4.address": "10.0.3.1/24"}, user="dnsmasq")
        self.assertEqual(args[:6], ["dnsmasq", "--keep-in-foreground", "--strict-order", "--bind-interfaces",
                                    "--except-interface=lo", "--no-ping"])
        for flag in ("--interface=br0", "--listen-address=10.0.3.1", "--dhcp-no-override", "--dhcp-authoritative",
                     f"--dhcp-leasefile={D}/dnsmasq.leases", f"--dhcp-hostsfile={D}/dnsmasq.hosts",
                     f"--pid-file={D}/dnsmasq.pid", f"--conf-file={D}/dnsmasq.raw", "--user=dnsmasq"):
            self.assertIn(flag, args)
        self.assertEqual(pairs(args, "--dhcp-range"), ["10.0.3.2,10.0.3.254,1h"])
        self.assertEqual(pairs(args, "-s"), ["lxd"])
        self.assertEqual(pairs(args, "-S"), ["/lxd/"])
        self.assertFalse(any(a.startswith("--dhcp-option-force") for a in args))

    def test_ipv4_options(self):
        """Expiry, ranges, gateway, MTU and domain."""
        args = argv({"ipv4.address": "10.0.3.1/24", "ipv4.dhcp.expiry": "2h", "bridge.mtu": "1400",
                     "ipv4.dhcp.ranges": "10.0.3.10-10.0.3.20,10.0.3.50-10.0.3.60", "ipv4.dhcp.gateway": "10.0.3.9",
                     "dns.domain": "example"})
        self.assertEqual(pairs(args, "--dhcp-range"), ["10.0.3.10,10.0.3.20,2h", "10.0.3.50,10.0.3.60,2h"])
        self.assertIn("--dhcp-option-force=3,10.0.3.9", args)
        self.assertIn("--dhcp-option-force=26,1400", args)
        self.assertEqual(pairs(args, "-S"), ["/example/"])

    def test_tunnels_lower_the_mtu(self):
        """A network with tunnels announces MTU 1400 by DHCP."""
        self.assertIn("--dhcp-option-force=26,1400",
                      argv({"ipv4.address": "10.0.3.1/24", "tunnel.t.protocol": "vxlan"}))

    def test_no_dhcp(self):
        """ipv4.dhcp=false: DNS only, no lease or host files."""
        args = argv({"ipv4.address": "10.0.3.1/24", "ipv4.dhcp": "false"})
        self.assertIn("--listen-address=10.0.3.1", args)
        self.assertNotIn("--dhcp-range", args)
        self.assertFalse(any(a.startswith("--dhcp-leasefile") for a in args))

    def test_ipv6_modes(self):
        """SLAAC with stateless DHCPv6 by default; stateful ranges; RA only without DHCP."""
        args = argv({"ipv6.address": "fd42::1/64"})
        self.assertIn("--enable-ra", args)
        self.assertIn("--listen-address=fd42::1", args)
        self.assertEqual(pairs(args, "--dhcp-range"), ["::,constructor:br0,ra-stateless,ra-names"])
        self.assertIn(f"--dhcp-leasefile={D}/dnsmasq.leases", args)
        stateful = argv({"ipv6.address": "fd42::1/64", "ipv6.dhcp.stateful": "true", "ipv6.dhcp.expiry": "3h"})
        self.assertEqual(pairs(stateful, "--dhcp-range"), ["fd42::2,fd42::ffff:ffff:ffff:ffff,64,3h"])
        ranged = argv({"ipv6.address": "fd42::1/64", "ipv6.dhcp.stateful": "true",
                       "ipv6.dhcp.ranges": "fd42::a-fd42::f"})
        self.assertEqual(pairs(ranged, "--dhcp-range"), ["fd42::a,fd42::f,64,1h"])
        ra_only = argv({"ipv6.address": "fd42::1/64", "ipv6.dhcp": "false"})
        self.assertEqual(pairs(ra_only, "--dhcp-range"), ["::,constructor:br0,ra-only"])

    def test_dual_stack_files_once(self):
        """With both families the lease and host files appear once."""
        args = argv({"ipv4.address": "10.0.3.1/24", "ipv6.address": "fd42::1/64"})
        self.assertEqual(args.count("--dhcp-no-override"), 1)

    def test_dns_mode_none(self):
        """dns.mode=none: no local domain."""
        self.assertNotIn("-s", argv({"ipv4.address": "10.0.3.1/24", "dns.mode": "none"}))

    def test_needed(self):
        """dnsmasq runs when the network has an address of either family."""
        self.assertTrue(dnsmasq.needed({"ipv4.address": "10.0.3.1/24"}))
        self.assertTrue(dnsmasq.needed({"ipv4.address": "none", "ipv6.address": "fd42::1/64"}))
        self.assertFalse(dnsmasq.needed({"ipv4.address": "none", "ipv6.address": "none"}))
        self.assertFalse(dnsmasq.needed({}))


class HostFileTests(SynchronousTestCase):
    """Static DHCP host entries."""

    def test_lines(self):
        """managed mode names every nic; other modes only list nics with static addresses."""
        nics = [("00:16:3E:00:00:01", "10.0.3.5", ""), ("00:16:3e:00:00:02", "", "fd42::5"),
                ("00:16:3e:00:00:03", "", ""), ("", "10.0.3.7", "")]
        self.assertEqual(dnsmasq.host_lines("c1", nics, "managed"),
                         ["00:16:3e:00:00:01,10.0.3.5,c1", "00:16:3e:00:00:02,[fd42::5],c1", "00:16:3e:00:00:03,c1"])
        self.assertEqual(dnsmasq.host_lines("c1", nics, "dynamic"),
                         ["00:16:3e:00:00:01,10.0.3.5", "00:16:3e:00:00:02,[fd42::5]"])

    def test_write_hosts(self):
        """Files follow the entries exactly; unchanged writes report no change."""
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(directory))
        hosts_files = dnsmasq.HostsFiles()
        self.assertTrue(hosts_files.write(directory, {"c1": ["a,c1"], "c2": ["b,c2"]}))
        self.assertFalse(hosts_files.write(directory, {"c1": ["a,c1"], "c2": ["b,c2"]}))
        self.assertTrue(hosts_files.write(directory, {"c1": ["a,c1", "x,c1"], "c3": []}))
        hosts = os.path.join(directory, "dnsmasq.hosts")
        self.assertEqual(sorted(os.listdir(hosts)), ["c1"])
        with open(os.path.join(hosts, "c1")) as f:
            self.assertEqual(f.read(), "a,c1\nx,c1\n")
        self.assertEqual(os.stat(os.path.join(hosts, "c1")).st_mode & 0o777, 0o644)

    def test_write_hosts_from_threads(self):
        """Writers in parallel on one directory neither fail nor leave temporary files."""
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(directory))
        failures = []
        hosts_files = dnsmasq.HostsFiles()

        def writer(i):
            try:
                for n in range(200):
                    hosts_files.write(directory, {f"c{i}": [f"{n},c{i}"], "shared": [f"{i},shared"]})
            except Exception as e:
                failures.append(e)

        writers = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        self.assertEqual(failures, [])
        self.assertEqual(len(os.listdir(os.path.join(directory, "dnsmasq.hosts"))), 2)


class FakeTransport:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, sig):
        self.signals.append(sig)


class ProcessReactor(Clock):
    """A Clock that records spawnProcess calls instead of forking."""

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None, **kwargs):
        transport = FakeTransport(1000 + len(self.spawned))
        protocol.transport = transport
        self.spawned.append((protocol, executable, list(args), childFDs))
        return transport


class SupervisorTests(SynchronousTestCase):
    """Start-up readiness, restarts with backoff and warnings, stop and detach."""

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.directory))
        self.reactor = ProcessReactor()
        self.events = []
        self.supervisor = dnsmasq.Supervisor("br0", ["dnsmasq", "--x"], self.directory, self.reactor)
        self.supervisor.log = Logger(observer=self.events.append)

    def write_pid(self):
        with open(os.path.join(self.directory, "dnsmasq.pid"), "w") as f:
            f.write("1000\n")

    def start(self):
        from twisted.internet import defer

        d = defer.Deferred.fromCoroutine(self.supervisor.start())
        return d

    def end(self, code=1):
        protocol = self.reactor.spawned[-1][0]
        reason = ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code)
        protocol.processEnded(Failure(reason))

    def test_ready_when_pid_file_appears(self):
        """start() resolves once dnsmasq wrote its pid file; stdio goes to files, not pipes."""
        d = self.start()
        self.assertNoResult(d)
        self.write_pid()
        self.reactor.advance(0.05)
        self.successResultOf(d)
        protocol, executable, args, fds = self.reactor.spawned[0]
        self.assertEqual((executable, args), ("dnsmasq", ["dnsmasq", "--x"]))
        self.assertEqual(sorted(fds), [0, 1, 2])
        self.assertTrue(all(isinstance(fd, int) for fd in fds.values()))
        self.assertEqual(self.supervisor.pid, 1000)

    def test_not_ready_while_pid_file_is_empty(self):
        """dnsmasq creates its pid file before it writes it: an empty file is not readiness."""
        d = self.start()
        open(os.path.join(self.directory, "dnsmasq.pid"), "w").close()
        self.reactor.advance(0.05)
        self.assertNoResult(d)
        self.write_pid()
        self.reactor.advance(0.05)
        self.successResultOf(d)

    def test_exit_before_ready(self):
        """An early exit fails start() with dnsmasq's own words."""
        with open(os.path.join(self.directory, "dnsmasq.log"), "w") as f:
            f.write("dnsmasq: failed to create listening socket for 10.0.3.1: Address already in use\n")
        d = self.start()
        self.end(2)
        self.reactor.advance(0.05)
        failure = self.failureResultOf(d, dnsmasq.StartError)
        self.assertIn("Address already in use", str(failure.value))
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 1)  # no restart of a process that never started

    def test_restart_with_backoff(self):
        """Each death logs a warning and restarts after 1, 2, 4... s; a stable run resets the delay."""
        d = self.start()
        self.write_pid()
        self.reactor.advance(0.05)
        self.successResultOf(d)
        self.end()
        self.assertEqual(len(self.events), 1)
        self.assertIn("br0", self.events[0]["log_format"].format(**self.events[0]))
        self.assertEqual(self.events[0]["log_level"].name, "warn")
        self.reactor.advance(0.9)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.end()
        self.reactor.advance(1.9)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.advance(120)  # a long, stable run
        self.end()
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.spawned), 4)
        self.assertEqual(self.supervisor.restarts, 3)

    def test_stop(self):
        """stop() sends SIGTERM, waits for the end, and nothing restarts."""
        d = self.start()
        self.write_pid()
        self.reactor.advance(0.05)
        stopping = __import__("twisted.internet.defer", fromlist=["Deferred"]).Deferred.fromCoroutine(
            self.supervisor.stop())
        self.assertEqual(self.reactor.spawned[0][0].transport.signals, ["TERM"])
        self.assertNoResult(stopping)
        self.end(0)
        self.reactor.advance(0.05)
        self.successResultOf(stopping)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.successResultOf(d)

    def test_kill_after_timeout(self):
        """A dnsmasq ignoring SIGTERM gets SIGKILL."""
        d = self.start()
        self.write_pid()
        self.reactor.advance(0.05)
        self.successResultOf(d)
        from twisted.internet import defer

        stopping = defer.Deferred.fromCoroutine(self.supervisor.stop(timeout=1))
        self.reactor.pump([0.05] * 21)
        self.assertEqual(self.reactor.spawned[0][0].transport.signals, ["TERM", "KILL"])
        self.end(-9)
        self.reactor.advance(0.05)
        self.successResultOf(stopping)

    def test_detach(self):
        """detach() leaves dnsmasq alone and cancels a pending restart."""
        d = self.start()
        self.write_pid()
        self.reactor.advance(0.05)
        self.successResultOf(d)
        self.end()
        self.supervisor.detach()
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 1)

    def test_reload_signals_hup(self):
        """reload() sends SIGHUP to the running process; a pid that is gone is ignored."""
        import signal
        import subprocess

        child = subprocess.Popen(["sleep", "30"])
        try:
            self.supervisor.pid = child.pid
            self.supervisor.reload()
            self.assertEqual(child.wait(timeout=10), -signal.SIGHUP)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        self.supervisor.pid = 2 ** 22 + 12345  # no such process
        self.assertIsNone(self.supervisor.reload())
