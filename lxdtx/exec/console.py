# -*- test-case-name: tests.unit.test_exec_session -*-
"""The console session: an exec session whose command is liblxc's `lxc-console`.

The machine, timeouts, pty plumbing and drain are the exec session's. What
differs: any end of `control` (or of socket 0) means "detach", which terminates
the helper (SIGTERM, then SIGKILL if it lingers); the helper's death by SIGTERM
is a success; the container's console has no signals to forward.
"""

import signal

from lxdtx.exec.session import ExecSession
from lxdtx.exec.streams import AttachedCommand

KILL_AFTER = 5.0


def argv(name, lxcpath):
    """`lxc-console` on tty 0, quiet, with its escape key disabled (the client has its own)."""
    return ["lxc-console", "-n", name, "-P", lxcpath, "-t", "0", "-q", "-e", "@"]


class ConsoleSession(ExecSession):
    """Socket 0 and control of `POST .../console`."""

    def __init__(self, clock, spawn, *, width=0, height=0, **kwargs):
        super().__init__(clock, spawn, interactive=True, width=width, height=height, **kwargs)

    def socket_closed(self, name, abnormal):
        known = name in self.sockets
        super().socket_closed(name, abnormal)
        if known and not self._state_is("awaiting"):
            # Any end of control (even a clean close frame) or of the data socket: detach.
            self._control_lost()


class ConsoleHelper(AttachedCommand):
    """`lxc-console` in a pty; killing it means detaching from the console."""

    def signal(self, number, _tries=0):
        """The console has no command of ours to signal."""

    def kill(self):
        if self.exited or self.transport is None or self.transport.pid is None:
            return
        self.transport.signalProcess("TERM")
        self.reactor.callLater(KILL_AFTER, self._kill_hard)

    def _kill_hard(self):
        if not self.exited and self.transport is not None and self.transport.pid is not None:
            self.transport.signalProcess(signal.SIGKILL)
