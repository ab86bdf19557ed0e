"""Device schemas: one per type, the whole-set rules and profile expansion."""

import os

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import device
from lxdtx.config.schema import ConfigError
from lxdtx.device import disk, proxy, unix


class DeviceTests(SynchronousTestCase):
    """`device.validate` accepts well-formed devices and names what is wrong."""

    def refused(self, devices, expanded=False):
        with self.assertRaises(ConfigError) as raised:
            device.validate(devices, expanded=expanded)
        return str(raised.exception)

    def problem(self, devices):
        """The type's own message for the single device in `devices`, checking the device is named."""
        [name] = devices
        prefix = f'Device validation failed for "{name}": '
        message = self.refused(devices)
        self.assertTrue(message.startswith(prefix), message)
        return message[len(prefix):]

    def test_valid_devices(self):
        """One of each type, as the reference documents them."""
        device.validate({
            "root": {"type": "disk", "path": "/", "pool": "default", "size": "10GB"},
            "data": {"type": "disk", "path": "/mnt", "source": "/srv/data", "readonly": "true",
                     "propagation": "rslave", "limits.read": "30MB", "limits.write": "100iops"},
            "vol": {"type": "disk", "path": "/vol", "source": "vol1", "pool": "default"},
            "eth0": {"type": "nic", "nictype": "bridged", "parent": "lxdbr0", "name": "eth0",
                     "hwaddr": "00:16:3e:01:02:03", "mtu": "1500", "limits.max": "100Mbit",
                     "ipv4.address": "10.0.0.5", "security.mac_filtering": "true"},
            "p2p": {"type": "nic", "nictype": "p2p"},
            "mv": {"type": "nic", "nictype": "macvlan", "parent": "eth0", "vlan": "10"},
            "ib": {"type": "infiniband", "nictype": "physical", "parent": "ib0"},
            "tty": {"type": "unix-char", "path": "/dev/ttyS0", "mode": "0660", "uid": "1000"},
            "sda": {"type": "unix-block", "source": "/dev/sda", "major": "8", "minor": "0"},
            "usb": {"type": "usb", "vendorid": "1d6b", "productid": "0002"},
            "gpu": {"type": "gpu", "pci": "0000:01:00.0"},
            "web": {"type": "proxy", "listen": "tcp:0.0.0.0:80", "connect": "tcp:127.0.0.1:8080"},
            "sock": {"type": "proxy", "listen": "unix:@abstract", "connect": "unix:/run/x.sock",
                     "bind": "container"},
            "hide": {"type": "none"},
        }, expanded=True)

    def test_type_errors(self):
        """Missing and unknown types name the device."""
        self.assertEqual(self.refused({"d": {"path": "/x"}}), "Missing device type for device 'd'")
        self.assertEqual(self.refused({"d": {"type": "floppy"}}), "Invalid device type for device 'd'")
        self.assertIn("devices must be a map", self.refused(["d"]))
        self.assertIn("'d'", self.refused({"d": "disk"}))

    def test_unknown_key(self):
        """An unknown key names the type and the key."""
        self.assertEqual(self.refused({"d": {"type": "disk", "path": "/x", "source": "/y", "colour": "red"}}),
                         'Device validation failed for "d": Invalid device configuration key for disk: colour')
        self.assertEqual(self.refused({"d": {"type": "none", "path": "/x"}}),
                         "Invalid device configuration key for none: path")

    def test_key_not_allowed_for_nictype(self):
        """Keys belong to certain nictypes only."""
        self.assertEqual(self.refused({"n": {"type": "nic", "nictype": "p2p", "parent": "br0"}}),
                         'Device validation failed for "n": Invalid device configuration key for nic: parent')

    def test_bad_values_name_device_and_key(self):
        """A bad value names the device and the key."""
        cases = [
            {"type": "nic", "nictype": "bridged", "parent": "br0", "hwaddr": "zz"},
            {"type": "nic", "nictype": "bridged", "parent": "br0", "mtu": "10"},
            {"type": "nic", "nictype": "bridged", "parent": "br0", "limits.max": "100"},
            {"type": "nic", "nictype": "macvlan", "parent": "eth0", "vlan": "5000"},
            {"type": "disk", "path": "/x", "source": "/y", "readonly": "perhaps"},
            {"type": "disk", "path": "/x", "source": "/y", "propagation": "everywhere"},
            {"type": "unix-char", "path": "/dev/x", "mode": "999"},
            {"type": "usb", "vendorid": "xyz"},
            {"type": "gpu", "pci": "not-pci"},
            {"type": "proxy", "listen": "udp:0.0.0.0:53", "connect": "tcp:1.2.3.4:53"},
        ]
        for config in cases:
            message = self.refused({"dev": config})
            self.assertTrue(message.startswith('Device validation failed for "dev": Invalid value for key '),
                            message)
        self.assertEqual(self.refused({"dev": cases[0]}), 'Device validation failed for "dev": '
                         "Invalid value for key hwaddr: Invalid MAC address: zz")

    def test_non_string_value(self):
        """Device values are strings."""
        self.assertIn("must be a string",
                      self.refused({"d": {"type": "disk", "path": "/x", "source": "/y", "readonly": True}}))

    def test_required_properties(self):
        """The properties each type cannot do without; each message names the device."""
        self.assertEqual(self.problem({"d": {"type": "disk", "source": "/y"}}),
                         'Disk entry is missing the required "path" property.')
        self.assertEqual(self.problem({"d": {"type": "disk", "path": "/x"}}),
                         'Disk entry is missing the required "source" property.')
        self.assertEqual(self.problem({"d": {"type": "disk", "path": "/", "source": "/y"}}),
                         'Root disk entry may not have a "source" property set.')
        self.assertEqual(self.problem({"d": {"type": "disk", "path": "/x", "source": "/y", "size": "1GB"}}),
                         "Only the root disk may have a size quota.")
        self.assertEqual(self.problem({"d": {"type": "disk", "path": "/x", "source": "/y", "pool": "p"}}),
                         "Storage volumes cannot be specified as absolute paths.")
        self.assertEqual(self.problem({"n": {"type": "nic"}}), "Missing nic type")
        self.assertEqual(self.problem({"n": {"type": "nic", "nictype": "veth"}}), "Bad nic type: veth")
        self.assertEqual(self.problem({"n": {"type": "nic", "nictype": "bridged"}}),
                         "Missing parent for bridged type nic")
        self.assertEqual(self.problem({"u": {"type": "usb"}}), "Missing vendorid for USB device.")
        self.assertIn('"listen"', self.problem({"p": {"type": "proxy", "connect": "tcp:1.2.3.4:5"}}))
        self.assertIn('"source" or "path"', self.problem({"c": {"type": "unix-char"}}))
        self.assertEqual(self.problem({"i": {"type": "infiniband", "nictype": "bridged", "parent": "x"}}),
                         "Bad nic type: bridged")

    def test_whole_set_rules(self):
        """Expanded devices: one root disk, with a pool; no two disks on one path."""
        root = {"type": "disk", "path": "/", "pool": "default"}
        self.assertEqual(self.refused({"a": root, "b": dict(root)}, expanded=True),
                         "More than one root device specified.")
        self.assertEqual(self.refused({"root": {"type": "disk", "path": "/"}}, expanded=True),
                         'The root disk device must have a "pool" property.')
        self.assertEqual(self.refused({
            "root": root,
            "a": {"type": "disk", "path": "/mnt", "source": "/x"},
            "b": {"type": "disk", "path": "/mnt", "source": "/y"},
        }, expanded=True), "More than one disk device uses the same path: /mnt.")
        # Outside an expanded set those rules do not apply (a profile may carry a partial set).
        device.validate({"a": root, "b": dict(root)})

    def test_root_device(self):
        """The root disk is found among expanded devices."""
        devices = {"eth0": {"type": "nic"}, "rootfs": {"type": "disk", "path": "/", "pool": "p"}}
        self.assertEqual(disk.root_device(devices)[0], "rootfs")
        self.assertEqual(disk.root_device({}), (None, None))
        self.assertTrue(disk.is_root(devices["rootfs"]))

    def test_expand(self):
        """Profile devices in order, overlaid by local ones; `none` hides an inherited device."""
        profiles = [
            {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br0"},
             "root": {"type": "disk", "path": "/", "pool": "a"}},
            {"root": {"type": "disk", "path": "/", "pool": "b"}},
        ]
        local = {"eth0": {"type": "none"}, "data": {"type": "disk", "path": "/d", "source": "/s"}}
        self.assertEqual(device.expand(profiles, local), {
            "root": {"type": "disk", "path": "/", "pool": "b"},
            "data": {"type": "disk", "path": "/d", "source": "/s"},
        })


class ProxyAddressTests(SynchronousTestCase):
    """Proxy listen/connect addresses at this API level: tcp and unix."""

    @given(st.ip_addresses(v=4), st.integers(min_value=1, max_value=65535))
    def test_tcp_v4(self, address, port):
        """Every IPv4 address and port is a valid tcp address."""
        self.assertEqual(proxy.parse_address(f"tcp:{address}:{port}"), ("tcp", f"{address}:{port}"))

    @given(st.ip_addresses(v=6), st.integers(min_value=1, max_value=65535))
    def test_tcp_v6(self, address, port):
        """Bracketed IPv6 addresses are valid."""
        proxy.parse_address(f"tcp:[{address}]:{port}")

    def test_unix(self):
        """Paths and abstract names."""
        self.assertEqual(proxy.parse_address("unix:/run/a.sock"), ("unix", "/run/a.sock"))
        self.assertEqual(proxy.parse_address("unix:@name"), ("unix", "@name"))

    def test_refused(self):
        """udp, missing ports and bare addresses are refused."""
        for bad in ("udp:1.2.3.4:53", "tcp:1.2.3.4", "tcp:1.2.3.4:0", "1.2.3.4:80", "unix:", "tcp:[::1]"):
            self.assertRaises(ValueError, proxy.parse_address, bad)


class UnixDeviceTests(SynchronousTestCase):
    """`unix-char` / `unix-block`: the rename rules, device numbers and whole-set paths."""

    def test_rename_rules(self):
        """`source` is the host's node and `path` the one inside; either defaults to the other."""
        both = {"type": "unix-char", "source": "/dev/ttyS0", "path": "/dev/serial"}
        self.assertEqual((unix.source_path(both), unix.container_path(both)), ("/dev/ttyS0", "/dev/serial"))
        only_source = {"type": "unix-char", "source": "/dev/ttyS0"}
        self.assertEqual(unix.container_path(only_source), "/dev/ttyS0")
        only_path = {"type": "unix-char", "path": "dev/kvm"}
        self.assertEqual((unix.source_path(only_path), unix.container_path(only_path)), ("dev/kvm", "/dev/kvm"))

    def test_node_numbers(self):
        """Numbers from the host node unless both are given; owner and mode defaults as LXD's."""
        null = os.stat("/dev/null")
        node = unix.node_of({"type": "unix-char", "source": "/dev/null"}, null)
        self.assertEqual(node, unix.Node("c", 1, 3, 0, 0, 0o660))
        self.assertEqual(node.cgroup_rule(), "c 1:3 rwm")
        explicit = unix.node_of({"type": "unix-block", "path": "/dev/sdz", "major": "8", "minor": "16",
                                 "uid": "5", "gid": "6", "mode": "0600"})
        self.assertEqual(explicit, unix.Node("b", 8, 16, 5, 6, 0o600))
        with self.assertRaises(unix.MissingSource):
            unix.node_of({"type": "unix-block", "source": "/dev/null"}, null)  # a char device
        with self.assertRaises(unix.MissingSource):
            unix.node_of({"type": "unix-char", "source": "/dev/none"}, None)

    def test_paths_in_the_set(self):
        """No unix device at another device's path inside, whether by `path` or by `source`."""
        root = {"type": "disk", "path": "/", "pool": "default"}
        with self.assertRaises(ConfigError) as raised:
            device.validate({"root": root, "a": {"type": "unix-char", "source": "/dev/x"},
                             "b": {"type": "unix-char", "source": "/dev/y", "path": "/dev/x"}}, expanded=True)
        self.assertEqual(str(raised.exception), "More than one device uses the same path: /dev/x.")
        with self.assertRaises(ConfigError):
            device.validate({"root": root, "a": {"type": "unix-char", "source": "/dev/x", "path": "/mnt"},
                             "b": {"type": "disk", "source": "/srv", "path": "/mnt/"}}, expanded=True)
        device.validate({"root": root, "a": {"type": "unix-char", "source": "/dev/x"},
                         "b": {"type": "unix-char", "source": "/dev/x", "path": "/dev/x2"}}, expanded=True)

    def test_bad_keys(self):
        for config in ({"source": "/dev/x", "major": "1"}, {"path": "/dev/../etc/x"},
                       {"source": "/dev/x", "minor": "-1", "major": "1"}, {"source": "/dev/x", "uid": "x"}):
            with self.assertRaises(ConfigError):
                device.validate({"u": {"type": "unix-char", **config}})
