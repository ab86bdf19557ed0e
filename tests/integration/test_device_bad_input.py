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


def _patch(d, name, devices):
    """PATCH the container's devices; (status, error text) of the answer or of its operation."""
    result = d.request("PATCH", f"/1.0/containers/{name}", {"devices": devices})
    if result.status == 202:
        op = d.wait_operation(result)
        return (200 if op["status_code"] == 200 else 400), op.get("err") or ""
    return result.status, (result.json or {}).get("error", "")


@pytest.mark.parametrize("devices, named", [
    ({"x": {"type": "teleporter"}}, "Invalid device type"),
    ({"x": {"path": "/mnt"}}, "Missing device type"),
    ({"x": {"type": "proxy", "listen": "tcp:127.0.0.1:1", "connect": "tcp:127.0.0.1:2", "bind": "both"}}, "bind"),
    ({"x": {"type": "proxy", "listen": "tcp:127.0.0.1:1"}}, "connect"),
    ({"x": {"type": "proxy", "listen": "sctp:127.0.0.1:1", "connect": "tcp:127.0.0.1:2"}}, "listen"),
    ({"x": {"type": "disk", "source": "/var/tmp", "path": "/mnt/x", "limits.read": "fast"}}, "limits.read"),
    ({"x": {"type": "disk", "source": "/var/tmp", "path": "/mnt/x", "size": "1GB"}}, "root disk"),
    ({"x": {"type": "usb", "vendorid": "xyz"}}, "vendorid"),
    ({"x": {"type": "gpu", "pci": "somewhere"}}, "pci"),
    ({"x": {"type": "unix-char", "source": "/dev/null", "uid": "-1"}}, "uid"),
    ({"x": {"type": "none", "path": "/x"}}, "path"),
    ({"x": {"type": "disk", "source": "/var/tmp", "path": 7}}, "path"),
], ids=["type", "no-type", "bind", "no-connect", "listen-scheme", "limits", "size", "usb-id", "gpu-pci", "uid",
        "none-key", "non-string"])
def test_bad_devices_through_the_api(busybox_daemon, container, devices, named):
    """A bad device sent with PATCH is refused naming the key or problem; the devices stay as they were."""
    d = busybox_daemon
    before = _devices(d, container)
    status, error = _patch(d, container, {**before, **devices})
    assert status == 400 and named in error, (status, error)
    assert _devices(d, container) == before


def test_conflicting_unix_and_disk_paths(busybox_daemon, container, workdir):
    """A unix-char device where a disk is mounted inside is refused; the disk stays."""
    d = busybox_daemon
    d.lxc("config", "device", "add", container, "disk", "disk", f"source={workdir}", "path=/mnt/place")
    result = d.lxc("config", "device", "add", container, "node", "unix-char", "source=/dev/null",
                   "path=/mnt/place", check=False)
    assert result.returncode != 0 and "/mnt/place" in result.stderr, result.stderr
    devices = _devices(d, container)
    assert "disk" in devices and "node" not in devices


def test_two_proxies_on_one_address(busybox_daemon, container):
    """A second proxy listening where the first does is refused when it is plugged; the first keeps working."""
    import socket

    d = busybox_daemon
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d.lxc("config", "device", "add", container, "p1", "proxy", f"listen=tcp:127.0.0.1:{port}",
          "connect=tcp:127.0.0.1:1")
    result = d.lxc("config", "device", "add", container, "p2", "proxy", f"listen=tcp:127.0.0.1:{port}",
                   "connect=tcp:127.0.0.1:2", check=False)
    assert result.returncode != 0 and "Failed to listen" in result.stderr and "p2" in result.stderr, result.stderr
    devices = _devices(d, container)
    assert "p1" in devices and "p2" not in devices
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # p1 still accepts


def test_bad_device_in_a_profile(busybox_daemon, container):
    """A profile device of an unknown type, or conflicting with a container's device path, is refused."""
    d = busybox_daemon
    profile = f"bad-{container}"
    d.lxc("profile", "create", profile)
    try:
        result = d.lxc("profile", "device", "add", profile, "x", "warpdrive", check=False)
        assert result.returncode != 0 and "Invalid device type" in result.stderr, result.stderr
        d.lxc("config", "device", "add", container, "n", "unix-char", "source=/dev/null", "path=/dev/mine")
        d.lxc("profile", "add", container, profile)
        result = d.lxc("profile", "device", "add", profile, "m", "unix-char", "source=/dev/zero", "path=/dev/mine",
                       check=False)
        assert result.returncode != 0 and "/dev/mine" in result.stderr, result.stderr
        assert "m" not in d.request("GET", f"/1.0/profiles/{profile}").metadata["devices"]
    finally:
        d.lxc("profile", "remove", container, profile, check=False)
        d.lxc("profile", "delete", profile, check=False)
