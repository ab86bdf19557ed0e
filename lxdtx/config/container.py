# -*- test-case-name: tests.unit.test_config -*-
"""Container (and profile) config keys, their validators and cross-key rules."""

import platform
import re

from lxdtx.config.schema import ConfigError, Key, Schema
from lxdtx.config.types import (
    is_bool,
    is_int64,
    is_percent_or_size,
    is_priority,
    is_true,
    is_uint32,
    one_of,
)

# lxc.* keys raw.lxc may not set: the daemon owns logging, ephemerality, limits and networking.
_RAW_LXC_FORBIDDEN = re.compile(
    r"lxc\.(logfile|log\.file|syslog|log\.syslog|ephemeral|prlimit\..*|net\..*|network\..*)"
)


def _is_cpu_allowance(value):
    if value.endswith("%"):
        number = value[:-1]
        if not number.isdigit():
            raise ValueError(f"Invalid CPU allowance: {value}")
        return
    m = re.fullmatch(r"(\d+)ms/(\d+)ms", value)
    if not m or int(m.group(2)) == 0:
        raise ValueError(f"Invalid CPU allowance: {value}")


def _is_cpu_set(value):
    if value.isdigit():
        if int(value) == 0:
            raise ValueError("limits.cpu must be at least 1")
        return
    for part in value.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise ValueError(f"Invalid CPU set: {value}")


def _is_kernel_limit(value):
    for part in value.split(":"):
        if part != "unlimited":
            is_int64(part)
    if value.count(":") > 1:
        raise ValueError(f"Invalid kernel limit: {value}")


def _is_blacklist_compat(value):
    if is_true(value) and platform.machine() not in ("x86_64", "aarch64", "ppc64", "ppc64le"):
        raise ValueError("security.syscalls.blacklist_compat isn't supported on this architecture")
    is_bool(value)


def _is_raw_lxc(value):
    for number, line in enumerate(value.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"Invalid raw.lxc line {number}: {line}")
        if _RAW_LXC_FORBIDDEN.fullmatch(key):
            raise ValueError(f"Setting {key} is forbidden in raw.lxc")


def _is_raw_idmap(value):
    for line in value.splitlines():
        line = line.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3 or fields[0] not in ("uid", "gid", "both"):
            raise ValueError(f"Invalid raw.idmap line: {line}")
        for field in fields[1:]:
            for bound in field.split("-"):
                is_uint32(bound)


KEYS = {
    "boot.autostart": Key(is_bool, live=True),
    "boot.autostart.delay": Key(is_int64, "0"),
    "boot.autostart.priority": Key(is_int64, "0"),
    "boot.host_shutdown_timeout": Key(is_int64, "30"),
    "boot.stop.priority": Key(is_int64, "0"),
    "limits.cpu": Key(_is_cpu_set, apply="cpu"),
    "limits.cpu.allowance": Key(_is_cpu_allowance, "100%", apply="cpu"),
    "limits.cpu.priority": Key(is_priority, "10", apply="cpu"),
    "limits.disk.priority": Key(is_priority, "5", apply="disk"),
    "limits.memory": Key(is_percent_or_size, apply="memory"),
    "limits.memory.enforce": Key(one_of("soft", "hard"), "hard", apply="memory"),
    "limits.memory.swap": Key(is_bool, "true", apply="memory"),
    "limits.memory.swap.priority": Key(is_priority, "10", apply="memory"),
    "limits.network.priority": Key(is_priority, "0", apply="network"),
    "limits.processes": Key(is_int64, apply="processes"),
    "linux.kernel_modules": Key(),
    "migration.incremental.memory": Key(is_bool, "false"),
    "migration.incremental.memory.goal": Key(is_uint32, "70"),
    "migration.incremental.memory.iterations": Key(is_uint32, "10"),
    "nvidia.runtime": Key(is_bool, "false", live=False),
    "raw.apparmor": Key(),
    "raw.idmap": Key(_is_raw_idmap, live=False),
    "raw.lxc": Key(_is_raw_lxc, live=False),
    "raw.seccomp": Key(live=False),
    "security.devlxd": Key(is_bool, "true", live=False),
    "security.devlxd.images": Key(is_bool, "false", live=False),
    "security.idmap.base": Key(is_uint32, live=False),
    "security.idmap.isolated": Key(is_bool, "false", live=False),
    "security.idmap.size": Key(is_uint32, live=False),
    "security.nesting": Key(is_bool, "false"),
    "security.privileged": Key(is_bool, "false", live=False),
    "security.syscalls.blacklist": Key(live=False),
    "security.syscalls.blacklist_compat": Key(_is_blacklist_compat, "false", live=False),
    "security.syscalls.blacklist_default": Key(is_bool, "true", live=False),
    "security.syscalls.whitelist": Key(live=False),
}

PATTERNS = [
    (r"limits\.kernel\.[a-z_]+", Key(_is_kernel_limit, live=False)),
    (r"user\..+", Key()),
    (r"environment\..+", Key()),
    (r"image\..+", Key()),
    (r"volatile\.(apply_quota|apply_template|base_image|idmap\.base|idmap\.next|"
     r"last_state\.idmap|last_state\.power|idmap\.current|idmap\.unshifted)", Key()),
    (r"volatile\.[^.]+\.(hwaddr|name|host_name)", Key()),
]

SCHEMA = Schema(KEYS, PATTERNS, unknown="Unknown configuration key: {key}")


def validate(config, *, profile=False):
    """Raise ConfigError for unknown keys, bad values or forbidden combinations."""
    problems = SCHEMA.problems(config)
    if profile:
        for key in sorted(config):
            if key.startswith("volatile."):
                problems.append((key, "Volatile keys can only be set on containers."))
            elif key.startswith("image."):
                problems.append((key, "Image keys can only be set on containers."))
    if problems:
        raise ConfigError(problems)
    check_combinations(config)


def check_combinations(config):
    """Cross-key rules of the expanded config."""
    blacklists = [k for k in ("security.syscalls.blacklist",) if config.get(k)]
    blacklists += [k for k in ("security.syscalls.blacklist_compat",) if is_true(config.get(k, ""))]
    if config.get("raw.seccomp") and (
        blacklists or config.get("security.syscalls.whitelist")
        or is_true(config.get("security.syscalls.blacklist_default", ""))
    ):
        raise ConfigError([("raw.seccomp", "raw.seccomp is mutually exclusive with security.syscalls*")])
    if config.get("security.syscalls.whitelist") and (
        blacklists or is_true(config.get("security.syscalls.blacklist_default", ""))
    ):
        raise ConfigError([(
            "security.syscalls.whitelist",
            "security.syscalls.whitelist is mutually exclusive with security.syscalls.blacklist*",
        )])


def changed_not_live(old, new):
    """Changed keys that a running container cannot take without a restart."""
    return sorted(
        k for k in set(old) | set(new)
        if old.get(k) != new.get(k) and (SCHEMA.lookup(k) is None or not SCHEMA.lookup(k).live)
        and not k.startswith("volatile.")
    )
