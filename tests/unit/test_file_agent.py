"""The file agent program over a real socket, and the daemon's bookkeeping of its answers."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.helpers.fileagent import receive, send
from lxdtx.instance import fileagents


# Runs the rest of argv with the socket given as argv[1] on fd 3, as the daemon passes it.
_ON_FD3 = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.execv(sys.argv[2], sys.argv[2:])"


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            os.close(fd)
            return b"".join(chunks)
        chunks.append(chunk)


class AgentProgramTests(SynchronousTestCase):
    """`fileagent.py stopped` over a directory, spoken to as the daemon does."""

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("the agent sets owners, which needs root")
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        os.mkdir(os.path.join(self.root, "etc"))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        self.addCleanup(ours.close)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ON_FD3,
             str(theirs.fileno()), sys.executable, "-I", "-S", fileagents.PROGRAM, "stopped", "t1", self.root, ""],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self.addCleanup(self._stop)
        self.sock.settimeout(20)
        ready, _ = receive(self.sock)
        self.assertIn("ready", ready)

    def _stop(self):
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def ask(self, message, fds=()):
        send(self.sock, message, fds)
        return receive(self.sock)

    def test_write_then_read_back(self):
        """A body passed by fd is written; a get answers the metadata and pipes the bytes."""
        body = os.memfd_create("body")
        os.write(body, b"hello agent")
        opened, _ = self.ask({"id": "1", "op": "write", "path": "/etc/motd", "mode": 0o600}, [body])
        os.close(body)
        self.assertEqual(opened, {"id": "1", "opened": True})
        done, _ = receive(self.sock)
        self.assertEqual(done, {"id": "1", "done": True})
        head, fds = self.ask({"id": "2", "op": "get", "path": "/etc/motd"})
        self.assertEqual((head["kind"], head["mode"], head["size"], len(fds)), ("file", 0o600, 11, 1))
        self.assertEqual(_read_all(fds[0]), b"hello agent")

    def test_directories_links_and_delete(self):
        """mkdir, symlink, a listing through the pipe, delete; errors come back as codes."""
        self.assertEqual(self.ask({"id": "1", "op": "mkdir", "path": "/d", "mode": 0o755})[0],
                         {"id": "1", "done": True})
        self.assertEqual(self.ask({"id": "2", "op": "symlink", "path": "/d/l", "target": "/etc"})[0],
                         {"id": "2", "done": True})
        head, fds = self.ask({"id": "3", "op": "get", "path": "/d"})
        self.assertEqual(head["kind"], "directory")
        self.assertEqual(json.loads(_read_all(fds[0])), ["l"])
        head, fds = self.ask({"id": "4", "op": "get", "path": "/d/l"})
        self.assertEqual((head["kind"], head["target"], fds), ("symlink", "/etc", []))
        self.assertEqual(self.ask({"id": "5", "op": "delete", "path": "/d/l"})[0], {"id": "5", "done": True})
        missing, _ = self.ask({"id": "6", "op": "get", "path": "/d/l"})
        self.assertEqual((missing["id"], missing["error"]), ("6", 404))
        self.assertTrue(os.path.isdir(os.path.join(self.root, "etc")))

    def test_ends_with_its_socket(self):
        """Closing the daemon's end makes the agent exit."""
        self.sock.close()
        self.assertEqual(self.proc.wait(10), 0)


class _Agent:
    """What a _Call needs of its agent, recorded."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.cancelled = []
        self.finished_ids = []

    def cancel(self, ident):
        self.cancelled.append(ident)

    def finished(self, ident):
        self.finished_ids.append(ident)


class CallTests(SynchronousTestCase):
    """The answers of one request: in order, errors raised, the first one bounded in time."""

    def setUp(self):
        self.clock = task.Clock()
        self.agent = _Agent(self.clock)
        self.call = fileagents._Call(self.agent, "7")

    def test_answers_in_order(self):
        """Answers that came before anyone waited are handed out in order."""
        self.call.deliver({"id": "7", "opened": True}, [])
        self.call.deliver({"id": "7", "done": True}, [])
        first = self.successResultOf(defer.ensureDeferred(self.call.next(timeout=5)))
        second = self.successResultOf(defer.ensureDeferred(self.call.next()))
        self.assertEqual((first[0], second[0]), ({"id": "7", "opened": True}, {"id": "7", "done": True}))

    def test_error_answer_raises(self):
        """An error answer is the ApiError of its code and message, and ends the call."""
        d = defer.ensureDeferred(self.call.next(timeout=5))
        self.call.deliver({"id": "7", "error": 403, "message": "no"}, [])
        failure = self.failureResultOf(d, errors.ApiError)
        self.assertEqual((failure.value.code, failure.value.message), (403, "no"))
        self.assertEqual(self.agent.finished_ids, ["7"])

    def test_timeout_cancels_the_fork(self):
        """No answer within the timeout: the agent is told to kill the fork, the caller gets a 500."""
        d = defer.ensureDeferred(self.call.next(timeout=30))
        self.clock.advance(29)
        self.assertNoResult(d)
        self.clock.advance(2)
        failure = self.failureResultOf(d, errors.InternalError)
        self.assertIn("did not answer within 30 seconds", failure.value.message)
        self.assertEqual(self.agent.cancelled, ["7"])

    def test_cancel_by_the_caller(self):
        """A caller that gives up (its client went away) cancels the fork too."""
        d = defer.ensureDeferred(self.call.next(timeout=30))
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.agent.cancelled, ["7"])

    def test_agent_gone(self):
        """When the agent ends, a waiting caller hears it."""
        d = defer.ensureDeferred(self.call.next())
        self.call.fail(errors.InternalError("The container's file agent has ended"))
        self.failureResultOf(d, errors.InternalError)
