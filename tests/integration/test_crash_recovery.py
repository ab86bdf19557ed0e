"""The daemon killed at every step of every change: the next start finishes or undoes it.

Each case starts the daemon with `LXDTX_CRASH_AT=<point>` (lxdtx.faults), runs the
change with the real `lxc` client, checks the daemon died of SIGKILL at that point,
starts it again and checks: the object is fully there and usable or fully gone,
nothing on the host is left that no row owns, no intent stays open, and the names
can be used again.
"""

import json
import os
import signal
import sqlite3
import subprocess

import pytest

import lxdtx.daemon  # noqa: F401 (with the two below: every module that declares crash points)
import lxdtx.instance.copy  # noqa: F401
import lxdtx.storage.volumes  # noqa: F401
from lxdtx import faults
from lxdtx.instance import cgroups, runtime
from lxdtx.storage.btrfs import BtrfsDriver
from tests.daemonproc import Daemon, wait_until
from tests.integration import counter

pytestmark = pytest.mark.timeout(900)

POOLS = ("default", "second")
# The pool the pool cases create and delete: btrfs on a loop file (a mount and a loop device
# to leave behind) where the kernel has btrfs, dir otherwise.
# Bridges are host-wide: a name of this run's own keeps two runs at once apart.
CRASH_NET = f"crash{os.getpid():x}"[:15]
CRASH_POOL = ("crashpool", "btrfs", "size=200MB") if BtrfsDriver.missing() is None else ("crashpool", "dir")


@pytest.fixture(scope="module")
def d():
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    daemon = Daemon(auto_init=True).start(timeout=120)
    try:
        daemon.lxc("storage", "create", "second", "dir")
        daemon.lxc("init", "busybox", "src")
        daemon.lxc("snapshot", "src", "s0")
        daemon.lxc("init", "busybox", "imp")
        daemon.lxc("snapshot", "imp", "s1")
        daemon.lxc("export", "imp", os.path.join(daemon.conf, "imp.tar.gz"))
        daemon.lxc("delete", "imp")
        yield daemon
    finally:
        daemon.cleanup()


# -- what the host and the store hold ------------------------------------------------
def _names(d, path):
    return sorted(u.rsplit("/", 1)[-1] for u in d.request("GET", path).metadata or [])


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _open_intents(d):
    db = sqlite3.connect(f"file:{os.path.join(d.dir, 'lxdtx.db')}?mode=ro", uri=True)
    try:
        return [json.loads(v)["op"] for (v,) in db.execute("SELECT value FROM documents WHERE kind = 'intent'")]
    finally:
        db.close()


def _our_links(d):
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(link["ifname"] for link in json.loads(out) if link.get("ifalias") == f"lxdtx:{d.dir}")


def _our_loops(d):
    """The backing files of loop devices that are in the daemon's directory."""
    out = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True).stdout
    devices = json.loads(out)["loopdevices"] if out.strip() else []
    return {dev["back-file"] for dev in devices if (dev.get("back-file") or "").startswith(d.dir)}


def _mounts():
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def assert_nothing_unowned(d):
    """Every volume, path, network directory and bridge of the daemon belongs to a row."""
    containers = d.request("GET", "/1.0/containers?recursion=1").metadata
    by_pool = {pool: [] for pool in POOLS}
    for c in containers:
        by_pool[c["expanded_devices"]["root"]["pool"]].append(c["name"])
    names = sorted(c["name"] for c in containers)
    for pool in POOLS:
        root = os.path.join(d.dir, "storage-pools", pool)
        assert _listdir(os.path.join(root, "containers")) == sorted(by_pool[pool]), pool
        for name in _listdir(os.path.join(root, "snapshots")):
            assert name in by_pool[pool], (pool, name)
            assert _listdir(os.path.join(root, "snapshots", name)) == _names(d, f"/1.0/containers/{name}/snapshots")
        volumes = d.request("GET", f"/1.0/storage-pools/{pool}/volumes/custom").metadata or []
        assert _listdir(os.path.join(root, "custom")) == sorted(u.rsplit("/", 1)[-1] for u in volumes), pool
    for paths in ("containers", "lxc", "logs"):
        assert _listdir(os.path.join(d.dir, paths)) == names, paths
    managed = sorted(n["name"] for n in d.request("GET", "/1.0/networks?recursion=1").metadata if n["managed"])
    assert _listdir(os.path.join(d.dir, "networks")) == managed
    assert _our_links(d) == managed
    pools = _names(d, "/1.0/storage-pools")
    assert _listdir(os.path.join(d.dir, "storage-pools")) == pools
    assert {f.removesuffix(".img") for f in _listdir(os.path.join(d.dir, "disks"))} <= set(pools)
    assert _our_loops(d) <= {os.path.join(d.dir, "disks", f"{p}.img") for p in pools}
    assert not [m for m in _mounts() if m.startswith(os.path.join(d.dir, "storage-pools", ""))
                and m.rsplit("/", 1)[-1] not in pools]
    images = d.request("GET", "/1.0/images").metadata
    files = {f.removesuffix(".rootfs") for f in _listdir(os.path.join(d.dir, "images"))}
    assert files == {u.rsplit("/", 1)[-1] for u in images}
    assert _open_intents(d) == []


def _exists(d, path):
    return d.request("GET", path).status == 200


def _usable(d, name):
    d.lxc("start", name)
    assert d.lxc("exec", name, "--", "echo", "alive").stdout.strip() == "alive"
    d.lxc("delete", "--force", name)


def _reusable(d, name):
    d.lxc("init", "busybox", name)
    d.lxc("delete", name)


def _file(d, name, path):
    return d.lxc("file", "pull", f"{name}{path}", "-").stdout


def _stateful_prepare(stopped):
    def prepare(d):
        counter.skip_without_criu()
        counter.make(d, "sf")
        if stopped:
            d.lxc("stop", "--stateful", "sf")
    return prepare


def _stateful_check(status):
    """`sf` is `status`, not stateful, its dump gone; it still starts (afresh) and counts."""
    def check(d):
        # Containers the row saw running are started in the background once the daemon is up.
        wait_until(lambda: d.request("GET", "/1.0/containers/sf").metadata["status"] == status, timeout=60)
        info = d.request("GET", "/1.0/containers/sf").metadata
        assert (info["status"], info["stateful"]) == (status, False), info
        assert info["config"].get("volatile.last_state.power") == status.upper()
        assert not os.path.exists(os.path.join(d.dir, "storage-pools", "default", "containers", "sf", "state"))
        if status == "Stopped":
            d.lxc("start", "sf")
        counter.wait_counting(d, "sf")
        d.lxc("delete", "--force", "sf")
    return check


# -- the cases: (point, prepare, change, check) -------------------------------------------
def _prepare_none(d):
    pass


def _container_with_snapshot(name):
    def prepare(d):
        d.lxc("init", "busybox", name)
        d.lxc("snapshot", name, "s1")
    return prepare


def _gone(*names):
    def check(d):
        for name in names:
            assert not _exists(d, f"/1.0/containers/{name}")
            _reusable(d, name)
    return check


def _there(name, then_gone=()):
    def check(d):
        assert _exists(d, f"/1.0/containers/{name}")
        for other in then_gone:
            assert not _exists(d, f"/1.0/containers/{other}")
        _usable(d, name)
    return check


def _restore_prepare(d):
    d.lxc("init", "busybox", "rs")
    d.lxc("file", "push", "-", "rs/root/m", input="one\n")
    d.lxc("snapshot", "rs", "s")
    d.lxc("file", "push", "-", "rs/root/m", input="two\n")
    d.lxc("config", "set", "rs", "user.after", "yes")


def _restored(d):
    assert _file(d, "rs", "/root/m") == "one\n"
    assert "user.after" not in d.request("GET", "/1.0/containers/rs").metadata["config"]
    _usable(d, "rs")


def _snapshot_check(container, present, absent):
    def check(d):
        snaps = _names(d, f"/1.0/containers/{container}/snapshots")
        assert set(present) <= set(snaps) and not set(absent) & set(snaps), snaps
        d.lxc("snapshot", container, "again")  # the names are free again
        d.lxc("delete", f"{container}/again")
        for gone in absent:
            d.lxc("snapshot", container, gone)
            d.lxc("delete", f"{container}/{gone}")
    return check


def _network_gone(d):
    assert not _exists(d, f"/1.0/networks/{CRASH_NET}")
    d.lxc("network", "create", CRASH_NET, "ipv6.address=none")
    d.lxc("network", "delete", CRASH_NET)


def _create_crash_pool(d):
    d.lxc("storage", "create", *CRASH_POOL)


def _pool_gone(d):
    assert not _exists(d, "/1.0/storage-pools/crashpool")
    _create_crash_pool(d)  # the name and the loop file's place are free again
    d.lxc("storage", "delete", "crashpool")


def _volume_check(present, absent):
    def check(d):
        for name in present:
            assert _exists(d, f"/1.0/storage-pools/default/volumes/custom/{name}")
            d.lxc("storage", "volume", "delete", "default", name)
        for name in absent:
            assert not _exists(d, f"/1.0/storage-pools/default/volumes/custom/{name}")
            d.lxc("storage", "volume", "create", "default", name)
            d.lxc("storage", "volume", "delete", "default", name)
    return check


def _on_pool(name, pool):
    def check(d):
        assert d.request("GET", f"/1.0/containers/{name}").metadata["expanded_devices"]["root"]["pool"] == pool
        _usable(d, name)
    return check


def _cleanup_src_snapshot(d):
    for snap in _names(d, "/1.0/containers/src/snapshots"):
        if snap != "s0":
            d.lxc("delete", f"src/{snap}")


def _image_gone(alias):
    def check(d):
        assert d.request("GET", f"/1.0/images/aliases/{alias}").status == 404
        d.lxc("publish", "src", "--alias", alias)
        d.lxc("image", "delete", alias)
    return check


CASES = {
    "image.add.placed": (_prepare_none, ("publish", "src", "--alias", "pub"), _image_gone("pub")),
    "image.delete.committed": (lambda d: d.lxc("publish", "src", "--alias", "pub"), ("image", "delete", "pub"),
                               _image_gone("pub")),
    # launch (init: the start is its own operation)
    "container.create.recorded": (_prepare_none, ("init", "busybox", "cc"), _gone("cc")),
    "container.create.volume": (_prepare_none, ("init", "busybox", "cc"), _gone("cc")),
    "container.create.linked": (_prepare_none, ("init", "busybox", "cc"), _gone("cc")),
    "container.create.committed": (_prepare_none, ("init", "busybox", "cc"), _there("cc")),
    # stateful stop: dumped (the container stopped) but the row not told: the dump goes, and
    # the start brings it back up as its row last saw it, running (booted afresh)
    "container.stateful_stop.dumped": (_stateful_prepare(False), ("stop", "--stateful", "sf"),
                                       _stateful_check("Running")),
    # stateful start: restored but the row not told: it runs, the dump goes, the row is told
    "container.stateful_start.restored": (_stateful_prepare(True), ("start", "sf"), _stateful_check("Running")),
    "container.copy.recorded": (_prepare_none, ("copy", "src", "cp"), _gone("cp")),
    "container.copy.volumes": (_prepare_none, ("copy", "src", "cp"), _gone("cp")),
    "container.copy.linked": (_prepare_none, ("copy", "src", "cp"), _gone("cp")),
    "container.import.recorded": (_prepare_none, ("import", "{conf}/imp.tar.gz"), _gone("imp")),
    "container.import.volumes": (_prepare_none, ("import", "{conf}/imp.tar.gz"), _gone("imp")),
    "container.delete.committed": (_container_with_snapshot("dl"), ("delete", "dl"), _gone("dl")),
    "container.delete.snapshots": (_container_with_snapshot("dl"), ("delete", "dl"), _gone("dl")),
    "container.delete.volume": (_container_with_snapshot("dl"), ("delete", "dl"), _gone("dl")),
    "container.rename.recorded": (_container_with_snapshot("rn"), ("move", "rn", "rn2"), _there("rn", ["rn2"])),
    "container.rename.moved": (_container_with_snapshot("rn"), ("move", "rn", "rn2"), _there("rn", ["rn2"])),
    "container.rename.linked": (_container_with_snapshot("rn"), ("move", "rn", "rn2"), _there("rn", ["rn2"])),
    "container.rename.committed": (_container_with_snapshot("rn"), ("move", "rn", "rn2"), _there("rn2", ["rn"])),
    "container.move.recorded": (_container_with_snapshot("mv"), ("move", "mv", "-s", "second"), _on_pool("mv", "default")),
    "container.move.volumes": (_container_with_snapshot("mv"), ("move", "mv", "-s", "second"), _on_pool("mv", "default")),
    "container.move.committed": (_container_with_snapshot("mv"), ("move", "mv", "-s", "second"), _on_pool("mv", "second")),
    "snapshot.create.recorded": (_prepare_none, ("snapshot", "src", "sx"), _snapshot_check("src", ["s0"], ["sx"])),
    "snapshot.create.copied": (_prepare_none, ("snapshot", "src", "sx"), _snapshot_check("src", ["s0"], ["sx"])),
    "snapshot.delete.committed": (lambda d: d.lxc("snapshot", "src", "sd"), ("delete", "src/sd"),
                                  _snapshot_check("src", ["s0"], ["sd"])),
    "snapshot.rename.recorded": (lambda d: d.lxc("snapshot", "src", "sr"), ("move", "src/sr", "src/sr2"),
                                 _snapshot_check("src", ["s0", "sr"], ["sr2"])),
    "snapshot.rename.moved": (lambda d: d.lxc("snapshot", "src", "sr"), ("move", "src/sr", "src/sr2"),
                              _snapshot_check("src", ["s0", "sr"], ["sr2"])),
    "snapshot.restore.recorded": (_restore_prepare, ("restore", "rs", "s"), _restored),
    "snapshot.restore.copied": (_restore_prepare, ("restore", "rs", "s"), _restored),
    "network.create.recorded": (_prepare_none, ("network", "create", CRASH_NET, "ipv6.address=none"),
                                _network_gone),
    "network.create.applied": (_prepare_none, ("network", "create", CRASH_NET, "ipv6.address=none"),
                               _network_gone),
    "network.delete.committed": (lambda d: d.lxc("network", "create", CRASH_NET, "ipv6.address=none"),
                                 ("network", "delete", CRASH_NET), _network_gone),
    "pool.create.recorded": (_prepare_none, ("storage", "create", *CRASH_POOL), _pool_gone),
    "pool.create.made": (_prepare_none, ("storage", "create", *CRASH_POOL), _pool_gone),
    "pool.delete.committed": (_create_crash_pool, ("storage", "delete", "crashpool"), _pool_gone),
    "volume.create.recorded": (_prepare_none, ("storage", "volume", "create", "default", "vc"),
                               _volume_check([], ["vc"])),
    "volume.create.made": (_prepare_none, ("storage", "volume", "create", "default", "vc"),
                           _volume_check([], ["vc"])),
    "volume.delete.committed": (lambda d: d.lxc("storage", "volume", "create", "default", "vd"),
                                ("storage", "volume", "delete", "default", "vd"), _volume_check([], ["vd"])),
    "volume.rename.moved": (lambda d: d.lxc("storage", "volume", "create", "default", "vr"),
                            ("storage", "volume", "rename", "default", "vr", "vr2"), _volume_check(["vr"], ["vr2"])),
    "volume.copy.made": (lambda d: d.lxc("storage", "volume", "create", "default", "vs"),
                         ("storage", "volume", "copy", "default/vs", "default/vt"), _volume_check(["vs"], ["vt"])),
}


# Points whose cases need a second daemon, an image server or etcd: their own modules test them
# (test_migration*, test_migration_btrfs, test_remote_images.test_crash_while_fetching_leaves_nothing,
# test_cluster_bootstrap: a daemon with an HTTPS address and etcd).
ELSEWHERE = ("container.migrate.", "volume.migrate.", "btrfs.migrate.", "image.pull.", "image.refresh.", "cluster.")


def test_every_crash_point_has_a_case():
    import lxdtx.image.store  # noqa: F401 (declare their points whichever test module ran first)
    import lxdtx.migration.sink  # noqa: F401
    import lxdtx.migration.volumes  # noqa: F401

    assert sorted(p.name for p in faults.POINTS if not p.name.startswith(ELSEWHERE)) == sorted(CASES)


@pytest.mark.parametrize("point", sorted(CASES))
def test_crash_at(d, point):
    prepare, change, check = CASES[point]
    prepare(d)
    d.stop()
    d.start(crash_at=point)
    try:
        result = d.lxc(*(a.format(conf=d.conf) for a in change), check=False, timeout=120)
        try:
            d.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        assert d.proc.returncode == -signal.SIGKILL, \
            f"the daemon did not die at {point}: {result.stdout}{result.stderr}\n{d.log()[-3000:]}"
    finally:
        d.stop()
        d.start()
    assert_nothing_unowned(d)
    check(d)
    _cleanup_src_snapshot(d)
    assert_nothing_unowned(d)


def test_start_sweeps_what_no_row_owns(d):
    """What a daemon older than the journal (or a hand) left in our directories goes at the next
    start: volumes and snapshot directories without rows, container paths, network directories
    and the bridge that came with one, a firewall table of no network, cgroups of no container, pool mount points and loop files with their loop devices."""
    pool = os.path.join(d.dir, "storage-pools", "default")
    os.makedirs(os.path.join(pool, "containers", "stray", "rootfs"))
    os.makedirs(os.path.join(pool, "snapshots", "src", "stray", "rootfs"))
    os.makedirs(os.path.join(pool, "snapshots", "ghost", "s1"))
    os.makedirs(os.path.join(pool, "custom", "strayvol"))
    for paths in ("lxc", "logs"):
        os.makedirs(os.path.join(d.dir, paths, "stray"))
    os.symlink(os.path.join(pool, "containers", "stray"), os.path.join(d.dir, "containers", "stray"))
    os.makedirs(os.path.join(d.dir, "networks", "straynet"))
    os.makedirs(os.path.join(d.dir, "storage-pools", "straypool"))
    os.symlink(os.path.join(d.conf), os.path.join(d.dir, "storage-pools", "straylink"))
    disk = os.path.join(d.dir, "disks", "straydisk.img")
    os.makedirs(os.path.dirname(disk), exist_ok=True)
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    loop = subprocess.run(["losetup", "-f", "--show", disk], capture_output=True, text=True, check=True).stdout.strip()
    payload, monitor = runtime.cgroup_prefixes(runtime.scope_of(d.dir))
    stray_cgroups = [os.path.join(parent, prefix + "stray") for parent in cgroups.detect().parents[:2]
                     for prefix in (payload, monitor)]
    for directory in stray_cgroups:
        os.makedirs(os.path.join(directory, "ns"))
    subprocess.run(["nft", "add", "table", "inet", "lxdtx-straytab"], check=True)
    subprocess.run(["ip", "link", "add", "straynet", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", "straynet", "alias", f"lxdtx:{d.dir}"], check=True)
        d.stop(signal.SIGKILL)
        d.start()
        assert_nothing_unowned(d)
        assert _names(d, "/1.0/containers/src/snapshots") == ["s0"]
        assert "Recovered after an unclean stop: container stray on pool default: removed unowned volume" in d.log()
        assert f"storage pool straydisk, which no row names: detached {loop}, removed its loop file" in d.log()
        assert os.path.isdir(d.conf)  # a link's target is not ours to remove
        assert not [directory for directory in stray_cgroups if os.path.exists(directory)]
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
        assert "lxdtx-straytab" not in tables
        _reusable(d, "stray")
    finally:
        subprocess.run(["ip", "link", "del", "straynet"], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", "lxdtx-straytab"], capture_output=True)
        for directory in stray_cgroups:
            for sub in ("ns", ""):
                if os.path.isdir(os.path.join(directory, sub)):
                    os.rmdir(os.path.join(directory, sub))
