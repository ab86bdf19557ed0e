# -*- test-case-name: tests.unit.test_store_etcd -*-
"""The clustered backend: documents as etcd keys, commits as etcd transactions.

A document (kind, name) is the key `<prefix><quoted kind>/<name>`; its JSON text is the value
and etcd's `mod_revision` is its revision, etcd's store revision the global one. A
commit is one etcd `Txn`: every `expect=` becomes a compare on `mod_revision` (0 for
ABSENT: etcd compares a missing key as revision 0), the changes are its success ops,
and its failure ops read back the compared keys so a refusal names what changed. A Txn
is atomic, so a commit is applied whole or not at all, also across members.

Several daemons write the same keys, so the mirror is fed by an etcd watch on the
prefix as well as by our own commits. Both may deliver the same change; a change
older than what the mirror holds for its key (a document's revision, or the revision
of its deletion, kept as a tombstone until the watch has passed it) is ignored.
"""

import json
from urllib.parse import quote, unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from lxdtx.state.etcdgateway import EtcdUnavailable, b64, unb64
from lxdtx.state.store import ABSENT, Put, RevisionMismatch, Store

RESTART_WATCH = 1.0  # seconds before a broken watch stream is opened again
MAX_TOMBSTONES = 1024


class EtcdStore(Store):
    """Documents under `prefix` in the etcd cluster `gateway` talks to."""

    log = Logger()

    def __init__(self, gateway, reactor, prefix=b"lxdtx/doc/"):
        super().__init__()
        self.gateway = gateway
        self.reactor = reactor
        self.prefix = prefix
        self._tombstones = {}  # (kind, name) -> revision of its deletion
        self._watched = 0  # highest revision the watch has delivered
        self._stop_watch = None
        self._restart = None
        self._resync_needed = False
        self._closing = False

    # -- keys -----------------------------------------------------------------------------
    def _key(self, kind, name):
        # The kind is quoted so that the first "/" always ends it; names may hold any character.
        return b64(self.prefix + quote(kind, safe="").encode() + b"/" + name.encode())

    def _split(self, key):
        kind, _, name = unb64(key)[len(self.prefix):].decode().partition("/")
        return unquote(kind), name

    # -- opening and the watch --------------------------------------------------------------
    async def open(self):
        revision, kvs = await self.gateway.range_prefix(self.prefix)
        for kv in kvs:
            kind, name = self._split(kv["key"])
            self._docs.setdefault(kind, {})[name] = (unb64(kv.get("value")).decode(), int(kv["mod_revision"]))
        self.revision = self._watched = revision
        self._start_watch()

    async def close(self):
        self._closing = True
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        if self._stop_watch is not None:
            self._stop_watch()
        await self.gateway.close()

    def _start_watch(self):
        self._restart = None
        if self._closing:
            return
        stop, done = self.gateway.watch_prefix(self.prefix, self._watched + 1, self._on_watch)
        self._stop_watch = stop
        done.addBoth(self._watch_ended)

    def _watch_ended(self, result):
        if self._closing:
            return
        if isinstance(result, Failure) and not result.check(EtcdUnavailable):
            self.log.failure("The cluster database watch failed", result)
        # A member that went away, a compaction, a restart of etcd: start again where we were.
        self._restart = self.reactor.callLater(RESTART_WATCH, self._restart_watch)

    def _restart_watch(self):
        self._restart = None
        if not self._resync_needed:
            self._start_watch()
            return
        d = defer.Deferred.fromCoroutine(self._resync())
        d.addErrback(self._watch_ended)  # etcd still away: try again later

    def _on_watch(self, result):
        if result.get("canceled"):
            if int(result.get("compact_revision", 0)):
                # What we missed is gone from etcd's history: read everything again.
                self._resync_needed = True
                self._stop_watch()
            return
        for event in result.get("events", ()):
            kv = event["kv"]
            kind, name = self._split(kv["key"])
            revision = int(kv["mod_revision"])
            text = None if event.get("type") == "DELETE" else unb64(kv.get("value")).decode()
            self._apply(kind, name, text, revision)
            self._watched = max(self._watched, revision)
        self.revision = max(self.revision, self._watched)
        if len(self._tombstones) > MAX_TOMBSTONES:
            # The watch never goes back past what it delivered: older tombstones are moot.
            self._tombstones = {k: r for k, r in self._tombstones.items() if r > self._watched}

    async def _resync(self):
        revision, kvs = await self.gateway.range_prefix(self.prefix)
        self._resync_needed = False
        seen = set()
        for kv in kvs:
            kind, name = self._split(kv["key"])
            seen.add((kind, name))
            self._apply(kind, name, unb64(kv.get("value")).decode(), int(kv["mod_revision"]))
        for kind, bucket in list(self._docs.items()):
            for name in list(bucket):
                if (kind, name) not in seen:
                    self._apply(kind, name, None, revision)
        self._watched = max(self._watched, revision)
        self.revision = max(self.revision, revision)
        self._start_watch()

    def _apply(self, kind, name, text, revision):
        """Take a change into the mirror unless it holds a newer one; tell the watchers."""
        bucket = self._docs.setdefault(kind, {})
        entry = bucket.get(name)
        held = entry[1] if entry is not None else self._tombstones.get((kind, name), 0)
        if revision <= held:
            return
        if text is None:
            if entry is None:
                self._tombstones[(kind, name)] = revision
                return
            del bucket[name]
            self._tombstones[(kind, name)] = revision
        else:
            bucket[name] = (text, revision)
            self._tombstones.pop((kind, name), None)
        value = None if text is None else json.loads(text)
        for callback in self._watchers:
            callback(kind, name, value)

    # -- commits ----------------------------------------------------------------------------
    async def commit(self, changes):
        """One etcd Txn: all changes or, when an expectation fails, RevisionMismatch and none."""
        changes = list(changes)
        if not changes:
            return self.revision
        compares, failure = [], []
        final = {}  # a key changed twice in one commit: the last change counts (etcd refuses duplicates)
        for change in changes:
            key = self._key(change.kind, change.name)
            if change.expect is not None:
                compares.append((change, key))
                failure.append({"request_range": {"key": key}})
            final[key] = change
        success, texts = [], {}
        for key, change in final.items():
            if isinstance(change, Put):
                texts[key] = json.dumps(change.value, sort_keys=True)
                success.append({"request_put": {"key": key, "value": b64(texts[key])}})
            else:
                success.append({"request_delete_range": {"key": key}})
        compare = [{"target": "MOD", "key": key, "mod_revision": str(change.expect)} for change, key in compares]
        await self._lock.acquire()
        try:
            try:
                answer = await self.gateway.txn(compare, success, failure)
            except EtcdUnavailable as e:
                raise EtcdUnavailable(e.member, e.reason + "; the change was applied whole or not at all") from None
            if not answer.get("succeeded"):
                raise self._mismatch(compares, answer.get("responses", ()))
            revision = int(answer["header"]["revision"])
            responses = answer.get("responses", ())
            for (key, change), response in zip(final.items(), responses, strict=False):
                if isinstance(change, Put):
                    self._apply(change.kind, change.name, texts[key], revision)
                elif int(response.get("response_delete_range", {}).get("deleted", 0)):
                    self._apply(change.kind, change.name, None, revision)
            self.revision = max(self.revision, revision)
            return revision
        finally:
            self._lock.release()

    def _mismatch(self, compares, responses):
        first = None
        for (change, _key), response in zip(compares, responses, strict=False):
            kvs = response.get("response_range", {}).get("kvs", [])
            actual = int(kvs[0]["mod_revision"]) if kvs else ABSENT
            error = RevisionMismatch(change.kind, change.name, change.expect, actual)
            if actual != change.expect:
                return error
            first = first or error
        return first
