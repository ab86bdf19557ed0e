# -*- test-case-name: tests.unit.test_devices -*-
"""`unix-char` and `unix-block` devices: their keys, paths and device numbers.

`source` is the node on the host, `path` the node inside the container; either
defaults to the other (`unix_device_rename`). `major`/`minor` override the host
node's numbers, and with both given no host node is needed. With `required`
false a missing host node is no error: the node appears in the container when
it appears on the host (`unix_device_hotplug`, lxdtx.instance.unixdevices).
"""

import os
import stat
from typing import NamedTuple

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_bool, is_int64, is_octal_mode, is_true, is_uint32
from lxdtx.device.keys import check_keys


def _is_path(value):
    if "\0" in value or ".." in value.split("/"):
        raise ValueError(f"Invalid path: {value}")


def _is_number(value):
    is_int64(value)
    if not 0 <= int(value) < 1 << 20:
        raise ValueError(f"Invalid device number: {value}")


KEYS = {
    "source": _is_path,
    "path": _is_path,
    "major": _is_number,
    "minor": _is_number,
    "uid": is_uint32,
    "gid": is_uint32,
    "mode": is_octal_mode,
    "required": is_bool,
}

KINDS = {"unix-char": "c", "unix-block": "b"}


def validate(name, config):
    check_keys(config["type"], name, config, KEYS)
    if not config.get("source") and not config.get("path"):
        raise ConfigError([(name, 'Unix device entry is missing the required "source" or "path" property.')])
    if bool(config.get("major")) != bool(config.get("minor")):
        raise ConfigError([(name, 'Unix device entry needs both "major" and "minor", or neither.')])


def source_path(config):
    """The node on the host: `source`, else `path`."""
    return config.get("source") or config["path"]


def container_path(config):
    """The node inside the container (absolute): `path`, else `source`."""
    return "/" + (config.get("path") or config["source"]).lstrip("/")


def is_required(config):
    return is_true(config.get("required") or "true")


def in_container_paths(devices):
    """{path inside: [device names]} of the unix and (non-root) disk devices."""
    paths = {}
    for name in sorted(devices):
        config = devices[name]
        kind = config.get("type")
        if kind in KINDS and (config.get("path") or config.get("source")):
            path = container_path(config)
        elif kind == "disk" and config.get("path") and config["path"] != "/":
            path = "/" + config["path"].lstrip("/")
        else:
            continue
        paths.setdefault(os.path.normpath(path), []).append(name)
    return paths


def validate_set(devices):
    """No unix device shares its path inside the container with another device."""
    for path, names in sorted(in_container_paths(devices).items()):
        if len(names) > 1 and any(devices[n].get("type") in KINDS for n in names):
            raise ConfigError([(names[1], f"More than one device uses the same path: {path}.")])


class Node(NamedTuple):
    """What to make for one device: `kind` "c" or "b", its numbers, owner and mode."""

    kind: str
    major: int
    minor: int
    uid: int
    gid: int
    mode: int

    def cgroup_rule(self):
        return f"{self.kind} {self.major}:{self.minor} rwm"


class MissingSource(Exception):
    """The host node is not there (or is not a node of the device's type)."""


def node_of(config, stat_result=None):
    """The Node of a device; `stat_result` is the host node's (os.stat), needed without major/minor.

    Raises MissingSource when the numbers must come from a host node that is missing
    or of the other type.
    """
    kind = KINDS[config["type"]]
    if config.get("major") and config.get("minor"):
        major, minor = int(config["major"]), int(config["minor"])
    else:
        wanted = stat.S_ISCHR if kind == "c" else stat.S_ISBLK
        if stat_result is None or not wanted(stat_result.st_mode):
            raise MissingSource(source_path(config))
        major, minor = os.major(stat_result.st_rdev), os.minor(stat_result.st_rdev)
    mode = int(config["mode"], 8) if config.get("mode") else 0o660
    return Node(kind, major, minor, int(config.get("uid") or 0), int(config.get("gid") or 0), mode & 0o7777)
