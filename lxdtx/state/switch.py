# -*- test-case-name: tests.integration.test_cluster_bootstrap -*-
"""A store whose backend can be replaced while the daemon runs (SQLite -> etcd when the
daemon becomes the first member of a cluster).

Everything in the daemon holds this object, never a backend. `move_to` copies every
document into the new backend with commits held back, then swaps: nothing committed
after the copy can land in the old backend, so nothing is lost. Revisions are the new
backend's from then on; a caller still holding an old revision gets a clean
RevisionMismatch, never a wrong write.
"""

from twisted.internet import defer

from lxdtx.state.store import Put

BATCH = 100  # documents per copying commit (etcd's --max-txn-ops is 128)


class SwitchableStore:
    """The Store interface, delegated to `backend`."""

    def __init__(self, backend):
        self.backend = backend
        self._watchers = []
        self._gate = defer.DeferredLock()
        self._listen(backend)

    def _listen(self, backend):
        def heard(kind, name, value):
            if backend is self.backend:  # the old backend after a move is nobody's business
                for callback in self._watchers:
                    callback(kind, name, value)

        backend.watch(heard)

    @property
    def revision(self):
        return self.backend.revision

    async def open(self):
        await self.backend.open()

    async def close(self):
        await self.backend.close()

    def get(self, kind, name):
        return self.backend.get(kind, name)

    def value(self, kind, name, default=None):
        return self.backend.value(kind, name, default)

    def exists(self, kind, name):
        return self.backend.exists(kind, name)

    def names(self, kind):
        return self.backend.names(kind)

    def list(self, kind):
        return self.backend.list(kind)

    def kinds(self):
        return sorted(kind for kind, bucket in self.backend._docs.items() if bucket)

    def watch(self, callback):
        self._watchers.append(callback)

    async def commit(self, changes):
        await self._gate.acquire()
        try:
            return await self.backend.commit(changes)
        finally:
            self._gate.release()

    async def move_to(self, new, skip=lambda kind, name: False, before_switch=None):
        """Copy every document (but those `skip` names) into `new`, await `before_switch()`,
        and make `new` the backend; returns the old one, still open. Commits wait meanwhile,
        so a failure anywhere leaves the old backend current and complete."""
        await self._gate.acquire()
        try:
            puts = [Put(kind, doc.name, doc.value) for kind in self.kinds() for doc in self.backend.list(kind)
                    if not skip(kind, doc.name)]
            for start in range(0, len(puts), BATCH):
                await new.commit(puts[start:start + BATCH])
            if before_switch is not None:
                await before_switch()
            old, self.backend = self.backend, new
            self._listen(new)
            return old
        finally:
            self._gate.release()
