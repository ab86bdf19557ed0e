"""A three-member cluster (three network namespaces, as test_cluster_join) driven by the
real `lxc` client and pylxd: `lxc cluster enable`, per-member storage pools (`lxc storage
create --target` on each member, then once without), `lxc move --target` of a stopped
container (forwarded from a third member; a failing target leaves it whole where it was;
a running one refused as LXD 3.x refuses it), a profile change made on one member applied
by the member a running container lives on, `lxc list` and `lxc cluster list` with a member
stopped, rename and removal of members, and the pool removed from every member."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pylxd
import pytest

from lxdtx import faults
from tests.daemonproc import wait_until
from tests.integration.test_cluster_join import OFFLINE_BOUND, PASSWORD, _join, _members, daemons, pytestmark  # noqa: F401

NET = "lxdtxcmbr"


def _csv(d, *args):
    return [line.split(",") for line in d.lxc(*args, "--format=csv").stdout.splitlines() if line]


def _create(d, name, target):
    op = d.request("POST", f"/1.0/containers?target={target}",
                   {"name": name, "source": {"type": "none"},
                    "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}})
    assert op.status == 202, op.json
    assert d.wait_operation(op)["status"] == "Success"


def _locations(d):
    return {c["name"]: c["location"] for c in d.request("GET", "/1.0/containers?recursion=1").metadata}


def _busybox_image(d, workdir):
    """The busybox image, imported on member `d` (image files stay on the member that has them)."""
    os.makedirs(workdir)
    out = subprocess.run([sys.executable, "-m", "lxdtx.cli", "image", "busybox", workdir, "--compression", "xz"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.returncode == 0
    path = os.path.join(workdir, os.listdir(workdir)[0])
    d.lxc("image", "import", path, "--alias", "bb")


def _memory_limit(d, name):
    path = d.cgroup_file(name, "memory", "memory.limit_in_bytes")
    if not os.path.exists(path):
        path = d.cgroup_file(name, "memory", "memory.max")
    with open(path) as f:
        return f.read().strip()


def test_members_pools_and_moves(daemons):  # noqa: F811
    node1, node2, node3 = daemons
    work = tempfile.mkdtemp(prefix="lxdtxcm-", dir="/var/tmp")
    sources = {f"node{i}": os.path.join(work, f"pool{i}") for i in (1, 2, 3)}
    try:
        # Bootstrap with the real client; two joins.
        node1.lxc("cluster", "enable", "node1")
        assert node1.request("GET", "/1.0/cluster").metadata == {"server_name": "node1", "enabled": True}
        node1.lxc("config", "set", "core.trust_password", PASSWORD)
        assert _join(node1, node2, "node2")["status"] == "Success"
        assert _join(node1, node3, "node3")["status"] == "Success"
        for d in daemons:
            assert wait_until(lambda d=d: len(_members(d)) == 3
                              and all(m["status"] == "Online" for m in _members(d).values()), timeout=30)
        listed = {row[0]: row for row in _csv(node2, "cluster", "list")}
        assert sorted(listed) == ["node1", "node2", "node3"]
        assert all("ONLINE" in row for row in listed.values()), listed
        assert "server_name: node3" in node1.lxc("cluster", "show", "node3").stdout

        # Per-member pools: each member's source of its own, then made on all at once.
        refused = node1.lxc("storage", "create", "default", "dir", check=False)
        assert refused.returncode != 0 and "Pool not pending on any node" in refused.stderr
        refused = node1.lxc("storage", "create", "default", "dir", "rsync.bwlimit=10", "--target", "node1",
                            check=False)
        assert refused.returncode != 0 and "may not be used as node-specific key" in refused.stderr
        for member, source in sources.items():
            node1.lxc("storage", "create", "default", "dir", f"source={source}", "--target", member)
        again = node2.lxc("storage", "create", "default", "dir", f"source={sources['node1']}", "--target",
                          "node1", check=False)
        assert again.returncode != 0 and "already defined on node node1" in again.stderr
        assert node3.request("GET", "/1.0/storage-pools/default").metadata["status"] == "Pending"
        node2.lxc("storage", "create", "default", "dir")
        # (Another member's commit reaches node3 through its etcd watch: a moment later.)
        assert wait_until(lambda: node3.request("GET", "/1.0/storage-pools/default").metadata["status"] == "Created",
                          timeout=10)
        pool = node3.request("GET", "/1.0/storage-pools/default").metadata
        assert pool["status"] == "Created" and "source" not in pool["config"]
        assert sorted(pool["locations"]) == ["node1", "node2", "node3"]
        for member, source in sources.items():
            assert f"source: {source}" in node1.lxc("storage", "show", "default", "--target", member).stdout
            assert os.path.isdir(source)
        node1.lxc("profile", "device", "add", "default", "root", "disk", "path=/", "pool=default")

        # A custom volume on the member `--target` names; asked of any member without it, it
        # is its member's.
        node1.lxc("storage", "volume", "create", "default", "vol2", "--target", "node2")
        assert os.path.isdir(os.path.join(sources["node2"], "custom", "vol2"))
        shown = node3.request("GET", "/1.0/storage-pools/default/volumes/custom/vol2").metadata
        assert shown["location"] == "node2"
        node3.lxc("storage", "volume", "set", "default", "vol2", "user.seen", "yes")
        assert node1.request("GET", "/1.0/storage-pools/default/volumes/custom/vol2?target=node2"
                             ).metadata["config"]["user.seen"] == "yes"
        node3.lxc("storage", "volume", "delete", "default", "vol2")
        assert not os.path.exists(os.path.join(sources["node2"], "custom", "vol2"))

        # A network the same way: a bridge on every member, one subnet settled for all.
        refused = node1.lxc("network", "create", NET, "ipv4.address=none", "--target", "node1", check=False)
        assert refused.returncode != 0 and "may not be used as node-specific key" in refused.stderr
        for member in sources:
            node2.lxc("network", "create", NET, "--target", member)
        assert node1.request("GET", f"/1.0/networks/{NET}").metadata["status"] == "Pending"
        refused = node1.lxc("network", "create", NET, "bridge.external_interfaces=eth0", check=False)
        assert refused.returncode != 0 and "is node-specific" in refused.stderr
        node3.lxc("network", "create", NET, "ipv4.address=auto", "ipv6.address=none")
        network = node1.request("GET", f"/1.0/networks/{NET}?target=node2").metadata
        assert network["status"] == "Created" and sorted(network["locations"]) == ["node1", "node2", "node3"]
        subnet = network["config"]["ipv4.address"]
        for d in daemons:
            assert NET in d.ns.links()
            assert subnet in d.ns.addresses(NET)
        # A change of the shared config reaches every member's bridge; a member's own key stays.
        node2.lxc("network", "set", NET, "bridge.mtu", "1400")
        for d in daemons:
            assert d.ns.links()[NET]["mtu"] == 1400
        refused = node2.lxc("network", "set", NET, "bridge.external_interfaces", "eth9", check=False)
        assert refused.returncode != 0 and "can't be changed" in refused.stderr
        node3.lxc("storage", "set", "default", "rsync.bwlimit", "10MB")
        assert node1.request("GET", "/1.0/storage-pools/default?target=node2").metadata["config"][
            "rsync.bwlimit"] == "10MB"
        refused = node3.lxc("storage", "set", "default", "source", "/elsewhere", check=False)
        assert refused.returncode != 0 and "can't be changed" in refused.stderr

        # A stopped container moved from node1 to node2, asked of node3 (forwarded to node1).
        _create(node1, "c1", "node1")
        pushed = node1.request("POST", "/1.0/containers/c1/files?path=/hello", raw=b"moved along\n",
                               headers={"X-LXD-type": "file", "X-LXD-mode": "0644",
                                        "Content-Type": "application/octet-stream"})
        assert pushed.status == 200, pushed.json
        assert os.path.isdir(os.path.join(sources["node1"], "containers", "c1"))
        # The real client, which waits for the move through node3's events (node1's relayed).
        node3.lxc("move", "c1", "--target", "node2", timeout=90)
        for d in daemons:
            assert _locations(d) == {"c1": "node2"}
        assert not os.path.exists(os.path.join(sources["node1"], "containers", "c1"))
        assert os.path.isdir(os.path.join(sources["node2"], "containers", "c1"))
        pulled = node1.request("GET", "/1.0/containers/c1/files?path=/hello")
        assert pulled.status == 200 and pulled.body == b"moved along\n"
        # The real client, asking the member that holds it: back to node1.
        node2.lxc("move", "c1", "--target", "node1")
        assert _locations(node3) == {"c1": "node1"}
        assert not os.path.exists(os.path.join(sources["node2"], "containers", "c1"))
        again = node1.lxc("move", "c1", "--target", "node1", check=False)
        assert again.returncode != 0 and "already on cluster member 'node1'" in again.stderr
        unknown = node1.lxc("move", "c1", "--target", "nosuch", check=False)
        assert unknown.returncode != 0 and "nosuch" in unknown.stderr

        # A target that fails to take it (its pool holds a stray c1) leaves it whole on node1.
        stray = os.path.join(sources["node3"], "containers", "c1")
        os.makedirs(stray)
        failed = node1.lxc("move", "c1", "--target", "node3", check=False)
        assert failed.returncode != 0, failed.stdout
        os.rmdir(stray)
        assert _locations(node3) == {"c1": "node1"}
        assert node2.request("GET", "/1.0/containers/c1/files?path=/hello").body == b"moved along\n"
        assert not os.path.exists(stray)

        # A running container (on node2, from an image node2 has) can't move; a profile
        # change made on node1 is applied by node2 to it.
        _busybox_image(node2, os.path.join(work, "image"))
        node2.lxc("launch", "bb", "r2", "--target", "node2")
        assert _locations(node1)["r2"] == "node2"
        running = node1.lxc("move", "r2", "--target", "node1", check=False)
        assert running.returncode != 0 and "Container is running" in running.stderr
        node1.lxc("profile", "set", "default", "limits.memory", "64MB")
        assert _memory_limit(node2, "r2") == str(64 * 1024 * 1024)
        rows = {row[0]: row for row in _csv(node1, "list", "-c", "nsL")}
        assert rows["r2"][1:] == ["RUNNING", "node2"] and rows["c1"][1:] == ["STOPPED", "node1"]

        # node2 restarts: its start-up (recovery sweeps, autostart) touches only its own
        # containers: node1's c1, marked for autostart, is left alone and whole.
        node1.lxc("config", "set", "c1", "boot.autostart", "true")
        node2.stop()
        node2.start(timeout=120)
        assert "c1" not in "".join(line for line in node2.log().splitlines() if "autostart" in line.lower())
        assert node1.request("GET", "/1.0/containers/c1/files?path=/hello").body == b"moved along\n"
        assert node2.request("GET", "/1.0/containers/r2").metadata["status"] == "Running"

        # pylxd against node3: containers with their location, members, a create with target.
        client = pylxd.Client(endpoint=node3.socket_path)
        assert {c.name: c.location for c in client.containers.all()} == {"c1": "node1", "r2": "node2"}
        assert sorted(m.server_name for m in client.cluster.members.all()) == ["node1", "node2", "node3"]
        made = client.containers.create({"name": "p3", "source": {"type": "none"}}, wait=True, target="node3")
        assert made.location == "node3"

        # node3 stops: offline within the bound; its container shown as ERROR, the rest work.
        stopped = time.monotonic()
        node3.stop()
        assert wait_until(lambda: {r[0]: r for r in _csv(node1, "cluster", "list")}["node3"].count("OFFLINE") == 1,
                          timeout=OFFLINE_BOUND + 10)
        assert time.monotonic() - stopped <= OFFLINE_BOUND
        rows = {row[0]: row for row in _csv(node1, "list", "-c", "nsL")}
        assert rows["p3"][1:] == ["ERROR", "node3"] and rows["r2"][1:] == ["RUNNING", "node2"]
        node1.lxc("exec", "r2", "--", "true", check=False)  # (websockets are another branch's)
        offline = node1.lxc("move", "c1", "--target", "node3", check=False)
        assert offline.returncode != 0 and "Target node is offline" in offline.stderr

        # Rename and removal with the real client.
        node1.lxc("cluster", "rename", "node2", "second")
        assert _locations(node1)["r2"] == "second"
        assert wait_until(lambda: node2.request("GET", "/1.0/cluster").metadata["server_name"] == "second",
                          timeout=10)
        held = node1.lxc("cluster", "remove", "node3", check=False)
        assert held.returncode != 0 and "still has the following containers: p3" in held.stderr
        node1.lxc("cluster", "remove", "--force", "node3", input="yes\n")
        assert sorted(_members(node1)) == ["node1", "second"]
        assert "p3" not in _locations(node1)

        # Everything goes; the pool from both remaining members.
        node2.lxc("delete", "-f", "r2")
        node1.lxc("delete", "c1")
        node1.lxc("image", "delete", "bb", check=False)
        node1.lxc("profile", "device", "remove", "default", "root")
        node1.lxc("storage", "delete", "default")
        assert node2.request("GET", "/1.0/storage-pools").metadata == []
        node2.lxc("network", "delete", NET)
        for d in (node1, node2):
            assert NET not in d.ns.links()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _form(members, sources):
    """Bootstrap, a join, the `default` pool on both with `sources`, a root disk; then a
    third member joins and makes its own pool from the shared config (its default source)."""
    node1, node2, node3 = members
    op = node1.request("PUT", "/1.0/cluster", {"server_name": "node1", "enabled": True})
    assert node1.wait_operation(op)["status"] == "Success"
    node1.lxc("config", "set", "core.trust_password", PASSWORD)
    assert _join(node1, node2, "node2")["status"] == "Success"
    for member in ("node1", "node2"):
        node1.lxc("storage", "create", "default", "dir", f"source={sources[member]}", "--target", member)
    node1.lxc("storage", "create", "default", "dir")
    node1.lxc("profile", "device", "add", "default", "root", "disk", "path=/", "pool=default")
    assert _join(node1, node3, "node3")["status"] == "Success"
    pool = node1.request("GET", "/1.0/storage-pools/default?target=node3").metadata
    assert sorted(pool["locations"]) == ["node1", "node2", "node3"]
    sources["node3"] = pool["config"]["source"]
    assert sources["node3"].startswith(node3.dir) and os.path.isdir(sources["node3"])


@pytest.mark.parametrize("point", ["cluster.move.received", "cluster.move.moved"])
def test_move_killed_at_each_step(daemons, point):  # noqa: F811
    """The target killed with the volumes received and the row unchanged, or the owner
    killed once the row names the target: after the restart the container is whole on
    exactly one member and the other member's copy is gone."""
    from lxdtx.cluster import move

    assert faults.points("cluster.move.") == [move.RECEIVED.name, move.MOVED.name]
    node1, node2, node3 = daemons
    work = tempfile.mkdtemp(prefix="lxdtxcm-", dir="/var/tmp")
    sources = {f"node{i}": os.path.join(work, f"pool{i}") for i in (1, 2, 3)}
    try:
        _form(daemons, sources)
        _create(node1, "c1", "node1")
        pushed = node1.request("POST", "/1.0/containers/c1/files?path=/hello", raw=b"whole\n",
                               headers={"X-LXD-type": "file", "X-LXD-mode": "0644",
                                        "Content-Type": "application/octet-stream"})
        assert pushed.status == 200, pushed.json
        dying = node2 if point == move.RECEIVED.name else node1
        dying.stop()
        dying.start(timeout=120, crash_at=point)
        assert wait_until(lambda: all(m["status"] == "Online" for m in _members(node3).values()), timeout=60)
        op = node3.request("POST", "/1.0/instances/c1?target=node2", {"name": "c1", "migration": True})
        assert op.status == 202, op.json
        try:
            node3.wait_operation(op, timeout=60)
        except Exception:
            pass  # the member that answered for it died
        assert wait_until(lambda: dying.proc.poll() is not None, timeout=60), "the crash point was not reached"
        dying.start(timeout=120)
        owner, other = ("node1", "node2") if point == move.RECEIVED.name else ("node2", "node1")
        assert _locations(node3) == {"c1": owner}
        assert os.path.isdir(os.path.join(sources[owner], "containers", "c1"))
        assert not os.path.exists(os.path.join(sources[other], "containers", "c1"))
        assert node3.request("GET", "/1.0/containers/c1/files?path=/hello").body == b"whole\n"
        op = node1.request("DELETE", "/1.0/containers/c1")
        assert node1.wait_operation(op)["status"] == "Success"
    finally:
        shutil.rmtree(work, ignore_errors=True)
