"""`usb` devices: validation of their keys."""

import re

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_bool, is_int64, is_octal_mode
from lxdtx.device.keys import check_keys


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
