"""`lxc stop --stateful` then `lxc start` with CRIU: the container's processes carry on where
they were (a counter continues, never going back); what can't be checkpointed is refused
up front, naming why, and changes nothing."""

import os

import pytest

from tests.daemonproc import Daemon
from tests.integration import counter

pytestmark = pytest.mark.timeout(300)


def test_stateful_stop_and_start(busybox_daemon):
    counter.skip_without_criu()
    d = busybox_daemon
    counter.make(d, "st1")
    try:
        before = counter.wait_counting(d, "st1", above=3)
        d.lxc("stop", "--stateful", "st1")
        info = d.request("GET", "/1.0/containers/st1").metadata
        assert info["status"] == "Stopped" and info["stateful"] is True
        state = os.path.join(d.dir, "storage-pools", "default", "containers", "st1", "state")
        assert os.path.isfile(os.path.join(state, "inventory.img"))
        stopped_at = before

        d.lxc("start", "st1")
        info = d.request("GET", "/1.0/containers/st1").metadata
        assert info["status"] == "Running" and info["stateful"] is False
        assert not os.path.exists(state)
        # The same process goes on: from where it stopped, not from 1 as a fresh boot would.
        resumed = counter.count(d, "st1")
        assert resumed >= stopped_at
        assert counter.wait_counting(d, "st1", above=resumed + 3) > stopped_at
        assert d.lxc("exec", "st1", "--", "cat", "/root/count").stdout.strip().isdigit()

        # Stateful stop again, then a stateless start: the state is dropped, init boots afresh.
        d.lxc("stop", "--stateful", "st1")
        op = d.wait_operation(d.request("PUT", "/1.0/containers/st1/state", {"action": "start", "stateful": False}))
        assert op["status"] == "Success", op
        assert counter.wait_counting(d, "st1") >= 1
        assert d.request("GET", "/1.0/containers/st1").metadata["stateful"] is False
        assert not os.path.exists(state)
    finally:
        d.lxc("delete", "--force", "st1", check=False)


def test_refusals(busybox_daemon):
    """A container without migration.stateful is refused with the reason and keeps running;
    a start with state asked for but none saved is refused too."""
    counter.skip_without_criu()
    d = busybox_daemon
    d.lxc("launch", "busybox", "st2")
    try:
        r = d.lxc("stop", "--stateful", "st2", check=False)
        assert r.returncode != 0 and "migration.stateful" in r.stderr
        info = d.request("GET", "/1.0/containers/st2").metadata
        assert info["status"] == "Running" and info["stateful"] is False
        d.lxc("stop", "--force", "st2")
        r = d.request("PUT", "/1.0/containers/st2/state", {"action": "start", "stateful": True})
        op = d.wait_operation(r)
        assert "no existing state" in str(op)
    finally:
        d.lxc("delete", "--force", "st2", check=False)


def test_default_nic_comes_back(busybox_daemon):
    """The default profile's nic (a veth on the managed bridge) goes through a stateful stop
    and start: the container's eth0 keeps its MAC and address, its host end is on the bridge."""
    counter.skip_without_criu()
    d = busybox_daemon
    counter.make(d, "st4", start=False)
    d.lxc("profile", "add", "st4", "default")
    d.lxc("start", "st4")
    try:
        counter.wait_counting(d, "st4", above=2)
        d.lxc("exec", "st4", "--", "ip", "addr", "add", "192.0.2.44/32", "dev", "eth0")
        before = d.request("GET", "/1.0/containers/st4/state").metadata["network"]["eth0"]
        d.lxc("stop", "--stateful", "st4")
        d.lxc("start", "st4")
        config = d.request("GET", "/1.0/containers/st4").metadata["expanded_config"]
        state = d.request("GET", "/1.0/containers/st4/state").metadata
        after = state["network"]["eth0"]
        assert state["status"] == "Running" and after["state"] == "up"
        assert after["hwaddr"] == before["hwaddr"] == config["volatile.eth0.hwaddr"]
        assert "192.0.2.44" in [a["address"] for a in after["addresses"]]
        host = config["volatile.eth0.host_name"]
        bridge = d.request("GET", "/1.0/profiles/default").metadata["devices"]["eth0"]["parent"]
        assert os.path.realpath(f"/sys/class/net/{host}/master").endswith("/" + bridge)
        assert counter.wait_counting(d, "st4", above=counter.count(d, "st4") + 2)
    finally:
        d.lxc("delete", "--force", "st4", check=False)


def test_without_criu(monkeypatch, workdir):
    """A daemon whose CRIU prefix holds no CRIU refuses a stateful stop naming the missing
    binary, and the container keeps running."""
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    monkeypatch.setenv("LXDTX_CRIU_PREFIX", workdir)
    d = Daemon(auto_init=True).start(timeout=120)
    try:
        counter.make(d, "nocriu")
        r = d.lxc("stop", "--stateful", "nocriu", check=False)
        assert r.returncode != 0 and "CRIU isn't installed on the server" in r.stderr and workdir in r.stderr
        assert d.request("GET", "/1.0/containers/nocriu").metadata["status"] == "Running"
    finally:
        d.cleanup()


def test_stateful_snapshot_and_restore(busybox_daemon):
    """`lxc snapshot --stateful` leaves the container running; `lxc restore --stateful` brings
    back its processes as they were then: the counter goes back to the snapshot's number and
    counts on from there."""
    counter.skip_without_criu()
    d = busybox_daemon
    counter.make(d, "st3")
    try:
        counter.wait_counting(d, "st3", above=3)
        d.lxc("snapshot", "--stateful", "st3", "s1")
        taken = counter.count(d, "st3")
        snap = d.request("GET", "/1.0/containers/st3/snapshots/s1").metadata
        assert snap["stateful"] is True
        assert d.request("GET", "/1.0/containers/st3").metadata["status"] == "Running"
        later = counter.wait_counting(d, "st3", above=taken + 10)
        d.lxc("restore", "st3", "s1", "--stateful")
        info = d.request("GET", "/1.0/containers/st3").metadata
        assert info["status"] == "Running" and info["stateful"] is False
        back = counter.count(d, "st3")
        assert back < later, (back, later)
        assert counter.wait_counting(d, "st3", above=back + 3) > back
        assert not os.path.exists(os.path.join(d.dir, "storage-pools", "default", "containers", "st3", "state"))
        r = d.lxc("snapshot", "--stateful", "st3", "s2", check=False)
        assert r.returncode == 0
        d.lxc("stop", "--force", "st3")
        r = d.lxc("snapshot", "--stateful", "st3", "s3", check=False)
        assert r.returncode != 0 and "isn't running" in r.stderr
        d.lxc("snapshot", "st3", "plain")
        r = d.lxc("restore", "st3", "plain", "--stateful", check=False)
        assert r.returncode != 0 and "is not stateful" in r.stderr
        # A stateless restore of a stateful snapshot boots afresh and keeps no dump.
        d.lxc("restore", "st3", "s2")
        d.lxc("start", "st3")
        counter.wait_counting(d, "st3")
        assert not os.path.exists(os.path.join(d.dir, "storage-pools", "default", "containers", "st3", "state"))
    finally:
        d.lxc("delete", "--force", "st3", check=False)
