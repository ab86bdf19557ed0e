"""A small Candid for tests: the discharge protocol with the `form` login, on loopback.

It speaks what the `lxc` client's bakery (httpbakery and its form interactor)
expects of Candid:

* `GET /discharge/info` and `GET /publickey`: its public key (and bakery version);
* `POST /discharge` (form: `id`/`id64`, `caveat64`, `token`/`token64`, `token-kind`):
  without a valid login token, 401 `interaction required` offering the `form`
  method; with one, the discharge of the `is-authenticated-user` caveat,
  declaring the user's name;
* `GET /form`: the login form's schema (username, password);
  `POST /form` (`{"form": {...}}`): a token for the right password.

The crypto is macaroonbakery's (`bakery.discharge`). It runs in a thread of the
test process on 127.0.0.1 and a free port, and records the paths it was asked for.
"""

import base64
import datetime
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import macaroonbakery.bakery as bakery
import macaroonbakery.checkers as checkers
import macaroonbakery.httpbakery as httpbakery

SCHEMA = {
    "username": {"type": "string", "description": "Username", "mandatory": True},
    "password": {"type": "string", "description": "Password", "mandatory": True, "secret": True},
}


class _Checker(bakery.ThirdPartyCaveatChecker):
    """Discharges `is-authenticated-user` for the user whose login token came along."""

    def __init__(self, user, expiry):
        self.user = user
        self.expiry = expiry

    def check_third_party_caveat(self, ctx, info):
        if info.condition != "is-authenticated-user":
            raise bakery.CaveatNotRecognizedError(f"caveat not recognized: {info.condition}")
        caveats = [checkers.declared_caveat("username", self.user)]
        if self.expiry is not None:
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            caveats.append(checkers.time_before_caveat(now + datetime.timedelta(seconds=self.expiry)))
        return caveats


class Candid:
    """The server: `users` maps names to passwords; `start()`, `url`, `stop()`."""

    def __init__(self, users):
        self.users = dict(users)
        self.key = bakery.generate_key()
        self.tokens = {}  # token -> user name
        self.requests = []  # (method, path) in order
        # Discharges expire after this many seconds (None: only the daemon's own expiry).
        self.discharge_expiry = None
        # Refuse every discharge, whatever the login (a user Candid will not vouch for).
        self.refuse = False
        self._server = None
        self._thread = None

    @property
    def url(self):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        candid = self

        class Handler(_Handler):
            server_state = candid

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-candid", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None

    def paths(self):
        return [path for _, path in self.requests]

    def login_cookie(self, macaroon_json, user):
        """The `macaroon-auth` cookie value of a client that logged in as `user`: the daemon's
        macaroon `macaroon_json` (of a discharge-required answer) with this Candid's discharge."""
        primary = bakery.Macaroon.from_dict(macaroon_json)

        def get_discharge(caveat, payload):
            payload = payload or primary.caveat_data.get(caveat.caveat_id_bytes)
            return bakery.discharge(checkers.AuthContext(), caveat.caveat_id_bytes, payload, self.key,
                                    _Checker(user, self.discharge_expiry), bakery.ThirdPartyStore())

        bound = bakery.discharge_all(primary, get_discharge)
        return base64.b64encode(json.dumps([bakery.macaroon_to_dict(m) for m in bound]).encode()).decode()


class _Handler(BaseHTTPRequestHandler):
    server_state: Candid
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, code, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code, bakery_code, message, info=None):
        body = {"Code": bakery_code, "Message": message}
        if info is not None:
            body["Info"] = info
        self._send(code, body, [("WWW-Authenticate", "Macaroon")] if code == 401 else ())

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        state = self.server_state
        path = urlsplit(self.path).path
        state.requests.append(("GET", path))
        public = state.key.public_key.serialize().decode()
        if path == "/discharge/info":
            self._send(200, {"PublicKey": public, "Version": bakery.LATEST_VERSION})
        elif path == "/publickey":
            self._send(200, {"PublicKey": public})
        elif path == "/form":
            self._send(200, {"schema": SCHEMA})
        else:
            self._error(404, "not found", f"no {path} here")

    def do_POST(self):
        state = self.server_state
        url = urlsplit(self.path)
        path = url.path
        state.requests.append(("POST", path))
        body = self._body()
        if path == "/form":
            self._login(json.loads(body or b"{}"))
        elif path == "/discharge":
            # httprequest sends the form fields in the query; a body may carry them too.
            self._discharge({**dict(parse_qsl(url.query)), **dict(parse_qsl(body.decode()))})
        else:
            self._error(404, "not found", f"no {path} here")

    def _login(self, request):
        state = self.server_state
        form = request.get("form") or {}
        user, password = form.get("username"), form.get("password")
        if not user or state.users.get(user) != password:
            self._error(401, "unauthorized", "invalid username or password")
            return
        token = os.urandom(16).hex()
        state.tokens[token] = user
        self._send(200, {"token": {"kind": "form", "value": base64.b64encode(token.encode()).decode()}})

    def _discharge(self, form):
        state = self.server_state
        token = form.get("token")
        if token is None and form.get("token64"):
            token = bakery.b64decode(form["token64"]).decode("ascii", "replace")
        user = state.tokens.get(token) if form.get("token-kind") == "form" else None
        if user is None:
            host, port = self.server.server_address[:2]
            self._error(401, httpbakery.ERR_INTERACTION_REQUIRED, "login required", {
                "InteractionMethods": {"form": {"url": f"http://{host}:{port}/form"}},
            })
            return
        if state.refuse:
            self._error(403, "permission denied", f"user {user} may not log in here")
            return
        try:
            discharged = httpbakery.discharge(
                checkers.AuthContext(), form, state.key, bakery.ThirdPartyStore(),
                _Checker(user, state.discharge_expiry))
        except Exception as e:
            self._error(400, "bad request", f"cannot discharge: {e}")
            return
        self._send(200, {"Macaroon": discharged.to_dict()})


def wait_started(candid, timeout=10):
    """True once the server answers (it starts in a thread)."""
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            host, port = candid._server.server_address[:2]
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/publickey")
            conn.getresponse().read()
            conn.close()
            candid.requests.pop()
            return True
        except OSError:
            time.sleep(0.05)
    return False
