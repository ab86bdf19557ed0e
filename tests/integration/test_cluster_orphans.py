"""A coordinating member killed in the middle of a cluster-wide pool create (three network
namespaces, as test_cluster_join): node1 has made its part and node2 its own when node1
dies (`LXDTX_CRASH_AT`), node3 was never asked. node2 undoes its part once node1's lease
lapses, without a restart; node1 undoes its own at its start; then the create, asked
again, makes the pool on all three. node1 restarted at once (before its lease lapses) has a
new heartbeat, which tells node2 the same."""

import os
import time

from lxdtx.cluster import onall
from lxdtx.cluster.orphans import INTERVAL
from tests.daemonproc import wait_until
from tests.integration.test_cluster_join import OFFLINE_BOUND, PASSWORD, _join, _members, daemons, pytestmark  # noqa: F401


def _part(d, pool):
    """Where member `d` makes its part of a dir pool defined without a source."""
    return os.path.join(d.dir, "storage-pools", pool)


def _killed_mid_create(members):
    """Form the cluster, define `p` on all three and have node1 coordinate its create, dying
    once node2 made its part."""
    node1, node2, node3 = members
    op = node1.request("PUT", "/1.0/cluster", {"server_name": "node1", "enabled": True})
    assert node1.wait_operation(op)["status"] == "Success"
    node1.lxc("config", "set", "core.trust_password", PASSWORD)
    assert _join(node1, node2, "node2")["status"] == "Success"
    assert _join(node1, node3, "node3")["status"] == "Success"
    node1.stop()
    node1.start(timeout=120, crash_at=onall.MADE_ONE.name)
    for d in members:
        assert wait_until(lambda d=d: len(_members(d)) == 3
                          and all(m["status"] == "Online" for m in _members(d).values()), timeout=60)
    for member in ("node1", "node2", "node3"):
        node3.lxc("storage", "create", "p", "dir", "--target", member)
    try:
        node1.request("POST", "/1.0/storage-pools", {"name": "p", "driver": "dir"})
    except Exception:
        pass  # it died answering
    assert wait_until(lambda: node1.proc.poll() is not None, timeout=60), "the crash point was not reached"
    assert os.path.isdir(_part(node1, "p")) and os.path.isdir(_part(node2, "p"))
    assert not os.path.exists(_part(node3, "p"))
    assert node2.request("GET", "/1.0/storage-pools/p").metadata["status"] == "Pending"


def _made_again(members):
    """The create asked again makes `p` on all three; then it goes."""
    node1, node2, node3 = members
    assert wait_until(lambda: all(m["status"] == "Online" for m in _members(node2).values()), timeout=60)
    node2.lxc("storage", "create", "p", "dir")
    pool = node3.request("GET", "/1.0/storage-pools/p").metadata
    assert pool["status"] == "Created" and sorted(pool["locations"]) == ["node1", "node2", "node3"]
    for d in members:
        assert os.path.isdir(_part(d, "p"))
    node1.lxc("storage", "delete", "p")
    for d in members:
        assert wait_until(lambda d=d: not os.path.exists(_part(d, "p")), timeout=10)


def test_coordinator_killed_mid_create(daemons):  # noqa: F811
    node1, node2, _node3 = daemons
    _killed_mid_create(daemons)
    died = time.monotonic()

    # node2, alive all along, undoes its part once node1 is offline; node3 had none.
    assert wait_until(lambda: not os.path.exists(_part(node2, "p")), timeout=OFFLINE_BOUND + INTERVAL + 10)
    assert time.monotonic() - died <= OFFLINE_BOUND + INTERVAL + 5
    # (The part goes before the intent's end is committed and logged.)
    assert wait_until(lambda: "Undid the pool.create of p" in node2.log(), timeout=10)
    assert os.path.isdir(_part(node1, "p"))  # (a dead member's host is its own business)

    # node1 comes back and undoes its own part; the create asked again makes the pool on all.
    node1.start(timeout=120)
    assert not os.path.exists(_part(node1, "p"))
    _made_again(daemons)


def test_coordinator_back_before_its_lease_lapsed(daemons):  # noqa: F811
    """node1 restarts at once: never offline, but its new heartbeat tells node2 that it forgot."""
    node1, node2, _node3 = daemons
    _killed_mid_create(daemons)
    node1.start(timeout=120)
    restarted = time.monotonic()
    assert not os.path.exists(_part(node1, "p"))
    assert wait_until(lambda: not os.path.exists(_part(node2, "p")), timeout=INTERVAL + 10)
    assert time.monotonic() - restarted < OFFLINE_BOUND  # not by a lapsed lease
    assert wait_until(lambda: "Undid the pool.create of p" in node2.log(), timeout=10)
    _made_again(daemons)
