# -*- test-case-name: tests.unit.test_storage_drivers -*-
"""Bridges between coroutines and Deferreds, and child processes run the Twisted way."""

import functools
import os

from twisted.internet import defer, protocol
from twisted.internet.error import ProcessDone


def async_to_deferred(fn):
    """Decorate an `async def` so that callers get a Deferred."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return defer.Deferred.fromCoroutine(fn(*args, **kwargs))

    return wrapper


def shared(d):
    """A Deferred with the result of `d` that leaves `d` itself untouched (several waiters)."""
    mine = defer.Deferred()

    def passed(result):
        mine.callback(result)
        return result

    d.addBoth(passed)
    return mine


class ProcessError(Exception):
    """A child process exited non-zero; `stderr` carries its complaint."""

    def __init__(self, argv, code, stdout, stderr):
        self.argv = argv
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).decode("utf-8", "replace").strip()
        super().__init__(f"{os.path.basename(argv[0])} failed (exit {code}): {detail}")


class _Collect(protocol.ProcessProtocol):
    def __init__(self, stdin, done):
        self._stdin = stdin
        self._done = done
        self.out = []
        self.err = []

    def connectionMade(self):
        if self._stdin:
            self.transport.write(self._stdin)
        self.transport.closeStdin()

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        code = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", None)
        if code is None:
            code = 128 + (getattr(reason.value, "signal", None) or 0)
        self._done.callback((code, b"".join(self.out), b"".join(self.err)))


async def run(argv, *, stdin=None, env=None, check=True, reactor=None, path=None):
    """Run argv without blocking the reactor; return (code, stdout, stderr).

    Raises ProcessError for a non-zero exit when `check` is true.
    """
    if reactor is None:
        from twisted.internet import reactor
    done = defer.Deferred()
    argv = [a if isinstance(a, (bytes, str)) else str(a) for a in argv]
    reactor.spawnProcess(
        _Collect(stdin, done), argv[0], argv,
        env=os.environ.copy() if env is None else env, path=path,
    )
    code, out, err = await done
    if check and code != 0:
        raise ProcessError(argv, code, out, err)
    return code, out, err


def sleep(seconds, reactor=None):
    """A cancellable Deferred that fires after `seconds`."""
    if reactor is None:
        from twisted.internet import reactor
    d = defer.Deferred(lambda _: call.cancel())
    call = reactor.callLater(seconds, d.callback, None)
    return d


class _Exited(protocol.ProcessProtocol):
    def __init__(self, done):
        self._done = done

    def processEnded(self, reason):
        code = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", None)
        self._done.callback(128 + (getattr(reason.value, "signal", None) or 0) if code is None else code)


async def run_to_file(argv, output, *, env=None, reactor=None):
    """Run argv with stdout and stderr going to the file `output` and stdin from /dev/null;
    return its exit code once it exits. For a tool that leaves a daemon behind, which
    would hold pipes open long after the tool itself has gone."""
    if reactor is None:
        from twisted.internet import reactor
    done = defer.Deferred()
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        reactor.spawnProcess(_Exited(done), argv[0], [str(a) for a in argv],
                             env=os.environ.copy() if env is None else env, childFDs={0: null, 1: out, 2: out})
    finally:
        os.close(out)
        os.close(null)
    return await done
