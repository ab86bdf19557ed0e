# -*- test-case-name: tests.integration.test_bookkeeping -*-
"""`GET /internal/debug/counts`: how big the daemon's bookkeeping is (unix socket only).

Every dict, list, set and deque held by the daemon's own objects (those of lxdtx
modules, reached from the daemon through attributes, a few levels deep) is reported
by its path and length: operations kept, event listeners, websockets waiting for
their callers, exec sessions, locks, caches... A structure that grows with every
request and never shrinks shows as a count that does not return to its baseline
once the requests are over (tests/integration/test_bookkeeping.py). Found by walking
rather than by a list of names, so a new structure is counted without being declared
here; with them, the number of live objects of each lxdtx class (whoever holds them:
open websockets, exec sessions, channels). Read on the reactor thread, in one go.
"""

import collections
import gc

from lxdtx.response import SyncResponse
from lxdtx.router import Action, Endpoint

DEPTH = 4
SIZED = (dict, list, set, frozenset, collections.deque)


def _ours(value):
    module = getattr(type(value), "__module__", "")
    return isinstance(module, str) and module.startswith("lxdtx.") and hasattr(value, "__dict__") and not isinstance(value, type)


def counts(daemon, depth=DEPTH):
    """{"attribute.path": length} of the sized structures reachable from `daemon`; each
    is named by its shortest path (breadth first), so the names stay put."""
    found = {}
    seen = {id(daemon)}
    level = [("", daemon)]
    for _ in range(depth):
        below = []
        for prefix, obj in level:
            for key, value in sorted(vars(obj).items()):
                if id(value) in seen:
                    continue
                if isinstance(value, SIZED):
                    seen.add(id(value))
                    found[f"{prefix}{key}"] = len(value)
                elif _ours(value):
                    seen.add(id(value))
                    below.append((f"{prefix}{key}.", value))
        level = below
    return found


def live_objects():
    """{"live.<module>.<Class>": n} of the live objects of lxdtx classes (open websockets,
    exec sessions, operations, HTTP channels...), whoever holds them."""
    tally = collections.Counter()
    for obj in gc.get_objects():
        cls = type(obj)
        module = vars(cls).get("__module__")
        if isinstance(module, str) and module.startswith("lxdtx."):
            tally[f"live.{module}.{cls.__qualname__}"] += 1
    return dict(tally)


async def get_counts(req):
    """`?collect=1` runs the cycle collector first (CPU only, a debugging aid): what is
    left is what something still holds."""
    if req.query.get("collect") in ("1", "true"):
        gc.collect()
    return SyncResponse({**counts(req.daemon), **live_objects()})


ENDPOINTS = [
    Endpoint("/internal/debug/counts", get=Action(get_counts, local_only=True)),
]
