"""usb and gpu devices: discovery in fake sysfs / procfs trees, matching, uevents, node files."""

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from lxdtx import device
from lxdtx.config.schema import ConfigError
from lxdtx.device import gpu, usb
from lxdtx.instance.uevents import UeventListener


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")


class FakeTree(SynchronousTestCase):
    """A temporary directory standing for /sys (and /proc, /dev) in parsing tests."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="lxdtx-fake-sysfs-")
        self.addCleanup(shutil.rmtree, self.root)

    def path(self, *parts):
        return os.path.join(self.root, *parts)


def fake_usb(tree, entry, vendor, product, bus, dev, minor):
    base = tree.path("bus", "usb", "devices", entry)
    for key, value in (("idVendor", vendor), ("idProduct", product), ("busnum", str(bus)),
                       ("devnum", str(dev)), ("dev", f"189:{minor}")):
        _write(os.path.join(base, key), value)


class UsbScanTests(FakeTree):
    """The host's USB devices from /sys/bus/usb/devices."""

    def setUp(self):
        super().setUp()
        fake_usb(self, "usb1", "1d6b", "0002", 1, 1, 0)
        fake_usb(self, "1-1", "046D", "c52b", 1, 4, 3)
        _write(self.path("bus", "usb", "devices", "1-1:1.0", "bInterfaceClass"), "03")  # an interface

    def test_scan(self):
        """Devices with their ids (lower case), numbers and node; interfaces left out."""
        found = usb.scan(self.path("bus", "usb", "devices"))
        self.assertEqual(found, [usb.UsbDevice("046d", "c52b", 1, 4, 189, 3),
                                 usb.UsbDevice("1d6b", "0002", 1, 1, 189, 0)])
        self.assertEqual(found[0].path, "/dev/bus/usb/001/004")
        self.assertEqual(usb.scan(self.path("nowhere")), [])

    def test_matches(self):
        """vendorid must match, productid when given; case does not matter."""
        logitech = usb.UsbDevice("046d", "c52b", 1, 4, 189, 3)
        self.assertTrue(usb.matches({"vendorid": "046D"}, logitech))
        self.assertTrue(usb.matches({"vendorid": "046d", "productid": "C52B"}, logitech))
        self.assertFalse(usb.matches({"vendorid": "046d", "productid": "c52c"}, logitech))
        self.assertFalse(usb.matches({"vendorid": "1d6b"}, logitech))

    def test_required_defaults_to_false(self):
        """USB devices are hotplugged unless required."""
        self.assertFalse(usb.is_required({}))
        self.assertTrue(usb.is_required({"required": "true"}))


class UeventTests(SynchronousTestCase):
    """Kernel uevents about USB devices."""

    ADD = (b"add@/devices/pci0000:00/0000:00:14.0/usb1/1-2\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:14.0"
           b"/usb1/1-2\0SUBSYSTEM=usb\0MAJOR=189\0MINOR=5\0DEVNAME=bus/usb/001/006\0DEVTYPE=usb_device\0"
           b"PRODUCT=46d/c52b/1211\0TYPE=0/0/0\0BUSNUM=001\0DEVNUM=006\0SEQNUM=4242\0")

    def test_add(self):
        """An add: the device with its ids padded to four digits."""
        self.assertEqual(usb.parse_uevent(self.ADD), ("add", usb.UsbDevice("046d", "c52b", 1, 6, 189, 5)))

    def test_remove(self):
        self.assertEqual(usb.parse_uevent(self.ADD.replace(b"ACTION=add", b"ACTION=remove"))[0], "remove")

    def test_ignored(self):
        """Interfaces, other subsystems and actions, udev's rebroadcasts and garbage give nothing."""
        self.assertIsNone(usb.parse_uevent(self.ADD.replace(b"DEVTYPE=usb_device", b"DEVTYPE=usb_interface")))
        self.assertIsNone(usb.parse_uevent(self.ADD.replace(b"SUBSYSTEM=usb", b"SUBSYSTEM=block")))
        self.assertIsNone(usb.parse_uevent(self.ADD.replace(b"ACTION=add", b"ACTION=bind")))
        self.assertIsNone(usb.parse_uevent(b"libudev\0\xfe\xed" + self.ADD))
        self.assertIsNone(usb.parse_uevent(self.ADD.replace(b"BUSNUM=001", b"BUSNUM=x")))
        self.assertIsNone(usb.parse_uevent(b"\xff\0=\0"))

    def test_listener_delivers_usb_only(self):
        """The listener passes parsed USB events on, nothing else."""
        seen = []
        listener = UeventListener(None, lambda *event: seen.append(event))
        listener._received(self.ADD)
        listener._received(b"add@/x\0ACTION=add\0SUBSYSTEM=net\0")
        self.assertEqual([action for action, _ in seen], ["add"])


def fake_card(tree, pci, vendor, product, card, render=None):
    """A PCI GPU with DRM nodes cardN (226:N) and renderDM (226:M)."""
    device = tree.path("devices", "pci0000:00", pci)
    _write(os.path.join(device, "vendor"), f"0x{vendor}")
    _write(os.path.join(device, "device"), f"0x{product}")
    names = [f"card{card}"] + ([f"renderD{render}"] if render is not None else [])
    for name in names:
        node = os.path.join(device, "drm", name)
        _write(os.path.join(node, "dev"), f"226:{card if name.startswith('card') else render}")
        os.symlink(device, os.path.join(node, "device"))
        os.makedirs(tree.path("class", "drm"), exist_ok=True)
        os.symlink(node, tree.path("class", "drm", name))
    os.makedirs(os.path.join(device, "drm", f"card{card}-HDMI-A-1"))
    os.symlink(os.path.join(device, "drm", f"card{card}-HDMI-A-1"), tree.path("class", "drm", f"card{card}-HDMI-A-1"))


class GpuScanTests(FakeTree):
    """The host's GPUs from /sys/class/drm and the NVIDIA driver's /proc files."""

    def setUp(self):
        super().setUp()
        fake_card(self, "0000:00:02.0", "8086", "3e92", 0, 128)
        fake_card(self, "0000:01:00.0", "10de", "1c82", 1, 129)
        _write(self.path("proc", "gpus", "0000:01:00.0", "information"),
               "Model: \t\t GeForce GTX 1050 Ti\nIRQ:   \t\t 130\nDevice Minor: \t 0\n")
        for name, minor in (("nvidiactl", 255), ("nvidia-uvm", 0)):
            path = self.path("dev", name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.mknod(path, 0o600 | 0o020000, os.makedev(195 if name == "nvidiactl" else 511, minor))
        self.gpus = gpu.scan(self.path("class", "drm"), self.path("proc", "gpus"))

    def test_scan(self):
        """Card id, PCI address and ids of each card, its DRM nodes; /dev/nvidiaN for NVIDIA's."""
        intel, nvidia = self.gpus
        self.assertEqual((intel.id, intel.pci, intel.vendor, intel.product), ("0", "0000:00:02.0", "8086", "3e92"))
        self.assertEqual(intel.nodes, (gpu.Node("/dev/dri/card0", 226, 0), gpu.Node("/dev/dri/renderD128", 226, 128)))
        self.assertEqual((nvidia.id, nvidia.pci, nvidia.vendor), ("1", "0000:01:00.0", "10de"))
        self.assertIn(gpu.Node("/dev/nvidia0", 195, 0), nvidia.nodes)
        self.assertEqual(gpu.scan(self.path("nowhere")), [])

    def test_selection(self):
        """Every key given must agree; no key selects all; a PCI address may leave out its domain."""
        self.assertEqual([g.id for g in self.gpus if gpu.matches({}, g)], ["0", "1"])
        self.assertEqual([g.id for g in self.gpus if gpu.matches({"vendorid": "8086"}, g)], ["0"])
        self.assertEqual([g.id for g in self.gpus if gpu.matches({"pci": "01:00.0"}, g)], ["1"])
        self.assertEqual([g.id for g in self.gpus if gpu.matches({"id": "1", "vendorid": "8086"}, g)], [])
        self.assertEqual([g.id for g in self.gpus if gpu.matches({"productid": "3E92"}, g)], ["0"])

    def test_nodes_for(self):
        """An NVIDIA card brings the driver's shared nodes along; nothing selected is None."""
        dev = self.path("dev")
        intel = gpu.nodes_for({"id": "0"}, self.gpus, dev)
        self.assertEqual([n.path for n in intel], ["/dev/dri/card0", "/dev/dri/renderD128"])
        nvidia = [n.path for n in gpu.nodes_for({"vendorid": "10de"}, self.gpus, dev)]
        self.assertEqual(nvidia, ["/dev/dri/card1", "/dev/dri/renderD129", "/dev/nvidia-uvm", "/dev/nvidia0",
                                  "/dev/nvidiactl"])
        self.assertIsNone(gpu.nodes_for({"pci": "0000:05:00.0"}, self.gpus, dev))


class KeysTests(SynchronousTestCase):
    """Bad usb and gpu keys are refused, naming the key."""

    def refused(self, config):
        with self.assertRaises(ConfigError) as raised:
            device.validate({"d": config})
        return str(raised.exception)

    def test_bad(self):
        self.assertIn("vendorid", self.refused({"type": "usb", "vendorid": "12345"}))
        self.assertIn("Missing vendorid", self.refused({"type": "usb", "productid": "1234"}))
        self.assertIn("pci", self.refused({"type": "gpu", "pci": "1:2"}))
        self.assertIn("id", self.refused({"type": "gpu", "id": "card0"}))
        self.assertIn("colour", self.refused({"type": "gpu", "colour": "red"}))
        device.validate({"g": {"type": "gpu", "vendorid": "10DE", "id": "1", "mode": "0666"}})
