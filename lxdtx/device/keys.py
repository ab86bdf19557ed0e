"""Checking a device's keys against its type's key map."""

from lxdtx.config.schema import ConfigError


def check_keys(kind, name, config, keys, allowed=None):
    """Every key known for `kind` (and allowed for a sub-type), every value valid."""
    for key in sorted(config):
        if key == "type":
            continue
        validator = keys.get(key)
        if validator is None or (allowed is not None and key not in allowed):
            raise ConfigError([(name, f"Invalid device configuration key for {kind}: {key}")])
        value = config[key]
        if value == "":
            continue
        try:
            validator(value)
        except ValueError as e:
            raise ConfigError([(name, f"Invalid value for key {key}: {e}")])
