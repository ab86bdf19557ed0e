"""Interop with the reference daemon: `lxc copy` and `lxc move` between lxdtx and LXD 5.0.2
(Debian's `lxd`), both ways, stateless, in pull and push mode, with snapshots; between btrfs pools as
btrfs send streams both ways.

Both daemons and the `lxc` client run in a network namespace of the test's own, so
LXD's look-ups of image servers and the HTTPS between the daemons stay inside it.
"""

import os
import shutil
import subprocess

import pytest

from bench.reference import ReferenceLXD
from tests.integration.netns import Netns, daemon_in

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("lxd") is None, reason="the reference daemon (Debian's lxd 5.0.2) is not installed"),
]
PASSWORD = "interop-pw"


def _lxc(ns, env, *args, check=True):
    result = subprocess.run(["ip", "netns", "exec", ns.name, "lxc", *args], env=env, capture_output=True,
                            text=True, timeout=240)
    if check and result.returncode != 0:
        raise AssertionError(f"lxc {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="module")
def peers():
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    ns = Netns("lxdtxi")
    ours = ref = None
    try:
        ours = daemon_in(ns, auto_init=True)
        ref = ReferenceLXD(netns=ns.name).start(ours.env())
        ours_env, ref_env = ours.env(), ref.env
        _lxc(ns, ours_env, "config", "set", "core.https_address", "127.0.0.1:8443")
        _lxc(ns, ours_env, "config", "set", "core.trust_password", PASSWORD)
        _lxc(ns, ref_env, "config", "set", "core.https_address", "127.0.0.1:8444")
        _lxc(ns, ref_env, "config", "set", "core.trust_password", PASSWORD)
        _lxc(ns, ours_env, "remote", "add", "ref", "https://127.0.0.1:8444", "--password", PASSWORD,
             "--accept-certificate")
        _lxc(ns, ref_env, "remote", "add", "ours", "https://127.0.0.1:8443", "--password", PASSWORD,
             "--accept-certificate")
        yield ns, ours, ours_env, ref_env
    finally:
        if ref is not None:
            for name in ("toref", "fromref", "pushed", "moved"):
                _lxc(ns, ref.env, "delete", "--force", name, check=False)
            ref.stop()
        if ours is not None:
            ours.cleanup()
        ns.delete()


def _cat(ns, env, name, path):
    return _lxc(ns, env, "exec", name, "--", "cat", path).stdout


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_lxdtx_to_lxd(peers, mode):
    ns, ours, ours_env, ref_env = peers
    name = "toref" if mode == "pull" else "pushed"
    _lxc(ns, ours_env, "launch", "busybox", name)
    try:
        _lxc(ns, ours_env, "exec", name, "--", "sh", "-c", f"echo {mode} > /root/data")
        _lxc(ns, ours_env, "snapshot", name, "s1")
        _lxc(ns, ours_env, "stop", "--force", name)
        _lxc(ns, ours_env, "copy", name, f"ref:{name}", "--mode", mode)
        _lxc(ns, ref_env, "start", name)
        assert _cat(ns, ref_env, name, "/root/data") == f"{mode}\n"
        assert "s1" in _lxc(ns, ref_env, "info", name).stdout
    finally:
        _lxc(ns, ours_env, "delete", "--force", name, check=False)
        _lxc(ns, ref_env, "delete", "--force", name, check=False)


def test_lxd_to_lxdtx_copy_and_move(peers):
    ns, ours, ours_env, ref_env = peers
    _lxc(ns, ref_env, "launch", "busybox", "fromref")
    try:
        _lxc(ns, ref_env, "exec", "fromref", "--", "sh", "-c", "echo from-lxd > /root/data")
        # LXD freezes a running container to snapshot or copy it, which fails on this host's
        # cgroups: its side works on a stopped one.
        _lxc(ns, ref_env, "stop", "--force", "fromref")
        _lxc(ns, ref_env, "snapshot", "fromref", "s1")
        _lxc(ns, ref_env, "copy", "fromref", "ours:fromref")
        assert [s["name"] for s in ours.request("GET", "/1.0/containers/fromref/snapshots?recursion=1").metadata] \
            == ["fromref/s1"]
        _lxc(ns, ours_env, "start", "fromref")
        assert _cat(ns, ours_env, "fromref", "/root/data") == "from-lxd\n"
        _lxc(ns, ref_env, "move", "fromref", "ours:moved")
        assert _lxc(ns, ref_env, "info", "fromref", check=False).returncode != 0
        _lxc(ns, ours_env, "start", "moved")
        assert _cat(ns, ours_env, "moved", "/root/data") == "from-lxd\n"
    finally:
        for name in ("fromref", "moved"):
            _lxc(ns, ours_env, "delete", "--force", name, check=False)


def test_custom_volume_both_ways(peers):
    ns, ours, ours_env, ref_env = peers
    _lxc(ns, ours_env, "storage", "volume", "create", "default", "shared")
    try:
        path = os.path.join(ours.dir, "storage-pools", "default", "custom", "shared", "data")
        with open(path, "w") as f:
            f.write("ours")
        _lxc(ns, ours_env, "storage", "volume", "copy", "default/shared", "ref:default/shared")
        _lxc(ns, ref_env, "storage", "volume", "copy", "default/shared", "ours:default/back")
        with open(os.path.join(ours.dir, "storage-pools", "default", "custom", "back", "data")) as f:
            assert f.read() == "ours"
    finally:
        for name in ("shared", "back"):
            _lxc(ns, ours_env, "storage", "volume", "delete", "default", name, check=False)
        _lxc(ns, ref_env, "storage", "volume", "delete", "default", "shared", check=False)


BTRFS_POOL = "bt"


@pytest.fixture()
def btrfs_pools(peers):
    """A btrfs pool (a loop file) named alike on both daemons, removed after the test."""
    from lxdtx.storage.btrfs import BtrfsDriver

    missing = BtrfsDriver.missing()
    if missing:
        pytest.skip(f"btrfs: {missing}")
    ns, ours, ours_env, ref_env = peers
    made = []
    try:
        for env in (ours_env, ref_env):
            _lxc(ns, env, "storage", "create", BTRFS_POOL, "btrfs", "size=2GB")
            made.append(env)
        yield peers
    finally:
        for env in made:
            for name in ("btref", "btours", "btback"):
                _lxc(ns, env, "delete", "--force", name, check=False)
            _lxc(ns, env, "storage", "delete", BTRFS_POOL, check=False)


def test_btrfs_both_ways(btrfs_pools):
    """Between two btrfs pools `lxc copy` goes as btrfs send streams both ways (our log says
    so on our side, and we check LXD's streams as any), snapshots included."""
    ns, ours, ours_env, ref_env = btrfs_pools
    _lxc(ns, ours_env, "launch", "busybox", "btours", "-s", BTRFS_POOL)
    _lxc(ns, ours_env, "exec", "btours", "--", "sh", "-c", "echo ours > /root/data")
    _lxc(ns, ours_env, "snapshot", "btours", "s1")
    _lxc(ns, ours_env, "exec", "btours", "--", "sh", "-c", "echo ours-later > /root/data")
    _lxc(ns, ours_env, "stop", "--force", "btours")
    _lxc(ns, ours_env, "copy", "btours", "ref:btref", "--storage", BTRFS_POOL)
    with open(ours.log_path, errors="replace") as f:
        assert "Sending container btours as btrfs send streams" in f.read()
    assert "s1" in _lxc(ns, ref_env, "info", "btref").stdout
    _lxc(ns, ref_env, "start", "btref")
    assert _cat(ns, ref_env, "btref", "/root/data") == "ours-later\n"
    _lxc(ns, ref_env, "exec", "btref", "--", "sh", "-c", "echo back > /root/data")
    _lxc(ns, ref_env, "stop", "--force", "btref")
    _lxc(ns, ref_env, "snapshot", "btref", "s2")
    _lxc(ns, ref_env, "copy", "btref", "ours:btback", "--storage", BTRFS_POOL)
    with open(ours.log_path, errors="replace") as f:
        assert "Receiving container btback as btrfs send streams" in f.read()
    snapshots = ours.request("GET", "/1.0/containers/btback/snapshots").metadata
    assert sorted(s.rsplit("/", 1)[-1] for s in snapshots) == ["s1", "s2"]
    _lxc(ns, ours_env, "start", "btback")
    assert _cat(ns, ours_env, "btback", "/root/data") == "back\n"
    _lxc(ns, ours_env, "restore", "btback", "s1")
    assert _cat(ns, ours_env, "btback", "/root/data") == "ours\n"
