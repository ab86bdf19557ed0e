"""Three daemons, each in a network namespace of its own with its own address on a bridge
in a fourth namespace (all made by the test, no traffic leaves them), forming a cluster:
bootstrap, two joins with the trust password, shared state, a member stopped (offline
within the bound while the others go on), quorum lost with two of three stopped and
regained, and a forced removal. Real daemons with their etcd children; namespaces,
processes and state are removed afterwards, also on failure."""

import os
import signal
import sys
import time

import pytest

from tests.daemonproc import wait_until
from tests.etcdproc import ETCD
from tests.integration.netns import Netns, daemon_in, free_subnet, veth

pytestmark = [pytest.mark.skipif(not os.path.exists(ETCD), reason="etcd is not installed (Debian package etcd-server)"),
              pytest.mark.timeout(600)]

PASSWORD = "cluster-secret"
OFFLINE_BOUND = 20 + 2  # heartbeat TTL + the margin stated in lxdtx.cluster.heartbeat
PORT = 8443

# Run inside a joiner's namespace: POST /1.0/certificates with the password to the first
# member, showing the joiner's own server certificate (what `lxd init` did before a join).
TRUST_SCRIPT = """
import http.client, json, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
c = http.client.HTTPSConnection(sys.argv[1], int(sys.argv[2]), context=ctx, timeout=30)
c.request("POST", "/1.0/certificates", body=json.dumps({"type": "client", "password": sys.argv[5]}))
print(c.getresponse().status)
"""


@pytest.fixture
def daemons():
    yield from three_daemons()


def three_daemons():
    """Three daemons in namespaces of their own on one bridge, each with core.https_address set
    (what the `daemons` fixture hands out; other modules make a module-scoped one of it)."""
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    made, spaces = [], []
    try:
        hub = Netns("lxdtxh")
        spaces.append(hub)
        hub.ip("link", "add", "br0", "type", "bridge")
        hub.ip("link", "set", "br0", "up")
        subnet = free_subnet()
        for i in (1, 2, 3):
            ns = Netns("lxdtxc")
            spaces.append(ns)
            peer = veth(hub, f"h{i}", peer_ns=ns, peer="eth0")
            hub.ip("link", "set", f"h{i}", "master", "br0", "up")
            ns.ip("addr", "add", f"{subnet[i]}/24", "dev", peer)
            ns.ip("link", "set", peer, "up")
            d = daemon_in(ns)
            d.ns, d.address = ns, str(subnet[i])
            made.append(d)
            assert d.request("PATCH", "/1.0", {"config": {"core.https_address": f"{d.address}:{PORT}"}}).status == 200
        yield made
    finally:
        for d in made:
            d.cleanup()
        for ns in reversed(spaces):
            ns.delete()


def _pool_on_each(first, source):
    """The dir pool `default`, defined on each member with a source of its own under `source`,
    then made on all (asked of `first`)."""
    for i in (1, 2, 3):
        pending = first.request("POST", f"/1.0/storage-pools?target=node{i}", {
            "name": "default", "driver": "dir", "config": {"source": f"{source}/node{i}"}})
        assert pending.status in (200, 201), pending.json
    made = first.request("POST", "/1.0/storage-pools", {"name": "default", "driver": "dir"})
    assert made.status in (200, 201), made.json


def _members(d):
    return {m["server_name"]: m for m in d.request("GET", "/1.0/cluster/members?recursion=1").metadata}


def _join(first, joiner, name):
    status = joiner.ns.exec(sys.executable, "-c", TRUST_SCRIPT, first.address, str(PORT),
                            os.path.join(joiner.dir, "server.crt"), os.path.join(joiner.dir, "server.key"),
                            PASSWORD).stdout.strip()
    assert status in ("200", "201"), status
    with open(os.path.join(first.dir, "server.crt")) as f:
        pem = f.read()
    result = joiner.request("PUT", "/1.0/cluster", {"server_name": name, "enabled": True,
                                                    "cluster_address": f"{first.address}:{PORT}",
                                                    "cluster_certificate": pem})
    assert result.status == 202, result
    assert result.metadata["description"] == "Joining cluster"
    return joiner.wait_operation(result, timeout=180)


def test_three_member_cluster(daemons):
    node1, node2, node3 = daemons
    op = node1.request("PUT", "/1.0/cluster", {"server_name": "node1", "enabled": True})
    assert node1.wait_operation(op)["status"] == "Success"
    node1.lxc("config", "set", "core.trust_password", PASSWORD)
    node1.lxc("profile", "create", "shared")

    # A join with no certificate is refused at once; one pinning the wrong certificate fails
    # and leaves both sides as they were.
    bad = node2.request("PUT", "/1.0/cluster", {"server_name": "node2", "enabled": True,
                                                "cluster_address": f"{node1.address}:{PORT}"})
    assert bad.status == 400 and "No target cluster node certificate provided" in bad.json["error"]
    with open(os.path.join(node2.dir, "server.crt")) as f:
        wrong = f.read()
    op = node2.request("PUT", "/1.0/cluster", {"server_name": "node2", "enabled": True,
                                               "cluster_address": f"{node1.address}:{PORT}",
                                               "cluster_certificate": wrong})
    failed = node2.wait_operation(op)
    assert failed["status"] == "Failure" and "Could not reach the cluster member" in failed["err"], failed
    assert node2.request("GET", "/1.0/cluster").metadata == {"server_name": "", "enabled": False}
    assert list(_members(node1)) == ["node1"]

    assert _join(node1, node2, "node2")["status"] == "Success"
    joined = _join(node1, node3, "node3")
    assert joined["status"] == "Success", joined["err"]
    for d in daemons:
        assert wait_until(lambda d=d: sorted(_members(d)) == ["node1", "node2", "node3"]
                          and all(m["status"] == "Online" for m in _members(d).values()), timeout=30)
        assert d.request("GET", "/1.0").metadata["environment"]["server_clustered"] is True
    # One state: what one member writes the others read.
    assert "shared" in node3.lxc("profile", "list", "--format=csv").stdout
    node2.lxc("profile", "create", "from2")
    assert wait_until(lambda: "from2" in node1.lxc("profile", "list", "--format=csv").stdout, timeout=10)
    _error = node3.request("POST", "/1.0/cluster/members/node3", {"server_name": "node1"})
    assert _error.status == 400 and "already has a member named 'node1'" in _error.json["error"]

    # node3's host dies (daemon and etcd killed, so no lease is revoked): shown offline
    # within the bound on the others once its lease lapses, and they keep working.
    with open(os.path.join(node3.dir, "cluster", "etcd.pid")) as f:
        etcd3 = int(f.read())
    stopped = time.monotonic()
    node3.stop(sig=signal.SIGKILL)
    os.kill(etcd3, signal.SIGKILL)
    assert wait_until(lambda: _members(node1)["node3"]["status"] == "Offline", timeout=OFFLINE_BOUND + 10)
    assert time.monotonic() - stopped <= OFFLINE_BOUND
    assert _members(node2)["node3"]["message"].startswith("no heartbeat since")
    node1.lxc("profile", "create", "while3down")
    assert wait_until(lambda: "while3down" in node2.lxc("profile", "list", "--format=csv").stdout, timeout=10)

    # node2 stops too: two of three etcd members gone, no quorum. Writes fail naming the
    # member asked; reads still answer; nothing is written half.
    node2.stop()
    failed = node1.lxc("profile", "create", "noquorum", check=False, timeout=120)
    assert failed.returncode != 0
    assert "etcd member 'node1'" in failed.stderr and "no quorum" in failed.stderr, failed.stderr
    assert "shared" in node1.lxc("profile", "list", "--format=csv").stdout

    # Both come back: the cluster recovers, all members online, one state.
    node2.start(timeout=120)
    node3.start(timeout=120)
    assert wait_until(lambda: node1.lxc("profile", "create", "after", check=False).returncode == 0, timeout=60)
    listings = set()
    for d in daemons:
        assert wait_until(lambda d=d: all(m["status"] == "Online" for m in _members(d).values()), timeout=30)
        listed = d.lxc("profile", "list", "--format=csv").stdout
        assert "after" in listed and "while3down" in listed
        listings.add(listed)
    # The refused write was either applied whole once the quorum returned (etcd may still
    # commit a proposal that timed out) or not at all; every member shows the same.
    assert len(listings) == 1

    # node3 removed while online: only with force; its etcd member goes too.
    refused = node1.request("DELETE", "/1.0/cluster/members/node3")
    assert refused.status == 400 and "is online" in refused.json["error"]
    assert node1.request("DELETE", "/1.0/cluster/members/node3?force=1").status == 200
    assert wait_until(lambda: sorted(_members(node2)) == ["node1", "node2"], timeout=10)
    node1.lxc("profile", "create", "after-removal")
    assert wait_until(lambda: "after-removal" in node2.lxc("profile", "list", "--format=csv").stdout, timeout=10)
