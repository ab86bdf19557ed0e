"""Unprivileged containers on idmapped rootfs mounts: files stay unshifted on disk and the
kernel maps them at liblxc's mount (no chown walk); the walk stays where that is off; a
pool's image is unpacked once and containers are copies of that tree.
"""

import json
import os
import subprocess
import sys

import pytest

from lxdtx.instance import idmapped

pytestmark = pytest.mark.timeout(600)


def _config(d, name):
    return d.request("GET", f"/1.0/containers/{name}").metadata["config"]


def _rootfs(d, name, pool="default"):
    return os.path.join(d.dir, "storage-pools", pool, "containers", name, "rootfs")


def _init_pid(d, name):
    return d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]


def _host_root(config):
    entry = next(e for e in json.loads(config["volatile.idmap.current"]) if e["Isuid"] and e["Nsid"] == 0)
    return entry["Hostid"]


@pytest.fixture(scope="module")
def walk_daemon():
    """A daemon told to shift by chown (LXDTX_IDMAPPED_MOUNTS=off), with the busybox image."""
    from tests.daemonproc import Daemon

    if os.geteuid() != 0:
        pytest.skip("integration tests run as root")
    d = Daemon(auto_init=True)
    d.extra_env = {idmapped.SETTING: "off"}
    d.start(timeout=120)
    try:
        yield d
    finally:
        d.cleanup()



def _lxc_config(d, name):
    try:
        with open(os.path.join(d.dir, "lxc", name, "config")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_probe_refuses_procfs():
    """The probe answers per filesystem: ext4 or tmpfs of this host can, procfs never can."""
    if os.geteuid() != 0:
        pytest.skip("the probe makes a user namespace and a detached mount (root)")
    refused = subprocess.run([sys.executable, "-I", "-S", idmapped.PROBE, "/proc/sys"], capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode == 2 and "MOUNT_ATTR_IDMAP" in refused.stderr


def test_default_container_is_idmapped(busybox_daemon):
    """A default container runs unprivileged on an idmapped rootfs: its files keep the
    image's ids on disk, the container and the host (through the mount) see them shifted."""
    d = busybox_daemon
    d.lxc("launch", "busybox", "idm1")
    try:
        text = _lxc_config(d, "idm1")
        if "idmap=container" not in text:
            pytest.skip("this kernel or filesystem refuses idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP)")
        config = _config(d, "idm1")
        assert config["volatile.last_state.idmap"] == "[]"
        host_root = _host_root(config)
        assert host_root >= 100000 and config["volatile.idmap.next"] == config["volatile.idmap.current"]
        pid = _init_pid(d, "idm1")
        with open(f"/proc/{pid}/status") as f:
            assert int(next(x for x in f if x.startswith("Uid:")).split()[1]) == host_root
        assert os.stat(os.path.join(_rootfs(d, "idm1"), "bin", "busybox")).st_uid == 0
        assert os.stat(f"/proc/{pid}/root/bin/busybox").st_uid == host_root
        d.lxc("exec", "idm1", "--", "sh", "-c", "echo x > /root/made; chown 33:33 /root/made")
        st = os.stat(os.path.join(_rootfs(d, "idm1"), "root", "made"))
        assert (st.st_uid, st.st_gid) == (33, 33)
        # The stopped container's files through the API: container ids, as written.
        d.lxc("stop", "-f", "idm1")
        got = d.request("GET", "/1.0/containers/idm1/files?path=/root/made")
        assert got.status == 200 and got.headers.get("X-Lxd-Uid", got.headers.get("X-LXD-uid")) == "33"
        d.lxc("file", "push", "-", "idm1/root/pushed", "--uid", "7", "--gid", "8", input="p\n")
        st = os.stat(os.path.join(_rootfs(d, "idm1"), "root", "pushed"))
        assert (st.st_uid, st.st_gid) == (7, 8)
        d.lxc("start", "idm1")
        assert d.lxc("exec", "idm1", "--", "stat", "-c", "%u:%g", "/root/pushed").stdout.strip() == "7:8"
        assert _config(d, "idm1")["volatile.last_state.idmap"] == "[]"
    finally:
        d.lxc("delete", "-f", "idm1", check=False)


def test_isolated_containers_idmapped(busybox_daemon):
    """security.idmap.isolated containers get maps of their own, still on unshifted files."""
    d = busybox_daemon
    names = ("iso1", "iso2")
    try:
        for name in names:
            d.lxc("launch", "busybox", name, "-c", "security.idmap.isolated=true")
        if "idmap=container" not in _lxc_config(d, "iso1"):
            pytest.skip("this kernel or filesystem refuses idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP)")
        roots = [_host_root(_config(d, n)) for n in names]
        assert roots[0] != roots[1] and min(roots) >= 100000
        for name, root in zip(names, roots):
            assert _config(d, name)["volatile.last_state.idmap"] == "[]"
            assert os.stat(os.path.join(_rootfs(d, name), "bin", "busybox")).st_uid == 0
            assert os.stat(f"/proc/{_init_pid(d, name)}/root/bin/busybox").st_uid == root
            assert d.lxc("exec", name, "--", "id", "-u").stdout.strip() == "0"
    finally:
        for name in names:
            d.lxc("delete", "-f", name, check=False)


def test_image_unpacked_once_per_pool(busybox_daemon, workdir):
    """The dir pool keeps one unpacked tree of an image; containers are copies (a change in
    one stays there); deleting the image drops the tree."""
    from lxdtx.image import busybox

    d = busybox_daemon
    image = busybox.build_image(os.path.join(workdir, "bb.tar.xz"), creation_date=1600000000 + os.getpid())
    d.lxc("image", "import", image.path, "--alias", "bb-once")
    tree = os.path.join(d.dir, "storage-pools", "default", "images", image.fingerprint)
    try:
        d.lxc("init", "bb-once", "once1")
        assert os.path.isdir(os.path.join(tree, "rootfs"))
        inode = os.stat(tree).st_ino
        d.lxc("init", "bb-once", "once2")
        assert os.stat(tree).st_ino == inode
        with open(os.path.join(_rootfs(d, "once1"), "etc", "hostname"), "w") as f:
            f.write("changed\n")
        with open(os.path.join(tree, "rootfs", "etc", "hostname")) as f:
            assert f.read() != "changed\n"
        assert not any(".unpacking-" in n for n in os.listdir(os.path.dirname(tree)))
        # Not an image volume of a dir pool (LXD lists none).
        vols = d.request("GET", "/1.0/storage-pools/default/volumes").metadata
        assert not any("/image/" in v for v in vols)
        for name in ("once1", "once2"):
            d.lxc("delete", name)
        d.lxc("image", "delete", "bb-once")
        assert not os.path.exists(tree)
    finally:
        for name in ("once1", "once2"):
            d.lxc("delete", "-f", name, check=False)
        d.lxc("image", "delete", "bb-once", check=False)


def test_walk_when_off_then_unshifted_once(walk_daemon):
    """With idmapped mounts off the files are chowned to the map; the same container on a
    daemon that may idmap is walked back to unshifted once, then runs idmapped."""
    d = walk_daemon
    d.lxc("launch", "busybox", "walk1", "-c", "security.idmap.isolated=true")
    try:
        assert "idmap=container" not in _lxc_config(d, "walk1")
        config = _config(d, "walk1")
        host_root = _host_root(config)
        assert config["volatile.last_state.idmap"] == config["volatile.idmap.current"]
        assert os.stat(os.path.join(_rootfs(d, "walk1"), "bin", "busybox")).st_uid == host_root
        d.lxc("stop", "-f", "walk1")
        d.extra_env = {}
        d.restart()
        d.lxc("start", "walk1")
        if "idmap=container" not in _lxc_config(d, "walk1"):
            pytest.skip("this kernel or filesystem refuses idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP)")
        assert _config(d, "walk1")["volatile.last_state.idmap"] == "[]"
        assert os.stat(os.path.join(_rootfs(d, "walk1"), "bin", "busybox")).st_uid == 0
        assert d.lxc("exec", "walk1", "--", "stat", "-c", "%u", "/bin/busybox").stdout.strip() == "0"
    finally:
        d.lxc("delete", "-f", "walk1", check=False)


def test_checkpointable_container_keeps_walk(busybox_daemon):
    """migration.stateful containers keep shifted files: CRIU restores no idmapped mount."""
    d = busybox_daemon
    d.lxc("init", "busybox", "crw1", "-c", "migration.stateful=true")
    try:
        d.lxc("config", "device", "add", "crw1", "eth0", "none")
        d.lxc("start", "crw1")
        assert "idmap=container" not in _lxc_config(d, "crw1")
        config = _config(d, "crw1")
        assert config["volatile.last_state.idmap"] == config["volatile.idmap.current"] != "[]"
    finally:
        d.lxc("delete", "-f", "crw1", check=False)
