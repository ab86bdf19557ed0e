"""`unix-char` and `unix-block` devices: validation of their keys."""

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_any, is_bool, is_int64, is_octal_mode
from lxdtx.device.keys import check_keys

KEYS = {
    "source": is_any,
    "path": is_any,
    "major": is_int64,
    "minor": is_int64,
    "uid": is_int64,
    "gid": is_int64,
    "mode": is_octal_mode,
    "required": is_bool,
}


def validate(name, config):
    check_keys(config["type"], name, config, KEYS)
    if not config.get("source") and not config.get("path"):
        raise ConfigError([(name, 'Unix device entry is missing the required "source" or "path" property.')])
