"""The server config (`/1.0` `config`): schema, hidden trust password, all-or-nothing updates, CORS."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from lxdtx.config import server
from lxdtx.config.schema import ConfigError
from lxdtx.cors import Cors
from lxdtx.state.store import MemoryStore
from tests.unit.fakes import inline_deferred_thread


class FailingStore(MemoryStore):
    """A store whose writes fail (a full disk, say)."""

    async def _write(self, revision, rows):
        raise OSError("disk full")


def _run(test, coroutine):
    return test.successResultOf(defer.Deferred.fromCoroutine(coroutine))


def _fail(test, coroutine, kind=ConfigError):
    return test.failureResultOf(defer.Deferred.fromCoroutine(coroutine), kind).value


class ServerConfigTests(SynchronousTestCase):
    """PUT/PATCH /1.0 semantics on the stored config."""

    def setUp(self):
        self.store = MemoryStore()
        self.config = server.ServerConfig(self.store, defer_to_thread=inline_deferred_thread)

    def update(self, given, replace=False):
        return _run(self, self.config.update(given, replace))

    def refused(self, given, replace=False):
        return str(_fail(self, self.config.update(given, replace)))

    def stored(self):
        return self.store.value("config", "server", {})

    def test_patch_sets_and_renders(self):
        """A PATCH stores the given keys; only set keys are rendered."""
        self.assertEqual(self.update({"images.auto_update_interval": "12"}), ["images.auto_update_interval"])
        self.assertEqual(self.config.render(), {"images.auto_update_interval": "12"})
        self.assertEqual(self.config.get("images.auto_update_interval"), "12")
        self.assertEqual(self.config.get("images.remote_cache_expiry"), "10")

    def test_put_replaces(self):
        """A PUT drops the keys it does not mention."""
        self.update({"images.auto_update_interval": "12", "core.https_allowed_origin": "*"})
        self.update({"core.https_allowed_origin": "x"}, replace=True)
        self.assertEqual(self.config.render(), {"core.https_allowed_origin": "x"})

    def test_null_and_empty_unset(self):
        """`null` and `""` revert a key to its default."""
        self.update({"images.auto_update_interval": "12", "core.https_allowed_origin": "*"})
        self.update({"images.auto_update_interval": None, "core.https_allowed_origin": ""})
        self.assertEqual(self.config.render(), {})

    def test_no_change_is_quiet(self):
        """Setting what is already stored changes nothing and commits nothing."""
        self.update({"core.https_allowed_origin": "*"})
        revision = self.store.revision
        self.assertEqual(self.update({"core.https_allowed_origin": "*"}), [])
        self.assertEqual(self.store.revision, revision)

    def test_unknown_key(self):
        """An unknown key is a 400 naming it, and nothing is written."""
        self.assertEqual(self.refused({"core.nonsense": "1"}), "cannot set 'core.nonsense' to '1': unknown key")
        self.assertEqual(self.store.revision, 0)

    def test_bad_value_names_key(self):
        """A bad value names the key and the value."""
        message = self.refused({"images.auto_update_interval": "often"})
        self.assertTrue(message.startswith("cannot set 'images.auto_update_interval' to 'often'"), message)
        self.assertIn("cannot set 'core.https_address' to '1.2.3.4:99999'",
                      self.refused({"core.https_address": "1.2.3.4:99999"}))
        self.assertIn("storage.lvm_volume_size", self.refused({"storage.lvm_volume_size": "10GiB"}))
        self.assertIn("images.compression_algorithm",
                      self.refused({"images.compression_algorithm": "no-such-compressor"}))
        self.assertIn("cluster.offline_threshold", self.refused({"cluster.offline_threshold": "3"}))

    def test_invalid_type(self):
        """Values must be strings or null."""
        self.assertEqual(self.refused({"core.https_allowed_credentials": True}),
                         "cannot set 'core.https_allowed_credentials': invalid type bool")
        self.assertEqual(self.refused({"images.auto_update_interval": 6}),
                         "cannot set 'images.auto_update_interval': invalid type float64")
        self.assertIn("config must be a map", self.refused(["a"]))

    def test_several_errors_nothing_applied(self):
        """With several problems the first (by key) is shown with a count; valid keys are not applied."""
        message = self.refused({"zz.unknown": "1", "images.auto_update_interval": "x",
                                "core.https_allowed_origin": "*"})
        self.assertEqual(message, "cannot set 'images.auto_update_interval' to 'x': "
                                  "Invalid value for an integer: x (and 1 more errors)")
        self.assertEqual(self.stored(), {})

    def test_known_daemon_keys_accepted(self):
        """The images.* and storage.* keys of this API level are stored for later use."""
        self.update({
            "images.auto_update_cached": "false", "images.compression_algorithm": "none",
            "images.remote_cache_expiry": "3", "storage.lvm_volume_size": "20GB",
            "storage.lvm_fstype": "xfs", "storage.zfs_remove_snapshots": "true",
            "core.https_allowed_credentials": "true", "core.proxy_http": "http://proxy:3128",
        })
        self.assertEqual(self.config.get("storage.lvm_volume_size"), "20GB")
        self.assertTrue(self.config.get_bool("core.https_allowed_credentials"))


class TrustPasswordTests(SynchronousTestCase):
    """`core.trust_password` is stored hashed, shown as `true`, kept by `true`, unset by null/""."""

    def setUp(self):
        self.store = MemoryStore()
        self.config = server.ServerConfig(self.store, defer_to_thread=inline_deferred_thread)

    def update(self, given, replace=False):
        return self.successResultOf(defer.Deferred.fromCoroutine(self.config.update(given, replace)))

    def matches(self, password):
        return self.successResultOf(defer.Deferred.fromCoroutine(self.config.check_password(password)))

    def test_stored_hashed_shown_true(self):
        """The stored value is salt+scrypt hex, never the password; GET shows `true`."""
        self.update({"core.trust_password": "s3cret"})
        stored = self.store.value("config", "server")["core.trust_password"]
        self.assertNotIn("s3cret", stored)
        self.assertEqual(len(bytes.fromhex(stored)), 32 + 64)
        self.assertEqual(self.config.render(), {"core.trust_password": True})
        self.assertTrue(self.matches("s3cret"))
        self.assertFalse(self.matches("wrong"))
        self.assertFalse(self.matches(""))

    def test_true_keeps(self):
        """A PUT carrying `true` (what `lxc config set` sends back) keeps the password."""
        self.update({"core.trust_password": "s3cret"})
        stored = self.store.value("config", "server")["core.trust_password"]
        self.update({"core.trust_password": True, "core.https_allowed_origin": "*"}, replace=True)
        self.assertEqual(self.store.value("config", "server")["core.trust_password"], stored)
        self.assertTrue(self.matches("s3cret"))

    def test_true_when_unset_sets_nothing(self):
        """`true` for an unset password does not invent one."""
        self.update({"core.trust_password": True})
        self.assertEqual(self.config.render(), {})
        self.assertFalse(self.matches("true"))

    def test_null_and_empty_unset(self):
        """`null` and `""` remove the password; a PUT without it removes it too."""
        for unset in (None, ""):
            self.update({"core.trust_password": "s3cret"})
            self.update({"core.trust_password": unset})
            self.assertEqual(self.config.render(), {})
            self.assertFalse(self.matches("s3cret"))
        self.update({"core.trust_password": "s3cret"})
        self.update({}, replace=True)
        self.assertFalse(self.matches("s3cret"))

    def test_change(self):
        """A new password replaces the old one."""
        self.update({"core.trust_password": "one"})
        self.update({"core.trust_password": "two"})
        self.assertFalse(self.matches("one"))
        self.assertTrue(self.matches("two"))

    def test_salted(self):
        """The same password hashes differently each time."""
        self.assertNotEqual(server.hash_password("pw"), server.hash_password("pw"))
        self.assertTrue(server.password_matches(server.hash_password("pw"), "pw"))
        self.assertFalse(server.password_matches("not hex", "pw"))


class PasswordCheckTimingTests(SynchronousTestCase):
    """The check runs scrypt whatever is set or given; the daemon's pool of its own is bounded."""

    def setUp(self):
        self.store = MemoryStore()
        self.calls = []

        def recording(fn, *args):
            self.calls.append(fn.__name__)
            return inline_deferred_thread(fn, *args)

        self.config = server.ServerConfig(self.store, defer_to_thread=recording)

    def matches(self, password):
        return self.successResultOf(defer.Deferred.fromCoroutine(self.config.check_password(password)))

    def test_scrypt_without_a_password(self):
        """No password set, an empty or a non-string guess: scrypt runs all the same, nothing matches."""
        for guess in ("guess", "", None, 5):
            self.assertFalse(self.matches(guess))
        self.assertEqual(self.calls, ["password_matches"] * 4)
        self.calls.clear()
        self.successResultOf(defer.Deferred.fromCoroutine(self.config.update({"core.trust_password": "pw"}, False)))
        self.calls.clear()
        self.assertFalse(self.matches(""))
        self.assertTrue(self.matches("pw"))
        self.assertEqual(self.calls, ["password_matches"] * 2)

    def test_odd_text(self):
        """A guess that is not encodable UTF-8 (a lone surrogate from JSON) is just wrong."""
        self.successResultOf(defer.Deferred.fromCoroutine(self.config.update({"core.trust_password": "pw"}, False)))
        self.assertFalse(self.matches("\ud800"))

    def test_hashing_pool_bounded(self):
        """HashingPool runs on the pool it is given, started on first use, and refuses work past
        its threads plus `max_waiting` (503) instead of queueing without end."""
        from lxdtx import errors
        from tests.unit.fakes import InlineReactor

        class Pool:
            max = 2
            started = stopped = False

            def __init__(self):
                self.work = []

            def start(self):
                self.started = True

            def stop(self):
                self.stopped = True

            def callInThreadWithCallback(self, on_result, fn, *args, **kwargs):
                self.work.append((on_result, fn, args))

        pool = Pool()
        hashing = server.HashingPool(InlineReactor(), pool, max_waiting=1)
        self.assertFalse(pool.started)
        pending = [hashing.run(str.upper, "x") for _ in range(3)]
        self.assertTrue(pool.started)
        refused = hashing.run(str.upper, "x")
        self.assertIsInstance(self.failureResultOf(refused, errors.Unavailable).value, errors.Unavailable)
        self.assertEqual(len(pool.work), 3)
        on_result, fn, args = pool.work.pop(0)
        on_result(True, fn(*args))
        self.assertEqual(self.successResultOf(pending[0]), "X")
        self.assertNoResult(hashing.run(str.upper, "y"))
        hashing.stop()
        self.assertTrue(pool.stopped)


class HiddenKeysTests(SynchronousTestCase):
    """Secrets among the server keys are never shown: `maas.api.key` as the trust password."""

    def test_maas_api_key_hidden(self):
        """`maas.api.key` is stored as given, shown as `true`, and kept by a PUT carrying `true`."""
        store = MemoryStore()
        config = server.ServerConfig(store, defer_to_thread=inline_deferred_thread)
        _run(self, config.update({"maas.api.key": "consumer:token:secret", "maas.api.url": "http://m"}, False))
        self.assertEqual(config.render(), {"maas.api.key": True, "maas.api.url": "http://m"})
        self.assertEqual(config.get("maas.api.key"), "consumer:token:secret")
        _run(self, config.update({"maas.api.key": True, "maas.api.url": "http://n"}, True))
        self.assertEqual(config.get("maas.api.key"), "consumer:token:secret")


class ApplyHookTests(SynchronousTestCase):
    """Live-apply hooks run before the commit and are undone when anything later fails."""

    def setUp(self):
        self.calls = []

    def make(self, store):
        config = server.ServerConfig(store, defer_to_thread=inline_deferred_thread)

        async def https(old, new):
            self.calls.append(("https", old, new))
            if new == "127.0.0.1:1":
                raise ConfigError([("core.https_address", "cannot listen")])

        config.on_apply("https_address", https)
        return config

    def test_hook_sees_old_and_new(self):
        """The hook gets (old, new); listeners hear the changed keys after the commit."""
        config = self.make(MemoryStore())
        heard = []
        config.on_change(heard.append)
        self.successResultOf(defer.Deferred.fromCoroutine(
            config.update({"core.https_address": "127.0.0.1:8443"}, False)))
        self.assertEqual(self.calls, [("https", "", "127.0.0.1:8443")])
        self.assertEqual(heard, [["core.https_address"]])

    def test_failing_hook_changes_nothing(self):
        """A refusing hook leaves the stored config as it was."""
        store = MemoryStore()
        config = self.make(store)
        self.failureResultOf(defer.Deferred.fromCoroutine(
            config.update({"core.https_address": "127.0.0.1:1", "core.https_allowed_origin": "*"}, False)),
            ConfigError)
        self.assertEqual(config.render(), {})
        self.assertEqual(store.revision, 0)

    def test_failed_commit_undoes_hooks(self):
        """When the commit fails the hook runs again with (new, old)."""
        config = self.make(FailingStore())
        self.failureResultOf(defer.Deferred.fromCoroutine(
            config.update({"core.https_address": "127.0.0.1:8443"}, False)), OSError)
        self.assertEqual(self.calls, [("https", "", "127.0.0.1:8443"), ("https", "127.0.0.1:8443", "")])
        self.assertEqual(config.render(), {})


class CorsTests(SynchronousTestCase):
    """Access-Control-* headers from the core.https_allowed_* keys."""

    def setUp(self):
        self.store = MemoryStore()
        self.config = server.ServerConfig(self.store, defer_to_thread=inline_deferred_thread)
        self.cors = Cors(self.config)

    def answer(self, origin=None):
        request = DummyRequest([b""])
        if origin:
            request.requestHeaders.setRawHeaders(b"origin", [origin])
        self.cors.apply(request)
        return {k.lower(): v[0] for k, v in request.responseHeaders.getAllRawHeaders()}

    def test_nothing_configured(self):
        """No keys, no headers."""
        self.assertEqual(self.answer(b"http://example.com"), {})

    def test_origin_headers_need_origin(self):
        """Origin/methods/headers are added only when the request has an Origin."""
        self.successResultOf(defer.Deferred.fromCoroutine(self.config.update({
            "core.https_allowed_origin": "http://example.com",
            "core.https_allowed_methods": "GET, POST",
            "core.https_allowed_headers": "Content-Type",
        }, False)))
        self.assertEqual(self.answer(), {})
        self.assertEqual(self.answer(b"http://example.com"), {
            b"access-control-allow-origin": b"http://example.com",
            b"access-control-allow-methods": b"GET, POST",
            b"access-control-allow-headers": b"Content-Type",
        })

    def test_credentials_always(self):
        """Allow-Credentials is sent whenever https_allowed_credentials is true."""
        self.successResultOf(defer.Deferred.fromCoroutine(
            self.config.update({"core.https_allowed_credentials": "true"}, False)))
        self.assertEqual(self.answer(), {b"access-control-allow-credentials": b"true"})
