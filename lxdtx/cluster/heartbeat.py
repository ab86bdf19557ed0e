# -*- test-case-name: tests.integration.test_etcd_supervised -*-
"""Member heartbeats as etcd leases, and who is online.

Each member holds the key `lxdtx/alive/member/<name>` under a lease of `ttl` seconds and
refreshes the lease every `interval` seconds. A member that stops (or can't reach a
quorum) stops refreshing; etcd's leader then deletes the key when the lease lapses,
and every member's watch on `lxdtx/alive/` hears it.

Bound: a member is shown offline at most ttl + 2 s after its last heartbeat (the lease
lapses `ttl` after the last refresh; etcd's leader checks expiry twice a second and the
watch delivers within a second). A change of etcd leader gives every lease its full TTL
again, so an election during that time adds up to `ttl` more.
"""

import json
import time

from twisted.internet import defer, task
from twisted.logger import Logger

from lxdtx.state.etcd import EtcdStore
from lxdtx.state.etcdgateway import EtcdRefused, EtcdUnavailable

PREFIX = b"lxdtx/alive/"
TTL = 20  # LXD's cluster.offline_threshold default
INTERVAL = 4  # LXD's heartbeat interval


class Heartbeat:
    """This member's liveness key, kept alive by refreshing its lease."""

    log = Logger()

    def __init__(self, gateway, reactor, name, info=None, ttl=TTL, interval=INTERVAL):
        self.gateway, self.reactor = gateway, reactor
        self.name, self.info = name, dict(info or {})
        self.ttl, self.interval = ttl, interval
        self.lease = None
        self._loop = None
        self._failing = False

    async def start(self):
        await self._grant()
        self._loop = task.LoopingCall(lambda: defer.Deferred.fromCoroutine(self._beat()))
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)

    async def _grant(self):
        self.lease = await self.gateway.lease_grant(self.ttl)
        value = json.dumps(dict(self.info, name=self.name, since=time.time()))
        await self.gateway.put(PREFIX + b"member/" + self.name.encode(), value, lease=self.lease)

    async def _beat(self):
        try:
            if self.lease is None or await self.gateway.lease_keepalive(self.lease) <= 0:
                await self._grant()  # it lapsed (we were cut off): announce ourselves again
            if self._failing:
                self.log.info("Cluster heartbeat of {name} works again", name=self.name)
            self._failing = False
        except (EtcdUnavailable, EtcdRefused) as e:
            if not self._failing:
                self.log.warn("Cluster heartbeat of {name} failed: {error}", name=self.name, error=e)
            self._failing = True

    async def stop(self, revoke=True):
        """Stop refreshing; with `revoke` the others see this member offline at once."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if revoke and self.lease is not None:
            try:
                await self.gateway.lease_revoke(self.lease)
            except (EtcdUnavailable, EtcdRefused):
                pass
        self.lease = None


class Liveness:
    """Which members have a live heartbeat, from a watch on the heartbeat keys."""

    def __init__(self, gateway, reactor, ttl=TTL):
        self.reactor = reactor
        self.ttl = ttl
        self._store = EtcdStore(gateway, reactor, prefix=PREFIX)
        self._offline_since = {}  # name -> wall-clock time its key was seen to go

    async def open(self):
        await self._store.open()
        self._store.watch(self._changed)

    async def close(self):
        await self._store.close()

    def _changed(self, kind, name, value):
        if value is None:
            self._offline_since[name] = time.time()
        else:
            self._offline_since.pop(name, None)

    def online(self, name):
        return self._store.exists("member", name)

    def members(self):
        return self._store.names("member")

    def incarnation(self, name):
        """When the member's current heartbeat began (None: offline): a member that restarted,
        or whose lease lapsed, has a new one."""
        value = self._store.value("member", name)
        return value.get("since") if isinstance(value, dict) else None

    def status(self, name):
        """(status, message) as LXD shows them for a member."""
        if self.online(name):
            return "Online", "fully operational"
        since = self._offline_since.get(name)
        if since is None:
            return "Offline", "no heartbeat seen"
        seconds = max(0, int(time.time() - since + self.ttl))
        return "Offline", f"no heartbeat since {seconds}s"
