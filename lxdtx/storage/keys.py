# -*- test-case-name: tests.unit.test_storage_drivers,tests.integration.test_storage -*-
"""Validation of pool and volume config against the keys each driver accepts."""

from lxdtx.config.schema import ConfigError
from lxdtx.storage.driver import COMMON_KEYS, COMMON_VOLUME_KEYS


def _check(config, accepted, known_elsewhere, driver_name, unknown, wrong_driver):
    if not isinstance(config, dict):
        raise ConfigError([("config", "config must be a map of strings")])
    problems = []
    for key in sorted(config):
        value = config[key]
        if not isinstance(value, str):
            problems.append((key, f"Invalid value for \"{key}\": must be a string"))
            continue
        if key.startswith("user."):
            continue
        validate = accepted.get(key)
        if validate is None:
            if key in known_elsewhere:
                problems.append((key, wrong_driver.format(key=key, driver=driver_name.upper())))
            else:
                problems.append((key, unknown.format(key=key)))
            continue
        if value == "":
            continue
        try:
            validate(value)
        except ValueError as e:
            problems.append((key, f"Invalid value for \"{key}\": {e}"))
    if problems:
        raise ConfigError(problems)


def check_pool_config(driver_cls, config, all_drivers):
    """400 naming the first bad key of a pool config for `driver_cls`."""
    elsewhere = set()
    for cls in all_drivers:
        elsewhere.update(cls.keys)
    _check(config, {**COMMON_KEYS, **driver_cls.keys}, elsewhere, driver_cls.info.name,
           "Invalid storage pool configuration key: {key}",
           "the key {key} cannot be used with {driver} storage pools")


def check_volume_config(driver_cls, config, all_drivers):
    """400 naming the first bad key of a volume config for a pool of `driver_cls`."""
    elsewhere = set()
    for cls in all_drivers:
        elsewhere.update(cls.volume_keys)
    _check(config, {**COMMON_VOLUME_KEYS, **driver_cls.volume_keys}, elsewhere, driver_cls.info.name,
           "Invalid storage volume configuration key: {key}",
           "the key {key} cannot be used with {driver} storage volumes")


def changed_keys(old, new):
    """Keys whose value differs between two configs ("" and absent are the same)."""
    return {k for k in set(old) | set(new) if (old.get(k) or "") != (new.get(k) or "")}
