# -*- test-case-name: tests.unit.test_macaroons -*-
"""Macaroons for Candid logins: minting, checking, and the discharge-required answer.

The bakery protocol is macaroonbakery's (Oven, Checker, third-party caveats);
this module only says what LXD 3.x says with it:

* a client with no (valid) macaroon is asked to log in: the macaroon minted for
  it is for the login operation, expires in EXPIRY seconds (a `time-before`
  caveat), and carries the third-party caveat `need-declared username
  is-authenticated-user` addressed to the Candid endpoint;
* the answer is 401 (407 for bakery protocol version 0) with
  `WWW-Authenticate: Macaroon` and the bakery error body, code `macaroon
  discharge required`, `MacaroonPath` `/` and cookie name suffix `auth` (the
  client keeps it as cookie `macaroon-auth`);
* a login macaroon with Candid's discharge declares the user: any operation
  (entity: the request path, action: its method) is allowed to it.

Root keys are documents in the state store, so macaroons survive a restart;
a key mints for ROTATE seconds and is kept until the last macaroon it minted
has expired. Everything here is CPU work of a millisecond or so: no I/O.
"""

import datetime
import os
import time

import macaroonbakery.bakery as bakery
import macaroonbakery.checkers as checkers
import macaroonbakery.httpbakery as httpbakery

from lxdtx.state import ABSENT, Delete, Put

ROOT_KEY_KIND = "macaroon-root-key"
# LXD 3.x mints macaroons valid for five minutes.
EXPIRY = 300
# How long one root key mints new macaroons before the next one takes over.
ROTATE = 24 * 3600
COOKIE_SUFFIX = "auth"
MACAROON_PATH = "/"
PROTOCOL_HEADER = httpbakery.BAKERY_PROTOCOL_HEADER
USER_ATTRIBUTE = "username"
LOGIN_CONDITION = "is-authenticated-user"


class RootKeys:
    """macaroonbakery's root key store (`get`, `root_key`) on state store documents.

    A document is named by the key's id (hex) and holds the key (hex), when it was
    made and the Candid endpoint it is for: a daemon pointed at another Candid
    takes no macaroon minted for the last one. `ensure` (async: it commits) makes
    a new key when none mints any more and drops those no macaroon can need;
    `root_key` only reads.
    """

    def __init__(self, store, endpoint="", expiry=EXPIRY, clock=time.time):
        self._store = store
        self._endpoint = endpoint
        self._expiry = expiry
        self._clock = clock

    def get(self, id):
        try:
            name = id.decode("ascii")
        except (AttributeError, UnicodeDecodeError):
            return None
        value = self._store.value(ROOT_KEY_KIND, name)
        if not isinstance(value, dict) or not self._usable(value, self._clock()):
            return None
        try:
            return bytes.fromhex(value["key"])
        except (KeyError, TypeError, ValueError):
            return None

    def _usable(self, value, now):
        """A key of this endpoint is good for checking until its last macaroon has expired."""
        return value.get("endpoint", "") == self._endpoint and now < value.get("created", 0) + ROTATE + self._expiry

    def _minting(self, now):
        """(name, value) of the newest key still minting, or None."""
        newest = None
        for doc in self._store.list(ROOT_KEY_KIND):
            if not isinstance(doc.value, dict) or doc.value.get("endpoint", "") != self._endpoint:
                continue
            created = doc.value.get("created", 0)
            if now - created < ROTATE and (newest is None or created > newest[1]["created"]):
                newest = (doc.name, doc.value)
        return newest

    def root_key(self):
        current = self._minting(self._clock())
        if current is None:
            raise RuntimeError("no macaroon root key: RootKeys.ensure was not awaited")
        return bytes.fromhex(current[1]["key"]), current[0].encode("ascii")

    def ready(self):
        return self._minting(self._clock()) is not None

    async def ensure(self):
        """A key that mints exists (made now if needed); keys no macaroon can need are gone."""
        now = self._clock()
        changes = [Delete(ROOT_KEY_KIND, doc.name) for doc in self._store.list(ROOT_KEY_KIND)
                   if not isinstance(doc.value, dict) or not self._usable(doc.value, now)]
        if self._minting(now) is None:
            changes.append(Put(ROOT_KEY_KIND, os.urandom(16).hex(),
                               {"key": os.urandom(24).hex(), "created": now, "endpoint": self._endpoint},
                               expect=ABSENT))
        if changes:
            await self._store.commit(changes)


class CandidIdentity:
    """The identity client of a Candid login: who the discharge declared, or the caveat to ask."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def identity_from_context(self, ctx):
        caveat = checkers.Caveat(location=self.endpoint, condition=LOGIN_CONDITION)
        return None, [checkers.need_declared_caveat(caveat, [USER_ATTRIBUTE])]

    def declared_identity(self, ctx, declared):
        user = declared.get(USER_ATTRIBUTE)
        if not user:
            raise bakery.IdentityError("no username declared")
        return bakery.SimpleIdentity(user)


def _any_user(ctx, identity, op):
    """Every Candid user may do everything (LXD 3.x has no finer access control)."""
    return identity is not None, None


class _Clock:
    def __init__(self, seconds):
        self._seconds = seconds

    def utcnow(self):
        return datetime.datetime.fromtimestamp(self._seconds(), datetime.UTC).replace(tzinfo=None)


class Login:
    """Macaroon logins through the Candid at `endpoint`.

    Checking needs only the root keys; minting also needs Candid's third-party
    info (its public key and bakery version), given by `add_info` once fetched.
    `oven_key` is the key pair third-party caveats are encrypted with (a fresh
    one is fine: no discharge needs it again).
    """

    def __init__(self, endpoint, root_keys, expiry=EXPIRY, clock=time.time, oven_key=None):
        self.endpoint = endpoint
        self.expiry = expiry
        self._clock = clock
        self.root_keys = root_keys
        self._locator = bakery.ThirdPartyStore()
        self.has_info = False
        # LXD names the Candid endpoint as the location of the macaroons it mints.
        self._bakery = bakery.Bakery(
            location=endpoint, locator=self._locator, key=oven_key or bakery.generate_key(),
            identity_client=CandidIdentity(endpoint), root_key_store=root_keys,
            authorizer=bakery.AuthorizerFunc(_any_user))

    def add_info(self, info):
        """Candid's bakery.ThirdPartyInfo: from now on macaroons can be minted."""
        self._locator.add_info(self.endpoint, info)
        self.has_info = True

    def _context(self):
        return checkers.context_with_clock(checkers.AuthContext(), _Clock(self._clock))

    def check(self, headers, path, method):
        """The user name the request's macaroons prove, else the DischargeRequiredError to answer.

        `headers` maps `Cookie` and `Macaroons` to their values (absent: None).
        Macaroons that do not parse, are forged, expired or not discharged all
        come to the same: the client is asked to log in again.
        """
        try:
            found = httpbakery.extract_macaroons(headers)
        except Exception:
            found = []
        op = bakery.Op(entity=path, action=method)
        try:
            info = self._bakery.checker.auth(found).allow(self._context(), [op])
        except bakery.DischargeRequiredError as e:
            return None, e
        except Exception:  # PermissionDenied, AuthInitError: garbage that happened to parse
            return None, self._login_required()
        if info.identity is None:
            return None, self._login_required()
        return info.identity.id(), None

    def _login_required(self):
        caveats = CandidIdentity(self.endpoint).identity_from_context(None)[1]
        return bakery.DischargeRequiredError("authentication required", [bakery.LOGIN_OP], caveats)

    def mint(self, error, version):
        """A macaroon for what `error` asks, for a client of bakery protocol `version`."""
        expiry = datetime.datetime.fromtimestamp(self._clock() + self.expiry, datetime.UTC).replace(tzinfo=None)
        return self._bakery.oven.macaroon(version, expiry, error.cavs(), error.ops())


def third_party_info(document, version=None):
    """bakery.ThirdPartyInfo from Candid's `/discharge/info` (or `/publickey`) JSON; ValueError if unusable."""
    if not isinstance(document, dict) or not isinstance(document.get("PublicKey"), str):
        raise ValueError("no public key in the answer")
    try:
        key = bakery.PublicKey.deserialize(document["PublicKey"])
    except Exception:
        raise ValueError("the public key is not valid") from None
    if version is None:
        version = document.get("Version", bakery.VERSION_1)
    if not isinstance(version, int) or version < 0:
        raise ValueError("the bakery version is not valid")
    return bakery.ThirdPartyInfo(version=min(version, bakery.LATEST_VERSION), public_key=key)


def protocol_version(value):
    """The bakery protocol version a client asks for with PROTOCOL_HEADER (its raw value)."""
    return httpbakery.request_version({PROTOCOL_HEADER: value} if value is not None else {})


def discharge_required(macaroon, version, message="authentication required"):
    """(status, headers, body) of the answer asking a client to discharge `macaroon`."""
    body, headers = httpbakery.discharge_required_response(macaroon, MACAROON_PATH, COOKIE_SUFFIX, message)
    if version < bakery.VERSION_1:
        # Protocol 0 clients know only 407, without the WWW-Authenticate header.
        headers = {k: v for k, v in headers.items() if k != "WWW-Authenticate"}
        return 407, headers, body
    return 401, headers, body
