# -*- test-case-name: tests.unit.test_store -*-
"""The embedded backend: one SQLite file, one writer thread, `BEGIN IMMEDIATE`.

Schema changes are numbered steps in `MIGRATIONS`; `PRAGMA user_version` records
how many have run. Each step runs in its own transaction.
"""

import errno
import os
import sqlite3

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from lxdtx.state.store import Store


def _v1(db):
    db.execute(
        "CREATE TABLE documents ("
        " kind TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,"
        " revision INTEGER NOT NULL, PRIMARY KEY (kind, name))"
    )
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT INTO meta (key, value) VALUES ('revision', 0)")


MIGRATIONS = [_v1]


class SchemaTooNew(Exception):
    """The database was written by a newer lxdtx."""


class StoreFull(Exception):
    """The disk holding the database is full."""


class SQLiteStore(Store):
    """Documents in `path`, written by a single dedicated thread."""

    def __init__(self, path, reactor=None, pool=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self._reactor = reactor
        self._pool = pool if pool is not None else ThreadPool(minthreads=1, maxthreads=1, name="lxdtx-db")
        self._db = None

    def _in_thread(self, fn, *args):
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    async def open(self):
        self._pool.start()
        await self._in_thread(self._connect)
        await super().open()

    async def close(self):
        if self._db is not None:
            await self._in_thread(self._db.close)
            self._db = None
        self._pool.stop()

    def _connect(self):
        # The database holds the trust password's hash and every certificate: root only.
        # SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for suffix in ("", "-wal", "-shm"):
            try:
                os.chmod(self.path + suffix, 0o600)
            except FileNotFoundError:
                pass
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                # Written by a newer lxdtx: running older code on it could corrupt it.
                raise SchemaTooNew(f"database schema {version} is newer than this lxdtx knows ({len(MIGRATIONS)})")
            for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                db.execute("BEGIN IMMEDIATE")
                try:
                    step(db)
                    db.execute(f"PRAGMA user_version={number}")
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except BaseException:
            db.close()
            raise
        self._db = db

    async def _load(self):
        return await self._in_thread(self._read_all)

    def _read_all(self):
        revision = self._db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
        rows = self._db.execute("SELECT kind, name, value, revision FROM documents").fetchall()
        return revision, rows

    async def _write(self, revision, rows):
        await self._in_thread(self._write_rows, revision, rows)

    def _write_rows(self, revision, rows):
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for kind, name, text in rows:
                    if text is None:
                        db.execute("DELETE FROM documents WHERE kind=? AND name=?", (kind, name))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO documents (kind, name, value, revision) VALUES (?,?,?,?)",
                            (kind, name, text, revision),
                        )
                db.execute("UPDATE meta SET value=? WHERE key='revision'", (revision,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            if "full" in str(e) or getattr(e, "sqlite_errorcode", None) == 13:
                raise StoreFull(errno.ENOSPC, "the disk holding the database is full") from e
            raise
