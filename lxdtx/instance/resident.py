# -*- test-case-name: tests.integration.test_exec_seed -*-
"""Resident helper processes, one per running container: the current one of each, and
the ones told to end that have not exited yet (they may still hold the container's
namespaces, cgroups or rootfs)."""

from lxdtx.asyncutil import shared


class Residents:
    """Helpers by container name. A helper has `done` (a Deferred fired once it has
    exited), `end()` (asks it to exit) and `kill()`."""

    def __init__(self, reactor):
        self.reactor = reactor
        self._current = {}
        self._ending = {}

    def forget(self, name):
        """Tell the current helper of `name` to end; new requests get a new one."""
        helper = self._current.pop(name, None)
        if helper is None or helper.done.called:
            return
        self._ending.setdefault(name, set()).add(helper)

        def exited(_):
            ending = self._ending.get(name, set())
            ending.discard(helper)
            if not ending:
                self._ending.pop(name, None)

        helper.done.addCallback(exited)
        helper.end()

    async def stopped(self, name, timeout):
        """`name` has stopped (or goes away): wait until its helpers have exited. One
        still there after `timeout` seconds is killed."""
        self.forget(name)
        for helper in list(self._ending.get(name, ())):
            done = shared(helper.done)
            timer = self.reactor.callLater(timeout, helper.kill)
            try:
                await done
            finally:
                if timer.active():
                    timer.cancel()
