"""`usb` and `gpu` devices on real busybox containers, with host devices the test describes.

This host has no USB bus and no GPU, so the daemon reads its host device
information from a fake sysfs tree (`LXDTX_HOST_SYSFS`; sysfs itself cannot be
overmounted: the kernel then refuses the containers' own sysfs mounts), and it
runs in a network namespace of the test's own. What the tests check is real:
the nodes made in the container, their numbers, owner and mode, the device
cgroup, and USB hotplug from uevents that the test broadcasts on a
NETLINK_KOBJECT_UEVENT socket inside that namespace (where only this daemon
hears them).
"""

import os
import shutil
import sys
import tempfile

import pytest

from tests.daemonproc import wait_until
from tests.integration.netns import Netns, daemon_in

pytestmark = pytest.mark.timeout(300)

USB_MAJOR = 189
DRM_MAJOR = 226

def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")


def _fake_usb(root, entry, vendor, product, bus, dev, minor):
    for key, value in (("idVendor", vendor), ("idProduct", product), ("busnum", str(bus)),
                       ("devnum", str(dev)), ("dev", f"{USB_MAJOR}:{minor}")):
        _write(os.path.join(root, "bus", "usb", "devices", entry, key), value)


def _fake_card(root, pci, vendor, product, card, render):
    device = os.path.join(root, "devices", pci)
    _write(os.path.join(device, "vendor"), f"0x{vendor}")
    _write(os.path.join(device, "device"), f"0x{product}")
    for name, minor in ((f"card{card}", card), (f"renderD{render}", render)):
        node = os.path.join(device, "drm", name)
        _write(os.path.join(node, "dev"), f"{DRM_MAJOR}:{minor}")
        os.symlink(device, os.path.join(node, "device"))
        os.makedirs(os.path.join(root, "class", "drm"), exist_ok=True)
        os.symlink(node, os.path.join(root, "class", "drm", name))


@pytest.fixture(scope="module")
def fake():
    root = tempfile.mkdtemp(prefix="lxdtx-fakesys-", dir="/var/tmp")
    os.chmod(root, 0o755)
    _fake_usb(root, "usb1", "1d6b", "0002", 1, 1, 0)
    _fake_usb(root, "1-1", "f0e1", "0002", 1, 9, 8)
    _fake_card(root, "0000:00:02.0", "8086", "3e92", 0, 128)
    _fake_card(root, "0000:03:00.0", "1002", "67df", 1, 129)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def ns():
    if os.geteuid() != 0:
        pytest.skip("runs as root (namespaces, mounts)")
    namespace = Netns()
    try:
        yield namespace
    finally:
        namespace.delete()


@pytest.fixture(scope="module")
def d(ns, fake):
    """A daemon in `ns` reading host devices from the fake tree."""
    wrapper = ["env", f"LXDTX_HOST_SYSFS={fake}", *ns.wrapper()]
    ns.wrapper = lambda: wrapper
    daemon = daemon_in(ns, auto_init=True)
    try:
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture
def container(d):
    name = f"u{os.getpid() % 1000}-{os.urandom(2).hex()}"
    d.lxc("launch", "busybox", name)
    try:
        yield name
    finally:
        d.lxc("delete", "-f", name, check=False)


def _sh(d, name, script, check=True):
    return d.lxc("exec", name, "--", "sh", "-c", script, check=check)


def _node(d, name, path):
    """(mode string, uid, gid, major, minor) of a node in the container, or None."""
    result = _sh(d, name, f"ls -ln {path}", check=False)
    if result.returncode != 0:
        return None
    fields = result.stdout.split()
    return fields[0], fields[2], fields[3], fields[4].rstrip(","), fields[5]


def _allowed(d, name, rule):
    """Whether the container's device cgroup allows `rule`; None without a v1 devices controller."""
    pid = d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "devices" in controllers.split(","):
                with open(f"/sys/fs/cgroup/devices{path}/devices.list") as rules:
                    return rule in rules.read().split("\n")
    return None


_SEND = """
import socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
s.bind((0, 0))
s.sendto(bytes.fromhex(sys.argv[1]), (0, 1))
"""


def _uevent(ns, action, vendor, product, bus, dev, minor):
    devpath = f"/devices/lxdtx-test/usb{bus}/{bus}-{dev}"
    fields = [f"ACTION={action}", f"DEVPATH={devpath}", "SUBSYSTEM=usb", f"MAJOR={USB_MAJOR}", f"MINOR={minor}",
              f"DEVNAME=bus/usb/{bus:03d}/{dev:03d}", "DEVTYPE=usb_device", f"PRODUCT={vendor}/{product}/100",
              f"BUSNUM={bus:03d}", f"DEVNUM={dev:03d}", "SEQNUM=1"]
    message = f"{action}@{devpath}\0" + "\0".join(fields) + "\0"
    ns.exec(sys.executable, "-c", _SEND, message.encode().hex())


def test_usb_live_add_and_remove(d, container):
    """A usb device added live passes the matching host device at /dev/bus/usb/BUS/DEV with its
    numbers, owner and mode, allowed in the device cgroup; others stay out; removed, it goes."""
    d.lxc("config", "device", "add", container, "u", "usb", "vendorid=F0E1", "uid=1000", "gid=1001", "mode=0604")
    assert _node(d, container, "/dev/bus/usb/001/009") == ("crw----r--", "1000", "1001", str(USB_MAJOR), "8")
    assert _node(d, container, "/dev/bus/usb/001/001") is None  # the root hub is another vendor's
    opened = _sh(d, container, "cat /dev/bus/usb/001/009", check=False)
    assert "No such device" in opened.stderr, opened.stderr  # no driver behind it here, but not refused
    assert _allowed(d, container, f"c {USB_MAJOR}:8 rwm") in (True, None)
    d.lxc("config", "device", "remove", container, "u")
    assert _node(d, container, "/dev/bus/usb/001/009") is None
    assert _allowed(d, container, f"c {USB_MAJOR}:8 rwm") in (False, None)


def test_usb_at_start_and_hotplug(d, ns, container):
    """At start the matching device is there; a uevent adds another, and its removal takes it out;
    a device of another vendor is not plugged."""
    d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "u", "usb", "vendorid=f0e1", "productid=0002")
    d.lxc("start", container)
    assert _node(d, container, "/dev/bus/usb/001/009")[3:] == (str(USB_MAJOR), "8")
    _uevent(ns, "add", "abcd", "1", 3, 7, 262)  # another vendor's
    _uevent(ns, "add", "f0e1", "2", 3, 2, 257)
    assert wait_until(lambda: _node(d, container, "/dev/bus/usb/003/002") is not None, 30)
    assert _node(d, container, "/dev/bus/usb/003/002")[:5] == ("crw-rw----", "0", "0", str(USB_MAJOR), "257")
    assert _node(d, container, "/dev/bus/usb/003/007") is None
    assert _allowed(d, container, f"c {USB_MAJOR}:257 rwm") in (True, None)
    _uevent(ns, "remove", "f0e1", "2", 3, 2, 257)
    assert wait_until(lambda: _node(d, container, "/dev/bus/usb/003/002") is None, 30)
    assert _node(d, container, "/dev/bus/usb/001/009") is not None  # the other one stays


def test_usb_required(d, container):
    """required=true with no such device on the host: refused live, and the start fails naming it."""
    result = d.lxc("config", "device", "add", container, "r", "usb", "vendorid=0bad", "required=true", check=False)
    assert result.returncode != 0 and "0bad" in result.stderr, result.stderr
    d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "r", "usb", "vendorid=0bad", "required=true")
    result = d.lxc("start", container, check=False)
    assert result.returncode != 0 and "0bad" in result.stderr, result.stderr
    d.lxc("config", "device", "set", container, "r", "required", "false")
    d.lxc("start", container)


def test_gpu_by_id_live_and_at_start(d, container):
    """gpu id=0: that card's DRM nodes, not the other card's, with the owner and mode asked for;
    the same after a restart; removed, they go."""
    d.lxc("config", "device", "add", container, "g", "gpu", "id=0", "gid=44", "mode=0660")
    assert _node(d, container, "/dev/dri/card0") == ("crw-rw----", "0", "44", str(DRM_MAJOR), "0")
    assert _node(d, container, "/dev/dri/renderD128")[3:] == (str(DRM_MAJOR), "128")
    assert _node(d, container, "/dev/dri/card1") is None
    assert _allowed(d, container, f"c {DRM_MAJOR}:128 rwm") in (True, None)
    d.lxc("restart", "-f", container)
    assert _node(d, container, "/dev/dri/card0")[3:] == (str(DRM_MAJOR), "0")
    assert _node(d, container, "/dev/dri/card1") is None
    d.lxc("config", "device", "remove", container, "g")
    assert _node(d, container, "/dev/dri/card0") is None and _node(d, container, "/dev/dri/renderD128") is None


def test_gpu_selectors(d, container):
    """No selector passes every card; pci and vendorid select one; a selector matching none is refused."""
    d.lxc("config", "device", "add", container, "all", "gpu")
    assert _node(d, container, "/dev/dri/card0") is not None and _node(d, container, "/dev/dri/card1") is not None
    d.lxc("config", "device", "remove", container, "all")
    d.lxc("config", "device", "add", container, "amd", "gpu", "pci=03:00.0", "vendorid=1002")
    assert _node(d, container, "/dev/dri/renderD129") is not None and _node(d, container, "/dev/dri/card0") is None
    result = d.lxc("config", "device", "add", container, "none", "gpu", "pci=0000:09:00.0", check=False)
    assert result.returncode != 0 and "GPU" in result.stderr, result.stderr
    assert "none" not in d.request("GET", f"/1.0/containers/{container}").metadata["devices"]


def test_nvidia_nodes_on_this_host():
    """On a host with an NVIDIA card and its driver, discovery finds /dev/nvidiaN for it."""
    if not os.path.isdir("/proc/driver/nvidia/gpus"):
        pytest.skip("no NVIDIA GPU with its proprietary driver on this host (/proc/driver/nvidia/gpus); "
                    "the discovery is unit-tested against fake trees in tests/unit/test_passthrough_devices.py")
    from lxdtx.device import gpu

    nvidia = [g for g in gpu.scan() if g.vendor == gpu.NVIDIA_VENDOR]
    assert nvidia and all(any(n.major == gpu.NVIDIA_MAJOR for n in g.nodes) for g in nvidia), nvidia


def test_usb_hotplug_after_daemon_restart(d, ns, container):
    """A restarted daemon follows the uevents of the containers it finds running."""
    d.lxc("config", "device", "add", container, "u", "usb", "vendorid=f0e1")
    d.stop()
    d.start(timeout=120)
    _uevent(ns, "add", "f0e1", "2", 4, 3, 300)
    assert wait_until(lambda: _node(d, container, "/dev/bus/usb/004/003") is not None, 30)
    _uevent(ns, "remove", "f0e1", "2", 4, 3, 300)
    assert wait_until(lambda: _node(d, container, "/dev/bus/usb/004/003") is None, 30)


def test_node_path_taken_by_another_device(d, container):
    """A unix-char device at a path a gpu device's node has is refused, live and at start."""
    d.lxc("config", "device", "add", container, "g", "gpu", "id=0")
    result = d.lxc("config", "device", "add", container, "n", "unix-char", "source=/dev/null",
                   "path=/dev/dri/card0", check=False)
    assert result.returncode != 0 and "/dev/dri/card0" in result.stderr, result.stderr
    assert "n" not in d.request("GET", f"/1.0/containers/{container}").metadata["devices"]
    assert _node(d, container, "/dev/dri/card0")[3:] == (str(DRM_MAJOR), "0")  # still the card's
    d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "n", "unix-char", "source=/dev/null", "path=/dev/dri/card0")
    result = d.lxc("start", container, check=False)
    assert result.returncode != 0 and "/dev/dri/card0" in result.stderr, result.stderr
    d.lxc("config", "device", "remove", container, "n")
    d.lxc("start", container)
