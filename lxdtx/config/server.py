# -*- test-case-name: tests.unit.test_server_config -*-
"""Server configuration (`/1.0` `config`): its schema, and updates applied all or nothing."""

import hashlib
import hmac
import os
import shutil
from urllib.parse import urlsplit

from twisted.internet import defer, threads

from lxdtx import errors
from lxdtx.config.schema import ConfigError, Key, Schema
from lxdtx.config.types import is_any, is_bool, is_host_port, is_int64, is_size, is_true
from lxdtx.state import Put

_HASH_PARAMS = dict(n=16384, r=8, p=1, dklen=64, maxmem=64 * 1024 * 1024)
# What a password is checked against when none is set: the check takes as long,
# and nothing matches (the stored form of no password at all).
_NO_PASSWORD = bytes(96).hex()


def is_http_url(value):
    """core.macaroon.endpoint: the http(s) URL of a Candid server."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http or https URL")
    if parts.port == 0:  # reading it raises ValueError for a port that is no number
        raise ValueError("port 0 is not a port")


def _is_compressor(value):
    if value != "none" and shutil.which(value) is None:
        raise ValueError(f"compression algorithm {value!r} not found in $PATH")


def _is_positive_int(value):
    is_int64(value)
    if int(value) < 0:
        raise ValueError(f"must be zero or positive: {value}")


def _is_block_fs(value):
    if value not in ("ext4", "xfs", "btrfs"):
        raise ValueError(f"invalid filesystem: {value}")


def _is_offline_threshold(value):
    is_int64(value)
    if int(value) <= 4:
        raise ValueError("value must be greater than the heartbeat interval (4)")


SCHEMA = Schema(
    {
        "backups.compression_algorithm": Key(_is_compressor, "gzip"),
        "cluster.offline_threshold": Key(_is_offline_threshold, "20"),
        "core.https_address": Key(is_host_port, apply="https_address"),
        "core.https_allowed_credentials": Key(is_bool, "false"),
        "core.https_allowed_headers": Key(),
        "core.https_allowed_methods": Key(),
        "core.https_allowed_origin": Key(),
        "core.macaroon.endpoint": Key(is_http_url),
        "core.proxy_http": Key(),
        "core.proxy_https": Key(),
        "core.proxy_ignore_hosts": Key(),
        "core.trust_password": Key(hidden=True),
        "images.auto_update_cached": Key(is_bool, "true"),
        "images.auto_update_interval": Key(_is_positive_int, "6"),
        "images.compression_algorithm": Key(_is_compressor, "gzip"),
        "images.remote_cache_expiry": Key(_is_positive_int, "10"),
        "maas.api.key": Key(hidden=True),
        "maas.api.url": Key(),
        "maas.machine": Key(),
        "storage.lvm_fstype": Key(_is_block_fs, "ext4"),
        "storage.lvm_mount_options": Key(is_any, "discard"),
        "storage.lvm_thinpool_name": Key(is_any, "LXDThinPool"),
        "storage.lvm_vg_name": Key(),
        "storage.lvm_volume_size": Key(is_size, "10GB"),
        "storage.zfs_pool_name": Key(),
        "storage.zfs_remove_snapshots": Key(is_bool),
        "storage.zfs_use_refquota": Key(is_bool),
    },
    unknown="cannot set '{key}' to '{value}': unknown key",
)


def hash_password(password, salt=None):
    """hex(salt[32] + scrypt(password)), the stored form of `core.trust_password`."""
    salt = os.urandom(32) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, **_HASH_PARAMS)
    return (salt + digest).hex()


class HashingPool:
    """scrypt for the trust password on threads of its own, with a bound on waiting checks.

    Guesses then cannot take the reactor's shared thread pool (SQLite, file walks);
    past `max_waiting` checks queued behind the busy threads, a check is refused (503).
    `pool` is a twisted ThreadPool, started on first use and stopped by `stop`.
    """

    def __init__(self, reactor, pool, max_waiting=16):
        self._reactor = reactor
        self._pool = pool
        self._room = pool.max + max_waiting
        self._busy = 0
        self._started = False

    def run(self, fn, *args):
        """`fn(*args)` on the pool: a Deferred of its result."""
        if self._busy >= self._room:
            return defer.fail(errors.Unavailable("Too many trust password checks at once"))
        if not self._started:
            self._pool.start()
            self._started = True
        self._busy += 1
        d = threads.deferToThreadPool(self._reactor, self._pool, fn, *args)
        d.addBoth(self._done)
        return d

    def _done(self, result):
        self._busy -= 1
        return result

    def stop(self):
        if self._started:
            self._started = False
            self._pool.stop()


def password_matches(stored, password):
    try:
        raw = bytes.fromhex(stored)
    except ValueError:
        return False
    salt, digest = raw[:32], raw[32:]
    candidate = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, **_HASH_PARAMS)
    return hmac.compare_digest(candidate, digest)


class ServerConfig:
    """The stored server config and the hooks that make changes live.

    A hook is `async fn(old, new)` registered for a key's `apply` name; it runs
    before the change is committed, and is run again as `fn(new, old)` to undo it
    if a later hook or the commit fails. So a change is applied whole or not at all.
    """

    KIND, NAME = "config", "server"

    def __init__(self, store, defer_to_thread=threads.deferToThread):
        self._store = store
        # Password hashing is slow on purpose: it runs off the reactor thread (the
        # daemon passes HashingPool.run: threads of its own).
        self._defer_to_thread = defer_to_thread
        self._hooks = {}
        self._listeners = []
        self._values = None
        store.watch(self._stored)

    def _stored(self, kind, name, value):
        if kind == self.KIND and name == self.NAME:
            self._values = None

    def on_apply(self, name, hook):
        self._hooks[name] = hook

    def use_document(self, name):
        """Read and write the config document `name` from now on: a cluster member keeps its
        own (its core.https_address is its own address), see lxdtx.cluster.membership."""
        self.NAME = name
        self._values = None

    def on_change(self, callback):
        """`callback(changed_keys)` after every committed change."""
        self._listeners.append(callback)

    @property
    def values(self):
        """The stored config (a shared dict: read it, never change it)."""
        if self._values is None:
            self._values = self._store.value(self.KIND, self.NAME, {})
        return self._values

    def get(self, key):
        return SCHEMA.get(self.values, key)

    def get_bool(self, key):
        return is_true(self.get(key))

    def render(self):
        """The `config` map of `GET /1.0`: only set keys, hidden ones as `true`."""
        shown = {}
        for key, value in self.values.items():
            if value == "":
                continue
            shown[key] = True if SCHEMA.lookup(key).hidden else value
        return shown

    async def update(self, given, replace):
        """Apply a PUT (replace=True) or PATCH body's `config` map."""
        if not isinstance(given, dict):
            raise ConfigError([("config", "config must be a map of strings")])
        doc = self._store.get(self.KIND, self.NAME)
        current = doc.value if doc else {}
        new = {} if replace else dict(current)
        problems = []
        for key, value in given.items():
            rule = SCHEMA.lookup(key)
            if rule is None:
                problems.append((key, f"cannot set '{key}' to '{value}': unknown key"))
                continue
            if rule.hidden and value is True:
                if key in current:
                    new[key] = current[key]
                continue
            if value is None or value == "":
                new.pop(key, None)
                continue
            if not isinstance(value, str):
                problems.append((key, f"cannot set '{key}': invalid type {_kind(value)}"))
                continue
            try:
                rule.validate(value)
            except ValueError as e:
                problems.append((key, f"cannot set '{key}' to '{value}': {e}"))
                continue
            new[key] = value
        if problems:
            raise ConfigError(sorted(problems))
        if new.get("core.trust_password") and new["core.trust_password"] != current.get("core.trust_password"):
            new["core.trust_password"] = await self._defer_to_thread(hash_password, new["core.trust_password"])
        changed = sorted(k for k in set(current) | set(new) if current.get(k) != new.get(k))
        if not changed:
            return []
        undo = []
        try:
            for key in changed:
                hook = self._hooks.get(SCHEMA.lookup(key).apply)
                if hook is None:
                    continue
                old_value, new_value = current.get(key, ""), new.get(key, "")
                await hook(old_value, new_value)
                undo.append((hook, new_value, old_value))
            await self._store.commit([Put(self.KIND, self.NAME, new, expect=doc.revision if doc else 0)])
        except BaseException:
            for hook, new_value, old_value in reversed(undo):
                await hook(new_value, old_value)
            raise
        for callback in self._listeners:
            callback(changed)
        return changed

    async def check_password(self, password):
        """Whether `password` is the trust password.

        scrypt runs whether a password is set or not, and for an empty guess too
        (against a hash nothing matches): how long the check takes does not tell.
        """
        stored = self.values.get("core.trust_password") or ""
        if not isinstance(password, str):
            password = ""
        matches = await self._defer_to_thread(password_matches, stored or _NO_PASSWORD, password)
        return bool(matches and stored and password)


def _kind(value):
    return {bool: "bool", int: "float64", float: "float64", list: "slice", dict: "map"}.get(type(value), type(value).__name__)
