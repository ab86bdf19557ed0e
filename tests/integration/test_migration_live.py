"""Live migration between two daemons on loopback with the real `lxc` client and CRIU: a
running container's counter (a child of its init) goes on on the target from where it
was, never going back; its stateful snapshot goes along and restores there; a container
with a nic arrives with it up, addressed and on its bridge; a migration that fails leaves
the source running."""

import json
import os
import signal
import subprocess
import time

import pytest

from lxdtx.migration import sink
from tests.daemonproc import wait_until
from tests.integration import counter
from tests.integration.netns import run, unique
from tests.integration.test_migration import _nothing_of, pair  # noqa: F401 (the fixture)

pytestmark = pytest.mark.timeout(600)


def test_live_move(pair):  # noqa: F811
    counter.skip_without_criu()
    one, two = pair
    counter.make(one, "lv1")
    try:
        counter.wait_counting(one, "lv1", above=3)
        one.lxc("snapshot", "--stateful", "lv1", "s1")  # goes along, dump and all
        before = counter.wait_counting(one, "lv1", above=counter.count(one, "lv1") + 3)
        started = time.monotonic()
        one.lxc("move", "lv1", "two:lv1")
        took = time.monotonic() - started
        assert one.request("GET", "/1.0/containers/lv1").status == 404
        info = two.request("GET", "/1.0/containers/lv1").metadata
        assert info["status"] == "Running" and info["stateful"] is False
        arrived = counter.count(two, "lv1")
        assert arrived >= before, (arrived, before)
        latest = counter.wait_counting(two, "lv1", above=arrived + 3)
        assert two.request("GET", "/1.0/containers/lv1/snapshots/s1").metadata["stateful"] is True
        two.lxc("restore", "lv1", "s1", "--stateful")
        back = counter.count(two, "lv1")
        assert back < before < latest
        assert counter.wait_counting(two, "lv1", above=back + 2) > back
        # Nothing of the dump is left on either side.
        assert not os.path.exists(os.path.join(two.dir, "storage-pools", "default", "containers", "lv1", "state"))
        for d in (one, two):
            leftovers = [n for n in os.listdir(os.path.join(d.dir, "migration"))
                         if n.startswith(("checkpoint-", "images-"))]
            assert leftovers == []
        print(f"live move took {took:.2f}s")
    finally:
        one.lxc("delete", "--force", "lv1", check=False)
        two.lxc("delete", "--force", "lv1", check=False)


def _link(name):
    found = json.loads(run("ip", "-j", "-d", "link", "show", "dev", name, check=False).stdout or "[]")
    return found[0] if found else None


def test_live_move_with_a_nic(pair):  # noqa: F811
    """A bridged nic: the container's eth0 arrives up, with its MAC and address, its host end on
    the bridge on the target's side, and the counter goes on there."""
    counter.skip_without_criu()
    one, two = pair
    bridge = unique("m3lb")  # both daemons share the host's namespace, and so this bridge
    run("ip", "link", "add", bridge, "type", "bridge")
    try:
        run("ip", "link", "set", bridge, "up")
        counter.make(one, "lv6", start=False)
        one.lxc("config", "device", "add", "lv6", "eth0", "nic", "nictype=bridged", f"parent={bridge}",
                "name=eth0")
        one.lxc("start", "lv6")
        one.lxc("exec", "lv6", "--", "ip", "addr", "add", "192.0.2.66/24", "dev", "eth0")
        hwaddr = one.request("GET", "/1.0/containers/lv6/state").metadata["network"]["eth0"]["hwaddr"]
        before = counter.wait_counting(one, "lv6", above=3)
        one.lxc("move", "lv6", "two:lv6")
        state = two.request("GET", "/1.0/containers/lv6/state").metadata
        assert state["status"] == "Running"
        eth0 = state["network"]["eth0"]
        assert eth0["state"] == "up" and eth0["hwaddr"] == hwaddr
        assert "192.0.2.66" in [a["address"] for a in eth0["addresses"]]
        host = two.request("GET", "/1.0/containers/lv6").metadata["expanded_config"]["volatile.eth0.host_name"]
        link = _link(host)
        assert link is not None and link.get("master") == bridge and "UP" in link["flags"], link
        arrived = counter.count(two, "lv6")
        assert arrived >= before
        assert counter.wait_counting(two, "lv6", above=arrived + 3) > arrived
        # CRIU's temporary peers are gone into the container (or with their pairs).
        assert not [n for n in os.listdir("/sys/class/net") if n.startswith("lxdtxr")]
    finally:
        one.lxc("delete", "--force", "lv6", check=False)
        two.lxc("delete", "--force", "lv6", check=False)
        run("ip", "link", "del", bridge, check=False)


def test_live_move_refused_keeps_source_running(pair):  # noqa: F811
    """The target's name is taken: refused before anything stops; the counter runs on."""
    counter.skip_without_criu()
    one, two = pair
    counter.make(one, "lv2")
    two.lxc("init", "busybox", "lv2", "--no-profiles", "--storage", "default")
    try:
        before = counter.wait_counting(one, "lv2", above=1)
        r = one.lxc("move", "lv2", "two:lv2", check=False)
        assert r.returncode != 0
        assert one.request("GET", "/1.0/containers/lv2").metadata["status"] == "Running"
        assert counter.wait_counting(one, "lv2", above=before + 2) > before
    finally:
        one.lxc("delete", "--force", "lv2", check=False)
        two.lxc("delete", "--force", "lv2", check=False)


def test_target_killed_after_the_dump_arrived(pair):  # noqa: F811
    """The target dies with the images received, before its restore: the source restores
    its container from its own dump (the counter goes on there), and the target's next start
    leaves nothing of it."""
    counter.skip_without_criu()
    one, two = pair
    counter.make(one, "lv3")
    try:
        before = counter.wait_counting(one, "lv3", above=3)
        two.stop()
        two.start(crash_at=sink.RECEIVED.name)
        assert one.lxc("move", "lv3", "two:lv3", check=False).returncode != 0
        two.proc.wait(30)
        assert two.proc.returncode == -signal.SIGKILL
        # The client hears of the target's death first; the source's operation ends after the restore.
        assert wait_until(lambda: one.request("GET", "/1.0/containers/lv3").metadata["status"] == "Running",
                          timeout=60), one.log()[-3000:]
        resumed = counter.count(one, "lv3")
        assert resumed >= before
        assert counter.wait_counting(one, "lv3", above=resumed + 3) > resumed
        two.stop()
        two.start(timeout=120)
        _nothing_of(two, "lv3")
    finally:
        if two.proc is None or two.proc.poll() is not None:
            two.start(timeout=120)
        one.lxc("delete", "--force", "lv3", check=False)
        two.lxc("delete", "--force", "lv3", check=False)


def _dirty_tracking():
    from lxdtx.instance import checkpoint

    criu = checkpoint.Criu()
    return subprocess.run([criu.binary, "check", "--feature", "mem_dirty_track"], env=criu.env("dump"),
                          capture_output=True).returncode == 0


def test_live_move_asking_for_pre_copy(pair):  # noqa: F811
    """migration.incremental.memory set: where the kernel tracks dirty pages the memory goes in
    pre-dump rounds before the final dump; where it doesn't, the move is one final dump as
    without the key. Either way the counter goes on on the target."""
    counter.skip_without_criu()
    one, two = pair
    counter.make(one, "lv4", start=False)
    one.lxc("config", "set", "lv4", "migration.incremental.memory", "true")
    one.lxc("config", "set", "lv4", "migration.incremental.memory.iterations", "3")
    one.lxc("start", "lv4")
    try:
        before = counter.wait_counting(one, "lv4", above=3)
        one.lxc("move", "lv4", "two:lv4")
        assert two.request("GET", "/1.0/containers/lv4").metadata["status"] == "Running"
        arrived = counter.count(two, "lv4")
        assert arrived >= before
        assert counter.wait_counting(two, "lv4", above=arrived + 2) > arrived
        with open(one.log_path, errors="replace") as f:
            rounds = f.read().count("Live migration of lv4: pre-dump")
        if _dirty_tracking():
            assert 1 <= rounds <= 3
        else:
            assert rounds == 0
    finally:
        one.lxc("delete", "--force", "lv4", check=False)
        two.lxc("delete", "--force", "lv4", check=False)


def test_pre_copy_rounds(pair):  # noqa: F811
    """The pre-dump rounds themselves, with a container dirtying memory as it counts."""
    counter.skip_without_criu()
    if not _dirty_tracking():
        pytest.skip("this kernel tracks no dirty pages (soft-dirty bits, CONFIG_MEM_SOFT_DIRTY): "
                    "criu check --feature mem_dirty_track fails, so CRIU can't pre-dump")
    one, two = pair
    counter.make(one, "lv5", start=False)
    one.lxc("config", "set", "lv5", "migration.incremental.memory", "true")
    one.lxc("config", "set", "lv5", "migration.incremental.memory.iterations", "4")
    one.lxc("config", "set", "lv5", "migration.incremental.memory.goal", "100")  # every round
    one.lxc("start", "lv5")
    try:
        before = counter.wait_counting(one, "lv5", above=3)
        one.lxc("move", "lv5", "two:lv5")
        with open(one.log_path, errors="replace") as f:
            assert f.read().count("Live migration of lv5: pre-dump") == 4
        arrived = counter.count(two, "lv5")
        assert arrived >= before
        assert counter.wait_counting(two, "lv5", above=arrived + 2) > arrived
    finally:
        one.lxc("delete", "--force", "lv5", check=False)
        two.lxc("delete", "--force", "lv5", check=False)
