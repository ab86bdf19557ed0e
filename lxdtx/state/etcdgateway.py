# -*- test-case-name: tests.unit.test_store_etcd -*-
"""etcd's v3 JSON gateway (`POST /v3/...`, base64 keys and values) over treq.

Only what the store and the cluster need: range, txn, watch, leases and members.
Every failure to get an answer becomes `EtcdUnavailable`, naming the member asked
and why (refused, timed out, no leader/quorum), so the API can say which member
of the cluster database is at fault.
"""

import base64
import io
import json

from twisted.internet import defer, protocol
from twisted.logger import Logger

from lxdtx.errors import Unavailable

TIMEOUT = 15  # seconds; above etcd's own proposal timeout, so a lost quorum answers first


class EtcdUnavailable(Unavailable):
    """The cluster database did not answer (or had no quorum)."""

    def __init__(self, member, reason):
        self.member, self.reason = member, reason
        super().__init__(f"Cluster database unavailable: etcd member {member}: {reason}")


class EtcdRefused(Exception):
    """etcd answered with an error that is not about being reachable (a bad request)."""


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    return base64.b64decode(text or "")


def prefix_end(prefix):
    """The range end that covers every key starting with `prefix` (bytes)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


_NO_QUORUM = ("no leader", "timed out", "leader changed", "too many requests", "not capable",
              "unhealthy cluster", "stopped")


def _reason(answer, status):
    message = answer.get("message") or answer.get("error") or f"HTTP {status}"
    if any(hint in message for hint in _NO_QUORUM):
        return f"{message} (no quorum: too few etcd members are up)"
    return message


class Endpoint:
    """One etcd member as the client sees it: a name for errors and its client URL."""

    __slots__ = ("name", "url")

    def __init__(self, name, url):
        self.name, self.url = name, url.rstrip("/")

    def __str__(self):
        return f"{self.name!r} ({self.url})" if self.name != self.url else self.url


class EtcdGateway:
    """Calls to a set of etcd members; each call tries them in order until one answers."""

    log = Logger()

    def __init__(self, endpoints, reactor, tls_policy=None, timeout=TIMEOUT):
        import treq
        from twisted.web.client import Agent, HTTPConnectionPool

        self.endpoints = [e if isinstance(e, Endpoint) else Endpoint(e, e) for e in endpoints]
        self.reactor = reactor
        self.timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.retryAutomatically = False  # a txn must never be sent twice behind our back
        kwargs = {"pool": self._pool}
        if tls_policy is not None:
            kwargs["contextFactory"] = tls_policy
        self._agent = Agent(reactor, **kwargs)
        self._stream_agent = Agent(reactor, **({"contextFactory": tls_policy} if tls_policy else {}))
        self._http = treq.client.HTTPClient(self._agent)

    async def close(self):
        await self._pool.closeCachedConnections()

    async def call(self, path, body):
        """POST `body` to `path` on the first member that answers; its JSON answer."""
        last = None
        for endpoint in self.endpoints:
            try:
                return await self._call_one(endpoint, path, body)
            except EtcdUnavailable as e:
                last = e
        raise last

    async def _call_one(self, endpoint, path, body):
        import treq

        try:
            response = await self._http.post(endpoint.url + path, data=json.dumps(body).encode(),
                                             headers={"Content-Type": ["application/json"]},
                                             timeout=self.timeout)
            raw = await treq.content(response)
        except defer.CancelledError:
            raise EtcdUnavailable(endpoint, f"no answer within {self.timeout} s") from None
        except Exception as e:
            raise EtcdUnavailable(endpoint, _connection_reason(e)) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise EtcdUnavailable(endpoint, f"unreadable answer (HTTP {response.code})") from None
        if response.code != 200 or "error" in answer:
            # gRPC codes 4 (deadline), 14 (unavailable): the member can't reach a quorum.
            if response.code >= 500 or answer.get("code") in (4, 14):
                raise EtcdUnavailable(endpoint, _reason(answer, response.code))
            raise EtcdRefused(_reason(answer, response.code))
        return answer

    async def answers(self, endpoint):
        """Whether the member at `endpoint` answers at all (healthy or not) on its client port."""
        try:
            response = await self._http.get(endpoint.url + "/health", timeout=2)
            await response.content()
        except Exception:
            return False
        return True

    async def put(self, key, value, lease=None):
        body = {"key": b64(key), "value": b64(value)}
        if lease is not None:
            body["lease"] = lease
        return await self.call("/v3/kv/put", body)

    # -- key/value ------------------------------------------------------------------------
    async def range_prefix(self, prefix):
        """(revision, [kv, ...]) of every key under `prefix` (bytes)."""
        answer = await self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})
        return int(answer["header"]["revision"]), answer.get("kvs", [])

    async def txn(self, compare, success, failure=()):
        return await self.call("/v3/kv/txn", {"compare": list(compare), "success": list(success),
                                              "failure": list(failure)})

    # -- leases ---------------------------------------------------------------------------
    async def lease_grant(self, ttl):
        answer = await self.call("/v3/lease/grant", {"TTL": ttl})
        return answer["ID"]

    async def lease_keepalive(self, lease_id):
        """Refresh a lease; its remaining TTL (0 or less: it had already expired)."""
        answer = await self.call("/v3/lease/keepalive", {"ID": lease_id})
        return int(answer.get("result", answer).get("TTL", 0))

    async def lease_revoke(self, lease_id):
        await self.call("/v3/lease/revoke", {"ID": lease_id})

    # -- members --------------------------------------------------------------------------
    async def member_list(self):
        return (await self.call("/v3/cluster/member/list", {})).get("members", [])

    async def member_add(self, peer_urls):
        return (await self.call("/v3/cluster/member/add", {"peerURLs": list(peer_urls)}))["member"]

    async def member_remove(self, member_id):
        await self.call("/v3/cluster/member/remove", {"ID": member_id})

    # -- watch ----------------------------------------------------------------------------
    def watch_prefix(self, prefix, start_revision, on_result):
        """Stream watch results for keys under `prefix` from `start_revision` on.

        `on_result(result)` gets each decoded `result` object. Returns (stop, done): call
        `stop()` to end the stream; `done` fires when it ended, for whatever reason.
        """
        body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix)),
                                   "start_revision": str(start_revision)}}
        stream = _WatchStream(on_result)
        done = defer.Deferred.fromCoroutine(self._watch(body, stream))
        return stream.stop, done

    async def _watch(self, body, stream):
        from twisted.web.client import FileBodyProducer
        from twisted.web.http_headers import Headers

        last = None
        for endpoint in self.endpoints:
            if stream.stopped:
                return
            request = self._stream_agent.request(
                b"POST", (endpoint.url + "/v3/watch").encode(),
                Headers({"Content-Type": ["application/json"]}),
                FileBodyProducer(io.BytesIO(json.dumps(body).encode())))
            stream.pending = request
            try:
                response = await request
            except Exception as e:
                last = EtcdUnavailable(endpoint, _connection_reason(e))
                continue
            finally:
                stream.pending = None
            if response.code != 200:
                last = EtcdUnavailable(endpoint, f"watch refused (HTTP {response.code})")
                continue
            stream.endpoint = endpoint
            response.deliverBody(stream)
            await stream.ended
            return
        if last is not None and not stream.stopped:
            raise last


def _connection_reason(error):
    from twisted.internet import error as neterror

    if isinstance(error, neterror.ConnectionRefusedError):
        return "connection refused (is etcd running?)"
    if isinstance(error, (neterror.TimeoutError, neterror.TCPTimedOutError)):
        return "connection timed out"
    text = str(error) or type(error).__name__
    return f"unreachable ({text})"


class _WatchStream(protocol.Protocol):
    """Newline-delimited JSON watch results off one long response."""

    def __init__(self, on_result):
        self.on_result = on_result
        self.buffer = b""
        self.stopped = False
        self.pending = None
        self.endpoint = None
        self.ended = defer.Deferred()

    def stop(self):
        self.stopped = True
        if self.pending is not None:
            self.pending.cancel()
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if not line.strip():
                continue
            message = json.loads(line)
            if "result" in message:
                self.on_result(message["result"])
            else:
                self.on_result({"canceled": True, "cancel_reason": str(message.get("error"))})

    def connectionLost(self, reason):
        self.ended.callback(None)
