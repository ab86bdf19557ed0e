"""The daemon's side of the exec seed: requests, reports, and falling back to lxc-attach."""

import errno
import os
import signal
import socket

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.exec import seeds


class Listener:
    def __init__(self):
        self.events = []

    def command_started(self, pid):
        self.events.append(("started", pid))

    def command_exited(self, code):
        self.events.append(("exited", code))

    def command_failed(self, number):
        self.events.append(("failed", number))


class FakeReactor(Clock):
    def __init__(self):
        super().__init__()
        self.readers = set()

    def addReader(self, reader):
        self.readers.add(reader)

    def removeReader(self, reader):
        self.readers.discard(reader)


class EncodingTests(SynchronousTestCase):
    def test_request(self):
        """Fields end with NUL: kind, id, flags, cwd, argc, argv, then KEY=VALUE."""
        self.assertEqual(seeds.request("7", ["sh", "-c", "echo $A"], {"A": "1 2"}, "/root"),
                         b"run\x007\x00\x00/root\x003\x00sh\x00-c\x00echo $A\x00A=1 2\x00")
        self.assertTrue(seeds.request("7", ["sh"], {}, "/", terminal=True).startswith(b"run\x007\x00t\x00/\x00"))

    def test_wait_status(self):
        """Exit codes pass through; a signal n gives 128+n."""
        self.assertEqual(seeds.wait_status_code(3 << 8), 3)
        self.assertEqual(seeds.wait_status_code(signal.SIGTERM), 128 + signal.SIGTERM)


class SeedTests(SynchronousTestCase):
    """A Seed fed through a real socketpair, the other end playing execseed."""

    def setUp(self):
        self.reactor = FakeReactor()
        self.seed = seeds.Seed(self.reactor, "c1")
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.seed._socket = ours
        self.reactor.addReader(self.seed)
        self.addCleanup(self.peer.close)
        self.addCleanup(self.seed._close)

    def say(self, line):
        self.peer.send(line.encode())
        self.seed.doRead()

    def take_request(self):
        """What the seed would read: the datagram and how many fds came with it."""
        message, fds, _, _ = socket.recv_fds(self.peer, 4096, 3)
        for fd in fds:
            os.close(fd)
        return message, len(fds)

    def test_not_ready(self):
        """Before `ready` nothing is sent: the caller falls back."""
        with open(os.devnull) as null:
            self.assertRaises(seeds.SeedUnavailable, self.seed.run, ["true"], {}, "/", [null.fileno()] * 3,
                              Listener())

    def test_run_and_reports(self):
        """The request carries three fds; started and exited reach the listener."""
        ready = []
        self.seed.ready.addCallback(ready.append)
        self.say("ready 42")
        self.assertEqual((ready, self.seed.pid), ([self.seed], 42))
        listener = Listener()
        with open(os.devnull) as null:
            command_id = self.seed.run(["true"], {"PATH": "/bin"}, "/root", [null.fileno()] * 3, listener)
        message, fds = self.take_request()
        self.assertEqual(fds, 3)
        self.assertEqual(message, seeds.request(command_id, ["true"], {"PATH": "/bin"}, "/root"))
        self.say(f"started {command_id} 1234")
        self.seed.signal(command_id, signal.SIGTERM)
        self.assertEqual(self.peer.recv(100), f"kill\0{command_id}\0{int(signal.SIGTERM)}\0".encode())
        self.say(f"exited {command_id} {signal.SIGTERM}")
        self.assertEqual(listener.events, [("started", 1234), ("exited", 128 + signal.SIGTERM)])
        self.seed.signal(command_id, signal.SIGKILL)  # reaped: nothing is sent
        self.peer.setblocking(False)
        self.assertRaises(BlockingIOError, self.peer.recv, 100)

    def test_oversized_request(self):
        """Too many bytes or too many fields for the seed: lxc-attach takes the command."""
        self.say("ready 42")
        many = {f"V{i}": "" for i in range(seeds.MAX_FIELDS)}
        with open(os.devnull) as null:
            for argv, env in ((["x" * seeds.MAX_REQUEST], {}), (["true"], many)):
                self.assertRaises(seeds.SeedUnavailable, self.seed.run, argv, env, "/",
                                  [null.fileno()] * 3, Listener())

    def test_garbage_is_ignored(self):
        self.say("ready 42")
        self.say("exited nonsense")
        self.say("what 1 2")
        self.assertFalse(self.seed.gone)

    def test_seed_gone_fails_pending_commands(self):
        """A seed that ends (EOF) fails what it was running; it is not ready any more."""
        self.say("ready 42")
        listener = Listener()
        with open(os.devnull) as null:
            self.seed.run(["sleep", "9"], {}, "/", [null.fileno()] * 3, listener)
        self.take_request()
        self.peer.close()
        self.seed.doRead()
        self.assertTrue(self.seed.gone)
        self.assertEqual(listener.events, [("failed", errno.ECONNRESET)])
        self.assertNotIn(self.seed, self.reactor.readers)

    def test_ended_seed_still_hears_running_commands(self):
        """After `end` the zygote takes no more commands and still reports the running ones;
        the socket closes when it exits."""
        self.say("ready 42")
        listener = Listener()
        with open(os.devnull) as null:
            command_id = self.seed.run(["sleep", "9"], {}, "/", [null.fileno()] * 3, listener)
        self.take_request()
        self.seed.end()
        self.assertEqual(self.peer.recv(100), b"end\0")
        self.assertTrue(self.seed.gone)
        with open(os.devnull) as null:
            self.assertRaises(seeds.SeedUnavailable, self.seed.run, ["true"], {}, "/", [null.fileno()] * 3,
                              Listener())
        self.seed.signal(command_id, signal.SIGKILL)  # still delivered: the command runs on
        self.assertEqual(self.peer.recv(100), f"kill\0{command_id}\0{int(signal.SIGKILL)}\0".encode())
        self.say(f"exited {command_id} {signal.SIGKILL}")
        self.assertEqual(listener.events, [("exited", 128 + signal.SIGKILL)])
        self.assertIn(self.seed, self.reactor.readers)
        self.peer.close()
        self.seed.doRead()
        self.assertNotIn(self.seed, self.reactor.readers)

    def test_launch_failure_reported(self):
        """`failed 0 ERRNO` (no container, no cgroup) ends the seed; waiters get None."""
        ready = []
        self.seed.ready.addCallback(ready.append)
        self.say(f"failed 0 {errno.ESRCH}")
        self.assertEqual(ready, [None])
        self.assertTrue(self.seed.gone)


class SeedsTests(SynchronousTestCase):
    def test_missing_binary_means_lxc_attach(self):
        registry = seeds.Seeds(FakeReactor(), "/nonexistent/lxc", binary="/nonexistent/execseed")
        got = []
        defer.Deferred.fromCoroutine(registry.get("c1", lambda name: ["/sys/fs/cgroup/pids/x"])).addCallback(got.append)
        self.assertEqual(got, [None])


class FakeSeed:
    def __init__(self):
        self.gone = False
        self.killed = False
        self.done = defer.Deferred()

    def end(self):
        self.gone = True

    def kill(self):
        self.killed = True
        self.done.callback(None)


class StoppedTests(SynchronousTestCase):
    """A stopped container's seed is waited for, and killed when it takes too long."""

    def setUp(self):
        self.reactor = FakeReactor()
        self.registry = seeds.Seeds(self.reactor, "/nonexistent/lxc", binary="/nonexistent/execseed")
        self.seed = self.registry._current["c1"] = FakeSeed()

    def stopped(self):
        result = []
        defer.Deferred.fromCoroutine(self.registry.stopped("c1")).addCallback(result.append)
        return result

    def test_waits_for_the_seed_to_exit(self):
        result = self.stopped()
        self.assertTrue(self.seed.gone)
        self.assertEqual(result, [])
        self.seed.done.callback(None)
        self.assertEqual(result, [None])
        self.assertFalse(self.seed.killed)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_kills_a_seed_that_does_not_exit(self):
        result = self.stopped()
        self.reactor.advance(seeds.END_TIMEOUT)
        self.assertTrue(self.seed.killed)
        self.assertEqual(result, [None])

    def test_forgotten_earlier_is_still_waited_for(self):
        """`forget` (limits.processes, a stop beginning) lets the seed drain; the stop waits for it."""
        self.registry.forget("c1")
        self.assertNotIn("c1", self.registry._current)
        result = self.stopped()
        self.assertEqual(result, [])
        self.seed.done.callback(None)
        self.assertEqual(result, [None])
        self.assertEqual(self.stopped(), [None])  # nothing left to wait for
