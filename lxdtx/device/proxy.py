"""`proxy` devices: validation of their keys and addresses."""

import re

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import one_of
from lxdtx.device.keys import check_keys


def parse_address(value):
    """(type, address) for `tcp:host:port` or `unix:path` / `unix:@abstract`."""
    kind, sep, rest = value.partition(":")
    if not sep or kind not in ("tcp", "unix") or not rest:
        raise ValueError(f"Invalid proxy address: {value}")
    if kind == "tcp":
        m = re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+):(\d+)", rest)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ValueError(f"Invalid TCP proxy address: {value}")
    return kind, rest


KEYS = {
    "listen": parse_address,
    "connect": parse_address,
    "bind": one_of("host", "container"),
}


def validate(name, config):
    check_keys("proxy", name, config, KEYS)
    for key in ("listen", "connect"):
        if not config.get(key):
            raise ConfigError([(name, f"Proxy device entry is missing the required \"{key}\" property.")])
