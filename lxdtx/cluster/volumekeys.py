# -*- test-case-name: tests.integration.test_cluster_volumes -*-
"""Custom volumes of local pools keyed by their member (lxdtx.storage.pools.volume_key).

A cluster's documents written before were keyed `pool/custom/name` with the member in
their `location`, so two members could not each have a volume of one name. Each moves to
its member's key at a member's start (before recovery, whose sweep asks for the volumes
under the new keys), one commit per document: the old name gone and the new one made at
once, so a member killed half-way leaves every document under one key or the other, and
its next start goes on. A member racing another to the same document loses its
compare-and-swap and leaves it to the winner.

A lone daemon's volumes take the first member's key when it bootstraps a cluster
(lxdtx.cluster.membership).
"""

from twisted.logger import Logger

from lxdtx.state import ABSENT, Delete, Put, RevisionMismatch
from lxdtx.storage.load import driver_class
from lxdtx.storage.pools import POOL, VOLUME, split_volume_key, volume_key

log = Logger()


def _local_pool(store, pool):
    cls = driver_class((store.value(POOL, pool) or {}).get("driver", ""))
    return cls is not None and not cls.info.remote


async def rekey(store, member_id=None):
    """Move every custom volume document of a local pool still under its cluster-wide key to
    its member's (`member_id`: the member of those without a `location`, at a bootstrap);
    returns how many moved."""
    moved = 0
    for doc in store.list(VOLUME):
        pool, vol_type, name, member = split_volume_key(doc.name)
        location = doc.value.get("location") or member_id
        if vol_type != "custom" or member or not location or not _local_pool(store, pool):
            continue
        try:
            await store.commit([Delete(VOLUME, doc.name, expect=doc.revision),
                                Put(VOLUME, volume_key(pool, vol_type, name, location),
                                    dict(doc.value, location=location), expect=ABSENT)])
        except RevisionMismatch:
            continue
        moved += 1
    if moved:
        log.info("Custom volumes keyed by their cluster member: {moved} moved", moved=moved)
    return moved
