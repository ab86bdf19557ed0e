"""Custom volumes of a local pool in a three-member cluster (three network namespaces, as
test_cluster_join), driven by the real `lxc` client: each is one member's, so two members
each have a volume of the same name in the same pool and `--target` says which one; asked
without it, a name only one member has is that member's, one several have is refused as
LXD refuses it; a container using one is its member's user of it, and can't move away
from it. A lone daemon's volume becomes the first member's at the bootstrap, and a
member's restart (its recovery sweep asks for its volumes under their keys) keeps its own."""

import os
import shutil
import tempfile

from tests.daemonproc import wait_until
from tests.integration.test_cluster_join import PASSWORD, _join, _members, daemons, pytestmark  # noqa: F401


def _volumes(d):
    """{(name, location)} of pool `default`'s custom volumes, as `d` lists them."""
    listed = d.request("GET", "/1.0/storage-pools/default/volumes?recursion=1").metadata
    return {(v["name"], v["location"]) for v in listed if v["type"] == "custom"}


def test_same_name_on_two_members(daemons):  # noqa: F811
    node1, node2, node3 = daemons
    work = tempfile.mkdtemp(prefix="lxdtxcv-", dir="/var/tmp")
    try:
        # A lone daemon's pool and volume; then the cluster, whose joiners make their own pool.
        node1.lxc("storage", "create", "default", "dir", f"source={work}/node1")
        node1.lxc("storage", "volume", "create", "default", "early")
        node1.lxc("cluster", "enable", "node1")
        node1.lxc("config", "set", "core.trust_password", PASSWORD)
        assert _join(node1, node2, "node2")["status"] == "Success"
        assert _join(node1, node3, "node3")["status"] == "Success"
        for d in daemons:
            assert wait_until(lambda d=d: len(_members(d)) == 3
                              and all(m["status"] == "Online" for m in _members(d).values()), timeout=30)
        sources = {name: node1.request("GET", f"/1.0/storage-pools/default?target={name}").metadata["config"]["source"]
                   for name in ("node1", "node2", "node3")}
        assert _volumes(node3) == {("early", "node1")}

        # One name on node2 and on node3, both asked of node1; a second one on node2 refused.
        node1.lxc("storage", "volume", "create", "default", "v", "--target", "node2")
        node1.lxc("storage", "volume", "create", "default", "v", "--target", "node3")
        for member in ("node2", "node3"):
            assert os.path.isdir(os.path.join(sources[member], "custom", "v"))
        assert not os.path.exists(os.path.join(sources["node1"], "custom", "v"))
        again = node3.lxc("storage", "volume", "create", "default", "v", "--target", "node2", check=False)
        assert again.returncode != 0 and "already exists" in again.stderr
        for d in daemons:
            assert wait_until(lambda d=d: _volumes(d) == {("early", "node1"), ("v", "node2"), ("v", "node3")},
                              timeout=10)

        # Without a target: refused for `v`, which two members have; `early` is node1's.
        ambiguous = node1.lxc("storage", "volume", "show", "default", "v", check=False)
        assert ambiguous.returncode != 0 and "More than one cluster member has a volume named" in ambiguous.stderr
        refused = node2.lxc("storage", "volume", "delete", "default", "v", check=False)
        assert refused.returncode != 0 and "Please target a specific member" in refused.stderr
        assert "location: node1" in node3.lxc("storage", "volume", "show", "default", "early").stdout

        # A change to node3's `v` leaves node2's alone.
        node1.lxc("storage", "volume", "set", "default", "v", "user.which", "three", "--target", "node3")
        shown = node2.lxc("storage", "volume", "show", "default", "v", "--target", "node3").stdout
        assert "user.which: three" in shown and "location: node3" in shown
        shown = node3.lxc("storage", "volume", "show", "default", "v", "--target", "node2").stdout
        assert "user.which" not in shown and "location: node2" in shown

        # A container on node2 with node2's `v` attached: it can't move and leave `v` behind
        # (or take node3's); node2's `v` is used, node3's is not.
        op = node1.request("POST", "/1.0/containers?target=node2", {
            "name": "c2", "source": {"type": "none"},
            "devices": {"root": {"type": "disk", "path": "/", "pool": "default"},
                        "data": {"type": "disk", "path": "/data", "pool": "default", "source": "v"}}})
        assert op.status == 202, op.json
        assert node1.wait_operation(op)["status"] == "Success"
        assert "/1.0/containers/c2" in node1.request(
            "GET", "/1.0/storage-pools/default/volumes/custom/v?target=node2").metadata["used_by"]
        assert node1.request("GET", "/1.0/storage-pools/default/volumes/custom/v?target=node3"
                             ).metadata["used_by"] == []
        held = node3.lxc("storage", "volume", "delete", "default", "v", "--target", "node2", check=False)
        assert held.returncode != 0
        moving = node3.lxc("move", "c2", "--target", "node1", check=False)
        assert moving.returncode != 0 and 'custom volume "v"' in moving.stderr
        node1.lxc("delete", "c2")

        # node2 restarts: its recovery keeps its `v` (found under its own key).
        node2.stop()
        node2.start(timeout=120)
        assert os.path.isdir(os.path.join(sources["node2"], "custom", "v"))
        assert wait_until(lambda: all(m["status"] == "Online" for m in _members(node1).values()), timeout=60)

        # node2's goes; node3's stays and is then the one `v`, found without a target.
        node1.lxc("storage", "volume", "delete", "default", "v", "--target", "node2")
        assert not os.path.exists(os.path.join(sources["node2"], "custom", "v"))
        assert os.path.isdir(os.path.join(sources["node3"], "custom", "v"))
        assert "user.which: three" in node1.lxc("storage", "volume", "show", "default", "v").stdout
        node2.lxc("storage", "volume", "delete", "default", "v")
        node2.lxc("storage", "volume", "delete", "default", "early")
        assert not os.path.exists(os.path.join(sources["node3"], "custom", "v"))
        assert not os.path.exists(os.path.join(sources["node1"], "custom", "early"))
        assert wait_until(lambda: _volumes(node3) == set(), timeout=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
