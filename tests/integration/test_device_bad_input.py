"""Bad device input through the real `lxc` client: refused with the device or key named, nothing kept."""

import pytest

pytestmark = pytest.mark.timeout(300)


def _devices(d, name):
    return d.request("GET", f"/1.0/containers/{name}").metadata["devices"]


def test_unknown_device_type(busybox_daemon, container):
    """A device type the daemon does not know is refused, naming the device."""
    d = busybox_daemon
    result = d.lxc("config", "device", "add", container, "x", "teleporter", check=False)
    assert result.returncode != 0 and "Invalid device type" in result.stderr and "x" in result.stderr
    assert "x" not in _devices(d, container)


def test_unknown_device_key(busybox_daemon, container):
    """A key its type does not have is named in the error."""
    d = busybox_daemon
    result = d.lxc("config", "device", "add", container, "x", "disk", "source=/var/tmp", "path=/mnt",
                   "colour=blue", check=False)
    assert result.returncode != 0 and "colour" in result.stderr
    assert "x" not in _devices(d, container)


def test_conflicting_disk_paths(busybox_daemon, container, workdir):
    """Two disks at the same path inside the container: the second is refused, the first stays."""
    d = busybox_daemon
    d.lxc("config", "device", "add", container, "one", "disk", f"source={workdir}", "path=/mnt/shared")
    result = d.lxc("config", "device", "add", container, "two", "disk", f"source={workdir}",
                   "path=/mnt/shared", check=False)
    assert result.returncode != 0 and "/mnt/shared" in result.stderr
    devices = _devices(d, container)
    assert "one" in devices and "two" not in devices
