"""Candid login macaroons: root keys in the store, minting, checking, the discharge-required answer."""

import base64
import json

import macaroonbakery.bakery as bakery
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import macaroons
from lxdtx.config.server import SCHEMA
from lxdtx.state.store import MemoryStore
from tests.candid import Candid

ENDPOINT = "http://127.0.0.1:8081"


class FakeTime:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class _StoreTestCase(SynchronousTestCase):
    def setUp(self):
        self.store = MemoryStore()
        self.successResultOf(defer.Deferred.fromCoroutine(self.store.open()))
        self.time = FakeTime()

    def ensure(self, keys):
        self.successResultOf(defer.Deferred.fromCoroutine(keys.ensure()))


class RootKeysTests(_StoreTestCase):
    """Root keys as state store documents: made when needed, rotated, dropped when no macaroon needs them."""

    def test_made_once(self):
        """`ensure` makes one key; `root_key` returns it and `get` finds it by its id; a second ensure keeps it."""
        keys = macaroons.RootKeys(self.store, clock=self.time)
        self.assertFalse(keys.ready())
        self.ensure(keys)
        self.assertTrue(keys.ready())
        key, id = keys.root_key()
        self.assertEqual(len(key), 24)
        self.assertEqual(keys.get(id), key)
        self.ensure(keys)
        self.assertEqual(self.store.names(macaroons.ROOT_KEY_KIND), [id.decode()])

    def test_rotation(self):
        """After ROTATE a new key mints; the old one still checks until its macaroons expired, then goes."""
        keys = macaroons.RootKeys(self.store, expiry=300, clock=self.time)
        self.ensure(keys)
        old_key, old_id = keys.root_key()
        self.time.now += macaroons.ROTATE
        self.assertFalse(keys.ready())
        self.ensure(keys)
        _, new_id = keys.root_key()
        self.assertNotEqual(new_id, old_id)
        self.assertEqual(keys.get(old_id), old_key)
        self.time.now += 300
        self.assertIsNone(keys.get(old_id))
        self.ensure(keys)
        self.assertEqual(self.store.names(macaroons.ROOT_KEY_KIND), [new_id.decode()])

    def test_unknown_ids(self):
        """Ids that name no key, or are no text at all, find nothing."""
        keys = macaroons.RootKeys(self.store, clock=self.time)
        self.ensure(keys)
        self.assertIsNone(keys.get(b"00" * 16))
        self.assertIsNone(keys.get(b"\xff\xfe"))

    def test_root_key_needs_ensure(self):
        """Minting without a key is a programming error, said so."""
        self.assertRaises(RuntimeError, macaroons.RootKeys(self.store, clock=self.time).root_key)


class LoginTests(_StoreTestCase):
    """Login macaroons minted, discharged by Candid and checked."""

    def setUp(self):
        super().setUp()
        self.candid = Candid({"alice": "pw"})
        self.login = self.make_login()

    def make_login(self, expiry=300):
        keys = macaroons.RootKeys(self.store, ENDPOINT, expiry=expiry, clock=self.time)
        self.ensure(keys)
        login = macaroons.Login(ENDPOINT, keys, expiry=expiry, clock=self.time)
        login.add_info(bakery.ThirdPartyInfo(version=bakery.LATEST_VERSION, public_key=self.candid.key.public_key))
        return login

    def asked(self, login=None):
        """The macaroon a client with none is given, as JSON (what the 401 carries)."""
        login = login or self.login
        user, needed = login.check({}, "/1.0", "GET")
        self.assertIsNone(user)
        return login.mint(needed, bakery.LATEST_VERSION).to_dict()

    def cookie_headers(self, cookie):
        return {"Cookie": f"macaroon-auth={cookie}"}

    def test_nothing_asks_for_login(self):
        """No macaroon: the login operation is needed, with Candid's need-declared caveat."""
        user, needed = self.login.check({}, "/1.0", "GET")
        self.assertIsNone(user)
        self.assertEqual(needed.ops(), [bakery.LOGIN_OP])
        [caveat] = needed.cavs()
        self.assertEqual(caveat.location, ENDPOINT)
        self.assertEqual(caveat.condition, "need-declared username is-authenticated-user")

    def test_minted_macaroon(self):
        """The macaroon expires in `expiry` seconds, and its third-party caveat is for Candid to read."""
        minted = bakery.Macaroon.from_dict(self.asked())
        caveats = minted.macaroon.caveats
        self.assertEqual(caveats[0].caveat_id_bytes, b"time-before 2027-01-15T08:05:00.000000Z")
        [third] = [c for c in caveats if c.location]
        self.assertEqual(third.location, ENDPOINT)
        info = bakery.decode_caveat(self.candid.key, minted.caveat_data[third.caveat_id_bytes])
        self.assertEqual(info.condition, "need-declared username is-authenticated-user")
        self.assertEqual(minted.macaroon.location, ENDPOINT)

    def test_discharged_login(self):
        """With Candid's discharge the macaroon proves the declared user, for any path and method."""
        cookie = self.candid.login_cookie(self.asked(), "alice")
        self.assertEqual(self.login.check(self.cookie_headers(cookie), "/1.0", "GET"), ("alice", None))
        self.assertEqual(self.login.check({"Macaroons": cookie}, "/1.0/containers", "POST")[0], "alice")

    def test_forged_discharge(self):
        """A discharge whose signature was changed proves nothing."""
        cookie = self.candid.login_cookie(self.asked(), "alice")
        ms = json.loads(base64.b64decode(cookie))
        ms[1]["s64"] = ("A" if ms[1]["s64"][0] != "A" else "B") + ms[1]["s64"][1:]
        forged = base64.b64encode(json.dumps(ms).encode()).decode()
        user, needed = self.login.check(self.cookie_headers(forged), "/1.0", "GET")
        self.assertIsNone(user)
        self.assertEqual(needed.ops(), [bakery.LOGIN_OP])

    def test_garbage(self):
        """Cookies that are not macaroons, or macaroons of another key, ask for a login again."""
        for value in ["x", base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b'[{"i": "x"}]').decode()]:
            user, needed = self.login.check(self.cookie_headers(value), "/1.0", "GET")
            self.assertIsNone(user)
            self.assertIsNotNone(needed)
        other = MemoryStore()
        self.successResultOf(defer.Deferred.fromCoroutine(other.open()))
        keys = macaroons.RootKeys(other, ENDPOINT, clock=self.time)
        self.successResultOf(defer.Deferred.fromCoroutine(keys.ensure()))
        stranger = macaroons.Login(ENDPOINT, keys, clock=self.time)
        stranger.add_info(bakery.ThirdPartyInfo(version=bakery.LATEST_VERSION, public_key=self.candid.key.public_key))
        cookie = self.candid.login_cookie(self.asked(stranger), "alice")
        self.assertIsNone(self.login.check(self.cookie_headers(cookie), "/1.0", "GET")[0])

    def test_expiry(self):
        """The login works until its time-before, then asks for a new one."""
        cookie = self.candid.login_cookie(self.asked(), "alice")
        self.time.now += 299
        self.assertEqual(self.login.check(self.cookie_headers(cookie), "/1.0", "GET")[0], "alice")
        self.time.now += 2
        self.assertIsNone(self.login.check(self.cookie_headers(cookie), "/1.0", "GET")[0])

    def test_other_endpoint(self):
        """Pointed at another Candid, the daemon takes no login minted for the last one; its keys go."""
        cookie = self.candid.login_cookie(self.asked(), "alice")
        keys = macaroons.RootKeys(self.store, "https://other.example", clock=self.time)
        other = macaroons.Login("https://other.example", keys, clock=self.time)
        self.assertIsNone(other.check(self.cookie_headers(cookie), "/1.0", "GET")[0])
        self.ensure(keys)
        self.assertEqual(len(self.store.names(macaroons.ROOT_KEY_KIND)), 1)
        self.assertIsNone(self.login.check(self.cookie_headers(cookie), "/1.0", "GET")[0])

    def test_survives_restart(self):
        """A new Login on the same store (a restarted daemon) checks macaroons the old one minted."""
        cookie = self.candid.login_cookie(self.asked(), "alice")
        again = macaroons.Login(ENDPOINT, macaroons.RootKeys(self.store, ENDPOINT, clock=self.time), clock=self.time)
        self.assertEqual(again.check(self.cookie_headers(cookie), "/1.0", "GET")[0], "alice")


class AnswerTests(SynchronousTestCase):
    """The discharge-required answer and the bits of the protocol around it."""

    def macaroon(self):
        return bakery.Macaroon(root_key=b"k" * 24, id=b"id", location=ENDPOINT, version=bakery.LATEST_VERSION)

    def test_discharge_required_body(self):
        """401, WWW-Authenticate: Macaroon, the bakery error body with path / and cookie suffix auth."""
        code, headers, body = macaroons.discharge_required(self.macaroon(), 3)
        self.assertEqual(code, 401)
        self.assertEqual(headers["WWW-Authenticate"], "Macaroon")
        self.assertEqual(headers["Content-Type"], "application/json")
        parsed = json.loads(body)
        self.assertEqual(parsed["Code"], "macaroon discharge required")
        self.assertEqual(parsed["Message"], "authentication required")
        self.assertEqual(parsed["Info"]["MacaroonPath"], "/")
        self.assertEqual(parsed["Info"]["CookieNameSuffix"], "auth")
        self.assertEqual(parsed["Info"]["Macaroon"]["m"]["l"], ENDPOINT)

    def test_version_0(self):
        """Bakery protocol 0 clients get 407 without WWW-Authenticate."""
        code, headers, _ = macaroons.discharge_required(self.macaroon(), 0)
        self.assertEqual(code, 407)
        self.assertNotIn("WWW-Authenticate", headers)

    def test_protocol_version(self):
        """The header's version, the latest known one when newer, 1 when absent or garbage."""
        self.assertEqual(macaroons.protocol_version("3"), 3)
        self.assertEqual(macaroons.protocol_version("0"), 0)
        self.assertEqual(macaroons.protocol_version("99"), bakery.LATEST_VERSION)
        self.assertEqual(macaroons.protocol_version("three"), 1)
        self.assertEqual(macaroons.protocol_version(None), 1)

    def test_third_party_info(self):
        """Candid's /discharge/info (key and version) and /publickey (key only: version 1); bad ones refused."""
        key = bakery.generate_key().public_key
        info = macaroons.third_party_info({"PublicKey": key.serialize().decode(), "Version": 3})
        self.assertEqual((info.version, info.public_key.key), (3, key.key))
        self.assertEqual(macaroons.third_party_info({"PublicKey": key.serialize().decode()}, 1).version, 1)
        for bad in [None, {}, {"PublicKey": 5}, {"PublicKey": "c2hvcnQ="}, {"PublicKey": key.serialize().decode(),
                                                                             "Version": "3"}]:
            self.assertRaises(ValueError, macaroons.third_party_info, bad)

    def test_endpoint_key(self):
        """core.macaroon.endpoint takes http(s) URLs with a host only."""
        rule = SCHEMA.lookup("core.macaroon.endpoint")
        rule.validate("https://candid.example:8081")
        rule.validate("http://127.0.0.1:8081/")
        for bad in ["candid.example", "ftp://candid.example", "https://", "http://host:port"]:
            self.assertRaises(ValueError, rule.validate, bad)
