"""`gpu` devices: validation of their keys."""

import re

from lxdtx.config.types import is_any, is_int64, is_octal_mode
from lxdtx.device.keys import check_keys


def _is_pci(value):
    if not re.fullmatch(r"([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-9a-fA-F]", value):
        raise ValueError(f"Invalid PCI address: {value}")


KEYS = {
    "vendorid": is_any,
    "productid": is_any,
    "id": is_any,
    "pci": _is_pci,
    "uid": is_int64,
    "gid": is_int64,
    "mode": is_octal_mode,
}


def validate(name, config):
    check_keys("gpu", name, config, KEYS)
