"""`unix-char` / `unix-block` devices on real busybox containers: live add with rename, use,
removal, numbers, ownership, the device cgroup, hotplug of devices not required, bad input."""

import os
import stat
import uuid

import pytest

from tests.daemonproc import wait_until

pytestmark = pytest.mark.timeout(300)

# Char major 120 is reserved for local use: no driver has it, so an open that the
# device cgroup allows fails with ENXIO, one it refuses with EPERM.
LOCAL_MAJOR = 120


@pytest.fixture
def host_node():
    """A path under the host's /dev for a node the test makes; removed afterwards."""
    path = f"/dev/lxdtx-test-{uuid.uuid4().hex[:10]}"
    try:
        yield path
    finally:
        if os.path.lexists(path):
            os.unlink(path)


def _mknod(path, major, minor):
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(major, minor))


def _sh(d, name, script, check=True):
    return d.lxc("exec", name, "--", "sh", "-c", script, check=check)


def _devices(d, name):
    return d.request("GET", f"/1.0/containers/{name}").metadata["devices"]


def _device_rules(d, name):
    """The container's cgroup v1 device allow list, or None without a v1 devices controller."""
    pid = d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "devices" in controllers.split(","):
                with open(f"/sys/fs/cgroup/devices{path}/devices.list") as rules:
                    return rules.read().split("\n")
    return None


def test_live_add_with_rename_use_and_remove(busybox_daemon, container):
    """/dev/null of the host at another path inside, added live: the right node, writable; removed live."""
    d = busybox_daemon
    d.lxc("config", "device", "add", container, "n", "unix-char", "source=/dev/null", "path=/dev/othernull")
    listing = _sh(d, container, "ls -ln /dev/othernull").stdout.split()
    assert listing[0].startswith("c") and listing[4:6] == ["1,", "3"], listing
    _sh(d, container, "echo written > /dev/othernull")
    assert _sh(d, container, "head -c 4 /dev/othernull | wc -c").stdout.strip() == "0"
    d.lxc("config", "device", "remove", container, "n")
    assert _sh(d, container, "test -e /dev/othernull", check=False).returncode != 0
    assert _sh(d, container, "echo still > /dev/null", check=False).returncode == 0  # its own /dev/null stays


def test_numbers_owner_mode_and_device_cgroup(busybox_daemon, container, host_node):
    """A host node of a driverless major: numbers, uid/gid/mode inside; the cgroup allows it while
    the device is there (ENXIO, not EPERM), and no longer once it is removed."""
    d = busybox_daemon
    _mknod(host_node, LOCAL_MAJOR, 7)
    d.lxc("config", "device", "add", container, "loc", "unix-char", f"source={host_node}", "path=/dev/loc",
          "uid=1000", "gid=1001", "mode=0640")
    listing = _sh(d, container, "ls -ln /dev/loc").stdout.split()
    assert listing[0] == "crw-r-----" and listing[2:4] == ["1000", "1001"], listing
    assert listing[4:6] == [f"{LOCAL_MAJOR},", "7"], listing
    opened = _sh(d, container, "cat /dev/loc", check=False)
    assert "No such device" in opened.stderr and "not permitted" not in opened.stderr, opened.stderr
    rules = _device_rules(d, container)
    if rules is not None:
        assert f"c {LOCAL_MAJOR}:7 rwm" in rules
    d.lxc("config", "device", "remove", container, "loc")
    assert _sh(d, container, "test -e /dev/loc", check=False).returncode != 0
    rules = _device_rules(d, container)
    if rules is not None:
        assert f"c {LOCAL_MAJOR}:7 rwm" not in rules


def test_device_at_start_and_explicit_numbers(busybox_daemon, container):
    """Devices configured while stopped are there after the start: by source and by major/minor alone."""
    d = busybox_daemon
    d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "z", "unix-char", "source=/dev/zero", "path=/dev/z")
    d.lxc("config", "device", "add", container, "f", "unix-char", "path=/dev/myfull", "major=1", "minor=7")
    d.lxc("start", container)
    assert _sh(d, container, "head -c 3 /dev/z | wc -c").stdout.strip() == "3"
    assert "No space left" in _sh(d, container, "echo x > /dev/myfull", check=False).stderr
    listing = _sh(d, container, "ls -l /dev/myfull").stdout
    assert listing.startswith("c")


def test_hotplug_when_not_required(busybox_daemon, container, host_node):
    """required=false: no source, no error and no node; the node comes and goes with the host's."""
    d = busybox_daemon
    d.lxc("config", "device", "add", container, "hp", "unix-char", f"source={host_node}", "path=/dev/hp",
          "required=false")
    assert _sh(d, container, "test -e /dev/hp", check=False).returncode != 0
    _mknod(host_node, 1, 3)
    assert wait_until(lambda: _sh(d, container, "test -c /dev/hp", check=False).returncode == 0, 30)
    _sh(d, container, "echo via-hotplug > /dev/hp")
    os.unlink(host_node)
    assert wait_until(lambda: _sh(d, container, "test -e /dev/hp", check=False).returncode != 0, 30)
    _mknod(host_node, 1, 3)  # and back again
    assert wait_until(lambda: _sh(d, container, "test -c /dev/hp", check=False).returncode == 0, 30)
    d.lxc("config", "device", "remove", container, "hp")
    assert _sh(d, container, "test -e /dev/hp", check=False).returncode != 0


def test_hotplug_across_restart(busybox_daemon, container, host_node):
    """A device not required and missing at start appears once its host node does."""
    d = busybox_daemon
    d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "hp", "unix-char", f"source={host_node}", "path=/dev/hp",
          "required=false")
    d.lxc("start", container)
    assert _sh(d, container, "test -e /dev/hp", check=False).returncode != 0
    _mknod(host_node, 1, 5)
    assert wait_until(lambda: _sh(d, container, "test -c /dev/hp", check=False).returncode == 0, 30)
    assert _sh(d, container, "head -c 2 /dev/hp | wc -c").stdout.strip() == "2"


def test_missing_required_source(busybox_daemon, container, host_node):
    """A required source that is not there refuses the live add, and the start, naming it."""
    d = busybox_daemon
    result = d.lxc("config", "device", "add", container, "m", "unix-char", f"source={host_node}", check=False)
    assert result.returncode != 0 and host_node in result.stderr, result.stderr
    assert "m" not in _devices(d, container)
    d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "m", "unix-char", f"source={host_node}")
    result = d.lxc("start", container, check=False)
    assert result.returncode != 0 and host_node in result.stderr, result.stderr
    d.lxc("config", "device", "remove", container, "m")
    d.lxc("start", container)


def test_wrong_kind_of_source(busybox_daemon, container):
    """A unix-block device whose source is a character device is refused."""
    d = busybox_daemon
    result = d.lxc("config", "device", "add", container, "b", "unix-block", "source=/dev/null", check=False)
    assert result.returncode != 0 and "/dev/null" in result.stderr
    assert "b" not in _devices(d, container)


def test_conflicting_paths(busybox_daemon, container):
    """Two unix devices at one path inside (one by `path`, one by `source`): the second is refused."""
    d = busybox_daemon
    d.lxc("config", "device", "add", container, "one", "unix-char", "source=/dev/zero", "path=/dev/null2")
    result = d.lxc("config", "device", "add", container, "two", "unix-char", "source=/dev/null2", check=False)
    assert result.returncode != 0 and "/dev/null2" in result.stderr, result.stderr
    devices = _devices(d, container)
    assert "one" in devices and "two" not in devices


@pytest.mark.parametrize("args, named", [
    (["source=/dev/null", "colour=blue"], "colour"),
    (["source=/dev/null", "major=1"], "minor"),
    (["source=/dev/null", "mode=999"], "mode"),
    (["source=/dev/null", "path=/dev/../etc/x"], "path"),
])
def test_bad_keys(busybox_daemon, container, args, named):
    d = busybox_daemon
    result = d.lxc("config", "device", "add", container, "bad", "unix-char", *args, check=False)
    assert result.returncode != 0 and named in result.stderr, result.stderr
    assert "bad" not in _devices(d, container)
