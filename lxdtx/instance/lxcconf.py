# -*- test-case-name: tests.unit.test_lxcconf -*-
"""A container's complete liblxc configuration, rendered from its expanded config.

The text is complete in itself, as LXD writes it: no `lxc.include` of the
distribution's `common.conf`, whose snippets (lxcfs hooks in
`common.conf.d/`) are not ours to run and made every stop half a second
slower. It sets, in this order: identity and rootfs, mounts, device access,
AppArmor, logging and console, capabilities, nesting, id map, seccomp,
cgroup limits, prlimits, environment, the NVIDIA runtime hook, `raw.lxc`, and
last the caller's device lines. List keys (`lxc.cap.drop`, `lxc.mount.auto`)
are first reset with an empty value, so `raw.lxc` and device lines extend a
known state.

No value may contain a line break: a value from the config with one would
inject configuration lines, so it is refused with an error naming the key.
"""

import os
import re
import shutil
import tempfile
from typing import NamedTuple

from lxdtx.config import container
from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_true
from lxdtx.instance import cgroups, seccomp

# mknod of anything; use of null, zero, full, random, urandom, tty, console,
# ptmx, the pty slaves, fuse and tun (the devices every container has).
DEVICE_RULES = (
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:229 rwm", "c 10:200 rwm",
)
LXC_HOOK_DIR = "/usr/share/lxc/hooks"
LOG_FILE = "lxc.log"
CONSOLE_LOG_FILE = "console.log"

# Capabilities LXD drops from privileged containers (without AppArmor stacking).
PRIVILEGED_CAP_DROP = "sys_time sys_module sys_rawio mac_admin mac_override"

# Resource names liblxc accepts after `lxc.prlimit.` (RLIMIT_<NAME>, lower case).
PRLIMITS = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
            "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")

# Host paths bound into every container when they exist, as LXD does.
_BIND_MOUNTS = ("/dev/fuse", "/dev/net/tun", "/proc/sys/fs/binfmt_misc", "/sys/firmware/efi/efivars",
                "/sys/fs/pstore", "/sys/kernel/debug", "/sys/kernel/security")

_KEY = re.compile(r"lxc\.[A-Za-z0-9_.\-]+")
_ENV_NAME = re.compile(r"[^=\s]+")


class Rendered(NamedTuple):
    """The config text and the seccomp policy the caller writes to `seccomp_path` (None: none)."""

    text: str
    seccomp: str | None
    seccomp_path: str | None


def _clean(key, value):
    """`value` as a config value, refusing line breaks (named by config key `key`)."""
    value = str(value)
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError([(key, f"Invalid value for '{key}': line breaks are not allowed")])
    return value


class _Lines:
    """Config lines being built."""

    def __init__(self):
        self.lines = []

    def comment(self, text):
        """A blank line and a comment heading the next group of lines."""
        self.lines.append(f"\n# {text}")

    def set(self, key, value, origin=None):
        """`key = value`; a line break in the value is an error naming `origin` (default: key)."""
        self.lines.append(f"{key} = {_clean(origin or key, value)}".rstrip())

    def text(self):
        """The config text."""
        return "\n".join(self.lines).lstrip("\n") + "\n"


def kernel_limits(config):
    """[(`lxc.prlimit.<name>`, value)] for the `limits.kernel.<name>` keys."""
    out = []
    for key in sorted(config):
        if not key.startswith("limits.kernel.") or not config[key]:
            continue
        name = key[len("limits.kernel."):]
        if name not in PRLIMITS:
            raise ConfigError([(key, f"Invalid key '{key}': unknown resource limit '{name}'")])
        out.append((f"lxc.prlimit.{name}", _clean(key, config[key])))
    return out


def _environment(config):
    out = []
    for key in sorted(config):
        if not key.startswith("environment."):
            continue
        name = key[len("environment."):]
        if not _ENV_NAME.fullmatch(name):
            raise ConfigError([(key, f"Invalid environment variable name: {name}")])
        out.append(("lxc.environment", f"{name}={_clean(key, config[key])}"))
    return out


def _raw_lxc_lines(value):
    rule = container.SCHEMA.lookup("raw.lxc")
    try:
        rule.validate(value)
    except ValueError as e:
        raise ConfigError([("raw.lxc", str(e))])
    return [line.rstrip() for line in value.splitlines() if line.strip()]


def nvidia_runtime_missing(hook_dir=LXC_HOOK_DIR):
    """Why `nvidia.runtime` cannot work on this host (LXD's messages), or None."""
    if not os.path.exists(os.path.join(hook_dir, "nvidia")):
        return "The NVIDIA LXC hook couldn't be found"
    if shutil.which("nvidia-container-cli") is None:
        return "The NVIDIA container tools couldn't be found"
    return None


def render(name, *, rootfs, log_dir, config, idmap, device_lines, layout, apparmor,
           host_cpus, host_memory, nesting=None, seccomp_path=None, architecture=None,
           log_level="warn", hook_dir=LXC_HOOK_DIR,
           host_interfaces=None, checkpointable=False, idmapped_rootfs=False):
    """The liblxc config of container `name` (a Rendered).

    `config`: expanded config; `idmap`: IdMap or None (privileged);
    `device_lines`: [(key, value)] appended last; `layout`: cgroups.Layout;
    `apparmor`: False (unconfined), True (liblxc's generated profile) or a
    profile name; `nesting`: overrides `security.nesting` when not None;
    `seccomp_path`: where the caller writes `Rendered.seccomp` (required when
    the config calls for a policy); `architecture`: the container's (kernel
    name, default the host's); `checkpointable`: a container CRIU can dump and
    liblxc restore (no console, and no AppArmor key where AppArmor is off);
    `idmapped_rootfs`: the rootfs is unshifted on disk and mounted idmapped with
    `idmap` (see idmapped.py). Raises
    ConfigError naming a key that cannot be rendered.
    """
    architecture = architecture or os.uname().machine
    privileged = idmap is None
    if nesting is None:
        nesting = is_true(config.get("security.nesting") or "")
    out = _Lines()
    out.lines.append(f"# liblxc configuration of container {_clean('name', name)}, written by lxdtx.")

    out.comment("Identity and root file system")
    out.set("lxc.uts.name", name)
    out.set("lxc.arch", architecture)
    out.set("lxc.rootfs.path", f"dir:{_clean('rootfs', rootfs)}")
    if idmapped_rootfs and not privileged:
        out.set("lxc.rootfs.options", "idmap=container")
    out.set("lxc.autodev", "1")
    out.set("lxc.tty.max", "0")
    out.set("lxc.pty.max", "1024")

    out.comment("Mounts")
    out.set("lxc.mount.auto", "")
    out.set("lxc.mount.auto", "proc:mixed sys:mixed cgroup:mixed" if privileged else "proc:rw sys:rw cgroup:mixed")
    # A fresh mqueue (LXD bound the host's into unprivileged containers for old
    # kernels; the container owns its ipc namespace, so mounting works for both).
    out.set("lxc.mount.entry", "mqueue dev/mqueue mqueue rw,relatime,create=dir,optional 0 0")
    for source in _BIND_MOUNTS:
        if not os.path.exists(source):
            continue
        if os.path.isdir(source):
            out.set("lxc.mount.entry", f"{source} {source.lstrip('/')} none rbind,create=dir,optional 0 0")
        else:
            out.set("lxc.mount.entry", f"{source} {source.lstrip('/')} none bind,create=file,optional 0 0")
    if layout.has("devices"):
        out.comment("Device access: every node may be created, only these opened")
        prefix = "lxc.cgroup2" if layout.version("devices") == cgroups.V2 else "lxc.cgroup"
        out.set(f"{prefix}.devices.deny", "a")
        for rule in DEVICE_RULES:
            out.set(f"{prefix}.devices.allow", rule)
    if nesting:
        # Uncovered proc and sys, so a nested container manager may mount its own.
        out.set("lxc.mount.entry", "proc dev/.lxc/proc proc create=dir,optional 0 0")
        out.set("lxc.mount.entry", "sys dev/.lxc/sys sysfs create=dir,optional 0 0")

    out.comment("AppArmor")
    if (apparmor is False or apparmor is None) and checkpointable:
        pass  # liblxc would ask CRIU's restore for an AppArmor profile the kernel lacks
    elif apparmor is False or apparmor is None:
        out.set("lxc.apparmor.profile", "unconfined")
    else:
        out.set("lxc.apparmor.profile", "generated" if apparmor is True else apparmor)
        if nesting:
            out.set("lxc.apparmor.allow_nesting", "1")
        if apparmor is True:
            for line in (config.get("raw.apparmor") or "").splitlines():
                if line.strip():
                    out.set("lxc.apparmor.raw", line.strip(), "raw.apparmor")

    out.comment("Logging and console")
    out.set("lxc.log.file", os.path.join(_clean("log_dir", log_dir), LOG_FILE))
    out.set("lxc.log.level", log_level)
    if checkpointable:
        out.set("lxc.console.path", "none")  # liblxc's restore makes no console
    else:
        out.set("lxc.console.buffer.size", "auto")
        out.set("lxc.console.size", "auto")
        out.set("lxc.console.logfile", os.path.join(log_dir, CONSOLE_LOG_FILE))

    out.comment("Capabilities")
    out.set("lxc.cap.drop", "")
    if privileged:
        out.set("lxc.cap.drop", PRIVILEGED_CAP_DROP)

    if idmap is not None:
        out.comment("Id map")
        for value in idmap.lxc_values():
            out.set("lxc.idmap", value)

    out.comment("Seccomp")
    policy = seccomp.profile(config, architecture)
    if policy is None:
        out.set("lxc.seccomp.profile", "")
    else:
        if not seccomp_path:
            raise ValueError("render: the config needs a seccomp policy but no seccomp_path was given")
        out.set("lxc.seccomp.profile", seccomp_path)

    limit_lines = cgroups.limits(config, layout, host_cpus, host_memory, host_interfaces=host_interfaces)
    if limit_lines:
        out.comment("Cgroup limits")
        for key, value in limit_lines:
            out.set(key, value)

    prlimits = kernel_limits(config)
    if prlimits:
        out.comment("Kernel resource limits")
        for key, value in prlimits:
            out.set(key, value)

    environment = _environment(config)
    if environment:
        out.comment("Environment")
        for key, value in environment:
            out.set(key, value)

    if is_true(config.get("nvidia.runtime") or ""):
        out.comment("NVIDIA runtime")
        out.set("lxc.environment", "NVIDIA_VISIBLE_DEVICES=none")
        out.set("lxc.environment", "NVIDIA_DRIVER_CAPABILITIES=compute,utility")
        out.set("lxc.hook.mount", os.path.join(hook_dir, "nvidia"))

    raw = config.get("raw.lxc") or ""
    if raw:
        out.comment("raw.lxc")
        out.lines.extend(_raw_lxc_lines(raw))

    if device_lines:
        out.comment("Devices")
        for key, value in device_lines:
            if not _KEY.fullmatch(key):
                raise ValueError(f"Invalid liblxc key in device configuration: {key!r}")
            out.set(key, value, f"device line {key}")

    return Rendered(out.text(), policy, seccomp_path if policy is not None else None)


def validate_raw_lxc(text):
    """Ask liblxc whether `raw.lxc` loads; raise ConfigError naming the first bad line.

    Loads the text into a python-lxc Container under a throw-away lxcpath
    (parsing only: nothing forks, nothing is created).
    """
    import lxc

    if not text.strip():
        return
    with tempfile.TemporaryDirectory(prefix="lxdtx-rawlxc-") as lxcpath:
        path = os.path.join(lxcpath, "config")

        def loads(content):
            with open(path, "w") as f:
                f.write(content if content.endswith("\n") else content + "\n")
            container = lxc.Container("validate", config_path=lxcpath)
            container.clear_config()
            return container.load_config(path)

        if loads(text):
            return
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#") and not loads(line):
                raise ConfigError([("raw.lxc", f"Failed to load raw.lxc: invalid line {number}: {line.strip()}")])
        raise ConfigError([("raw.lxc", "Failed to load raw.lxc")])
