"""The state store: documents, revisions, compare-and-swap commits, against every backend
(memory, SQLite on a temp file, a real etcd on loopback)."""

import os
import sqlite3

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lxdtx.state import ABSENT, Delete, Put, RevisionMismatch
from lxdtx.state import sqlite as sqlite_backend
from lxdtx.state.sqlite import SQLiteStore
from lxdtx.state.store import MemoryStore
from tests.unit.fakes import InlineReactor, InlineThreadPool, temp_dir


def _run(test, coroutine):
    return test.successResultOf(defer.Deferred.fromCoroutine(coroutine))


class GatedStore(MemoryStore):
    """A memory store whose writes wait for the test to open a gate (or fail)."""

    def __init__(self):
        super().__init__()
        self.gates = []

    async def _write(self, revision, rows):
        gate = defer.Deferred()
        self.gates.append(gate)
        await gate


class StoreContract:
    """The commit discipline every backend shares (a subclass supplies `make_store`).

    Revisions are counted from the store's revision when the test starts: etcd's first
    change is its revision 2.
    """

    async def asyncSetUp(self):
        self.store = await self.make_store()
        self.base = self.store.revision

    def setUp(self):
        return defer.Deferred.fromCoroutine(self.asyncSetUp())

    async def commit(self, *changes):
        return await self.store.commit(changes)

    async def refused(self, *changes):
        try:
            await self.store.commit(changes)
        except RevisionMismatch as e:
            return e
        self.fail(f"commit of {changes!r} was not refused")

    async def test_put_and_read(self):
        """A put document is readable by get, value, names, list and exists."""
        revision = await self.commit(Put("profile", "b", {"x": 1}), Put("profile", "a", {"y": 2}))
        self.assertEqual(revision, self.base + 1)
        doc = self.store.get("profile", "a")
        self.assertEqual((doc.kind, doc.name, doc.value, doc.revision), ("profile", "a", {"y": 2}, revision))
        self.assertEqual(self.store.value("profile", "b"), {"x": 1})
        self.assertEqual(self.store.names("profile"), ["a", "b"])
        self.assertEqual([d.name for d in self.store.list("profile")], ["a", "b"])
        self.assertTrue(self.store.exists("profile", "a"))
        self.assertFalse(self.store.exists("profile", "c"))
        self.assertIsNone(self.store.get("profile", "c"))
        self.assertEqual(self.store.value("profile", "c", "dflt"), "dflt")
        self.assertEqual(self.store.names("nothing"), [])

    async def test_values_are_copies(self):
        """Changing a value read from the store changes nothing stored."""
        await self.commit(Put("k", "n", {"list": [1]}))
        self.store.get("k", "n").value["list"].append(2)
        self.store.value("k", "n")["new"] = True
        self.assertEqual(self.store.value("k", "n"), {"list": [1]})

    async def test_revisions(self):
        """One global counter; each changed document carries the revision that changed it."""
        await self.commit(Put("k", "a", {}))
        await self.commit(Put("k", "b", {}))
        self.assertEqual(self.store.revision, self.base + 2)
        self.assertEqual(self.store.get("k", "a").revision, self.base + 1)
        self.assertEqual(self.store.get("k", "b").revision, self.base + 2)

    async def test_expect_absent(self):
        """expect=ABSENT creates only; on an existing document nothing of the commit is written."""
        first = await self.commit(Put("k", "a", {"v": 1}))
        error = await self.refused(Put("k", "new", {}), Put("k", "a", {"v": 2}, expect=ABSENT))
        self.assertEqual((error.kind, error.name, error.expected, error.actual), ("k", "a", ABSENT, first))
        self.assertEqual(error.code, 412)
        self.assertIn("'a' changed concurrently", error.message)
        self.assertFalse(self.store.exists("k", "new"))
        self.assertEqual(self.store.value("k", "a"), {"v": 1})
        self.assertEqual(self.store.revision, first)

    async def test_expect_revision(self):
        """A stale revision is refused; the current one succeeds."""
        first = await self.commit(Put("k", "a", {"v": 1}))
        second = await self.commit(Put("k", "a", {"v": 2}))
        error = await self.refused(Put("k", "a", {"v": 3}, expect=first))
        self.assertEqual((error.expected, error.actual), (first, second))
        await self.refused(Put("k", "missing", {"v": 3}, expect=first))
        await self.commit(Put("k", "a", {"v": 3}, expect=second))
        self.assertEqual(self.store.value("k", "a"), {"v": 3})

    async def test_delete(self):
        """Delete removes; with a stale expectation it is refused; a missing document is a no-op."""
        first = await self.commit(Put("k", "a", {}))
        await self.refused(Delete("k", "a", expect=first + 5))
        self.assertTrue(self.store.exists("k", "a"))
        await self.commit(Delete("k", "a", expect=first))
        self.assertFalse(self.store.exists("k", "a"))
        await self.commit(Delete("k", "a"))
        await self.refused(Delete("k", "a", expect=first))

    async def test_rename_is_atomic(self):
        """Delete + Put in one commit: both or neither."""
        first = await self.commit(Put("k", "old", {"v": 1}), Put("k", "taken", {}))
        await self.refused(Delete("k", "old", expect=first), Put("k", "taken", {"v": 1}, expect=ABSENT))
        self.assertEqual(self.store.names("k"), ["old", "taken"])
        await self.commit(Delete("k", "old", expect=first), Put("k", "new", {"v": 1}, expect=ABSENT))
        self.assertEqual(self.store.names("k"), ["new", "taken"])

    async def test_empty_commit(self):
        """Nothing to commit: the current revision, nothing written."""
        self.assertEqual(await self.commit(), self.base)

    async def test_odd_names(self):
        """Names with slashes, spaces and non-ASCII round-trip and stay apart from other kinds."""
        await self.commit(Put("k", "a/b c", {"v": "é"}), Put("k/x", "y", {}), Put("kk", "a/b c", {}))
        self.assertEqual(self.store.value("k", "a/b c"), {"v": "é"})
        self.assertEqual(self.store.names("k"), ["a/b c"])

    async def test_watchers(self):
        """Watchers hear each committed change, never a refused one."""
        heard = []
        await self.commit(Put("k", "b", {}))
        self.store.watch(lambda kind, name, value: heard.append((kind, name, value)))
        await self.commit(Put("k", "a", {"v": 1}), Delete("k", "b"))
        await self.refused(Put("k", "a", {}, expect=ABSENT))
        self.assertEqual(heard, [("k", "a", {"v": 1}), ("k", "b", None)])


class MemoryStoreContractTests(StoreContract, TestCase):
    """The contract on the memory store."""

    async def make_store(self):
        store = MemoryStore()
        await store.open()
        return store


class SQLiteStoreContractTests(StoreContract, TestCase):
    """The contract on the SQLite backend (its thread replaced by an inline one)."""

    async def make_store(self):
        store = SQLiteStore(os.path.join(temp_dir(self), "lxdtx.db"), reactor=InlineReactor(), pool=InlineThreadPool())
        await store.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
        return store


class EtcdStoreContractTests(StoreContract, TestCase):
    """The contract on the etcd backend, against a real etcd on loopback."""

    timeout = 60

    async def make_store(self):
        from lxdtx.state.etcd import EtcdStore
        from lxdtx.state.etcdgateway import EtcdGateway
        from tests.etcdproc import ETCD, EtcdMember

        if not os.path.exists(ETCD):
            self.skipTest("etcd is not installed (Debian package etcd-server)")
        member = await threads.deferToThread(EtcdMember().start)
        self.addCleanup(threads.deferToThread, member.cleanup)
        store = EtcdStore(EtcdGateway([member.client_url], reactor), reactor)
        await store.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
        return store


class MemoryStoreTests(SynchronousTestCase):
    """What the base class does about its backend's writes (gated by the test)."""

    def test_commits_one_at_a_time(self):
        """A second commit waits for the first; its check sees the first one's result."""
        store = GatedStore()
        first = defer.Deferred.fromCoroutine(store.commit([Put("k", "a", {"v": 1}, expect=ABSENT)]))
        second = defer.Deferred.fromCoroutine(store.commit([Put("k", "a", {"v": 2}, expect=ABSENT)]))
        self.assertEqual(len(store.gates), 1)
        store.gates[0].callback(None)
        self.assertEqual(self.successResultOf(first), 1)
        self.failureResultOf(second, RevisionMismatch)
        self.assertEqual(store.value("k", "a"), {"v": 1})

    def test_failed_write_changes_nothing(self):
        """When the backend fails the mirror is unchanged and the next commit proceeds."""
        store = GatedStore()
        d = defer.Deferred.fromCoroutine(store.commit([Put("k", "a", {})]))
        store.gates[0].errback(OSError("disk full"))
        self.failureResultOf(d, OSError)
        self.assertFalse(store.exists("k", "a"))
        self.assertEqual(store.revision, 0)
        d = defer.Deferred.fromCoroutine(store.commit([Put("k", "a", {})]))
        store.gates[1].callback(None)
        self.assertEqual(self.successResultOf(d), 1)


class SQLiteStoreTests(SynchronousTestCase):
    """The SQLite backend on a temporary file (its thread replaced by an inline one)."""

    def setUp(self):
        self.path = os.path.join(temp_dir(self), "lxdtx.db")

    def open(self):
        store = SQLiteStore(self.path, reactor=InlineReactor(), pool=InlineThreadPool())
        _run(self, store.open())
        self.addCleanup(lambda: _run(self, store.close()))
        return store

    def user_version(self):
        with sqlite3.connect(self.path) as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    def test_fresh_database(self):
        """A new file gets every migration and an empty store."""
        store = self.open()
        self.assertEqual(self.user_version(), len(sqlite_backend.MIGRATIONS))
        self.assertEqual((store.revision, store.names("profile")), (0, []))

    def test_reopen_keeps_data(self):
        """Documents, revisions and deletions survive closing and reopening."""
        store = self.open()
        _run(self, store.commit([Put("profile", "default", {"config": {}}), Put("profile", "p", {"a": "é"})]))
        _run(self, store.commit([Put("certificate", "abc", {"name": "c"}), Delete("profile", "p")]))
        _run(self, store.close())
        again = self.open()
        self.assertEqual(again.revision, 2)
        self.assertEqual(again.names("profile"), ["default"])
        self.assertEqual(again.get("profile", "default").revision, 1)
        self.assertEqual(again.value("certificate", "abc"), {"name": "c"})
        self.assertFalse(again.exists("profile", "p"))

    def test_refused_commit_not_written(self):
        """A refused compare-and-swap leaves the file as it was."""
        store = self.open()
        _run(self, store.commit([Put("k", "a", {"v": 1})]))
        self.failureResultOf(defer.Deferred.fromCoroutine(
            store.commit([Put("k", "b", {}), Put("k", "a", {"v": 2}, expect=ABSENT)])), RevisionMismatch)
        _run(self, store.close())
        again = self.open()
        self.assertEqual(again.names("k"), ["a"])
        self.assertEqual(again.value("k", "a"), {"v": 1})

    def test_write_error_rolls_back(self):
        """A write failing half-way leaves neither rows nor revision behind."""
        store = self.open()
        _run(self, store.commit([Put("k", "a", {"v": 1})]))
        real = store._write_rows

        def broken(revision, rows):
            real(revision, rows + [("k", None, "{}")])  # NOT NULL violation after the first row

        store._write_rows = broken
        self.failureResultOf(defer.Deferred.fromCoroutine(
            store.commit([Put("k", "b", {"v": 2})])), sqlite3.IntegrityError)
        store._write_rows = real
        self.assertEqual(store.revision, 1)
        _run(self, store.close())
        again = self.open()
        self.assertEqual((again.revision, again.names("k")), (1, ["a"]))

    def test_numbered_migrations(self):
        """Only migrations above the recorded version run, each in its own transaction."""
        self.open()
        ran = []

        def v2(db):
            ran.append(2)
            db.execute("CREATE TABLE extra (x INTEGER)")

        def v3(db):
            ran.append(3)
            db.execute("CREATE TABLE more (x INTEGER)")
            raise RuntimeError("broken step")

        self.patch(sqlite_backend, "MIGRATIONS", [sqlite_backend.MIGRATIONS[0], v2])
        self.open()
        self.assertEqual((ran, self.user_version()), ([2], 2))
        self.open()
        self.assertEqual(ran, [2])
        self.patch(sqlite_backend, "MIGRATIONS", [sqlite_backend.MIGRATIONS[0], v2, v3])
        store = SQLiteStore(self.path, reactor=InlineReactor(), pool=InlineThreadPool())
        self.failureResultOf(defer.Deferred.fromCoroutine(store.open()), RuntimeError)
        self.assertEqual(self.user_version(), 2)
        with sqlite3.connect(self.path) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        self.assertNotIn("more", tables)
        self.assertIn("extra", tables)

    def test_newer_schema_refused(self):
        """A database from a newer lxdtx is not opened."""
        self.open()
        with sqlite3.connect(self.path) as db:
            db.execute(f"PRAGMA user_version={len(sqlite_backend.MIGRATIONS) + 1}")
        store = SQLiteStore(self.path, reactor=InlineReactor(), pool=InlineThreadPool())
        self.failureResultOf(defer.Deferred.fromCoroutine(store.open()), sqlite_backend.SchemaTooNew)
