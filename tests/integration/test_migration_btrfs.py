"""Containers between two daemons whose pools are btrfs (loop files), with the real `lxc` client.

`lxc copy` and `lxc move` of a container with two snapshots go as `btrfs send` streams (the
target says so in its log): every file of the
container and of each snapshot arrives with the same checksum, the snapshots are read-only
subvolumes and restore; a running container copied with `--stateless`; a copy to a dir pool
falls back to rsync; a target killed half-way leaves nothing, staging included; a fake source
pushing crafted streams (a snapshot of another container, clones out of it, a device node)
over the real migration websockets is refused before `btrfs receive` reads them.
"""

import hashlib
import os
import signal
import struct
import subprocess
import uuid

import pytest

from lxdtx.migration import btrfsmigration
from lxdtx.migration import messages as m
from lxdtx.storage import btrfs_stream as bs
from lxdtx.storage.btrfs import BtrfsDriver
from tests.daemonproc import Daemon
from tests.integration.test_migration import PASSWORD, _exec, _https, _names
from tests.integration.test_storage import _release
from tests.integration.wsclient import RawWebsocket
from tests.unit.test_btrfs_stream import command, snapshot, stream, subvol, tlv, write

pytestmark = pytest.mark.timeout(900)
POOL = "bt"


@pytest.fixture(scope="module")
def pair():
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, loop devices, mounts)")
    missing = BtrfsDriver.missing()
    if missing:
        pytest.skip(f"btrfs: {missing}")
    one, two = Daemon(auto_init=True), Daemon(auto_init=True)
    try:
        for d in (one, two):
            d.start(timeout=120)
            _https(d)
            d.lxc("storage", "create", POOL, "btrfs", "size=2GB")
        one.lxc("remote", "add", "two", f"https://127.0.0.1:{two.port}", "--password", PASSWORD,
                "--accept-certificate")
        yield one, two
    finally:
        for d in (one, two):
            try:
                if d.proc is not None and d.proc.poll() is None:
                    d.remove_containers()
                    d.lxc("storage", "delete", POOL, check=False)
            finally:
                _release(d)
                d.cleanup()


def _log(d):
    with open(d.log_path, errors="replace") as f:
        return f.read()


def _pool_path(d, *parts):
    return os.path.join(d.dir, "storage-pools", POOL, *parts)


def _tree_sums(root):
    """{relative path: (mode, uid, gid, sha256 of a file's content / link target)} of a tree."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if os.path.islink(path):
                digest = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            else:
                digest = ""
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, digest)
    return found


def _subvolume(path):
    """`btrfs subvolume show` of `path` as {key: value}; {} for a path that is not one."""
    r = subprocess.run(["btrfs", "subvolume", "show", path], capture_output=True, text=True)
    if r.returncode != 0:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in r.stdout.splitlines()[1:])}


def _readonly(path):
    r = subprocess.run(["btrfs", "property", "get", "-ts", path, "ro"], capture_output=True, text=True)
    return r.stdout.strip() == "ro=true"


def _staging_empty(d):
    staging = _pool_path(d, btrfsmigration.STAGING)
    return not os.path.isdir(staging) or os.listdir(staging) == []


def _same_as_source(one, name, two, new_name, snapshots):
    assert _tree_sums(_pool_path(two, "containers", new_name)) == _tree_sums(_pool_path(one, "containers", name))
    for snapshot in snapshots:
        assert (_tree_sums(_pool_path(two, "snapshots", new_name, snapshot))
                == _tree_sums(_pool_path(one, "snapshots", name, snapshot)))


def _made(one, name):
    one.lxc("launch", "busybox", name, "-s", POOL)
    _exec(one, name, "echo first > /root/data; dd if=/dev/urandom of=/root/a bs=65536 count=64 2>/dev/null; "
                     "mkdir -p /srv/own; chown 1234:4321 /srv/own; chmod 0751 /srv/own; ln -s /root/a /root/link")
    one.lxc("snapshot", name, "s1")
    _exec(one, name, "echo second > /root/data; dd if=/dev/urandom of=/root/b bs=65536 count=32 2>/dev/null")
    one.lxc("snapshot", name, "s2")
    _exec(one, name, "echo third > /root/data; rm /root/a; sync")
    one.lxc("stop", name, "--force")


def test_copy_and_move_with_two_snapshots(pair):
    one, two = pair
    _made(one, "bm")
    try:
        one.lxc("copy", "bm", "two:bm2")
        assert _names(two, "/1.0/containers/bm2/snapshots") == ["s1", "s2"]
        _same_as_source(one, "bm", two, "bm2", ["s1", "s2"])
        assert "Receiving container bm2 as btrfs send streams" in _log(two)
        for snapshot in ("s1", "s2"):
            path = _pool_path(two, "snapshots", "bm2", snapshot)
            assert _subvolume(path) and _readonly(path)
        assert _subvolume(_pool_path(two, "containers", "bm2"))
        assert not _readonly(_pool_path(two, "containers", "bm2"))
        assert _staging_empty(one) and _staging_empty(two)
        two.lxc("start", "bm2")
        assert _exec(two, "bm2", "cat /root/data") == "third\n"
        assert _exec(two, "bm2", "stat -c '%u:%g %a' /srv/own").strip() == "1234:4321 751"
        two.lxc("restore", "bm2", "s1")
        assert _exec(two, "bm2", "cat /root/data; cat /root/link | wc -c") == "first\n4194304\n"
        two.lxc("delete", "--force", "bm2")

        one.lxc("copy", "bm/s1", "two:froms1")
        assert _names(two, "/1.0/containers/froms1/snapshots") == []
        assert two.lxc("file", "pull", "froms1/root/data", "-").stdout == "first\n"
        two.lxc("delete", "froms1")

        expected = {s: _tree_sums(_pool_path(one, "snapshots", "bm", s)) for s in ("s1", "s2")}
        expected[""] = _tree_sums(_pool_path(one, "containers", "bm"))
        one.lxc("move", "bm", "two:moved")
        assert one.request("GET", "/1.0/containers/bm").status == 404
        assert _names(two, "/1.0/containers/moved/snapshots") == ["s1", "s2"]
        assert _tree_sums(_pool_path(two, "containers", "moved")) == expected[""]
        for snapshot in ("s1", "s2"):
            assert _tree_sums(_pool_path(two, "snapshots", "moved", snapshot)) == expected[snapshot]
        assert _staging_empty(one) and _staging_empty(two)
        two.lxc("start", "moved")
        assert _exec(two, "moved", "cat /root/data") == "third\n"
    finally:
        one.lxc("delete", "--force", "bm", check=False)
        for name in ("bm2", "froms1", "moved"):
            two.lxc("delete", "--force", name, check=False)


def test_running_container_stateless(pair):
    """A running container goes twice (the second stream incremental from the first)."""
    one, two = pair
    one.lxc("launch", "busybox", "brun", "-s", POOL)
    try:
        _exec(one, "brun", "echo alive > /root/state")
        one.lxc("snapshot", "brun", "s1")
        one.lxc("copy", "brun", "two:brun", "--stateless")
        assert _names(two, "/1.0/containers/brun/snapshots") == ["s1"]
        assert _staging_empty(one) and _staging_empty(two)
        two.lxc("start", "brun")
        assert _exec(two, "brun", "cat /root/state") == "alive\n"
    finally:
        one.lxc("delete", "--force", "brun", check=False)
        two.lxc("delete", "--force", "brun", check=False)


def test_btrfs_to_dir_falls_back_to_rsync(pair):
    one, two = pair
    _made(one, "todir")
    try:
        one.lxc("copy", "todir", "two:indir", "--storage", "default")
        assert _names(two, "/1.0/containers/indir/snapshots") == ["s1", "s2"]
        target = os.path.join(two.dir, "storage-pools", "default", "containers", "indir")
        assert not _subvolume(target)
        assert "Receiving container indir as btrfs" not in _log(two)
        assert _tree_sums(target) == _tree_sums(_pool_path(one, "containers", "todir"))
        snap = os.path.join(two.dir, "storage-pools", "default", "snapshots", "indir", "s1")
        assert _tree_sums(snap) == _tree_sums(_pool_path(one, "snapshots", "todir", "s1"))
        assert _staging_empty(one)
    finally:
        one.lxc("delete", "--force", "todir", check=False)
        two.lxc("delete", "--force", "indir", check=False)


def _subvolume_ids(d):
    r = subprocess.run(["btrfs", "subvolume", "list", _pool_path(d)], capture_output=True, text=True, check=True)
    return {line.split()[1] for line in r.stdout.splitlines()}


def _hostile(victim):
    """name -> (crafted stream, what the refusal says), each aimed at the container `victim`."""
    own = uuid.uuid4()
    clone = command(bs.CLONE, tlv(bs.A_PATH, b"f"), tlv(bs.A_CLONE_UUID, victim.bytes),
                    tlv(bs.A_CLONE_PATH, b"root/data"))
    mknod = command(bs.MKNOD, tlv(bs.A_PATH, b"mem"), tlv(bs.A_MODE, struct.pack("<Q", 0o020666)),
                    tlv(8, struct.pack("<Q", (1 << 8) | 1)))
    return {
        "snapshot-of-another": (stream(snapshot("x", own, victim), write("f")), "not the snapshot before it"),
        "clone-from-another": (stream(subvol("x", own), clone), "clones data from a subvolume outside"),
        "device-node": (stream(subvol("x", own), mknod), "device node"),
    }


@pytest.mark.parametrize("case", ["snapshot-of-another", "clone-from-another", "device-node"])
def test_hostile_stream_from_a_fake_source_is_refused(pair, case):
    """A source in push mode (this test, on the real websockets) sends a crafted stream: the
    sink refuses it, names why, and keeps nothing; the other container is as it was."""
    _, two = pair
    two.lxc("init", "busybox", "victim", "-s", POOL)
    try:
        victim = uuid.UUID(_subvolume(_pool_path(two, "containers", "victim"))["UUID"])
        data, said = _hostile(victim)[case]
        before = _subvolume_ids(two)
        r = two.request("POST", "/1.0/containers", {
            "name": "hostile", "source": {"type": "migration", "mode": "push"},
            "devices": {"root": {"type": "disk", "path": "/", "pool": POOL}}})
        assert r.status == 202, r
        op = r.json["operation"]
        secrets = r.json["metadata"]["metadata"]
        control = RawWebsocket(two.socket_path, f"{op}/websocket?secret={secrets['control']}", timeout=30)
        fs = RawWebsocket(two.socket_path, f"{op}/websocket?secret={secrets['fs']}", timeout=30)
        try:
            control.send(m.MigrationHeader(fs=m.BTRFS).SerializeToString())
            opcode, payload = control.recv()
            assert m.decode(m.MigrationHeader, payload).fs == m.BTRFS
            for start in range(0, len(data), 64):
                fs.send(data[start:start + 64])
            fs.send(b"", binary=False)
            opcode, payload = control.recv()
            outcome = m.decode(m.MigrationControl, payload)
        finally:
            control.abort()
            fs.abort()
        assert not outcome.success and said in outcome.message and "refused" in outcome.message
        final = two.wait_operation(r)
        assert final["status"] == "Failure" and said in final["err"]
        assert two.request("GET", "/1.0/containers/hostile").status == 404
        assert not os.path.exists(_pool_path(two, "containers", "hostile"))
        assert _staging_empty(two)
        assert _subvolume_ids(two) == before
        assert not _readonly(_pool_path(two, "containers", "victim"))
    finally:
        two.lxc("delete", "--force", "victim", check=False)
        two.lxc("delete", "--force", "hostile", check=False)


def test_every_btrfs_step_has_a_crash_point():
    from lxdtx import faults

    assert faults.points("btrfs.migrate.") == [btrfsmigration.RECEIVED_ONE.name]


def test_target_killed_mid_transfer_leaves_nothing(pair):
    """Killed with one snapshot in its place and the rest to come: the next start removes the
    snapshot, the staging subvolume and the name's every trace."""
    one, two = pair
    _made(one, "crashb")
    try:
        two.stop()
        two.start(timeout=120, crash_at=btrfsmigration.RECEIVED_ONE.name)
        assert one.lxc("copy", "crashb", "two:crashb", check=False).returncode != 0
        two.proc.wait(30)
        assert two.proc.returncode == -signal.SIGKILL
        two.stop()
        two.start(timeout=120)
        assert two.request("GET", "/1.0/containers/crashb").status == 404
        for sub in ("containers", "snapshots"):
            assert "crashb" not in os.listdir(_pool_path(two, sub))
        assert _staging_empty(two) and _staging_empty(one)
        one.lxc("copy", "crashb", "two:crashb")
        assert _names(two, "/1.0/containers/crashb/snapshots") == ["s1", "s2"]
    finally:
        if two.proc is None or two.proc.poll() is not None:
            two.start(timeout=120)
        one.lxc("delete", "--force", "crashb", check=False)
        two.lxc("delete", "--force", "crashb", check=False)
