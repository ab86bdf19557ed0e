"""Pre-copy of a live migration: the rounds' settings, when they stop, CRIU's stats, and the
messages both ends exchange (the pre-dumps themselves need a kernel that tracks dirty pages)."""

import os
import shutil
import struct
import tempfile

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from lxdtx.migration import live, precopy, rsyncstream
from lxdtx.migration import messages as m

DATA = os.path.join(os.path.dirname(__file__), "data")


def stats_file(directory, written, skipped):
    entry = precopy.StatsEntry()
    entry.dump.pages_written, entry.dump.pages_skipped_parent = written, skipped
    body = entry.SerializeToString()
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, precopy.STATS), "wb") as f:
        f.write(struct.pack("<III", 0x55105940, 0x57093306, len(body)) + body)


class SettingsTests(TestCase):
    def test_defaults_and_values(self):
        """Off by default, LXD's 10 rounds and 70 %; the keys' values when set."""
        plain = precopy.Settings({})
        self.assertEqual((plain.enabled, plain.iterations, plain.goal), (False, 10, 70))
        set_ = precopy.Settings({precopy.ENABLED_KEY: "true", precopy.ITERATIONS_KEY: "3", precopy.GOAL_KEY: "90"})
        self.assertEqual((set_.enabled, set_.iterations, set_.goal), (True, 3, 90))
        self.assertEqual(precopy.Settings({precopy.ITERATIONS_KEY: "0"}).iterations, 1)


class RoundsTests(TestCase):
    def rounds(self, iterations=10, goal=70):
        return precopy.Rounds(precopy.Settings({precopy.ITERATIONS_KEY: str(iterations),
                                                precopy.GOAL_KEY: str(goal)}))

    def test_directories_chain(self):
        """Each pre-dump's parent is the one before; the final dump's is the last."""
        rounds = self.rounds()
        self.assertEqual(rounds.next_directory(), ("000", None))
        rounds.done(100, 0)
        self.assertEqual(rounds.next_directory(), ("001", "../000"))
        rounds.done(100, 0)
        self.assertEqual(rounds.final_parent(), "../001")

    def test_stops_at_the_goal(self):
        """A round stops once more than the goal's percentage of pages was unchanged."""
        rounds = self.rounds(goal=70)
        self.assertFalse(rounds.done(1000, 0))
        self.assertFalse(rounds.done(300, 700))  # 70 %: not more
        self.assertTrue(rounds.done(290, 710))

    def test_stops_at_the_iterations(self):
        """However dirty the memory, no more rounds than the iterations."""
        rounds = self.rounds(iterations=3)
        self.assertEqual([rounds.done(1000, 0) for _ in range(3)], [False, False, True])
        self.assertTrue(self.rounds().done(0, 0))


class StatsTests(TestCase):
    def test_real_dump(self):
        """The stats of a real CRIU 4.1.1 dump (of a sleeping process): pages written, none skipped."""
        self.assertEqual(precopy.read_stats(os.path.join(DATA, "criu-dump")), (30, 0))

    def test_not_stats(self):
        directory = tempfile.mkdtemp(prefix="lxdtx-stats-")
        self.addCleanup(shutil.rmtree, directory)
        with open(os.path.join(directory, precopy.STATS), "wb") as f:
            f.write(b"\0" * 40)
        self.assertRaises(ValueError, precopy.read_stats, directory)


class _Channel:
    def __init__(self, incoming=()):
        self.sent, self.incoming = [], list(incoming)

    def send(self, data):
        self.sent.append(data)

    async def next_message(self):
        return self.incoming.pop(0)


class HeaderTests(TestCase):
    def test_offer_answer_agree(self):
        """Offered only with settings (pre-copy asked for, dirty pages tracked); a sink answers
        when offered; the source makes rounds only when both said so."""
        settings = precopy.Settings({precopy.ENABLED_KEY: "true"})
        header, reply = m.MigrationHeader(fs=m.RSYNC), m.MigrationHeader(fs=m.RSYNC)
        live.offer_pre_copy(header, None)
        self.assertFalse(header.HasField("predump"))
        live.answer_pre_copy(header, reply)
        self.assertFalse(reply.HasField("predump"))
        self.assertIsNone(live.agreed_pre_copy(settings, reply))
        live.offer_pre_copy(header, settings)
        wire = m.decode(m.MigrationHeader, header.SerializeToString())
        live.answer_pre_copy(wire, reply)
        self.assertTrue(m.decode(m.MigrationHeader, reply.SerializeToString()).predump)
        self.assertIsInstance(live.agreed_pre_copy(settings, reply), precopy.Rounds)
        self.assertIsNone(live.agreed_pre_copy(None, reply))


class _Criu:
    def env(self, action):
        return {}


class _Liblxc:
    def __init__(self, figures):
        self.figures, self.calls = list(figures), []

    async def predump(self, name, directory, env, parent=None):
        self.calls.append((os.path.basename(directory), parent))
        stats_file(directory, *self.figures.pop(0))


class _Instances:
    def __init__(self, figures):
        self.liblxc, self.criu = _Liblxc(figures), _Criu()
        self.dumps = []

    async def dump(self, name, directory, stop=True, parent=None):
        self.dumps.append((os.path.basename(directory), parent, stop))


class _Daemon:
    reactor = None

    def __init__(self, figures):
        self.instances = _Instances(figures)


class RoundTripTests(TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lxdtx-precopy-")
        self.addCleanup(shutil.rmtree, self.dir)
        self.events = []
        original_send, original_receive = rsyncstream.send, rsyncstream.receive

        async def send(reactor, channel, path, what, *args):
            self.events.append(("rsync", what))

        async def receive(reactor, channel, path, what, *args):
            self.events.append(("rsync", what))

        rsyncstream.send, rsyncstream.receive = send, receive
        self.addCleanup(setattr, rsyncstream, "send", original_send)
        self.addCleanup(setattr, rsyncstream, "receive", original_receive)

    def test_source_rounds_then_final_dump(self):
        """Each round: pre-dump, the directory sent, a MigrationSync (the last says so); then the
        final dump into `final`, relative to the last pre-dump, the images and the last fs pass."""
        daemon = _Daemon([(1000, 0), (500, 500), (100, 900)])
        channels = {"criu": _Channel(), "fs": _Channel()}
        rounds = precopy.Rounds(precopy.Settings({precopy.GOAL_KEY: "70"}))

        async def go():
            await live.send(daemon, "c", "/nonexistent", channels, self.dir, None, 0, [], rounds)

        def check(_):
            self.assertEqual(daemon.instances.liblxc.calls, [("000", None), ("001", "../000"), ("002", "../001")])
            syncs = [m.decode(m.MigrationSync, data).finalPreDump for data in channels["criu"].sent]
            self.assertEqual(syncs, [False, False, True])
            self.assertEqual(daemon.instances.dumps, [("final", "../002", True)])
            self.assertEqual(self.events, [("rsync", "pre-dump c")] * 3 + [("rsync", "checkpoint c"), ("rsync", "c")])

        return defer.ensureDeferred(go()).addCallback(check)

    def test_sink_takes_rounds_until_the_last(self):
        """The sink receives a pre-dump before each MigrationSync, and stops at the last."""
        syncs = [m.MigrationSync(finalPreDump=f).SerializeToString() for f in (False, True)]
        criu = _Channel(syncs)
        d = defer.ensureDeferred(live.receive_rounds(None, criu, self.dir, "c", None))
        d.addCallback(lambda _: self.assertEqual(self.events, [("rsync", "pre-dump c")] * 2))
        return d

    def test_final_dump_directory(self):
        """After a pre-copy CRIU restores from `final`, the pre-dumps beside it readable; else
        from the whole directory."""
        self.assertEqual(live._final_dump(self.dir), self.dir)
        stats_file(os.path.join(self.dir, "000"), 1, 0)
        os.makedirs(os.path.join(self.dir, "final"))
        self.assertEqual(live._final_dump(self.dir), os.path.join(self.dir, "final"))
        self.assertEqual(os.stat(os.path.join(self.dir, "000", precopy.STATS)).st_mode & 0o777, 0o644)


class HelperTests(TestCase):
    def test_refuses_what_is_not_running(self):
        """The helper (built against liblxc by setup.py) names a container that isn't running and
        refuses an unknown action, touching nothing."""
        import subprocess

        from lxdtx.instance import liblxc

        lxcpath = tempfile.mkdtemp(prefix="lxdtx-predump-")
        self.addCleanup(shutil.rmtree, lxcpath)
        r = subprocess.run([liblxc.PREDUMP, "nothere", lxcpath, "pre-dump", os.path.join(lxcpath, "d")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual((r.returncode, "nothere is not running" in r.stderr), (1, True))
        r = subprocess.run([liblxc.PREDUMP, "nothere", lxcpath, "restore", lxcpath], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(os.listdir(lxcpath), [])
