# -*- test-case-name: tests.integration.test_macaroon -*-
"""`core.macaroon.endpoint`: HTTPS clients that log in with Candid, the daemon's side.

With the key set, an HTTPS request that carries the bakery protocol header
(`Bakery-Protocol-Version`, sent by clients of auth type candid) is judged by
its macaroons instead of its certificate, as LXD 3.x does (rest-api.md §2). A
request that is refused for want of them gets a macaroon to discharge at the
endpoint (lxdtx.macaroons) instead of a 403.

Candid's public key is fetched with treq the first time a macaroon is minted
for an endpoint (`GET <endpoint>/discharge/info`, else `/publickey`), and kept;
a failed fetch is tried again by the next client (the error tells it why). macaroonbakery and its
dependencies are imported only once the key is in use.
"""

import os

from twisted.logger import Logger

from lxdtx import tls
from lxdtx.response import ErrorResponse, Response

# A test knob: how long minted macaroons live (LXD 3.x: five minutes).
EXPIRY_ENV = "LXDTX_MACAROON_EXPIRY"
FETCH_TIMEOUT = 30
MAX_INFO = 64 * 1024
PROTOCOL_HEADER = b"bakery-protocol-version"


class CandidError(Exception):
    """Candid's public key could not be had; the message says why."""


class Candid:
    """The logins of one daemon: its endpoint, root keys and Candid's key, per request checks."""

    log = Logger()

    def __init__(self, config, store, reactor, environ=os.environ):
        self._config = config  # the server config, for `core.macaroon.endpoint`
        self._store = store  # where the root keys are kept
        self._reactor = reactor
        self._login = None  # lxdtx.macaroons.Login of the endpoint in use
        self.expiry = int(environ.get(EXPIRY_ENV) or 300)

    @property
    def endpoint(self):
        return self._config.get("core.macaroon.endpoint") or ""

    def applies(self, http):
        """Whether the request's macaroons, not its certificate, decide (key set, bakery header sent)."""
        return bool(self.endpoint) and http.getHeader(PROTOCOL_HEADER) is not None

    def login(self):
        """The lxdtx.macaroons.Login of the endpoint now set (made anew when it changes)."""
        endpoint = self.endpoint
        if self._login is None or self._login.endpoint != endpoint:
            from lxdtx import macaroons

            keys = macaroons.RootKeys(self._store, endpoint, expiry=self.expiry)
            self._login = macaroons.Login(endpoint, keys, expiry=self.expiry)
        return self._login

    def authenticate(self, http):
        """Whether the request's macaroons prove a Candid user; notes who on it, or what it must discharge.

        Sets `http.auth_user` to ("candid", name) when they do, else
        `http.discharge_required` to the bakery's DischargeRequiredError.
        """
        headers = {"Cookie": _header(http, b"cookie"), "Macaroons": _header(http, b"macaroons")}
        # Before its body arrives (lxdtx.router.ApiHTTPRequest.gotLength) a request has only
        # its channel's request line.
        if http.path is not None:
            raw, method = http.path, http.method
        else:
            raw, method = http.channel._path.partition(b"?")[0], http.channel._command
        path = raw.decode("utf-8", "replace")
        user, needed = self.login().check(headers, path, method.decode("ascii", "replace"))
        if user is None:
            http.discharge_required = needed
            return False
        http.auth_user = ("candid", user)
        return True

    def refusal(self, http):
        """The answer to a request refused for want of a login: a macaroon to discharge."""
        return DischargeRequired(self, http)

    def ready(self):
        login = self.login()
        return login.has_info and login.root_keys.ready()

    async def prepare(self):
        """Fetch Candid's key (once) and make sure a root key mints; CandidError when Candid can't be had."""
        login = self.login()
        await login.root_keys.ensure()
        if login.has_info:
            return
        # Clients that come at once may each fetch it: a few small GETs, no shared state to keep.
        info = await self._fetch_info(login.endpoint)
        if self.login() is login:
            login.add_info(info)

    async def _fetch_info(self, endpoint):
        from lxdtx import macaroons

        base = endpoint.rstrip("/")
        for path, version in (("/discharge/info", None), ("/publickey", 1)):
            code, document = await self._get_json(base + path)
            if code == 404:
                continue
            if code != 200:
                raise CandidError(f"Candid at {endpoint} answered {code} for {path}")
            try:
                return macaroons.third_party_info(document, version)
            except ValueError as e:
                raise CandidError(f"Candid at {endpoint} sent an unusable {path}: {e}") from None
        raise CandidError(f"Candid at {endpoint} has neither /discharge/info nor /publickey")

    async def _get_json(self, url):
        import json

        import treq
        from twisted.web.client import Agent, HTTPConnectionPool

        from lxdtx import errors, macaroons

        reactor = self._reactor
        agent = Agent(reactor, contextFactory=tls.RemotePolicy(), connectTimeout=FETCH_TIMEOUT,
                      pool=HTTPConnectionPool(reactor, persistent=False))
        headers = {macaroons.PROTOCOL_HEADER.encode(): [b"3"], b"Accept": [b"application/json"]}
        try:
            response = await treq.get(url, headers=headers, agent=agent, timeout=FETCH_TIMEOUT,
                                      reactor=reactor, allow_redirects=False)
            if response.length is not None and response.length != b"" and isinstance(response.length, int) \
                    and response.length > MAX_INFO:
                raise CandidError(f"Candid's answer for {url} is too large")
            body = await treq.content(response)
        except CandidError:
            raise
        except Exception as e:
            raise CandidError(f"Failed to reach Candid at {url}: {errors.describe(e)}") from None
        if response.code != 200:
            return response.code, None
        if len(body) > MAX_INFO:
            raise CandidError(f"Candid's answer for {url} is too large")
        try:
            return 200, json.loads(body)
        except ValueError:
            raise CandidError(f"Candid sent no valid JSON for {url}") from None


def _header(http, name):
    values = http.requestHeaders.getRawHeaders(name)
    if not values:
        return None
    return ", ".join(v.decode("latin-1") for v in values) if name == b"macaroons" else \
        "; ".join(v.decode("latin-1") for v in values)


class DischargeRequired(Response):
    """401 (407 for bakery protocol 0) with a login macaroon to discharge at the Candid endpoint.

    Rendering mints the macaroon, which needs Candid's key and a root key:
    `ready` says whether they are at hand, `settle` (async) gets them and returns
    the response to render, this one or the error saying why Candid can't be had.
    """

    def __init__(self, candid, http):
        self._candid = candid
        self._needed = http.discharge_required
        self._version = http.getHeader(PROTOCOL_HEADER)

    @property
    def ready(self):
        return self._candid.ready()

    async def settle(self):
        try:
            await self._candid.prepare()
        except CandidError as e:
            self._candid.log.warn("Cannot ask a client to log in: {error}", error=str(e))
            return ErrorResponse(500, str(e))
        except Exception:
            self._candid.log.failure("Cannot ask a client to log in")
            return ErrorResponse(500, "Cannot mint a macaroon to log in with")
        return self

    def render(self, request):
        from lxdtx import macaroons

        version = macaroons.protocol_version(self._version.decode("latin-1") if self._version else None)
        macaroon = self._candid.login().mint(self._needed, version)
        code, headers, body = macaroons.discharge_required(macaroon, version)
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        return body
