"""A real distribution: the Debian 12 minbase image (debootstrap) launches, runs commands,
stops cleanly with its own /sbin/init and is deleted, on the default pool.

The image is built from the host's apt mirror once and cached (tests/debianimage.py);
the tests skip, naming why, when the mirror cannot be reached and no image is cached.
"""

import os

import pytest
import yaml

from tests import debianimage
from tests.daemonproc import wait_until

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def debian_daemon(busybox_daemon):
    debianimage.import_into(busybox_daemon)
    return busybox_daemon


def _name(suffix):
    return f"deb{os.getpid() % 1000}-{suffix}"


def test_image_metadata():
    """The cached image is a unified tarball whose metadata names Debian bookworm."""
    import tarfile

    path = debianimage.cached_image()
    with tarfile.open(path) as tar:
        meta = yaml.safe_load(tar.extractfile("metadata.yaml"))
        assert tar.getmember("rootfs/sbin").linkname == "usr/sbin"  # merged /usr
        init = tar.getmember("rootfs/usr/sbin/init")
        assert init.isfile() and init.mode & 0o111
        assert not [m.name for m in tar.getmembers() if m.ischr() or m.isblk()]
    assert meta["properties"]["os"] == "debian" and meta["properties"]["release"] == "bookworm"


def test_launch_exec_stop_delete(debian_daemon):
    """`lxc launch debian12` reaches RUNNING with the image's /sbin/init as PID 1; exec works
    inside (`cat /etc/debian_version`, apt's own files); a clean stop ends it; delete removes it."""
    d = debian_daemon
    name = _name("a")
    d.lxc("launch", debianimage.ALIAS, name, timeout=300)
    try:
        version = d.lxc("exec", name, "--", "cat", "/etc/debian_version").stdout.strip()
        assert version.startswith("12.")
        assert d.lxc("exec", name, "--", "cat", "/proc/1/cmdline").stdout.startswith("/bin/sh\0/sbin/init")
        assert d.lxc("exec", name, "--", "hostname").stdout.strip() == name
        assert "Status: install ok installed" in d.lxc(
            "exec", name, "--", "dpkg", "-s", "coreutils").stdout
        out = d.lxc("exec", name, "--", "sh", "-c", "echo hi > /root/f && stat -c %u:%g /root/f").stdout
        assert out.strip() == "0:0"
        d.lxc("stop", name, "--timeout", "30")
        assert d.request("GET", f"/1.0/containers/{name}").metadata["status"] == "Stopped"
        d.lxc("start", name)
        assert d.lxc("exec", name, "--", "cat", "/root/f").stdout == "hi\n"
    finally:
        d.lxc("delete", "-f", name, check=False)
    assert d.request("GET", f"/1.0/containers/{name}").status == 404


def test_two_containers_are_independent(debian_daemon):
    """Two containers of the one image: a change in one is not seen in the other."""
    d = debian_daemon
    one, two = _name("b"), _name("c")
    try:
        d.lxc("launch", debianimage.ALIAS, one, timeout=300)
        d.lxc("launch", debianimage.ALIAS, two, timeout=300)
        d.lxc("exec", one, "--", "sh", "-c", "echo one > /etc/debian_version")
        assert d.lxc("exec", two, "--", "cat", "/etc/debian_version").stdout.startswith("12.")
        d.lxc("stop", "-f", one)
        assert wait_until(lambda: d.request("GET", f"/1.0/containers/{one}").metadata["status"] == "Stopped", 30)
    finally:
        d.lxc("delete", "-f", one, check=False)
        d.lxc("delete", "-f", two, check=False)
