# -*- test-case-name: tests.unit.test_journal -*-
"""Intents: a multi-step change writes down what it will do on the host before it does it, so a
daemon killed half-way through finishes or undoes it at the next start.

    async with daemon.journal.begin("container.create", name) as intent:
        await intent.will("volume", pool=pool, type="container", name=name)  # recorded first
        await driver.create_volume(...)
        await store.commit([Put(...row...), intent.done()])  # the row and the end of the record, at once

An intent is one document of kind `intent` holding its steps. Each step names a kind whose
handler (`Journal.handle`) brings that part of the host to where the intent resolves to:

- undone (the default, for creations): the row that makes the change real was never committed,
  so every step is undone, last first. Leaving the block by an exception does this at once.
- finished (`finish=True`, for removals and restores): the decision is in the store already;
  every step is carried out again, first first. A failure leaves the record for the next start.

Handlers are idempotent: a step may be recorded and never started, half done, or done twice.
`recover()` runs at start-up, before the daemon listens. In a cluster the store is shared: an
intent names the member that began it (`member`), and only that member resolves it.
"""

import time
import uuid

from twisted.logger import Logger

from lxdtx.state import Delete, Put

KIND = "intent"


class Journal:
    """The open intents of one daemon, and the handlers that resolve their steps."""

    log = Logger()

    def __init__(self, store, member=None):
        self.store = store
        self._handlers = {}
        self.member = member or (lambda: "")  # fn() -> this daemon's cluster member id ("" when not clustered)

    def handle(self, kind, handler):
        """`await handler(**args)` resolves a step of `kind` (undo it, or finish it)."""
        self._handlers[kind] = handler

    def begin(self, op, target, finish=False):
        return Intent(self, op, target, finish)

    def open(self):
        """This member's open intents, oldest first."""
        member = self.member()
        return [doc for doc in self.store.list(KIND) if doc.value.get("member", "") == member]

    async def resolve(self, value):
        steps = value.get("steps") or []
        for step in steps if value.get("finish") else reversed(steps):
            handler = self._handlers.get(step.get("kind"))
            if handler is None:
                raise LookupError(f"no handler for step {step.get('kind')!r}")
            await handler(**(step.get("args") or {}))

    async def recover(self):
        """Undo or finish every intent a killed daemon left open; returns [(op, target, outcome)]."""
        report = []
        for doc in self.open():
            op, target = doc.value.get("op"), doc.value.get("target")
            outcome = "finished" if doc.value.get("finish") else "undone"
            try:
                await self.resolve(doc.value)
            except Exception as e:
                self.log.failure("Could not resolve the interrupted {op} of {target}", op=op, target=target)
                report.append((op, target, f"left for the next start: {e}"))
                continue
            await self.store.commit([Delete(KIND, doc.name)])
            self.log.info("Recovered the interrupted {op} of {target}: {outcome}", op=op, target=target,
                          outcome=outcome)
            report.append((op, target, outcome))
        return report


class Intent:
    """One change in progress: `will()` records a step before the caller takes it."""

    log = Logger()

    def __init__(self, journal, op, target, finish):
        self.journal = journal
        # Names sort by time: recovery resolves intents in the order they began.
        self.name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self.value = {"op": op, "target": target, "finish": finish, "steps": []}
        if journal.member():
            self.value["member"] = journal.member()

    def _step(self, kind, args):
        self.value["steps"].append({"kind": kind, "args": args})

    async def will(self, kind, **args):
        """Record a step (one commit) before the caller touches the host for it."""
        self._step(kind, args)
        await self.journal.store.commit([self.record()])

    def record(self, kind=None, **args):
        """The store change recording this intent (and one more step): for a caller that
        commits it together with its own changes (a removal: the rows go, the record comes)."""
        if kind is not None:
            self._step(kind, args)
        return Put(KIND, self.name, self.value)

    def done(self):
        """The store change ending the intent, to commit with the change that completes it."""
        return Delete(KIND, self.name)

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        store = self.journal.store
        if not store.exists(KIND, self.name):  # never recorded, or ended with the change
            return False
        if exc_type is None:
            await store.commit([Delete(KIND, self.name)])
            return False
        op, target = self.value["op"], self.value["target"]
        try:
            await self.journal.resolve(self.value)
        except Exception:
            self.log.failure("Could not resolve the failed {op} of {target}; the next start will retry",
                             op=op, target=target)
            return False
        await store.commit([Delete(KIND, self.name)])
        # Also a `logging` event: a listener sees what a failed change left (nothing).
        self.log.info("Recovered from the failed {op} of {target}: {outcome}", op=op, target=target,
                      outcome="finished" if self.value.get("finish") else "undone")
        return False
