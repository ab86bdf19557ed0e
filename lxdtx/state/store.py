# -*- test-case-name: tests.unit.test_store -*-
"""Documents with revisions, and the Store interface every backend provides.

A document is a JSON object stored under (kind, name). Every committed change
bumps one global revision counter and stamps the changed documents with it (as
etcd does), so `expect=` on a change is a compare-and-swap: the commit fails
whole with `RevisionMismatch` when any expectation does not hold.

Reads are served from an in-memory mirror on the reactor thread; only commits
travel to the backend's writer. Since every write goes through `commit`, which
runs one at a time, the mirror always equals what the backend holds.
"""

import json

from twisted.internet import defer

from lxdtx.errors import PreconditionFailed

ABSENT = 0  # expect= value meaning "must not exist"


class RevisionMismatch(PreconditionFailed):
    """A compare-and-swap expectation failed; nothing was written."""

    def __init__(self, kind, name, expected, actual):
        self.kind, self.name, self.expected, self.actual = kind, name, expected, actual
        super().__init__(f"{kind} {name!r} changed concurrently (expected revision {expected}, found {actual})")


class Document:
    """One stored object: `value` is a private copy the caller may change."""

    __slots__ = ("kind", "name", "revision", "value")

    def __init__(self, kind, name, value, revision):
        self.kind, self.name, self.value, self.revision = kind, name, value, revision


class Put:
    """Create or replace a document; `expect` is None (no check), ABSENT or a revision."""

    __slots__ = ("expect", "kind", "name", "value")

    def __init__(self, kind, name, value, expect=None):
        self.kind, self.name, self.value, self.expect = kind, name, value, expect


class Delete:
    """Remove a document (a no-op if it does not exist and `expect` is None)."""

    __slots__ = ("expect", "kind", "name")

    def __init__(self, kind, name, expect=None):
        self.kind, self.name, self.expect = kind, name, expect


class Store:
    """The mirror and the commit discipline; a backend supplies `_load` and `_write`."""

    def __init__(self):
        self._docs = {}  # kind -> {name: (json text, revision)}
        self.revision = 0
        self._lock = defer.DeferredLock()
        self._watchers = []

    async def open(self):
        """Load every document from the backend into the mirror."""
        self.revision, rows = await self._load()
        for kind, name, text, rev in rows:
            self._docs.setdefault(kind, {})[name] = (text, rev)

    async def close(self):
        pass

    def get(self, kind, name):
        """The document, or None."""
        entry = self._docs.get(kind, {}).get(name)
        if entry is None:
            return None
        return Document(kind, name, json.loads(entry[0]), entry[1])

    def value(self, kind, name, default=None):
        """Just the value of a document (a private copy), or `default`."""
        entry = self._docs.get(kind, {}).get(name)
        return default if entry is None else json.loads(entry[0])

    def exists(self, kind, name):
        return name in self._docs.get(kind, ())

    def names(self, kind):
        """Names of all documents of a kind, sorted."""
        return sorted(self._docs.get(kind, ()))

    def list(self, kind):
        """All documents of a kind, sorted by name."""
        return [self.get(kind, name) for name in self.names(kind)]

    def watch(self, callback):
        """Call `callback(kind, name, value_or_None)` after each committed change."""
        self._watchers.append(callback)

    async def commit(self, changes):
        """Apply all changes atomically, or raise RevisionMismatch and apply none."""
        changes = list(changes)
        if not changes:
            return self.revision
        await self._lock.acquire()
        try:
            for change in changes:
                self._check(change)
            revision = self.revision + 1
            rows = []
            for change in changes:
                text = json.dumps(change.value, sort_keys=True) if isinstance(change, Put) else None
                rows.append((change.kind, change.name, text))
            await self._write(revision, rows)
            self.revision = revision
            for kind, name, text in rows:
                bucket = self._docs.setdefault(kind, {})
                if text is None:
                    bucket.pop(name, None)
                else:
                    bucket[name] = (text, revision)
        finally:
            self._lock.release()
        for kind, name, text in rows:
            for callback in self._watchers:
                callback(kind, name, None if text is None else json.loads(text))
        return revision

    def _check(self, change):
        if change.expect is None:
            return
        entry = self._docs.get(change.kind, {}).get(change.name)
        actual = entry[1] if entry else ABSENT
        if actual != change.expect:
            raise RevisionMismatch(change.kind, change.name, change.expect, actual)

    async def _load(self):
        """(revision, [(kind, name, json text, revision), ...]) from the backend."""
        raise NotImplementedError

    async def _write(self, revision, rows):
        """Persist rows [(kind, name, json text or None for delete)] at `revision`."""
        raise NotImplementedError


class MemoryStore(Store):
    """A store that keeps nothing on disk (unit tests)."""

    async def _load(self):
        return 0, []

    async def _write(self, revision, rows):
        pass
