"""The exec and console session machines, driven by recording fakes and a Clock."""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.exec.console import ConsoleSession
from lxdtx.exec.session import STDIN_BUFFER, ExecSession


class FakeSocket:
    """Records what the session does to one websocket."""

    def __init__(self, events, name):
        self.events = events
        self.name = name

    def send(self, data):
        self.events.append((self.name, "data", data))

    def send_barrier(self):
        self.events.append((self.name, "barrier"))

    def drop(self):
        self.events.append((self.name, "drop"))

    def pause_reading(self):
        self.events.append((self.name, "pause"))

    def resume_reading(self):
        self.events.append((self.name, "resume"))


class FakeCommand:
    """Records what the session asks of the command."""

    def __init__(self, events):
        self.events = events

    def write(self, data):
        self.events.append(("command", "write", data))

    def close_stdin(self):
        self.events.append(("command", "close_stdin"))

    def signal(self, number):
        self.events.append(("command", "signal", number))

    def kill(self):
        self.events.append(("command", "kill"))

    def resize(self, width, height):
        self.events.append(("command", "resize", width, height))

    def abandon(self):
        self.events.append(("command", "abandon"))

    def stream_stdin_from(self, ws):
        self.events.append(("command", "stdin_from", ws.name))


class Harness:
    """A session with fake sockets, a fake spawner and a Clock."""

    def __init__(self, interactive=False, cls=ExecSession, fail_spawn=False, during_spawn=None, **kwargs):
        self.clock = Clock()
        self.events = []
        self.spawned = 0
        self.fail_spawn = fail_spawn
        # What the command reports before spawnProcess returns (a command reaped at once).
        self.during_spawn = during_spawn
        if cls is ExecSession:
            kwargs["interactive"] = interactive
        self.session = cls(self.clock, self._spawn, **kwargs)
        self.result = []
        self.session.done.addBoth(self.result.append)

    def _spawn(self, session):
        self.spawned += 1
        self.events.append(("spawn",))
        if self.fail_spawn:
            raise OSError("lxc-attach missing")
        if self.during_spawn:
            self.during_spawn(session)
        return FakeCommand(self.events)

    def connect(self, *names):
        for name in names:
            self.session.claim(self.session.secrets[name])
            self.session.socket_opened(name, FakeSocket(self.events, name))


class ExecSessionTests(SynchronousTestCase):
    """The non-interactive and interactive exec flows."""

    def test_secrets(self):
        """One distinct 64-hex secret per fd; interactive sessions have only 0 and control."""
        plain = Harness().session.metadata()["fds"]
        self.assertEqual(sorted(plain), ["0", "1", "2", "control"])
        self.assertEqual(len(set(plain.values())), 4)
        self.assertTrue(all(len(s) == 64 for s in plain.values()))
        self.assertEqual(sorted(Harness(interactive=True).session.metadata()["fds"]), ["0", "control"])

    def test_claim_once(self):
        """A secret is claimed once; a wrong one is refused."""
        h = Harness()
        self.assertEqual(h.session.claim(h.session.secrets["1"]), "1")
        self.assertRaises(errors.Forbidden, h.session.claim, h.session.secrets["1"])
        self.assertRaises(errors.ApiError, h.session.claim, "0" * 64)

    def test_starts_when_data_sockets_connect(self):
        """Nothing is spawned until 0, 1 and 2 are connected; control is not required."""
        h = Harness()
        h.connect("control", "0", "1")
        self.assertEqual(h.spawned, 0)
        h.connect("2")
        self.assertEqual(h.spawned, 1)
        self.assertIn(("command", "stdin_from", "0"), h.events)

    def test_connect_timeout(self):
        """Sockets missing after the connect timeout fail the session; nothing is spawned."""
        h = Harness(connect_timeout=10)
        h.connect("control", "0")
        h.clock.advance(9.9)
        self.assertEqual(h.result, [])
        h.clock.advance(0.2)
        self.assertEqual(h.spawned, 0)
        self.assertIsInstance(h.result[0].value, errors.InternalError)
        self.assertIn("Timed out", h.result[0].value.message)
        self.assertIn(("control", "drop"), h.events)
        self.assertIn(("0", "drop"), h.events)

    def test_socket_closed_before_start(self):
        """A data socket closing before the start fails the session and spawns nothing."""
        h = Harness()
        h.connect("0", "1")
        h.session.socket_closed("1", abnormal=True)
        self.assertEqual(h.spawned, 0)
        self.assertIn("closed before", h.result[0].value.message)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_spawn_failure(self):
        """A spawn error fails the operation with its reason."""
        h = Harness(fail_spawn=True)
        h.connect("0", "1", "2")
        self.assertIn("lxc-attach missing", h.result[0].value.message)

    def test_stdin_before_start_is_kept(self):
        """Stdin (and its end) sent before the command starts reaches it in order."""
        h = Harness()
        h.connect("0")
        h.session.socket_message("0", b"abc", True)
        h.session.socket_message("0", b"", False)
        h.connect("1", "2")
        writes = [e for e in h.events if e[0] == "command"]
        self.assertEqual(writes[:2], [("command", "write", b"abc"), ("command", "close_stdin")])

    def test_stdin_buffer_pauses_socket(self):
        """A full pre-start stdin buffer pauses socket 0, and the start resumes it."""
        h = Harness()
        h.connect("0")
        h.session.socket_message("0", b"x" * STDIN_BUFFER, True)
        self.assertIn(("0", "pause"), h.events)
        h.connect("1", "2")
        self.assertIn(("0", "resume"), h.events)

    def test_normal_completion(self):
        """Output is forwarded, then barriers, control closed last, the exit code returned."""
        h = Harness()
        h.connect("control", "0", "1", "2")
        h.session.command_output(1, b"out")
        h.session.command_output(2, b"err")
        h.session.command_output_ended(1)
        h.session.command_output_ended(2)
        self.assertEqual(h.result, [])
        h.session.command_exited(3)
        self.assertEqual(h.result, [3])
        tail = [e for e in h.events if e[0] in ("1", "2", "control")]
        self.assertEqual(tail, [("1", "data", b"out"), ("2", "data", b"err"),
                                ("1", "barrier"), ("2", "barrier"), ("control", "drop")])

    def test_exit_reported_while_spawning(self):
        """A command reaped before the spawn call returns still completes the session."""
        def exits_at_once(session):
            session.command_exited(0)

        h = Harness(during_spawn=exits_at_once)
        h.connect("control", "0", "1", "2")
        self.assertEqual(h.result, [])  # its output has not ended yet
        h.session.command_output(1, b"112\n")
        h.session.command_output_ended(1)
        h.session.command_output_ended(2)
        self.assertEqual(h.result, [0])
        self.assertIn(("1", "data", b"112\n"), h.events)
        self.assertIn(("command", "close_stdin"), h.events)

    def test_exit_reported_while_spawning_then_drain_timeout(self):
        """The early exit starts the drain timer like any other exit."""
        h = Harness(during_spawn=lambda session: session.command_exited(7), drain_timeout=1.0)
        h.connect("0", "1", "2")
        h.clock.advance(1.0)
        self.assertEqual(h.result, [7])

    def test_completion_decided_by_reaping(self):
        """Output that is still open after the reap gets the drain time, then is abandoned."""
        h = Harness(drain_timeout=1.0)
        h.connect("0", "1", "2")
        h.session.command_output(1, b"done\n")
        h.session.command_exited(0)
        self.assertEqual(h.result, [])
        h.clock.advance(1.0)
        self.assertEqual(h.result, [0])
        self.assertIn(("command", "abandon"), h.events)
        self.assertEqual(h.events.count(("1", "barrier")), 1)
        self.assertEqual(h.events.count(("2", "barrier")), 1)

    def test_drain_ends_early(self):
        """Output ending within the drain time completes at once, cancelling the timer."""
        h = Harness()
        h.connect("0", "1", "2")
        h.session.command_exited(0)
        h.session.command_output_ended(1)
        h.session.command_output_ended(2)
        self.assertEqual(h.result, [0])
        self.assertNotIn(("command", "abandon"), h.events)

    def test_exit_closes_stdin(self):
        """The reap closes the stdin pipe of a non-interactive command."""
        h = Harness()
        h.connect("0", "1", "2")
        h.session.command_exited(0)
        self.assertIn(("command", "close_stdin"), h.events)

    def test_signal_and_resize(self):
        """Control messages become signals and (interactive) window sizes; bad ones are skipped."""
        h = Harness(interactive=True, width=80, height=25)
        h.connect("control", "0")
        self.assertIn(("command", "resize", 80, 25), h.events)
        h.session.socket_message("control", json.dumps(
            {"command": "window-resize", "args": {"width": "120", "height": "40"}, "signal": 0}).encode(), False)
        h.session.socket_message("control", b'{"command":"signal","args":null,"signal":15}', False)
        h.session.socket_message("control", b"not json", False)
        h.session.socket_message("control", b'{"command":"signal","signal":"15"}', False)
        h.session.socket_message("control", b'{"command":"frobnicate"}', False)
        commands = [e for e in h.events if e[0] == "command" and e[1] in ("resize", "signal")]
        self.assertEqual(commands, [("command", "resize", 80, 25), ("command", "resize", 120, 40),
                                    ("command", "signal", 15)])

    def test_abnormal_control_close_kills(self):
        """Control dropping without a close frame kills the command; a clean close does not."""
        h = Harness()
        h.connect("control", "0", "1", "2")
        h.session.socket_closed("control", abnormal=False)
        self.assertNotIn(("command", "kill"), h.events)
        h2 = Harness()
        h2.connect("control", "0", "1", "2")
        h2.session.socket_closed("control", abnormal=True)
        self.assertIn(("command", "kill"), h2.events)

    def test_interactive_output_on_socket_zero(self):
        """With a pty, output goes to socket 0 and ends with one barrier there."""
        h = Harness(interactive=True)
        h.connect("control", "0")
        h.session.socket_message("0", b"ls\r", True)
        h.session.command_output(1, b"file\r\n")
        h.session.command_exited(0)
        h.session.command_output_ended(1)
        self.assertEqual(h.result, [0])
        self.assertIn(("command", "write", b"ls\r"), h.events)
        self.assertIn(("0", "data", b"file\r\n"), h.events)
        self.assertEqual(h.events.count(("0", "barrier")), 1)
        self.assertNotIn(("command", "close_stdin"), h.events)

    def test_lingering_sockets_dropped(self):
        """Sockets the client never closes are dropped after the linger time; closed ones stop it."""
        h = Harness(linger=30)
        h.connect("0", "1", "2")
        h.session.command_output_ended(1)
        h.session.command_output_ended(2)
        h.session.command_exited(0)
        h.clock.advance(30)
        self.assertIn(("1", "drop"), h.events)
        h2 = Harness(linger=30)
        h2.connect("0", "1", "2")
        h2.session.command_exited(0)
        h2.clock.advance(1)
        for name in ("0", "1", "2"):
            h2.session.socket_closed(name, abnormal=False)
        self.assertEqual(h2.clock.getDelayedCalls(), [])

    def test_late_events_ignored(self):
        """Signals, resizes and closes after the end change nothing."""
        h = Harness()
        h.connect("control", "0", "1", "2")
        h.session.command_output_ended(1)
        h.session.command_output_ended(2)
        h.session.command_exited(0)
        before = list(h.events)
        h.session.socket_message("control", b'{"command":"signal","signal":9}', False)
        h.session.socket_closed("control", abnormal=True)
        h.session.command_output(1, b"late")
        self.assertEqual(h.events, before)


class ConsoleSessionTests(SynchronousTestCase):
    """The console: any end of control or socket 0 detaches."""

    def test_clean_control_close_detaches(self):
        """A close frame on control (the client's detach) terminates the helper."""
        h = Harness(cls=ConsoleSession, width=80, height=24)
        h.connect("control", "0")
        self.assertEqual(h.spawned, 1)
        h.session.socket_closed("control", abnormal=False)
        self.assertIn(("command", "kill"), h.events)
        h.session.command_exited(143)
        h.session.command_output_ended(1)
        self.assertEqual(h.result, [143])
        self.assertEqual(h.events.count(("0", "barrier")), 1)

    def test_data_socket_close_detaches(self):
        """The client going away on socket 0 detaches too."""
        h = Harness(cls=ConsoleSession)
        h.connect("0")
        h.session.socket_closed("0", abnormal=True)
        self.assertIn(("command", "kill"), h.events)

    def test_waits_for_socket_zero_only(self):
        """The console starts on socket 0 alone and fails cleanly when it never comes."""
        h = Harness(cls=ConsoleSession)
        h.connect("control")
        h.clock.advance(10)
        self.assertEqual(h.spawned, 0)
        self.assertIsInstance(h.result[0].value, errors.InternalError)
