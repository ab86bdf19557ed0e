"""The router: path matching, methods, trust, readiness, body limits and handler results.

Requests go through a real twisted.web HTTP channel on a StringTransport, so the
body-limit code sees the same calls (`gotLength`, `handleContentChunk`) as it
does on a socket.
"""

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.response import SyncResponse, empty, etag_of
from lxdtx.router import Action, Endpoint, Routes
from tests.unit.fakes import FakeDaemon, FakeTrust, HTTPAnswer, exchange, make_site, request_bytes, temp_dir


class RoutesTests(SynchronousTestCase):
    """Static paths, `{name}` and `{name:*}` parameters, aliases."""

    def setUp(self):
        self.static = Endpoint("/1.0/profiles")
        self.one = Endpoint("/1.0/profiles/{name}")
        self.rest = Endpoint("/1.0/images/aliases/{name:*}")
        self.nested = Endpoint("/1.0/containers/{name}/snapshots/{snap}", aliases=("/1.0/instances/{name}/snapshots/{snap}",))
        self.routes = Routes([self.static, self.one, self.rest, self.nested])

    def test_static(self):
        """A static path matches exactly and has no parameters."""
        self.assertEqual(self.routes.match("/1.0/profiles"), (self.static, {}))

    def test_trailing_slash(self):
        """Strict slashes: `/1.0/profiles/` is not a route."""
        self.assertEqual(self.routes.match("/1.0/profiles/"), (None, None))
        self.assertEqual(self.routes.match("/1.0/profiles/p1/"), (None, None))

    def test_one_segment(self):
        """`{name}` takes one segment, percent-decoded after matching."""
        self.assertEqual(self.routes.match("/1.0/profiles/p1"), (self.one, {"name": "p1"}))
        self.assertEqual(self.routes.match("/1.0/profiles/a%2Fb"), (self.one, {"name": "a/b"}))
        self.assertEqual(self.routes.match("/1.0/profiles/a%20b"), (self.one, {"name": "a b"}))
        self.assertEqual(self.routes.match("/1.0/profiles/a/b"), (None, None))

    def test_rest(self):
        """`{name:*}` takes the rest of the path, slashes included."""
        self.assertEqual(self.routes.match("/1.0/images/aliases/ubuntu/18.04"),
                         (self.rest, {"name": "ubuntu/18.04"}))

    def test_several_and_alias(self):
        """Several parameters; an alias reaches the same endpoint."""
        expected = (self.nested, {"name": "c1", "snap": "s1"})
        self.assertEqual(self.routes.match("/1.0/containers/c1/snapshots/s1"), expected)
        self.assertEqual(self.routes.match("/1.0/instances/c1/snapshots/s1"), expected)

    def test_families_and_early_parameters(self):
        """Paths are tried against the patterns of their first two segments; a pattern with a
        parameter among those is tried for every path, in declaration order."""
        early = Endpoint("/{version}/profiles/{name}/x")
        later = Endpoint("/1.0/profiles/{name}/x")
        routes = Routes([early, later, self.one])
        self.assertEqual(routes.match("/1.0/profiles/p1/x"), (early, {"version": "1.0", "name": "p1"}))
        self.assertEqual(routes.match("/1.0/profiles/p1"), (self.one, {"name": "p1"}))
        self.assertEqual(Routes([later, early]).match("/1.0/profiles/p1/x"), (later, {"name": "p1"}))
        self.assertEqual(routes.match("/2.0/profiles/p1/x"), (early, {"version": "2.0", "name": "p1"}))

    def test_unknown(self):
        """Unknown paths match nothing."""
        for path in ("/", "/1.0/nothing", "/2.0/profiles", "/1.0/profilesx"):
            self.assertEqual(self.routes.match(path), (None, None))

    @given(st.text(alphabet=st.characters(blacklist_characters="/", blacklist_categories=("Cs",)),
                   min_size=1, max_size=20))
    def test_any_segment_round_trips(self, name):
        """Any name without a slash, percent-encoded, comes back as given."""
        from urllib.parse import quote

        self.assertEqual(self.routes.match("/1.0/profiles/" + quote(name, safe="")), (self.one, {"name": name}))


class RouterTests(SynchronousTestCase):
    """Requests through the router on an in-memory HTTP channel."""

    def setUp(self):
        self.seen = []
        self.spool = temp_dir(self)

        async def show(req):
            self.seen.append(req)
            return SyncResponse({"params": req.params, "query": req.query, "recursion": req.recursion})

        async def store(req):
            self.seen.append(req.json())
            return empty()

        async def guarded(req):
            req.check_etag({"v": 1})
            return empty()

        async def crash(req):
            raise RuntimeError("boom")

        async def refuse(req):
            raise errors.Conflict("taken")

        async def nothing(req):
            return None

        async def leak(req):
            raise OSError(2 if req.params["how"] == "missing" else 28, "No space left on device", "/var/lib/x")

        async def bug(req):
            return {}["key"]

        class Unrenderable(SyncResponse):
            def render(self, request):
                raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

        async def unrenderable(req):
            return Unrenderable({})

        self.endpoints = [
            Endpoint("/", get=Action(show, untrusted=True)),
            Endpoint("/1.0/things", get=show, post=store),
            Endpoint("/1.0/things/{name}", get=show, put=guarded),
            Endpoint("/1.0/public", get=Action(show, untrusted=True)),
            Endpoint("/1.0/small", post=Action(store, max_body=10)),
            Endpoint("/1.0/crash", get=crash),
            Endpoint("/1.0/refuse", get=refuse),
            Endpoint("/1.0/nothing", get=nothing),
            Endpoint("/1.0/leak/{how}", get=leak),
            Endpoint("/1.0/bug", get=bug),
            Endpoint("/1.0/unrenderable", get=unrenderable),
            Endpoint("/internal/local", get=Action(show, local_only=True)),
        ]

    def ask(self, method, path, body=b"", headers=(), **site_args):
        site = make_site(self.endpoints, spool_dir=self.spool, **site_args)
        return exchange(site, request_bytes(method, path, body, headers))

    def assertError(self, answer, code, message=None):
        self.assertEqual(answer.status, code, answer.body)
        doc = answer.json()
        self.assertEqual(set(doc), {"type", "error", "error_code"})
        self.assertEqual((doc["type"], doc["error_code"]), ("error", code))
        if message is not None:
            self.assertEqual(doc["error"], message)

    def test_get(self):
        """A handler's answer, with parameters and the query (first value wins)."""
        answer = self.ask("GET", "/1.0/things/t%201?recursion=1&x=a&x=b")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json()["metadata"],
                         {"params": {"name": "t 1"}, "query": {"recursion": "1", "x": "a"}, "recursion": 1})
        self.assertEqual(answer.headers["content-type"], "application/json")

    def test_bad_recursion_and_empty_query(self):
        """A non-numeric recursion is 0; an empty query (`?`) is fine."""
        self.assertEqual(self.ask("GET", "/1.0/things?recursion=yes").json()["metadata"]["recursion"], 0)
        self.assertEqual(self.ask("GET", "/1.0/things?").status, 200)

    def test_unknown_path(self):
        """Unknown paths and trailing slashes are 404 `not found`."""
        self.assertError(self.ask("GET", "/1.0/nope"), 404, "not found")
        self.assertError(self.ask("GET", "/1.0/things/"), 404, "not found")
        self.assertError(self.ask("GET", "/1.0/"), 404, "not found")

    def test_unhandled_method(self):
        """A known method the route lacks is 501 with Allow; an unknown method is 404."""
        answer = self.ask("DELETE", "/1.0/things")
        self.assertError(answer, 501, "not implemented")
        self.assertEqual(answer.headers["allow"], "GET, POST")
        self.assertError(self.ask("BREW", "/1.0/things"), 404)

    def test_options(self):
        """OPTIONS is answered 200 without routing."""
        answer = self.ask("OPTIONS", "/1.0/anything")
        self.assertEqual((answer.status, answer.body), (200, b""))

    def test_untrusted(self):
        """An untrusted caller gets 403 except where the action allows it."""
        daemon = FakeDaemon(trusted=False)
        self.assertError(self.ask("GET", "/1.0/things", daemon=daemon), 403, "not authorized")
        self.assertError(self.ask("POST", "/1.0/things", b"{}", daemon=daemon), 403)
        self.assertEqual(self.ask("GET", "/1.0/public", daemon=daemon).status, 200)
        self.assertEqual(self.seen, [self.seen[0]])

    def test_authenticated_header(self):
        """A caller that says it expects to be authenticated (X-LXD-authenticated) gets no untrusted answer."""
        daemon = FakeDaemon(trusted=False)
        expects = [("X-LXD-authenticated", "true")]
        self.assertError(self.ask("GET", "/1.0/public", headers=expects, daemon=daemon), 403, "not authorized")
        self.assertEqual(self.seen, [])

    def test_login_required(self):
        """A caller whose macaroons did not do asks Candid's answer of the trust: at once when it is
        ready, after `settle` otherwise; with a body or without, the handler never runs."""
        for ready in (True, False):
            daemon = FakeDaemon(trusted=False)
            daemon.trust = _LoginTrust(ready)
            answer = self.ask("GET", "/1.0/things", daemon=daemon)
            self.assertEqual((answer.status, answer.body), (401, b"log in"))
            self.assertEqual(self.ask("POST", "/1.0/things", b'{"a": 1}', daemon=daemon).status, 401)
            self.assertEqual(self.ask("GET", "/1.0/public", daemon=daemon).status, 200)
            self.assertEqual(self.ask("GET", "/1.0/public", headers=[("X-LXD-authenticated", "1")],
                                      daemon=daemon).status, 401)
            self.assertEqual(daemon.trust.settled, 0 if ready else 3)
        self.assertEqual(len(self.seen), 2)  # the two untrusted GETs of /1.0/public

    def test_local_only(self):
        """Internal endpoints answer only on the unix socket."""
        self.assertEqual(self.ask("GET", "/internal/local").status, 200)
        self.assertError(self.ask("GET", "/internal/local", local=False), 403)

    def test_not_ready(self):
        """Before start-up finished every API call but `/` is 503."""
        daemon = FakeDaemon(ready=False)
        self.assertError(self.ask("GET", "/1.0/things", daemon=daemon), 503, "LXD daemon setup in progress")
        self.assertEqual(self.ask("GET", "/", daemon=daemon).status, 200)

    def test_json_body(self):
        """The body reaches the handler as a JSON object; unknown fields are the handler's to ignore."""
        self.assertEqual(self.ask("POST", "/1.0/things", b'{"name": "x", "extra": [1]}').status, 200)
        self.assertEqual(self.seen, [{"name": "x", "extra": [1]}])

    def test_empty_body(self):
        """No body, or whitespace, reads as `{}`."""
        self.ask("POST", "/1.0/things")
        self.ask("POST", "/1.0/things", b"  \n")
        self.assertEqual(self.seen, [{}, {}])

    def test_get_with_body(self):
        """A GET carrying `{}` is accepted."""
        self.assertEqual(self.ask("GET", "/1.0/things", b"{}").status, 200)

    def test_malformed_json(self):
        """Malformed JSON and non-objects are a 400 saying so."""
        answer = self.ask("POST", "/1.0/things", b'{"name": ')
        self.assertError(answer, 400)
        self.assertIn("invalid JSON body", answer.json()["error"])
        self.assertError(self.ask("POST", "/1.0/things", b"[1, 2]"), 400, "request body must be a JSON object")
        self.assertError(self.ask("POST", "/1.0/things", b"\xff\xfe"), 400)
        self.assertEqual(self.seen, [])

    def test_body_too_large(self):
        """A declared length above the route's cap is 413 and the handler never runs."""
        answer = self.ask("POST", "/1.0/small", b'{"a": "0123456789"}')
        self.assertError(answer, 413, "request body larger than 10 bytes")
        self.assertEqual(answer.headers["connection"], "close")
        self.assertEqual(self.seen, [])
        self.assertEqual(self.ask("POST", "/1.0/small", b'{"a": 1}').status, 200)

    def test_chunked_body_too_large(self):
        """A chunked body is counted as it arrives and refused past the cap."""
        site = make_site(self.endpoints, spool_dir=self.spool)
        body = b'{"a": "0123456789"}'
        raw = (b"POST /1.0/small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % 5 + body[:5] + b"\r\n" + b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n")
        self.assertError(exchange(site, raw), 413)
        self.assertEqual(self.seen, [])

    def test_chunked_body(self):
        """A chunked body within the cap reaches the handler whole (spooled to a file)."""
        site = make_site(self.endpoints, spool_dir=self.spool)
        body = json.dumps({"k": "v" * 300000}).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                          for i in range(0, len(body), 65536))
        raw = b"POST /1.0/things HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        self.assertEqual(exchange(site, raw).status, 200)
        self.assertEqual(self.seen, [{"k": "v" * 300000}])

    def test_etag(self):
        """If-Match: absent passes, the right tag (quoted or not) passes, a wrong one is 412."""
        tag = etag_of({"v": 1})
        self.assertEqual(self.ask("PUT", "/1.0/things/a").status, 200)
        self.assertEqual(self.ask("PUT", "/1.0/things/a", headers=[("If-Match", tag)]).status, 200)
        self.assertEqual(self.ask("PUT", "/1.0/things/a", headers=[("If-Match", f'"{tag}"')]).status, 200)
        answer = self.ask("PUT", "/1.0/things/a", headers=[("If-Match", "0" * 64)])
        self.assertError(answer, 412)
        self.assertIn("ETag doesn't match", answer.json()["error"])

    def test_handler_errors(self):
        """An ApiError keeps its code; anything else is a 500 with its text (and is logged)."""
        self.assertError(self.ask("GET", "/1.0/refuse"), 409, "taken")
        self.assertError(self.ask("GET", "/1.0/crash"), 500, "boom")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_no_repr_or_host_path(self):
        """Unexpected exceptions answer without Python reprs, errnos or host paths; they are logged."""
        self.assertError(self.ask("GET", "/1.0/leak/full"), 500, "No space left on device")
        self.assertError(self.ask("GET", "/1.0/leak/missing"), 404, "not found")
        self.assertError(self.ask("GET", "/1.0/bug"), 500, "internal error")
        self.assertEqual(len(self.flushLoggedErrors(OSError, KeyError)), 3)

    def test_render_failure(self):
        """An answer that cannot be rendered is the JSON error envelope, not an HTML page."""
        self.assertError(self.ask("GET", "/1.0/unrenderable"), 500, "internal error")
        self.assertEqual(len(self.flushLoggedErrors(UnicodeEncodeError)), 1)

    def test_json_as_the_reference_decodes_it(self):
        """Only UTF-8, no NaN or Infinity, no giant integers, no nesting without end: a 400 saying so."""
        for body, message in ((b'{"a": "\xff"}', "invalid JSON body: invalid UTF-8 at byte 7"),
                              (b'{"a": NaN}', "invalid JSON body: invalid value NaN"),
                              (b'\xef\xbb\xbf{}', "invalid JSON body: unexpected byte order mark at byte 0"),
                              (b'{"a": -Infinity}', "invalid JSON body: invalid value -Infinity"),
                              (b'{"a": 1' + b"0" * 5000 + b"}", "invalid JSON body: number too large"),
                              (b"[" * 100000 + b"]" * 100000, "invalid JSON body: nested too deeply"),
                              (b'{"a": ' + b"[" * 64 + b"]" * 64 + b"}", "invalid JSON body: nested more than 64 deep")):
            self.assertError(self.ask("POST", "/1.0/things", body), 400, message)
        self.assertEqual(self.seen, [])
        deepest = b'{"a": ' + b"[" * 63 + b"]" * 63 + b', "b": [' + b"{}, " * 100 + b"{}]}"
        self.assertEqual(self.ask("POST", "/1.0/things", deepest).status, 200)

    def test_lone_surrogates(self):
        """Escaped lone surrogates decode to U+FFFD (as Go's decoder does); pairs stay one character."""
        self.ask("POST", "/1.0/things", b'{"\\ud800k": ["\\udcff", "\\ud83d\\ude00"]}')
        self.assertEqual(self.seen, [{"\ufffdk": ["\ufffd", "\U0001f600"]}])

    def test_none_is_empty(self):
        """A handler returning None answers the empty sync envelope."""
        self.assertEqual(self.ask("GET", "/1.0/nothing").json()["metadata"], {})


class _LoginTrust(FakeTrust):
    """Trusts nobody; every request is one that must log in (as lxdtx.candid marks them)."""

    def __init__(self, ready):
        super().__init__(False)
        self.ready = ready
        self.settled = 0
        self.candid = self

    def is_trusted(self, request):
        request.discharge_required = "login"
        return False

    def refusal(self, request):
        trust = self

        class LoginRequired(SyncResponse):
            ready = trust.ready

            async def settle(self):
                trust.settled += 1
                return self

            def render(self, request):
                request.setResponseCode(401)
                return b"log in"

        return LoginRequired({})


class DeferredHandlerTests(SynchronousTestCase):
    """Handlers that wait: answered when they finish, cancelled on disconnect only if allowed."""

    def setUp(self):
        self.waiting = []

        self.cancelled = []

        async def slow(req):
            d = defer.Deferred()
            self.waiting.append(d)
            try:
                await d
            except defer.CancelledError:
                self.cancelled.append(req.path)
                raise
            return SyncResponse("done")

        self.endpoints = [
            Endpoint("/slow", get=slow),
            Endpoint("/wait", get=Action(slow, cancel_on_disconnect=True)),
        ]

    def start(self, path):
        site = make_site(self.endpoints)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(request_bytes("GET", path))
        return channel, transport

    def test_answer_later(self):
        """Nothing is written until the handler finishes."""
        channel, transport = self.start("/slow")
        self.assertEqual(transport.value(), b"")
        self.waiting[0].callback(None)
        answer = HTTPAnswer(transport.value())
        self.assertEqual((answer.status, answer.json()["metadata"]), (200, "done"))

    def test_cancel_on_disconnect(self):
        """A waiting handler marked cancellable is cancelled when the client leaves."""
        channel, transport = self.start("/wait")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.cancelled, ["/wait"])
        self.assertEqual(transport.value(), b"")
        import gc

        gc.collect()  # an unhandled CancelledError would be logged (and fail the test) here
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_no_cancel_by_default(self):
        """Other handlers run to completion even when the client leaves; nothing is written."""
        channel, transport = self.start("/slow")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(self.waiting[0])
        self.waiting[0].callback(None)
        self.assertEqual(transport.value(), b"")


class _ChannelTrust(FakeTrust):
    """Trusts nothing on TLS, unless a connection's peer host is in `trusted_hosts`."""

    def __init__(self, trusted_hosts=()):
        super().__init__(False)
        self.trusted_hosts = set(trusted_hosts)

    def channel_trusted(self, channel):
        return channel.site.local or channel.peer_host() in self.trusted_hosts

    def is_trusted(self, request):
        return self.channel_trusted(request.channel)


def _tls_like_site(endpoints, spool, trusted_hosts=(), limits=None, ready=True):
    """A non-local site whose caller is trusted by peer host, with untrusted-connection limits."""
    daemon = FakeDaemon(ready=ready)
    daemon.trust = _ChannelTrust(trusted_hosts)
    site = make_site(endpoints, daemon=daemon, local=False, spool_dir=spool)
    site.untrusted = limits
    return site


def _connect(site, host="10.1.1.1"):
    from twisted.internet.address import IPv4Address

    channel = site.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
    channel.makeConnection(transport)
    return channel, transport


class EarlyAnswerTests(SynchronousTestCase):
    """Untrusted callers: refused before their body is read, and never spooled to disk."""

    def setUp(self):
        self.seen = []
        self.spool = temp_dir(self)

        async def store(req):
            self.seen.append(req.body.read())
            return empty()

        self.endpoints = [
            Endpoint("/1.0/things", post=Action(store, max_body=1 << 40)),
            Endpoint("/1.0/open", post=Action(store, untrusted=True, max_body=1 << 20, untrusted_max_body=100)),
            Endpoint("/1.0/read", get=Action(store, untrusted=True)),
        ]
        self.site = _tls_like_site(self.endpoints, self.spool, trusted_hosts={"10.9.9.9"})

    def send(self, raw, host="10.1.1.1"):
        channel, transport = _connect(self.site, host)
        channel.dataReceived(raw)
        return channel, transport

    def assertAnsweredEarly(self, transport, code):
        answer = HTTPAnswer(transport.value())
        self.assertEqual(answer.status, code, answer.body)
        self.assertEqual(answer.headers["connection"], "close")
        self.assertEqual(int(answer.headers["content-length"]), len(answer.body))
        self.assertEqual(answer.json()["error_code"], code)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.seen, [])
        import os

        self.assertEqual(os.listdir(self.spool), [])
        return answer

    def test_refused_before_body(self):
        """A route closed to untrusted callers: 403 right after the headers, though 1 GiB is announced."""
        channel, transport = self.send(b"POST /1.0/things HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n"
                                       b"Expect: 100-continue\r\n\r\n" + b"x" * 65536)
        answer = self.assertAnsweredEarly(transport, 403)
        self.assertEqual(answer.json()["error"], "not authorized")
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertFalse(transport.disconnected)

    def test_chunked_refused_before_body(self):
        """The same for a chunked body."""
        channel, transport = self.send(b"POST /1.0/things HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       b"10000\r\n" + b"x" * 65536 + b"\r\n")
        self.assertAnsweredEarly(transport, 403)

    def test_unknown_route_before_body(self):
        """Unknown paths are a 404 before the body, too."""
        channel, transport = self.send(b"PUT /1.0/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        self.assertAnsweredEarly(transport, 404)

    def test_rest_of_body_dropped_then_aborted(self):
        """What follows an early answer is dropped unparsed, up to LINGER_BYTES, then the
        connection is aborted; LINGER_SECONDS later it is aborted anyway."""
        from lxdtx import router

        channel, transport = self.send(b"POST /1.0/things HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        written = transport.value()
        channel.dataReceived(b"GET /1.0/read HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value(), written)
        self.assertFalse(transport.disconnected)
        channel.dataReceived(b"x" * (router.LINGER_BYTES + 1))
        self.assertTrue(transport.disconnected)

        channel, transport = self.send(b"POST /1.0/things HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        self.site.reactor.advance(router.LINGER_SECONDS)
        self.assertTrue(transport.disconnected)

    def test_untrusted_cap_declared(self):
        """An open route takes `untrusted_max_body` from untrusted callers: more announced is a 413 at once."""
        channel, transport = self.send(b"POST /1.0/open HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
        answer = self.assertAnsweredEarly(transport, 413)
        self.assertEqual(answer.json()["error"], "request body larger than 100 bytes")

    def test_untrusted_cap_chunked(self):
        """A chunked body is a 413 as soon as it passes the cap; nothing of it reaches the handler."""
        channel, transport = self.send(b"POST /1.0/open HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       b"40\r\n" + b"a" * 64 + b"\r\n")
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"40\r\n" + b"b" * 64 + b"\r\n0\r\n\r\n")
        self.assertAnsweredEarly(transport, 413)

    def test_untrusted_within_cap(self):
        """Within the cap an untrusted body is served as ever (in memory)."""
        channel, transport = self.send(request_bytes("POST", "/1.0/open", b"x" * 100))
        self.assertEqual(HTTPAnswer(transport.value()).status, 200)
        self.assertEqual(self.seen, [b"x" * 100])
        self.assertFalse(transport.disconnecting)

    def test_get_takes_a_token_body(self):
        """A GET open to untrusted callers takes at most UNTRUSTED_MAX_BODY."""
        from lxdtx import router

        channel, transport = self.send(request_bytes("GET", "/1.0/read", b" " * (router.UNTRUSTED_MAX_BODY + 1)))
        self.assertAnsweredEarly(transport, 413)

    def test_trusted_unchanged(self):
        """A trusted caller's big body is spooled and served; its too-large body is a 413 once in."""
        channel, transport = self.send(request_bytes("POST", "/1.0/things", b"y" * 300000), host="10.9.9.9")
        self.assertEqual(HTTPAnswer(transport.value()).status, 200)
        self.assertEqual(self.seen, [b"y" * 300000])
        channel, transport = self.send(request_bytes("POST", "/1.0/open", b"z" * 2000000), host="10.9.9.9")
        self.assertEqual(HTTPAnswer(transport.value()).status, 413)

    def test_not_ready(self):
        """Before start-up is over an untrusted body is not read either (503)."""
        site = _tls_like_site(self.endpoints, self.spool, ready=False)
        channel, transport = _connect(site)
        channel.dataReceived(b"POST /1.0/open HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n")
        self.assertAnsweredEarly(transport, 503)


class UntrustedConnectionTests(SynchronousTestCase):
    """The HTTPS site's bounds on connections not trusted, on a memory reactor."""

    def setUp(self):
        from lxdtx.trust import UntrustedConnections

        async def show(req):
            return SyncResponse({"trusted": req.trusted})

        self.endpoints = [Endpoint("/1.0", get=Action(show, untrusted=True))]
        self.limits = UntrustedConnections(total=3, per_peer=2, pending=4, handshake_timeout=10, request_timeout=30)
        self.site = _tls_like_site(self.endpoints, temp_dir(self), trusted_hosts={"10.9.9.9"}, limits=self.limits)
        self.clock = self.site.reactor

    def connect(self, host, handshake=True):
        channel, transport = _connect(self.site, host)
        if handshake:
            channel.handshakeCompleted()
        return channel, transport

    def test_per_peer_and_total(self):
        """Past `per_peer` from one address, or `total` in all, an untrusted connection is answered 503 and closed."""
        first = [self.connect("10.1.1.1") for _ in range(2)]
        channel, transport = self.connect("10.1.1.1")
        answer = HTTPAnswer(transport.value())
        self.assertEqual((answer.status, answer.json()["error"]), (503, "Too many untrusted connections"))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(any(t.disconnecting for _, t in first))
        self.connect("10.2.2.2")
        self.assertEqual(self.limits.untrusted_count(), 3)
        channel, transport = self.connect("10.3.3.3")
        self.assertEqual(HTTPAnswer(transport.value()).status, 503)
        first[0][0].connectionLost(Failure(ConnectionDone()))
        channel, transport = self.connect("10.3.3.3")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.limits.untrusted_count("10.3.3.3"), 1)

    def test_trusted_never_refused(self):
        """A connection with a trusted certificate is not counted, and is let in when the caps are full."""
        for host in ("10.1.1.1", "10.1.1.1", "10.2.2.2"):
            self.connect(host)
        channel, transport = self.connect("10.9.9.9")
        channel.dataReceived(request_bytes("GET", "/1.0"))
        self.assertEqual(HTTPAnswer(transport.value()).json()["metadata"], {"trusted": True})
        self.assertEqual(self.limits.untrusted_count("10.9.9.9"), 0)
        self.clock.advance(50)  # past every deadline of ours, within the idle timeout (60)
        self.assertFalse(transport.disconnecting)

    def test_handshake_timeout(self):
        """A connection without a finished handshake is dropped after the handshake timeout."""
        channel, transport = self.connect("10.1.1.1", handshake=False)
        self.assertEqual(self.limits.pending_count(), 1)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnected)

    def test_oldest_pending_dropped(self):
        """Past `pending` connections in their handshake the oldest is dropped, never the newcomer."""
        pending = [self.connect(f"10.0.0.{i}", handshake=False) for i in range(5)]
        self.assertTrue(pending[0][1].disconnected)
        self.assertFalse(any(t.disconnected for _, t in pending[1:]))
        self.assertEqual(self.limits.pending_count(), 4)

    def test_request_deadline(self):
        """An untrusted connection must send each whole request within the request timeout of its
        handshake or its previous answer; a trickle of header bytes does not extend it."""
        channel, transport = self.connect("10.1.1.1")
        trickle = b"GET /1.0 HTTP/1.1\r\nX-Slow: " + b"a" * 20
        for i in range(29):
            channel.dataReceived(trickle[i:i + 1])
            self.clock.advance(1)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)

        channel, transport = self.connect("10.2.2.2")
        self.clock.advance(20)
        channel.dataReceived(request_bytes("GET", "/1.0"))
        self.assertEqual(HTTPAnswer(transport.value()).status, 200)
        self.clock.advance(29)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_trusted_request_leaves_the_count(self):
        """A connection whose requests become trusted (its certificate was added) is no longer counted or timed."""
        channel, transport = self.connect("10.1.1.1")
        self.assertEqual(self.limits.untrusted_count(), 1)
        self.site.router.daemon.trust.trusted_hosts.add("10.1.1.1")
        channel.dataReceived(request_bytes("GET", "/1.0"))
        self.assertEqual(HTTPAnswer(transport.value()).json()["metadata"], {"trusted": True})
        self.assertEqual(self.limits.untrusted_count(), 0)
        self.clock.advance(50)  # past every deadline of ours, within the idle timeout (60)
        self.assertFalse(transport.disconnected)

    def test_websocket_leaves_the_count(self):
        """An upgraded connection is the websocket's: released from the count and its deadline."""
        channel, transport = self.connect("10.1.1.1")
        channel.upgraded()
        self.assertEqual(self.limits.untrusted_count(), 0)
        self.clock.advance(50)  # past every deadline of ours, within the idle timeout (60)
        self.assertFalse(transport.disconnected)
