# -*- test-case-name: tests.integration.test_cluster_orphans -*-
"""Intents a member keeps open for another member that died (lxdtx.cluster.onall).

A member making its part of a cluster-wide pool or network leaves its intent open for the
coordinating member's commit, which marks the object `Created` and ends every member's
intent at once. If the coordinator dies before that commit, nobody would end them until
each member restarts. So every member looks at its own open intents that name a
`coordinator`: once that member's heartbeat lease has lapsed (it is offline), or it has a
new heartbeat since (it restarted, quicker than its lease lapses, and forgot what it was
coordinating), the intent is resolved here, which undoes the part made here (the row is
not `Created`).

The coordinator can't commit `Created` past that: its commit expects every member's
intent at the revision the member answered with, so an intent resolved here makes it fail
and the coordinator undoes the rest. Its own part it undoes at its restart, as before.
"""

from twisted.application import internet
from twisted.internet import defer
from twisted.logger import Logger

from lxdtx.cluster import onall

INTERVAL = 2  # seconds between looks: small next to the offline bound (heartbeat TTL + 2 s)

log = Logger()


def orphaned(daemon):
    """This member's open intents whose coordinator is another member that is offline, or
    was restarted since it asked."""
    cluster, liveness = daemon.cluster, daemon.store_choice.liveness
    found = []
    for doc in daemon.journal.open():
        coordinator = doc.value.get("coordinator")
        if not coordinator or coordinator == cluster.member_id:
            continue
        now, then = liveness.incarnation(coordinator), doc.value.get("coordinator_since")
        if now is None or (then is not None and now != then):
            found.append(doc)
    return found


async def resolve_orphans(daemon):
    """Resolve the orphaned intents; returns their names."""
    done = []
    for doc in orphaned(daemon):
        op, target = doc.value.get("op"), doc.value.get("target")
        try:
            await onall.resolve(daemon, doc.name)
        except Exception:
            log.failure("Could not resolve the {op} of {target} its coordinator left open", op=op, target=target)
            continue
        log.warn("Undid the {op} of {target}: its coordinating member {member} went offline or restarted "
                 "before it ended",
                 op=op, target=target, member=daemon.cluster.location_name(doc.value["coordinator"]))
        done.append(doc.name)
    return done


class OrphanedIntents(internet.TimerService):
    """Resolves, every INTERVAL seconds, the intents orphaned by a coordinator's death."""

    def __init__(self, daemon, clock):
        super().__init__(INTERVAL, self._look)
        self.daemon = daemon
        self.clock = clock
        self._running = None

    def stopService(self):
        stopped = super().stopService()
        if self._running is None:
            return stopped
        return self._running.addBoth(lambda _: stopped)  # a resolution under way ends first

    def _look(self):
        if self._running is not None or not onall.clustered(self.daemon):
            return None
        try:
            if not orphaned(self.daemon):
                return None
        except Exception:
            log.failure("Reading the open intents failed")
            return None
        running = self._running = defer.Deferred.fromCoroutine(resolve_orphans(self.daemon))
        running.addErrback(lambda failure: log.failure("Resolving orphaned intents failed", failure))
        running.addBoth(self._finished)
        return None

    def _finished(self, _result):
        self._running = None
