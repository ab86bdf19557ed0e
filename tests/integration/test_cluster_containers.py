"""Containers in a three-member cluster (three network namespaces, as test_cluster_join):
created on a `target` member from another, placed on the least busy member without one
(only a member that has the root disk's pool: not one whose part of it failed, nor on a
pool still pending), listed with their `location` on every member, requests about them
(get, file push and pull, delete) forwarded to the member that holds them, and an
unreachable member's containers listed as "Error" while the list still answers.

The storage pools are `dir` pools, defined on each member with a source of its own and
then made on all (test_cluster_members covers those pools)."""

import os
import shutil
import tempfile

from tests.daemonproc import wait_until
from tests.integration.test_cluster_join import PASSWORD, _join, _members, daemons, pytestmark  # noqa: F401

ROOT = {"root": {"type": "disk", "path": "/", "pool": "default"}}


def _create(d, name, target=None, pool="default"):
    path = "/1.0/containers" + (f"?target={target}" if target else "")
    op = d.request("POST", path, {"name": name, "source": {"type": "none"},
                                  "devices": {"root": dict(ROOT["root"], pool=pool)}})
    assert op.status == 202, op.json
    done = d.wait_operation(op)
    assert done["status"] == "Success", done


def _refused(d, name, target=None, pool="default"):
    path = "/1.0/containers" + (f"?target={target}" if target else "")
    answer = d.request("POST", path, {"name": name, "source": {"type": "none"},
                                      "devices": {"root": dict(ROOT["root"], pool=pool)}})
    assert answer.status == 400, answer.json
    return answer.json["error"]


def _listed(d):
    return {c["name"]: c for c in d.request("GET", "/1.0/containers?recursion=1").metadata}


def _pool(first, name, sources):
    """A dir pool defined on each member of `sources` (name -> source), then made on all."""
    for member, source in sources.items():
        pending = first.request("POST", f"/1.0/storage-pools?target={member}", {
            "name": name, "driver": "dir", "config": {"source": source}})
        assert pending.status in (200, 201), pending.json
    made = first.request("POST", "/1.0/storage-pools", {"name": name, "driver": "dir"})
    assert made.status in (200, 201), made.json


def test_containers_across_members(daemons):  # noqa: F811
    node1, node2, node3 = daemons
    source = tempfile.mkdtemp(prefix="lxdtx-cluster-pool-", dir="/var/tmp")
    try:
        op = node1.request("PUT", "/1.0/cluster", {"server_name": "node1", "enabled": True})
        assert node1.wait_operation(op)["status"] == "Success"
        node1.lxc("config", "set", "core.trust_password", PASSWORD)
        assert _join(node1, node2, "node2")["status"] == "Success"
        # `default` is made on node1 and node2; node3 joins with its own default source taken
        # (not empty), so its part of `default` fails and it has none. `other` is on all three.
        _pool(node1, "default", {m: f"{source}/default-{m}" for m in ("node1", "node2")})
        taken = os.path.join(node3.dir, "storage-pools", "default")
        os.makedirs(taken)
        with open(os.path.join(taken, "stray"), "w"):
            pass
        assert _join(node1, node3, "node3")["status"] == "Success"
        for d in daemons:
            assert wait_until(lambda d=d: all(m["status"] == "Online" for m in _members(d).values())
                              and len(_members(d)) == 3, timeout=30)
        assert sorted(node3.request("GET", "/1.0/storage-pools/default").metadata["locations"]) == ["node1", "node2"]
        _pool(node1, "other", {m: f"{source}/other-{m}" for m in ("node1", "node2", "node3")})

        # From node1 onto node2 and node1; without a target onto the least busy member that
        # has the pool (node1 over node3, which has none and no container; by name on a tie).
        _create(node1, "c2", target="node2")
        _create(node3, "c1", target="node1")
        _create(node3, "c4")
        _create(node2, "c3", target="node3", pool="other")
        bad = node1.request("POST", "/1.0/containers?target=nosuch", {"name": "x", "source": {"type": "none"}})
        assert bad.status == 404 and "nosuch" in bad.json["error"]
        # A target without the pool, a pool only pending: refused, naming member and pool.
        error = _refused(node1, "x", target="node3")
        assert "node3" in error and '"default"' in error
        assert node1.request("POST", "/1.0/storage-pools?target=node1", {
            "name": "pend", "driver": "dir", "config": {"source": f"{source}/pend"}}).status in (200, 201)
        assert "pend" in _refused(node2, "x", pool="pend") and "pending" in _refused(node2, "x", pool="pend")
        assert "node1" in _refused(node2, "x", target="node1", pool="pend")
        for d in daemons:
            listed = _listed(d)
            assert {n: c["location"] for n, c in listed.items()} == {
                "c1": "node1", "c2": "node2", "c3": "node3", "c4": "node1"}
            assert all(c["status"] == "Stopped" for c in listed.values())
        # Nor can a container move to a member without its pool.
        refused = node2.lxc("move", "c1", "--target", "node3", check=False)
        assert refused.returncode != 0 and "node3" in refused.stderr and '"default"' in refused.stderr
        assert _listed(node1)["c1"]["location"] == "node1"

        # Forwarded: get, a file pushed through node3 into c2 (on node2) and read back via node1.
        assert node3.request("GET", "/1.0/containers/c2").metadata["location"] == "node2"
        pushed = node3.request("POST", "/1.0/containers/c2/files?path=/hello", raw=b"from node3\n",
                               headers={"X-LXD-type": "file", "X-LXD-mode": "0644",
                                        "Content-Type": "application/octet-stream"})
        assert pushed.status == 200, pushed.json
        pulled = node1.request("GET", "/1.0/containers/c2/files?path=/hello")
        assert pulled.status == 200 and pulled.body == b"from node3\n"
        assert {k.lower(): v for k, v in pulled.headers.items()}.get("x-lxd-mode") == "0644"

        # node3 goes: its container is listed as "Error" on the others, the rest as before.
        node3.stop()
        listed = _listed(node1)
        assert listed["c3"]["status"] == "Error" and listed["c3"]["location"] == "node3"
        assert listed["c2"]["status"] == "Stopped"

        # A forwarded delete; the others see it gone.
        deleted = node1.request("DELETE", "/1.0/containers/c2")
        assert deleted.status == 202 and node1.wait_operation(deleted)["status"] == "Success"
        assert wait_until(lambda: "c2" not in _listed(node2), timeout=10)
        for name in ("c1", "c4"):
            op = node1.request("DELETE", f"/1.0/containers/{name}")
            assert node1.wait_operation(op)["status"] == "Success"
    finally:
        shutil.rmtree(source, ignore_errors=True)
