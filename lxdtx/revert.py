# -*- test-case-name: tests.unit.test_revert -*-
"""Undo steps of a multi-step change when a later step fails.

    async with Reverter() as revert:
        await make_volume()
        revert.add(delete_volume)        # sync or async callables
        await write_row()
        revert.success()                 # keep everything

Leaving the block by an exception without `success()` runs the undo steps in
reverse order, awaiting each, before the exception propagates.
"""

from twisted.internet import defer
from twisted.logger import Logger


class Reverter:
    """Collects undo steps; runs them in reverse unless told the change succeeded."""

    log = Logger()

    def __init__(self):
        self._steps = []
        self._done = False

    def add(self, fn, *args):
        self._steps.append((fn, args))

    def success(self):
        self._done = True

    async def fail(self):
        steps, self._steps = self._steps, []
        for fn, args in reversed(steps):
            try:
                result = fn(*args)
                if hasattr(result, "__await__") or isinstance(result, defer.Deferred):
                    await result
            except Exception:
                self.log.failure("Undo step {fn} failed", fn=getattr(fn, "__qualname__", fn))

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if exc_type is not None and not self._done:
            await self.fail()
        return False
