# -*- test-case-name: tests.unit.test_disk_limits,tests.integration.test_disk_devices -*-
"""`limits.read`, `limits.write` and `limits.max` of disk devices as block io throttles.

As LXD 3.x does (`getDiskLimits`): each disk device's limits apply to the whole
block devices behind its source (the rootfs for the root disk); where several
disk devices sit on one block device, each of the four limits is the average of
the devices that set it. A source on a file system without a block device
behind it (tmpfs) cannot be limited, and says so.

cgroup v1 takes one `blkio.throttle.<read|write>_<bps|iops>_device` line per
block device (0 removes it), the unified hierarchy one `io.max` line with
`max` for no limit. Applying a change reads what the container's cgroup holds
and writes the difference, so a limit whose source has gone is still lifted.

The /sys and /proc walks block: callers run them in a thread.
"""

import os
import stat

from lxdtx import errors
from lxdtx.config.types import parse_size
from lxdtx.instance.cgroups import V1, V2

# (read bytes/s, read iops, write bytes/s, write iops); 0 is no limit.
FIELDS = ("rbps", "riops", "wbps", "wiops")
_V1_FILES = {"rbps": "blkio.throttle.read_bps_device", "riops": "blkio.throttle.read_iops_device",
             "wbps": "blkio.throttle.write_bps_device", "wiops": "blkio.throttle.write_iops_device"}


def parse_limit(value):
    """(bytes/s, iops) of one limit value: `10MB`, `1048576` or `100iops`."""
    value = (value or "").strip()
    if not value:
        return 0, 0
    if value.endswith("iops"):
        number = value[:-4]
        if not number.isdigit():
            raise ValueError(f"Invalid value for disk limit: {value}")
        return 0, int(number)
    return parse_size(value), 0


def device_limits(config):
    """{field: value} of one disk device's limits (`limits.max` is both directions)."""
    read = config.get("limits.max") or config.get("limits.read")
    write = config.get("limits.max") or config.get("limits.write")
    rbps, riops = parse_limit(read)
    wbps, wiops = parse_limit(write)
    return {"rbps": rbps, "riops": riops, "wbps": wbps, "wiops": wiops}


def has_limits(config):
    return any(config.get(k) for k in ("limits.read", "limits.write", "limits.max"))


class Blocks:
    """The host's block devices, read from a /sys and a mountinfo (a fake tree in tests)."""

    def __init__(self, sys_root="/sys", mountinfo="/proc/self/mountinfo"):
        self.sys_root = sys_root
        self.mountinfo = mountinfo

    def _dev_dir(self, block):
        return os.path.join(self.sys_root, "dev", "block", block)

    def whole_disks(self):
        """`major:minor` of every block device that is no partition (what throttles take)."""
        result = set()
        root = os.path.join(self.sys_root, "class", "block")
        try:
            names = os.listdir(root)
        except OSError:
            return result
        for entry in names:
            path = os.path.join(root, entry)
            if os.path.exists(os.path.join(path, "partition")):
                continue
            number = _read(os.path.join(path, "dev"))
            if number:
                result.add(number)
        return result

    def _mount_source(self, dev):
        """The source of the mount whose device is `dev` (`0:45` for btrfs, tmpfs...)."""
        wanted = f"{os.major(dev)}:{os.minor(dev)}"
        try:
            with open(self.mountinfo) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[2] != wanted or "-" not in fields:
                continue
            after = fields[fields.index("-") + 1:]
            if len(after) >= 2:
                return after[1]
        return None

    def of_path(self, path):
        """`major:minor` of the block devices holding `path` (its file system's, or the
        device itself for a block node); raises ValueError without any."""
        st = os.stat(path)
        if stat.S_ISBLK(st.st_mode):
            dev = st.st_rdev
        else:
            dev = st.st_dev
            if os.major(dev) == 0:  # btrfs, tmpfs...: an anonymous device, the mount names the real one
                source = self._mount_source(dev)
                try:
                    found = os.stat(source) if source and source.startswith("/") else None
                except OSError:
                    found = None
                if found is None or not stat.S_ISBLK(found.st_mode):
                    raise ValueError(f"no block device behind {path}")
                dev = found.st_rdev
        return self.disks_of(f"{os.major(dev)}:{os.minor(dev)}")

    def disks_of(self, block, depth=0):
        """The whole disks under `block`: itself, the disk of a partition, the members
        of a device-mapper or md device."""
        directory = self._dev_dir(block)
        slaves = os.path.join(directory, "slaves")
        try:
            members = sorted(os.listdir(slaves))
        except OSError:
            members = []
        if members and depth < 8:
            found = []
            for member in members:
                number = _read(os.path.join(slaves, member, "dev"))
                if number:
                    found += self.disks_of(number, depth + 1)
            return sorted(set(found))
        if os.path.exists(os.path.join(directory, "partition")):
            parent = _read(os.path.join(os.path.realpath(directory), "..", "dev"))
            if parent:
                return [parent]
        return [block]


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def block_limits(devices, rootfs, source_of, blocks=None):
    """{`major:minor`: {field: value}} for the disk devices of a container.

    `source_of(config)` is the host path of a non-root disk (None when it is
    missing); the root disk's is `rootfs`. Raises BadRequest naming a device
    whose limits cannot be applied.
    """
    blocks = blocks or Blocks()
    disks = None
    wanted = {}  # block -> [limits of each device on it]
    for name in sorted(devices):
        config = devices[name]
        if config.get("type") != "disk" or not has_limits(config):
            continue
        try:
            limits = device_limits(config)
        except ValueError as e:
            raise errors.BadRequest(f"Device \"{name}\": {e}")
        path = rootfs if config.get("path") == "/" and not config.get("source") else source_of(config)
        if path is None or not os.path.exists(path):
            continue  # an optional source that is not there: nothing to limit
        try:
            found = blocks.of_path(path)
        except (OSError, ValueError):
            raise errors.BadRequest(f"Device \"{name}\": its source has no block device to limit")
        if disks is None:
            disks = blocks.whole_disks()
        for block in found:
            if block not in disks:
                raise errors.BadRequest(f"Device \"{name}\": block device {block} doesn't support limits")
            wanted.setdefault(block, []).append(limits)
    result = {}
    for block, entries in wanted.items():
        merged = {}
        for field in FIELDS:
            values = [e[field] for e in entries if e[field]]
            merged[field] = sum(values) // len(values) if values else 0
        result[block] = merged
    return result


def start_files(limits, version):
    """[(cgroup file, value)] setting `limits` in a new cgroup."""
    out = []
    for block in sorted(limits):
        entry = limits[block]
        if version == V2:
            out.append(("io.max", _v2_line(block, entry)))
            continue
        for field in FIELDS:
            if entry[field]:
                out.append((_V1_FILES[field], f"{block} {entry[field]}"))
    return out


def _v2_line(block, entry):
    return block + " " + " ".join(f"{f}={entry[f] or 'max'}" for f in FIELDS)


def current(read_file, version):
    """{block: {field: value}} of what a cgroup holds; `read_file(name)` gives a file's text."""
    result = {}
    if version == V2:
        for line in (read_file("io.max") or "").splitlines():
            parts = line.split()
            if not parts:
                continue
            entry = dict.fromkeys(FIELDS, 0)
            for part in parts[1:]:
                key, _, value = part.partition("=")
                if key in entry and value.isdigit():
                    entry[key] = int(value)
            result[parts[0]] = entry
        return result
    for field, filename in _V1_FILES.items():
        for line in (read_file(filename) or "").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                result.setdefault(parts[0], dict.fromkeys(FIELDS, 0))[field] = int(parts[1])
    return result


def live_files(now, wanted, version):
    """[(cgroup file, value)] taking a cgroup from the limits `now` to `wanted`."""
    out = []
    zero = dict.fromkeys(FIELDS, 0)
    for block in sorted(set(now) | set(wanted)):
        old, new = now.get(block, zero), wanted.get(block, zero)
        if old == new:
            continue
        if version == V2:
            out.append(("io.max", _v2_line(block, new)))
            continue
        for field in FIELDS:
            if old[field] != new[field]:
                out.append((_V1_FILES[field], f"{block} {new[field]}"))
    return out


def version_of(layout):
    """V1 or V2 for the blkio controller, None when containers get none."""
    version = layout.version("blkio")
    return version if version in (V1, V2) else None
