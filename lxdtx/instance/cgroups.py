# -*- test-case-name: tests.unit.test_cgroups -*-
"""Cgroup layout of the host and the `limits.*` keys as cgroup settings.

`detect()` finds which hierarchy (v1 or the v2 unified one) holds each
controller; `limits()` turns a container's expanded config into liblxc
`lxc.cgroup.*`/`lxc.cgroup2.*` lines for its start, and `live_updates()` into
the cgroup file writes that apply a changed config to a running container.

Translations follow LXD 3.x (`deviceParseCPU`, `initLXC`, `Update`):

* `limits.cpu.allowance` `N%` and `limits.cpu.priority` P give
  `cpu.shares = 10*N + 24 - (10 - P)` (1024 for 100% and priority 10);
  `Qms/Pms` gives a CFS quota/period in microseconds (shares stay 1024 - (10 - P)).
* `limits.memory` hard: the limit plus a soft limit at 90% of it; soft: the
  soft limit only. `limits.memory.swap=false`: swap is capped at the memory
  limit (`memsw = mem`) and swappiness 0; otherwise swappiness is
  `60 - 10 + limits.memory.swap.priority`. (LXD 3.x also wrote `memsw = mem`
  when swap was allowed, which forbade swap in both cases; we keep the meaning
  the documentation gives the key.)
* `limits.disk.priority` P: block io weight `100*P` (10 for 0).
* `limits.network.priority` P: `net_prio.ifpriomap` `<iface> P` for every host
  interface, when the net_prio controller is mounted (never on v2).
* `limits.cpu` N (a count): CPUs 0..N-1 (LXD balances counts across CPUs at
  run time; a fixed choice is enough here), a set or range pins those CPUs.

On the unified hierarchy the same keys map to `cpu.weight`, `cpu.max`,
`memory.max`, `memory.high`, `memory.swap.max`, `io.weight` and `pids.max`.
"""

import os
import re
import socket

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_true, parse_size
from lxdtx.fsutil import read_text

V1 = 1
V2 = 2

# Controllers the daemon cares about, by their v1 names (as liblxc and LXD name them).
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "net_prio")

# v1 name -> name in the unified hierarchy's cgroup.controllers (None: no v2 counterpart).
_V2_NAMES = {"blkio": "io", "cpuacct": "cpu", "net_prio": None}
# Features of every v2 cgroup that have no entry in cgroup.controllers.
_V2_BUILTIN = {"freezer", "devices"}
# First component of a cgroup file name -> the v1 controller it belongs to.
_FILE_PREFIX = {"io": "blkio", "cgroup": None}

PAYLOAD_PREFIX = "lxc.payload."


class Layout:
    """Where each cgroup controller lives on this host.

    `v1`: controller -> mount point of its v1 hierarchy; `unified`: mount point
    of the v2 hierarchy (or None); `unified_controllers`: what that hierarchy
    offers; `base`: controller ("" for v2) -> cgroup of pid 1 in it, under
    which liblxc (as root, `lxc.cgroup.relative` unset) creates containers;
    `swap_accounting`: whether swap limits exist (`memory.memsw.*` or
    `memory.swap.max`); `blkio_weight`: the block io weight file this kernel
    offers (`blkio.weight`, `blkio.bfq.weight`, `io.weight`, `io.bfq.weight`)
    or None.
    """

    def __init__(self, v1=None, unified=None, unified_controllers=(), base=None,
                 swap_accounting=False, blkio_weight=None, payload_prefix=PAYLOAD_PREFIX):
        self.payload_prefix = payload_prefix  # names containers' cgroups (`lxc.cgroup.dir.container`)
        # Where liblxc creates container cgroups in every mounted hierarchy, named
        # ones (`name=systemd`) included: used to clear what an aborted start left.
        self.parents = []
        self.v1 = dict(v1 or {})
        self.unified = unified
        self.unified_controllers = frozenset(unified_controllers)
        self.base = dict(base or {})
        self.swap_accounting = swap_accounting
        self.blkio_weight = blkio_weight

    def __repr__(self):
        return (f"Layout(v1={self.v1!r}, unified={self.unified!r}, "
                f"unified_controllers={sorted(self.unified_controllers)!r})")

    def version(self, controller):
        """V1, V2 or None (the controller is not available)."""
        if controller in self.v1:
            return V1
        if self.unified is None:
            return None
        if controller in _V2_BUILTIN:
            return V2
        v2_name = _V2_NAMES.get(controller, controller)
        if v2_name is not None and v2_name in self.unified_controllers:
            return V2
        return None

    def has(self, controller):
        """Whether containers get this controller."""
        return self.version(controller) is not None

    def mountpoint(self, controller):
        """Mount point of the hierarchy holding `controller` (None when unavailable)."""
        version = self.version(controller)
        if version == V1:
            return self.v1[controller]
        if version == V2:
            return self.unified
        return None

    def container_path(self, controller, name):
        """Host directory of container `name`'s cgroup for `controller` (None when unavailable).

        liblxc 5 creates `<payload_prefix><name>` below pid 1's cgroup in each
        hierarchy (`lxc.payload.` unless the config names it with
        `lxc.cgroup.dir.container`). Should that directory already exist,
        liblxc picks `<name>-1` and so on, so for a running container
        `process_path()` on its init pid is exact.
        """
        mount = self.mountpoint(controller)
        if mount is None:
            return None
        base = self.base.get(controller if self.version(controller) == V1 else "", "/")
        return os.path.join(mount, base.lstrip("/"), self.payload_prefix + name)

    def process_path(self, controller, pid, proc_cgroup_text=None):
        """Host directory of the cgroup process `pid` is in, for `controller`."""
        mount = self.mountpoint(controller)
        if mount is None:
            return None
        if proc_cgroup_text is None:
            with open(f"/proc/{pid}/cgroup") as f:
                proc_cgroup_text = f.read()
        paths = _parse_proc_cgroup(proc_cgroup_text)
        key = controller if self.version(controller) == V1 else ""
        relative = paths.get(key)
        if relative is None:
            return None
        return os.path.join(mount, relative.lstrip("/"))

    def controller_of(self, filename):
        """The controller a cgroup file (`memory.limit_in_bytes`, `io.weight`) belongs to."""
        prefix = filename.split(".", 1)[0]
        return _FILE_PREFIX.get(prefix, prefix)

    def config_key(self, filename):
        """The liblxc key that sets `filename`: `lxc.cgroup.<file>` or `lxc.cgroup2.<file>`."""
        version = self.version(self.controller_of(filename))
        return ("lxc.cgroup2." if version == V2 else "lxc.cgroup.") + filename

    def file_path(self, name, filename):
        """Host path of `filename` in container `name`'s cgroup."""
        directory = self.container_path(self.controller_of(filename), name)
        return None if directory is None else os.path.join(directory, filename)


def _parse_proc_cgroup(text):
    """{controller or "" for v2 or "name=systemd": path} from /proc/<pid>/cgroup."""
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
            continue
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def _unescape(field):
    """Octal escapes of /proc/mounts (`\\040` for a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _child_files(mountpoint):
    """File names a child cgroup of this hierarchy has (some files exist only below the root).

    Looks at an existing child; when there is none, makes and removes an empty
    probe cgroup.
    """
    try:
        children = sorted(e.name for e in os.scandir(mountpoint) if e.is_dir(follow_symlinks=False))
    except OSError:
        return set()
    if children:
        try:
            return set(os.listdir(os.path.join(mountpoint, children[0])))
        except OSError:
            return set()
    probe = os.path.join(mountpoint, f"lxdtx.probe.{os.getpid()}")
    try:
        os.mkdir(probe)
    except OSError:
        return set()
    try:
        return set(os.listdir(probe))
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass


def detect(proc_mounts_text=None, *, init_cgroup_text=None):
    """The host's Layout, from /proc/mounts and the files of the mounted hierarchies.

    `proc_mounts_text` and `init_cgroup_text` (pid 1's /proc/1/cgroup) default
    to the live files; tests pass mount points of their own.
    """
    if proc_mounts_text is None:
        proc_mounts_text = read_text("/proc/self/mounts") or ""
    if init_cgroup_text is None:
        init_cgroup_text = read_text("/proc/1/cgroup") or ""
    v1, unified = {}, None
    base = _parse_proc_cgroup(init_cgroup_text)
    parents = []
    for line in proc_mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mountpoint, fstype, options = _unescape(fields[1]), fields[2], fields[3].split(",")
        if fstype in ("cgroup", "cgroup2"):
            key = "" if fstype == "cgroup2" else next(
                (o for o in options if o in base or o.startswith("name=")), "")
            parents.append(os.path.join(mountpoint, base.get(key, "/").lstrip("/")))
        if fstype == "cgroup":
            for controller in CONTROLLERS:
                if controller in options and controller not in v1:
                    v1[controller] = mountpoint
        elif fstype == "cgroup2" and unified is None:
            unified = mountpoint
    unified_controllers = ()
    if unified is not None:
        unified_controllers = (read_text(os.path.join(unified, "cgroup.controllers")) or "").split()
    layout = Layout(v1=v1, unified=unified, unified_controllers=unified_controllers, base=base)
    layout.parents = sorted(set(parents))

    memory = layout.version("memory")
    if memory == V1:
        layout.swap_accounting = os.path.exists(os.path.join(v1["memory"], "memory.memsw.limit_in_bytes"))
    elif memory == V2:
        layout.swap_accounting = "memory.swap.max" in _child_files(unified)

    blkio = layout.version("blkio")
    if blkio is not None:
        files = _child_files(layout.mountpoint("blkio"))
        names = ("blkio.weight", "blkio.bfq.weight") if blkio == V1 else ("io.weight", "io.bfq.weight")
        layout.blkio_weight = next((n for n in names if n in files), None)
    return layout


# ---------------------------------------------------------------------------
# limits.* keys -> cgroup settings

CPU_KEYS = ("limits.cpu.allowance", "limits.cpu.priority")
MEMORY_KEYS = ("limits.memory", "limits.memory.enforce", "limits.memory.swap", "limits.memory.swap.priority")
LIMIT_KEYS = ("limits.cpu",) + CPU_KEYS + MEMORY_KEYS + (
    "limits.processes", "limits.disk.priority", "limits.network.priority")


def _error(key, message):
    return ConfigError([(key, f"Invalid value for config key '{key}': {message}")])


def _int(config, key, default=None):
    value = config.get(key) or ""
    if value == "":
        return default
    try:
        return int(value, 10)
    except ValueError:
        raise _error(key, f"not an integer: {value}")


def _host_cpu_list(host_cpus):
    if isinstance(host_cpus, int):
        return list(range(host_cpus))
    return sorted(set(host_cpus))


def format_cpu_set(cpus):
    """`0-3,6` for [0, 1, 2, 3, 6]."""
    cpus = sorted(set(cpus))
    parts, start = [], None
    for i, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            parts.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(parts)


def cpu_set(value, host_cpus):
    """CPUs of `limits.cpu`: a count picks the first N host CPUs, a set/range is taken as given."""
    available = _host_cpu_list(host_cpus)
    value = value.strip()
    if value.isdigit():
        count = int(value)
        if count < 1:
            raise _error("limits.cpu", "must be at least 1")
        return available[:count]
    cpus = set()
    for part in value.split(","):
        bounds = part.strip().split("-")
        try:
            numbers = [int(b, 10) for b in bounds]
        except ValueError:
            raise _error("limits.cpu", f"invalid CPU set: {value}")
        if len(numbers) == 1:
            numbers.append(numbers[0])
        if len(numbers) != 2 or numbers[1] < numbers[0]:
            raise _error("limits.cpu", f"invalid CPU set: {value}")
        cpus.update(range(numbers[0], numbers[1] + 1))
    missing = sorted(cpus - set(available))
    if missing:
        raise _error("limits.cpu", f"CPU {missing[0]} does not exist on this host")
    return sorted(cpus)


def cpu_shares_and_quota(config):
    """(shares, quota_us or -1, period_us) from limits.cpu.allowance and limits.cpu.priority."""
    priority = _int(config, "limits.cpu.priority", 10)
    shares = -(10 - priority)
    quota, period = -1, 100000
    allowance = (config.get("limits.cpu.allowance") or "").strip()
    if allowance.endswith("%"):
        try:
            percent = int(allowance[:-1], 10)
        except ValueError:
            raise _error("limits.cpu.allowance", f"invalid CPU allowance: {allowance}")
        shares += 10 * percent + 24
    elif allowance:
        quota_ms, sep, period_ms = allowance.partition("/")
        try:
            quota = int(quota_ms.removesuffix("ms"), 10) * 1000
            period = int(period_ms.removesuffix("ms"), 10) * 1000
        except ValueError:
            raise _error("limits.cpu.allowance", f"invalid CPU allowance: {allowance}")
        if not sep or period <= 0:
            raise _error("limits.cpu.allowance", f"invalid CPU allowance: {allowance}")
        shares += 1024
    else:
        shares += 1024
    return max(shares, 0), quota, period


def _shares_to_weight(shares):
    """cgroup v1 cpu.shares to v2 cpu.weight [1..10000], scaled so the defaults (1024, 100) meet."""
    return min(max(shares * 100 // 1024, 1), 10000)


def memory_limit(config, host_memory):
    """Bytes of limits.memory (`N%` of host memory or a size), None when unset."""
    value = (config.get("limits.memory") or "").strip()
    if value == "":
        return None
    if value.endswith("%"):
        try:
            percent = int(value[:-1], 10)
        except ValueError:
            raise _error("limits.memory", f"invalid percentage: {value}")
        return (host_memory // 100) * percent
    try:
        return parse_size(value)
    except ValueError as e:
        raise _error("limits.memory", str(e))


def _swap_allowed(config):
    value = config.get("limits.memory.swap") or ""
    return value == "" or is_true(value)


def _cpuset(config, layout, host_cpus, live):
    if not layout.has("cpuset"):
        return []
    value = config.get("limits.cpu") or ""
    if value:
        return [("cpuset.cpus", format_cpu_set(cpu_set(value, host_cpus)))]
    if live:
        return [("cpuset.cpus", format_cpu_set(_host_cpu_list(host_cpus)))]
    return []


def _cpu(config, layout, live):
    version = layout.version("cpu")
    if version is None or not (live or any(config.get(k) for k in CPU_KEYS)):
        return []
    shares, quota, period = cpu_shares_and_quota(config)
    if version == V2:
        weight = _shares_to_weight(shares)
        out = [] if (weight == 100 and not live) else [("cpu.weight", str(weight))]
        return out + [("cpu.max", f"{quota if quota >= 0 else 'max'} {period}")]
    out = [] if (shares == 1024 and not live) else [("cpu.shares", str(shares))]
    out.append(("cpu.cfs_period_us", str(period)))
    if quota >= 0 or live:
        out.append(("cpu.cfs_quota_us", str(quota)))
    return out


def _memory(config, layout, host_memory, live, swap_changed):
    version = layout.version("memory")
    if version is None:
        return []
    limit = memory_limit(config, host_memory)
    soft = (config.get("limits.memory.enforce") or "hard") == "soft"
    swap = _swap_allowed(config)
    out = []
    if version == V1:
        if live:
            # Reset first: the kernel wants memsw >= limit at every step.
            if layout.swap_accounting:
                out.append(("memory.memsw.limit_in_bytes", "-1"))
            out += [("memory.limit_in_bytes", "-1"), ("memory.soft_limit_in_bytes", "-1")]
        if limit is not None:
            if soft:
                out.append(("memory.soft_limit_in_bytes", str(limit)))
            else:
                out.append(("memory.limit_in_bytes", str(limit)))
                if layout.swap_accounting and not swap:
                    out.append(("memory.memsw.limit_in_bytes", str(limit)))
                out.append(("memory.soft_limit_in_bytes", str(round(limit * 0.9))))
        if live and not swap_changed:
            return out
        if not swap:
            out.append(("memory.swappiness", "0"))
        elif live or config.get("limits.memory.swap.priority"):
            priority = _int(config, "limits.memory.swap.priority", 10)
            out.append(("memory.swappiness", str(60 - 10 + priority)))
        return out
    # The unified hierarchy: no swappiness; swap is its own limit.
    if live:
        if layout.swap_accounting:
            out.append(("memory.swap.max", "max"))
        out += [("memory.max", "max"), ("memory.high", "max")]
    if limit is not None:
        if soft:
            out.append(("memory.high", str(limit)))
        else:
            out.append(("memory.max", str(limit)))
            out.append(("memory.high", str(round(limit * 0.9))))
    if layout.swap_accounting and not swap:
        out.append(("memory.swap.max", "0"))
    return out


def _processes(config, layout, live):
    if not layout.has("pids"):
        return []
    count = _int(config, "limits.processes")
    if count is not None:
        return [("pids.max", str(count))]
    return [("pids.max", "max")] if live else []


def _disk(config, layout, live):
    if layout.blkio_weight is None or not layout.has("blkio"):
        return []
    priority = _int(config, "limits.disk.priority")
    if priority is None:
        if not live:
            return []
        priority = 5
    return [(layout.blkio_weight, str(priority * 100 or 10))]


def _network(config, layout, live, host_interfaces):
    if layout.version("net_prio") != V1:
        return []
    priority = _int(config, "limits.network.priority")
    if priority is None:
        if not live:
            return []
        priority = 0
    if host_interfaces is None:
        host_interfaces = [name for _, name in socket.if_nameindex()]
    return [("net_prio.ifpriomap", f"{iface} {priority}") for iface in host_interfaces]


def limits(config, layout, host_cpus, host_memory, *, host_interfaces=None):
    """[(liblxc key, value)] setting the container's cgroup limits at start.

    `host_cpus`: number of CPUs (or the list of CPU ids), `host_memory`: bytes
    of host memory; `host_interfaces` defaults to the host's interfaces (for
    `limits.network.priority`). Raises ConfigError naming a key whose value
    cannot be applied.
    """
    files = (
        _cpuset(config, layout, host_cpus, False)
        + _cpu(config, layout, False)
        + _memory(config, layout, host_memory, False, True)
        + _processes(config, layout, False)
        + _disk(config, layout, False)
        + _network(config, layout, False, host_interfaces)
    )
    return [(layout.config_key(name), value) for name, value in files]


def live_updates(old_config, new_config, layout, host_cpus, host_memory, *, host_interfaces=None):
    """[(cgroup file, value)] applying the change old -> new to a running container.

    Only groups with a changed key are written, each in full (as LXD does), so
    a removed limit goes back to unlimited or the default. The caller writes
    each file under `layout.file_path(name, file)` in order.
    """
    def changed(*keys):
        return any((old_config.get(k) or "") != (new_config.get(k) or "") for k in keys)

    writes = []
    if changed("limits.cpu"):
        writes += _cpuset(new_config, layout, host_cpus, True)
    if changed(*CPU_KEYS):
        writes += _cpu(new_config, layout, True)
    if changed(*MEMORY_KEYS):
        swap_changed = changed("limits.memory.swap", "limits.memory.swap.priority")
        writes += _memory(new_config, layout, host_memory, True, swap_changed)
    if changed("limits.processes"):
        writes += _processes(new_config, layout, True)
    if changed("limits.disk.priority"):
        writes += _disk(new_config, layout, True)
    if changed("limits.network.priority"):
        writes += _network(new_config, layout, True, host_interfaces)
    return writes
