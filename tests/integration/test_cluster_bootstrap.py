"""`/1.0/cluster` on a lone daemon: refusals, becoming the first member (its SQLite
objects moved into its own etcd), the member list, rename and removal rules, and a
daemon killed at each step of the bootstrap. Real daemons and their etcd children on
loopback; everything is stopped by pid and removed."""

import os
import socket

import pytest

from lxdtx.cluster import membership
from lxdtx.cluster.etcdprocess import EtcdFiles
from tests.daemonproc import Daemon, wait_until
from tests.etcdproc import ETCD

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD), reason="etcd is not installed (Debian package etcd-server)")


def _three_free_ports():
    """A port p with p+1 and p+2 free too (the member's etcd peer and client ports)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 65000:
            continue
        try:
            for offset in (1, 2):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no three free ports in a row")


def _lone(auto_init=False):
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    d = Daemon(https=f"127.0.0.1:{_three_free_ports()}", auto_init=auto_init).start(timeout=120)
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def lone():
    yield from _lone()


@pytest.fixture
def initialised():
    """A lone daemon with a pool, a bridge and the busybox image (`lxdtx init --auto`)."""
    yield from _lone(auto_init=True)


def _error(result, code, text):
    assert result.status == code, result
    assert text in result.json["error"], result


def _objects(d):
    found = {path: d.request("GET", f"{path}?recursion=1").metadata
             for path in ("/1.0/profiles", "/1.0/certificates", "/1.0/networks", "/1.0/storage-pools",
                         "/1.0/images")}
    # The host's own links come and go (other tests run beside): only managed networks count.
    found["/1.0/networks"] = [n for n in found["/1.0/networks"] if n.get("managed")]
    return found


def _enable(d, name="node1"):
    result = d.request("PUT", "/1.0/cluster", {"server_name": name, "enabled": True})
    assert result.status == 202, result
    assert result.metadata["description"] == "Creating bootstrap node"
    return d.wait_operation(result, timeout=120)


def test_refusals_change_nothing(lone):
    """Bad bodies are refused naming the field; nothing becomes clustered."""
    assert lone.request("GET", "/1.0/cluster").metadata == {"server_name": "", "enabled": False}
    _error(lone.request("PUT", "/1.0/cluster", {"enabled": True}), 400, "ServerName is required")
    _error(lone.request("PUT", "/1.0/cluster", {"server_name": "a", "enabled": False}), 400,
           "ServerName must be empty")
    _error(lone.request("PUT", "/1.0/cluster", {"server_name": "a", "enabled": "yes"}), 400, '"enabled"')
    _error(lone.request("PUT", "/1.0/cluster", {"server_name": "a/b", "enabled": True}), 400, "Invalid member name")
    _error(lone.request("PUT", "/1.0/cluster", {"server_name": "a", "enabled": True,
                                                "cluster_address": "10.0.0.1:8443"}), 400,
           "No target cluster node certificate provided")
    _error(lone.request("PUT", "/1.0/cluster", {"server_name": "a", "enabled": True, "cluster_address": "10.0.0.1:8443",
                                                "cluster_certificate": "junk"}), 400, "not a PEM certificate")
    assert lone.request("PUT", "/1.0/cluster", {"enabled": False}).status == 200
    _error(lone.request("GET", "/1.0/cluster/members"), 400, "not clustered")
    https = lone.request("GET", "/1.0").metadata["config"]["core.https_address"]
    assert lone.request("PATCH", "/1.0", {"config": {"core.https_address": ""}}).status == 200
    _error(lone.request("PUT", "/1.0/cluster", {"server_name": "a", "enabled": True}), 400,
           "No core.https_address config key is set on this node")
    assert lone.request("PATCH", "/1.0", {"config": {"core.https_address": https}}).status == 200
    assert lone.request("GET", "/1.0/cluster").metadata == {"server_name": "", "enabled": False}
    assert not os.path.exists(EtcdFiles(lone.dir).dir)


def _assert_moved(after, before):
    """Everything moved; the one addition is the member's own server certificate, trusted so
    that the other members may call it (lxdtx.cluster.peers). Pools and networks are now the
    first member's: located there, their node-specific keys shown only with `?target=`."""
    from lxdtx.cluster import networks, pools

    own = [c for c in after["/1.0/certificates"] if c not in before["/1.0/certificates"]]
    assert [c["name"] for c in own] == ["node1"]
    after["/1.0/certificates"] = [c for c in after["/1.0/certificates"] if c not in own]
    for path, hidden in (("/1.0/storage-pools", pools.NODE_SPECIFIC), ("/1.0/networks", networks.NODE_SPECIFIC)):
        for obj in before[path]:
            if obj.get("managed", True):
                obj["config"] = {k: v for k, v in obj["config"].items() if k not in hidden}
                obj["locations"] = ["node1"]
    assert after == before


def test_bootstrap_moves_everything(initialised):
    """The first member keeps every object it had, now in its etcd; it lists itself online,
    may be renamed, can't remove itself, and is still clustered after a restart."""
    initialised.lxc("profile", "create", "p1")
    initialised.lxc("profile", "set", "p1", "user.note", "moved")
    assert initialised.request("PATCH", "/1.0", {"config": {"images.compression_algorithm": "xz"}}).status == 200
    before = _objects(initialised)
    assert before["/1.0/storage-pools"] and before["/1.0/networks"] and before["/1.0/images"]
    op = _enable(initialised)
    assert op["status"] == "Success", op
    assert initialised.request("GET", "/1.0/cluster").metadata == {"server_name": "node1", "enabled": True}
    env = initialised.request("GET", "/1.0").metadata["environment"]
    assert (env["server_clustered"], env["server_name"]) == (True, "node1")
    _assert_moved(_objects(initialised), before)
    assert initialised.request("GET", "/1.0").metadata["config"]["images.compression_algorithm"] == "xz"
    _error(initialised.request("PUT", "/1.0/cluster", {"server_name": "x", "enabled": True}), 400, "already clustered")

    assert initialised.request("GET", "/1.0/cluster/members").metadata == ["/1.0/cluster/members/node1"]
    member = initialised.request("GET", "/1.0/cluster/members?recursion=1").metadata[0]
    https = initialised.request("GET", "/1.0").metadata["config"]["core.https_address"]
    assert member == {"server_name": "node1", "url": f"https://{https}", "database": True,
                      "status": "Online", "message": "fully operational"}
    _error(initialised.request("GET", "/1.0/cluster/members/nope"), 404, "not found")
    _error(initialised.request("DELETE", "/1.0/cluster/members/node1"), 400, "can't remove itself")
    _error(initialised.request("POST", "/1.0/cluster/members/node1", {"server_name": "a b"}), 400, "Invalid member name")
    assert initialised.request("POST", "/1.0/cluster/members/node1", {"server_name": "n1"}).status == 200
    assert initialised.request("GET", "/1.0/cluster").metadata["server_name"] == "n1"

    initialised.lxc("profile", "create", "p2")  # written to etcd
    initialised.restart()
    assert initialised.request("GET", "/1.0/cluster").metadata == {"server_name": "n1", "enabled": True}
    assert initialised.request("GET", "/1.0/cluster/members/n1").metadata["status"] == "Online"
    profiles = initialised.lxc("profile", "list", "--format=csv").stdout
    assert "p1" in profiles and "p2" in profiles
    assert initialised.lxc("profile", "get", "p1", "user.note").stdout.strip() == "moved"


@pytest.mark.parametrize("point", [p.name for p in (membership.ENABLE_ETCD_STARTED, membership.ENABLE_COPIED)])
def test_killed_before_it_took_effect(lone, point):
    """Killed before member.json exists: the next start is the lone daemon it was, with
    every object, no etcd left running and no cluster files."""
    lone.lxc("profile", "create", "p1")
    before = _objects(lone)
    lone.stop()
    lone.start(crash_at=point)
    lone.request("PUT", "/1.0/cluster", {"server_name": "node1", "enabled": True})
    assert wait_until(lambda: lone.proc.poll() is not None, timeout=60)
    files = EtcdFiles(lone.dir)
    lone.start(timeout=120)
    assert lone.request("GET", "/1.0/cluster").metadata == {"server_name": "", "enabled": False}
    assert _objects(lone) == before
    assert not os.path.exists(files.dir)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, files.data)]
    assert _enable(lone)["status"] == "Success"  # and it can be done again


def test_killed_after_it_took_effect(lone):
    """Killed just after member.json was written: the next start is the clustered member."""
    lone.lxc("profile", "create", "p1")
    before = _objects(lone)
    lone.stop()
    lone.start(crash_at=membership.ENABLE_TOOK_EFFECT.name)
    lone.request("PUT", "/1.0/cluster", {"server_name": "node1", "enabled": True})
    assert wait_until(lambda: lone.proc.poll() is not None, timeout=60)
    lone.start(timeout=120)
    assert lone.request("GET", "/1.0/cluster").metadata == {"server_name": "node1", "enabled": True}
    _assert_moved(_objects(lone), before)
    assert lone.request("GET", "/1.0/cluster/members/node1").metadata["status"] == "Online"


def _cmdline_has(pid, text):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return text.encode() in f.read().split(b"\0")
    except OSError:
        return False
