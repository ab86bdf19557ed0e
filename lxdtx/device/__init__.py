# -*- test-case-name: tests.unit.test_devices -*-
"""Devices: one module per type, each with its key schema and checks; `validate` dispatches."""

from lxdtx.config.schema import ConfigError
from lxdtx.device import disk, gpu, infiniband, nic, proxy, unix, usb

TYPES = {
    "disk": disk,
    "gpu": gpu,
    "infiniband": infiniband,
    "nic": nic,
    "none": None,
    "proxy": proxy,
    "unix-block": unix,
    "unix-char": unix,
    "usb": usb,
}


def validate(devices, *, expanded=False):
    """Raise ConfigError unless every device is well formed.

    `expanded`: the devices are a container's full set (profile devices applied),
    so whole-set rules apply (exactly one root disk, unique disk paths).
    """
    if not isinstance(devices, dict):
        raise ConfigError([("devices", "devices must be a map")])
    for name in sorted(devices):
        config = devices[name]
        if not isinstance(config, dict):
            raise ConfigError([(name, f"Invalid device configuration for device '{name}'")])
        kind = config.get("type")
        if not kind:
            raise ConfigError([(name, f"Missing device type for device '{name}'")])
        if kind not in TYPES:
            raise ConfigError([(name, f"Invalid device type for device '{name}'")])
        for key, value in config.items():
            if not isinstance(value, str):
                raise ConfigError([(name, f"Invalid value type for key {key} of device '{name}': must be a string")])
        module = TYPES[kind]
        if module is None:
            if set(config) != {"type"}:
                extra = sorted(set(config) - {"type"})[0]
                raise ConfigError([(name, f"Invalid device configuration key for none: {extra}")])
            continue
        try:
            module.validate(name, config)
        except ConfigError as e:
            # The type's own messages describe the problem; say which device has it.
            raise ConfigError([(name, f'Device validation failed for "{name}": {e.message}')]) from None
    if expanded:
        disk.validate_set(devices)
        unix.validate_set(devices)


def expand(profile_devices, local_devices):
    """Profile devices in order, overlaid by the container's own; `none` entries hide."""
    result = {}
    for devices in profile_devices:
        result.update(devices)
    result.update(local_devices)
    return {k: v for k, v in result.items() if v.get("type") != "none"}
