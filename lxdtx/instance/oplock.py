# -*- test-case-name: tests.unit.test_oplock -*-
"""Per-container operation lock: one state change at a time, later ones queue.

A queued action waits at most `timeout` seconds, then fails with a clear error
naming the action that holds the container, so nothing ever interleaves and
nothing waits forever.
"""

from twisted.internet import defer

from lxdtx import errors


class _Held:
    def __init__(self, action):
        self.action = action
        self.waiters = []


class OperationLocks:
    """Locks by container name."""

    def __init__(self, clock, timeout=600.0):
        self._clock = clock
        self._timeout = timeout
        self._held = {}

    def action(self, name):
        """The action currently running on `name`, or None."""
        held = self._held.get(name)
        return held.action if held else None

    async def acquire(self, name, action):
        held = self._held.get(name)
        if held is None:
            self._held[name] = _Held(action)
            return
        waiter = defer.Deferred()
        held.waiters.append((waiter, action))
        call = self._clock.callLater(self._timeout, self._expire, name, waiter)
        try:
            await waiter
        finally:
            if call.active():
                call.cancel()

    def _expire(self, name, waiter):
        held = self._held.get(name)
        if held is None:
            return
        for entry in held.waiters:
            if entry[0] is waiter:
                held.waiters.remove(entry)
                waiter.errback(errors.BadRequest(
                    f"Container '{name}' is busy with another operation ({held.action})"))
                return

    def release(self, name):
        held = self._held.get(name)
        if held is None:
            return
        if held.waiters:
            waiter, action = held.waiters.pop(0)
            held.action = action
            waiter.callback(None)
        else:
            del self._held[name]

    def hold(self, name, action):
        """`async with locks.hold(name, "start"):`"""
        return _Hold(self, name, action)


class _Hold:
    def __init__(self, locks, name, action):
        self._locks, self._name, self._action = locks, name, action

    async def __aenter__(self):
        await self._locks.acquire(self._name, self._action)

    async def __aexit__(self, *exc):
        self._locks.release(self._name)
        return False
