# -*- test-case-name: tests.unit.test_devices -*-
"""`disk` devices: the root disk, host bind mounts and custom volumes."""

import re

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_any, is_bool, is_size, one_of
from lxdtx.device.keys import check_keys

PROPAGATION = ("private", "shared", "slave", "unbindable", "rprivate", "rshared", "rslave", "runbindable")


def _is_io_limit(value):
    if re.fullmatch(r"\d+iops", value):
        return
    is_size(value)


KEYS = {
    "path": is_any,
    "source": is_any,
    "pool": is_any,
    "size": is_size,
    "optional": is_bool,
    "readonly": is_bool,
    "recursive": is_bool,
    "limits.read": _is_io_limit,
    "limits.write": _is_io_limit,
    "limits.max": _is_io_limit,
    "propagation": one_of(*PROPAGATION),
}


def is_root(config):
    return config.get("type") == "disk" and config.get("path") == "/" and not config.get("source")


def validate(name, config):
    check_keys("disk", name, config, KEYS)
    path = config.get("path", "")
    if not path:
        raise ConfigError([(name, 'Disk entry is missing the required "path" property.')])
    if path == "/":
        if config.get("source"):
            raise ConfigError([(name, 'Root disk entry may not have a "source" property set.')])
        return
    if config.get("size"):
        raise ConfigError([(name, "Only the root disk may have a size quota.")])
    if not config.get("source"):
        raise ConfigError([(name, 'Disk entry is missing the required "source" property.')])
    if config.get("pool") and config["source"].startswith("/"):
        raise ConfigError([(name, 'Storage volumes cannot be specified as absolute paths.')])


def validate_set(devices):
    """Whole-container rules: one root disk with a pool, no two disks on one path."""
    roots = [n for n, c in devices.items() if c.get("type") == "disk" and c.get("path") == "/"]
    if len(roots) > 1:
        raise ConfigError([(roots[1], "More than one root device specified.")])
    if roots and not devices[roots[0]].get("pool"):
        raise ConfigError([(roots[0], "The root disk device must have a \"pool\" property.")])
    seen = {}
    for name in sorted(devices):
        config = devices[name]
        if config.get("type") != "disk":
            continue
        path = config.get("path")
        if path in seen:
            raise ConfigError([(name, f"More than one disk device uses the same path: {path}.")])
        seen[path] = name


def root_device(devices):
    """(name, config) of the root disk among expanded devices, or (None, None)."""
    for name in sorted(devices):
        if devices[name].get("type") == "disk" and devices[name].get("path") == "/":
            return name, devices[name]
    return None, None


def _escape(path):
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")


def mount_entry(source, path, config, is_dir):
    """The `lxc.mount.entry` line binding `source` at `path` inside the container."""
    from lxdtx.config.types import is_true

    options = ["rbind" if is_true(config.get("recursive", "")) else "bind",
               "create=dir" if is_dir else "create=file"]
    if is_true(config.get("readonly", "")):
        options.append("ro")
    if is_true(config.get("optional", "")):
        options.append("optional")
    if config.get("propagation"):
        options.append(config["propagation"])
    return ("lxc.mount.entry", f"{_escape(source)} {_escape(path.lstrip('/'))} none {','.join(options)} 0 0")
