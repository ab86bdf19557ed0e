"""Three daemons on loopback forming a cluster: bootstrap, two joins, shared state, a
member stopped (offline within the bound while the others go on), its removal, and
quorum lost and regained. Real daemons with their etcd children; all stopped by pid."""

import os
import time

import pytest

from tests.daemonproc import Daemon, wait_until
from tests.etcdproc import ETCD
from tests.integration.net import https_request
from tests.integration.test_cluster_bootstrap import _three_free_ports

pytestmark = [pytest.mark.skipif(not os.path.exists(ETCD), reason="etcd is not installed (Debian package etcd-server)"),
              pytest.mark.timeout(600)]

PASSWORD = "cluster-secret"
OFFLINE_BOUND = 20 + 2  # heartbeat TTL + the margin stated in lxdtx.cluster.heartbeat


@pytest.fixture
def daemons():
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    made = []
    try:
        for _ in range(3):
            port = _three_free_ports()
            d = Daemon(https=f"127.0.0.1:{port}")
            d.port = port
            made.append(d)
            d.start(timeout=120)
        yield made
    finally:
        for d in made:
            d.cleanup()


def _members(d):
    return {m["server_name"]: m for m in d.request("GET", "/1.0/cluster/members?recursion=1").metadata}


def _join(first, joiner, name):
    cert = (os.path.join(joiner.dir, "server.crt"), os.path.join(joiner.dir, "server.key"))
    trusted = https_request(first.port, "POST", "/1.0/certificates", {"type": "client", "password": PASSWORD},
                            cert=cert)
    assert trusted.status in (200, 201), trusted.body
    with open(os.path.join(first.dir, "server.crt")) as f:
        pem = f.read()
    result = joiner.request("PUT", "/1.0/cluster", {"server_name": name, "enabled": True,
                                                    "cluster_address": f"127.0.0.1:{first.port}",
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
                                                "cluster_address": f"127.0.0.1:{node1.port}"})
    assert bad.status == 400 and "No target cluster node certificate provided" in bad.json["error"]
    with open(os.path.join(node2.dir, "server.crt")) as f:
        wrong = f.read()
    op = node2.request("PUT", "/1.0/cluster", {"server_name": "node2", "enabled": True,
                                               "cluster_address": f"127.0.0.1:{node1.port}",
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

    # node3 stops: shown offline within the bound on the others, which keep working.
    stopped = time.monotonic()
    node3.stop()
    assert wait_until(lambda: _members(node1)["node3"]["status"] == "Offline", timeout=OFFLINE_BOUND + 10)
    assert time.monotonic() - stopped <= OFFLINE_BOUND
    assert _members(node2)["node3"]["message"].startswith("no heartbeat since")
    node1.lxc("profile", "create", "while3down")
    assert wait_until(lambda: "while3down" in node2.lxc("profile", "list", "--format=csv").stdout, timeout=10)

    # Removing it (offline: no force needed) takes its etcd member out too.
    assert node1.request("DELETE", "/1.0/cluster/members/node3").status == 200
    assert wait_until(lambda: sorted(_members(node2)) == ["node1", "node2"], timeout=10)

    # node2 stops: two members, one left: no quorum. Writes fail naming the member asked;
    # reads still answer; nothing is written half.
    node2.stop()
    failed = node1.lxc("profile", "create", "noquorum", check=False, timeout=120)
    assert failed.returncode != 0
    assert "etcd member 'node1'" in failed.stderr and "no quorum" in failed.stderr, failed.stderr
    assert "shared" in node1.lxc("profile", "list", "--format=csv").stdout
    node2.start(timeout=120)
    assert wait_until(lambda: node1.lxc("profile", "create", "after", check=False).returncode == 0, timeout=60)
    listed = node2.lxc("profile", "list", "--format=csv").stdout
    assert "after" in listed and "while3down" in listed
