# -*- test-case-name: tests.unit.test_exec_session -*-
"""One exec session as a state machine: websockets in, the command, the exit code out.

    awaiting_sockets --all data sockets up--> starting --spawned--> running
    running --command reaped--> draining --outputs ended | drain timeout--> finished

Every wait is bounded: the data sockets must connect within `connect_timeout`
(else the operation fails and nothing is spawned); once the command is reaped,
its output gets `drain_timeout` to end, after which whatever still holds the
pipes or the pty (a background child) is abandoned. Completion flushes every
output byte, sends the end-of-stream barrier (an empty text frame) on each
output socket, closes `control` last and hands the exit code on. Sockets the
client does not close itself are dropped `linger` seconds later.

Collaborators are duck-typed so tests can use recording fakes: a websocket
offers `send(bytes)`, `send_barrier()`, `drop()`, `pause_reading()`,
`resume_reading()`; `spawn(session)` returns a command offering `write(bytes)`,
`close_stdin()`, `signal(n)`, `kill()`, `resize(w, h)`, `abandon()` and
`stream_stdin_from(ws)`, and reports back through `command_output`,
`command_output_ended` and `command_exited`.
"""

import hmac
import json
import signal

from automat import MethodicalMachine
from twisted.internet import defer
from twisted.logger import Logger

from lxdtx import errors
from lxdtx.operations import new_secret

# Bytes of stdin kept while the command is not started yet; past that the socket pauses.
STDIN_BUFFER = 1024 * 1024


class _Output:
    """One output stream towards one websocket: data frames, then one barrier."""

    def __init__(self):
        self.ws = None
        self.ended = False
        self.barrier_sent = False

    def data(self, payload):
        if self.ws is not None and payload:
            self.ws.send(payload)

    def barrier(self):
        if not self.barrier_sent:
            self.barrier_sent = True
            if self.ws is not None:
                self.ws.send_barrier()


class ExecSession:
    """The websockets, the command and the completion of one `POST .../exec`."""

    _machine = MethodicalMachine()
    log = Logger()

    def __init__(self, clock, spawn, *, interactive, width=0, height=0,
                 connect_timeout=10.0, drain_timeout=1.0, linger=30.0):
        self.clock = clock
        self._spawn = spawn
        self.interactive = interactive
        self.size = (width, height) if width > 0 and height > 0 else None
        self.connect_timeout = connect_timeout
        self.drain_timeout = drain_timeout
        self.linger = linger
        names = ["0", "control"] if interactive else ["0", "1", "2", "control"]
        self.secrets = {name: new_secret() for name in names}
        self.data_fds = [n for n in names if n != "control"]
        self.sockets = {}
        self._claimed = set()
        # Output streams by the command's fd: the pty (1) goes to socket 0.
        self.outputs = {1: _Output()} if interactive else {1: _Output(), 2: _Output()}
        self._output_socket = {"0": 1} if interactive else {"1": 1, "2": 2}
        self._stdin = []
        self._stdin_size = 0
        self._stdin_eof = False
        self._early = []  # command events from while it was being spawned
        self.command = None
        self.code = None
        self.done = defer.Deferred()  # the exit code; fails when the command never ran
        self._timer = None
        self._linger_timer = None
        self._timer = clock.callLater(connect_timeout, self._connect_timed_out)

    # -- what the operation sees --------------------------------------------
    def metadata(self):
        return {"fds": dict(self.secrets)}

    def check(self, secret):
        """The fd name a websocket secret stands for, if not claimed yet (it stays unclaimed).

        Compared in constant time with every fd's secret, whichever matches.
        """
        given = secret.encode("utf-8", "surrogateescape") if isinstance(secret, str) else b""
        found = None
        for name, value in self.secrets.items():
            if hmac.compare_digest(value.encode("ascii"), given):
                found = name
        if found is None:
            raise errors.InternalError("permission denied")
        if found in self._claimed:
            raise errors.Forbidden("websocket already connected")
        return found

    def claim(self, secret):
        """The fd name a websocket secret stands for, now used: each may be used once.

        Called when the websocket handshake succeeds (websocket.handshake.Handshake's `claim`), so
        a failed handshake leaves the secret usable.
        """
        name = self.check(secret)
        self._claimed.add(name)
        return name

    def read_by_client(self, name):
        """Whether the client reads socket `name` (only those can answer pings)."""
        return name in self._output_socket

    # -- websocket events -----------------------------------------------------
    def socket_opened(self, name, ws):
        """A websocket finished its handshake."""
        self.sockets[name] = ws
        if name in self._output_socket:
            self.outputs[self._output_socket[name]].ws = ws
        if name == "0" and self._stdin_size >= STDIN_BUFFER:
            ws.pause_reading()
        if all(fd in self.sockets for fd in self.data_fds) and self._state_is("awaiting"):
            self._all_connected()
            self._start()

    def socket_message(self, name, payload, is_binary):
        if name == "0":
            if is_binary:
                self._stdin_data(payload)
            else:
                # Any text frame ends this direction (the barrier is an empty one).
                self._stdin_end()
        elif name == "control" and not is_binary:
            self._control_message(payload)

    def socket_closed(self, name, abnormal):
        ws = self.sockets.pop(name, None)
        if ws is None:
            return
        if name in self._output_socket:
            self.outputs[self._output_socket[name]].ws = None
        if not self.sockets and self._linger_timer is not None and self._linger_timer.active():
            self._linger_timer.cancel()
        if name == "control":
            if abnormal:
                self._control_lost()
            return
        if name == "0":
            self._stdin_end()
        if self._state_is("awaiting"):
            self._abandoned(f"websocket {name} closed before the command started")

    def peer_gone(self, name):
        """Socket `name` went unanswered past its ping timeout: the client is gone
        without a word, and its command is ended as for a control socket lost."""
        self._control_lost()

    # -- command events -------------------------------------------------------
    # A command that ends at once is reaped while it is being spawned: Twisted
    # reports its exit before spawnProcess returns, when the session has not yet
    # learnt that the command started. Events of that moment wait in `_early`
    # and are handed on once the session is running.
    def command_output(self, fd, data):
        if self._defer_early(self.command_output, fd, data):
            return
        output = self.outputs.get(fd)
        if output is not None and not output.ended:
            output.data(data)

    def command_output_ended(self, fd):
        if self._defer_early(self.command_output_ended, fd):
            return
        output = self.outputs.get(fd)
        if output is None or output.ended:
            return
        output.ended = True
        if all(o.ended for o in self.outputs.values()):
            self._drained()

    def command_exited(self, code):
        if self._defer_early(self.command_exited, code):
            return
        self._exited(code)
        if all(o.ended for o in self.outputs.values()):
            self._drained()

    def _defer_early(self, event, *args):
        if self._state_is("starting"):
            self._early.append((event, args))
            return True
        return False

    # -- helpers --------------------------------------------------------------
    def _state_is(self, name):
        return self._current == name

    def _start(self):
        try:
            command = self._spawn(self)
        except Exception as e:
            self._early = []
            self.log.error("Could not start the command: {error}", error=e)
            self._start_failed(f"Failed to start the command: {errors.describe(e)}")
            return
        self._started(command)
        early, self._early = self._early, []
        for event, args in early:
            event(*args)

    def _stdin_data(self, payload):
        if self._stdin_eof:
            return
        if self.command is not None:
            self.command.write(payload)
            return
        self._stdin.append(payload)
        self._stdin_size += len(payload)
        if self._stdin_size >= STDIN_BUFFER and "0" in self.sockets:
            self.sockets["0"].pause_reading()

    def _stdin_end(self):
        if self._stdin_eof:
            return
        self._stdin_eof = True
        if self.command is not None and not self.interactive:
            self.command.close_stdin()

    def _control_message(self, payload):
        try:
            message = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(message, dict):
            return
        command = message.get("command")
        if command == "window-resize":
            args = message.get("args") or {}
            try:
                width, height = int(args.get("width")), int(args.get("height"))
            except (TypeError, ValueError):
                return
            if width > 0 and height > 0:
                self._resize(width, height)
        elif command == "signal":
            number = message.get("signal")
            if isinstance(number, int) and not isinstance(number, bool) and 0 < number < signal.NSIG:
                self._signal(number)

    def _cancel_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- the machine ----------------------------------------------------------
    _current = "awaiting"

    @_machine.state(initial=True)
    def awaiting_sockets(self):
        """Waiting for every data websocket; nothing runs yet."""

    @_machine.state()
    def starting(self):
        """All data sockets are up; the command is being spawned."""

    @_machine.state()
    def running(self):
        """The command runs; output flows; control messages are served."""

    @_machine.state()
    def draining(self):
        """The command was reaped; remaining output gets a bounded time to end."""

    @_machine.state()
    def finished(self):
        """Done (exit code known, or the session failed before starting)."""

    @_machine.input()
    def _all_connected(self):
        """Every data socket has connected."""

    @_machine.input()
    def _started(self, command):
        """The command was spawned."""

    @_machine.input()
    def _start_failed(self, reason):
        """Spawning the command failed."""

    @_machine.input()
    def _connect_timed_out(self):
        """The data sockets did not all connect in time."""

    @_machine.input()
    def _abandoned(self, reason):
        """A data socket went away before the command started."""

    @_machine.input()
    def _exited(self, code):
        """The command was reaped with this exit code."""

    @_machine.input()
    def _drained(self):
        """Every output stream reached its end."""

    @_machine.input()
    def _drain_timed_out(self):
        """Output did not end within the drain time after the command was reaped."""

    @_machine.input()
    def _control_lost(self):
        """The control socket closed abnormally."""

    @_machine.input()
    def _signal(self, number):
        """A `signal` control message."""

    @_machine.input()
    def _resize(self, width, height):
        """A `window-resize` control message."""

    @_machine.output()
    def _enter_starting(self):
        self._current = "starting"
        self._cancel_timer()

    @_machine.output()
    def _enter_running(self, command):
        self._current = "running"
        self.command = command
        if self.interactive and self.size:
            command.resize(*self.size)
        pending, self._stdin = self._stdin, []
        for payload in pending:
            command.write(payload)
        if self._stdin_eof and not self.interactive:
            command.close_stdin()
        if "0" in self.sockets:
            if self._stdin_size >= STDIN_BUFFER:
                self.sockets["0"].resume_reading()
            command.stream_stdin_from(self.sockets["0"])
        self._stdin_size = 0

    @_machine.output()
    def _fail(self, reason):
        self._current = "finished"
        self._cancel_timer()
        self.done.errback(errors.InternalError(reason))

    @_machine.output()
    def _fail_timeout(self):
        self._current = "finished"
        self._timer = None
        self.done.errback(errors.InternalError("Timed out waiting for the websockets to connect"))

    @_machine.output()
    def _drop_sockets(self):
        for ws in list(self.sockets.values()):
            ws.drop()

    @_machine.output()
    def _enter_draining(self, code):
        self._current = "draining"
        self.code = code
        if not self.interactive:
            self.command.close_stdin()
        self._timer = self.clock.callLater(self.drain_timeout, self._drain_timed_out)

    @_machine.output()
    def _abandon_output(self):
        self._timer = None
        self.command.abandon()

    @_machine.output()
    def _complete(self):
        self._current = "finished"
        self._cancel_timer()
        for output in self.outputs.values():
            output.ended = True
            output.barrier()
        control = self.sockets.get("control")
        if control is not None:
            control.drop()
        if self.sockets:
            self._linger_timer = self.clock.callLater(self.linger, self._drop_lingering)
        self.done.callback(self.code)

    @_machine.output()
    def _kill(self):
        self.command.kill()

    @_machine.output()
    def _deliver_signal(self, number):
        self.command.signal(number)

    @_machine.output()
    def _apply_size(self, width, height):
        self.size = (width, height)
        if self.command is not None and self.interactive:
            self.command.resize(width, height)

    def _drop_lingering(self):
        """Sockets the client never closed after the end."""
        for ws in list(self.sockets.values()):
            ws.drop()

    awaiting_sockets.upon(_all_connected, enter=starting, outputs=[_enter_starting])
    awaiting_sockets.upon(_connect_timed_out, enter=finished, outputs=[_fail_timeout, _drop_sockets])
    awaiting_sockets.upon(_abandoned, enter=finished, outputs=[_fail, _drop_sockets])
    awaiting_sockets.upon(_control_lost, enter=awaiting_sockets, outputs=[])
    awaiting_sockets.upon(_signal, enter=awaiting_sockets, outputs=[])
    awaiting_sockets.upon(_resize, enter=awaiting_sockets, outputs=[_apply_size])

    starting.upon(_started, enter=running, outputs=[_enter_running])
    starting.upon(_start_failed, enter=finished, outputs=[_fail, _drop_sockets])
    starting.upon(_control_lost, enter=starting, outputs=[])
    starting.upon(_signal, enter=starting, outputs=[])
    starting.upon(_resize, enter=starting, outputs=[_apply_size])

    running.upon(_exited, enter=draining, outputs=[_enter_draining])
    running.upon(_drained, enter=running, outputs=[])
    running.upon(_control_lost, enter=running, outputs=[_kill])
    running.upon(_signal, enter=running, outputs=[_deliver_signal])
    running.upon(_resize, enter=running, outputs=[_apply_size])

    draining.upon(_drained, enter=finished, outputs=[_complete])
    draining.upon(_drain_timed_out, enter=finished, outputs=[_abandon_output, _complete])
    draining.upon(_control_lost, enter=draining, outputs=[])
    draining.upon(_signal, enter=draining, outputs=[])
    draining.upon(_resize, enter=draining, outputs=[])

    finished.upon(_drained, enter=finished, outputs=[])
    finished.upon(_control_lost, enter=finished, outputs=[])
    finished.upon(_signal, enter=finished, outputs=[])
    finished.upon(_resize, enter=finished, outputs=[])
    finished.upon(_abandoned, enter=finished, outputs=[])
    finished.upon(_exited, enter=finished, outputs=[])
