# -*- test-case-name: tests.unit.test_passthrough_devices -*-
"""`usb` devices: their keys, the host's USB devices from sysfs, and kernel uevents.

A `usb` device passes every host USB device whose vendor (and product, when
given) matches: each becomes the node `/dev/bus/usb/BUS/DEV` in the container,
with the device's uid/gid/mode (lxdtx.instance.unixdevices). USB devices plug
and unplug while the container runs (`usb_devices`), announced by the kernel's
uevents; `required` (default false) makes a start fail with no match.
"""

import os
import re
from typing import NamedTuple

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_bool, is_int64, is_octal_mode, is_true
from lxdtx.device.keys import check_keys
from lxdtx.fsutil import read_text

SYS_USB = "/sys/bus/usb/devices"


def _is_usb_id(value):
    if not re.fullmatch(r"[0-9a-fA-F]{4}", value):
        raise ValueError(f"Invalid USB id: {value}")


KEYS = {
    "vendorid": _is_usb_id,
    "productid": _is_usb_id,
    "uid": is_int64,
    "gid": is_int64,
    "mode": is_octal_mode,
    "required": is_bool,
}


def validate(name, config):
    check_keys("usb", name, config, KEYS)
    if not config.get("vendorid"):
        raise ConfigError([(name, "Missing vendorid for USB device.")])


def is_required(config):
    return is_true(config.get("required") or "false")


class UsbDevice(NamedTuple):
    """One host USB device: ids (4 lower-case hex digits), bus and device numbers, node numbers."""

    vendor: str
    product: str
    bus: int
    dev: int
    major: int
    minor: int

    @property
    def path(self):
        """Its node, in the container as on the host."""
        return f"/dev/bus/usb/{self.bus:03d}/{self.dev:03d}"


def scan(root=SYS_USB):
    """The USB devices sysfs lists (interfaces, which have no ids of their own, left out)."""
    found = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return found
    for entry in names:
        values = {key: (read_text(os.path.join(root, entry, key)) or "").strip()
                  for key in ("idVendor", "idProduct", "busnum", "devnum", "dev")}
        major, _, minor = values["dev"].partition(":")
        try:
            found.append(UsbDevice(values["idVendor"].lower(), values["idProduct"].lower(),
                                   int(values["busnum"]), int(values["devnum"]), int(major), int(minor)))
        except ValueError:
            continue  # an interface, or a device going away while we read it
    return found


def parse_uevent(data):
    """(action, UsbDevice) of a kernel uevent about a USB device, else None.

    A kernel uevent is `ACTION@DEVPATH` then NUL-separated KEY=VALUE pairs;
    udev's rebroadcasts (`libudev` header) are not for us.
    """
    if data.startswith(b"libudev"):
        return None
    fields = {}
    for part in data.split(b"\0")[1:]:
        key, sep, value = part.partition(b"=")
        if sep:
            fields[key.decode("ascii", "replace")] = value.decode("ascii", "replace")
    if fields.get("SUBSYSTEM") != "usb" or fields.get("DEVTYPE") != "usb_device":
        return None
    action = fields.get("ACTION")
    if action not in ("add", "remove"):
        return None
    ids = fields.get("PRODUCT", "").split("/")
    try:
        device = UsbDevice(ids[0].lower().zfill(4), ids[1].lower().zfill(4), int(fields["BUSNUM"]),
                           int(fields["DEVNUM"]), int(fields["MAJOR"]), int(fields["MINOR"]))
    except (IndexError, KeyError, ValueError):
        return None
    return action, device


def matches(config, device):
    """Whether host USB `device` is one the `usb` device `config` selects."""
    if (config.get("vendorid") or "").lower() != device.vendor:
        return False
    product = (config.get("productid") or "").lower()
    return not product or product == device.product
