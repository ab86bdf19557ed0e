# -*- test-case-name: tests.integration.test_cluster_streams -*-
"""Every member's events on every member's `/1.0/events`.

Each member keeps one websocket to each other member's `/1.0/events` (its own
certificate shown, the other's pinned, as lxdtx.cluster.peers calls members). The
request carries `FORWARDED`, so the other member sends only its own events there
(lxdtx.events: a `local_only` listener); what arrives is re-emitted here to this
member's listeners with `"node": <member id>` added, as the reference's forwarded
events are (the `location` field of events comes with a later API extension). A
forwarded event is never sent to a member's subscription, so nothing goes round.

The member list is read every `INTERVAL` seconds: new members get a subscription,
removed ones lose theirs, and a subscription that ended (the member stopped, the
network cut: pings find it within the websocket ping bounds) is opened again at the
next round. When a member's stream ends and it can't be reached again at once, the
operations of it this member relayed are announced failed here, so a client waiting
for one of them through our events (`lxc exec`, `lxc launch`) ends with an error. Each
time a stream opens, the member's operations seen running here are asked of it: those
that ended meanwhile (their events fell between two streams) are announced as they
ended, those it no longer knows (it restarted) as failed.
"""

import json

from twisted.application import internet
from twisted.internet import defer
from twisted.logger import Logger

from lxdtx.cluster.peers import FORWARDED

INTERVAL = 2.0
TYPES = "logging,operation,lifecycle"

log = Logger()


class _Feed:
    """This member's subscription to another member's events."""

    def __init__(self, relay, doc):
        self.relay = relay
        self.doc = doc
        self.stream = None
        self.connecting = False
        self.closed = False
        self._failing = False  # the last attempt failed (logged once per outage)
        self._lost = False  # the stream ended; the member's operations fail unless it is back at once

    @property
    def member_id(self):
        return self.doc.value["id"]

    def tick(self):
        if self.stream is None and not self.connecting and not self.closed:
            self.connecting = True
            defer.Deferred.fromCoroutine(self._connect())

    async def _connect(self):
        from lxdtx.websocket import client

        daemon = self.relay.daemon
        value = self.doc.value
        url = "wss://" + value["url"].split("://", 1)[1] + f"/1.0/events?type={TYPES}"
        try:
            stream = await client.connect(daemon.reactor, url, client.FeedClient, peer_pem=value.get("certificate"),
                                          cert_path=daemon.cert_path, key_path=daemon.key_path,
                                          headers={FORWARDED: "1"})
        except Exception as e:
            self.connecting = False
            if not self._failing:
                log.info("No events from cluster member {name} for now: {error}", name=self.doc.name,
                         error=getattr(e, "message", None) or e)
            self._failing = True
            if self._lost:
                self._lost = False
                daemon.cluster.peers.fail_operations_of(self.doc)
            return
        self.connecting = False
        if self.closed:
            stream.dropConnection(abort=False)
            return
        if self._failing:
            log.info("Events from cluster member {name} again", name=self.doc.name)
        self._failing = self._lost = False
        stream.feed = self
        self.stream = stream
        # What ended while no stream was open (or the member restarted meanwhile) is told now.
        defer.Deferred.fromCoroutine(daemon.cluster.peers.recheck_operations_of(self.doc)).addErrback(
            lambda failure: log.failure("Checking the operations of {name} failed", failure, name=self.doc.name))

    def received(self, payload):
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict) or "node" in event:
            return  # a member sends only its own events; anything else is not ours to pass on
        metadata = event.get("metadata")
        if event.get("type") == "operation" and isinstance(metadata, dict) and metadata.get("id"):
            self.relay.daemon.cluster.peers.remember_operation(metadata["id"], self.doc.name, metadata)
        event["node"] = self.member_id
        self.relay.daemon.events.forward(event)

    def ended(self, stream):
        if stream is not self.stream:
            return
        self.stream = None
        if self.closed:
            return
        self._lost = True
        self.tick()  # at once: a member that restarted is back, one that stopped fails its operations

    def close(self):
        self.closed = True
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.feed = None
            stream.dropConnection(abort=False)


class MemberEvents(internet.TimerService):
    """The subscriptions of this member to the others' events, kept to the member list."""

    def __init__(self, daemon, clock):
        super().__init__(INTERVAL, self.reconcile)
        self.daemon = daemon
        self.clock = clock
        self.feeds = {}  # member id -> _Feed

    def stopService(self):
        stopped = super().stopService()
        for feed in self.feeds.values():
            feed.close()
        self.feeds = {}
        return stopped

    def reconcile(self):
        cluster = getattr(self.daemon, "cluster", None)
        wanted = {}
        if cluster is not None and cluster.enabled:
            try:
                for doc in self.daemon.store.list("cluster_member"):
                    if doc.value.get("id") != cluster.member_id and doc.value.get("url"):
                        wanted[doc.value["id"]] = doc
            except Exception:
                log.failure("Reading the cluster members failed")
                return
        for member_id in list(self.feeds):
            feed = self.feeds[member_id]
            doc = wanted.get(member_id)
            if doc is None or doc.value.get("url") != feed.doc.value.get("url"):
                self.feeds.pop(member_id).close()
            else:
                feed.doc = doc  # renamed: its new name for our messages
        for member_id, doc in wanted.items():
            feed = self.feeds.get(member_id)
            if feed is None:
                feed = self.feeds[member_id] = _Feed(self, doc)
            feed.tick()
