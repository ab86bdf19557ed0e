# -*- test-case-name: tests.integration.test_containers -*-
"""A container's devices at start and while running: liblxc lines, volatile keys, hotplug."""

import os
import secrets
import sys

from lxdtx import errors
from lxdtx.asyncutil import ProcessError, run
from lxdtx.config.types import is_true
from lxdtx.device import disk, nic
from lxdtx.network import infiniband

_MOUNTNS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "mountns.py")


def random_hwaddr():
    return "00:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def random_host_name():
    return "veth" + secrets.token_hex(4)


def fill_volatile(config, devices):
    """Volatile keys a container needs before it starts (stable MACs); returns the additions."""
    added = {}
    for name in sorted(devices):
        device = devices[name]
        if device.get("type") == "nic" and not device.get("hwaddr"):
            key = f"volatile.{name}.hwaddr"
            if not config.get(key):
                added[key] = random_hwaddr()
    return added


def disk_source(pools, config):
    """(host path, is_dir) of a non-root disk device, or None if optional and missing."""
    source = config["source"]
    if config.get("pool"):
        path = pools.driver(config["pool"]).mount_path("custom", source)
    else:
        path = source
    if not os.path.exists(path):
        if is_true(config.get("optional", "")):
            return None
        raise errors.BadRequest(f"Missing source '{source}' for disk device")
    return path, os.path.isdir(path)


async def prepare_volumes(pools, devices, idmap):
    """Own the files of the custom volumes among `devices` for the container's id map."""
    for config in devices.values():
        if config.get("type") == "disk" and config.get("path") != "/" and config.get("pool"):
            await pools.custom.prepare(config["pool"], config["source"], idmap)


def _mounts_below(directory, mountinfo="/proc/self/mountinfo"):
    """Whether some mount point lies strictly below `directory` on the host."""
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    try:
        with open(mountinfo) as f:
            points = [line.split()[4] for line in f if len(line.split()) > 4]
    except OSError:
        return False
    return any(p.replace("\\040", " ").startswith(prefix) for p in points)


def start_lines(pools, config, devices, unprivileged=False, staged=None, devices_key="lxc.cgroup.devices.allow"):
    """(liblxc lines, volatile updates) for the devices of a container about to start;
    `staged`: {device name: directory} of the block device disks, mounted on the host;
    `devices_key`: the device cgroup's allow key on this host (cgroup v1 or v2)."""
    staged = staged or {}
    lines = []
    volatile = {}
    index = 0
    # Names asked for explicitly are reserved first, so generated ones never take them.
    used_names = {d["name"] for d in devices.values() if d.get("type") in ("nic", "infiniband") and d.get("name")}
    for name in sorted(devices):
        device = devices[name]
        kind = device.get("type")
        if kind == "disk" and device.get("path") != "/":
            found = (staged[name], True) if name in staged else disk_source(pools, device)
            if found and found[1] and name not in staged and unprivileged and not is_true(device.get("recursive", "")) \
                    and _mounts_below(found[0]):
                # liblxc mounts in the container's user namespace, where the kernel refuses a
                # plain bind that would uncover what the mounts below hide (EINVAL).
                raise errors.BadRequest(f"Disk device \"{name}\": its source has mounts below it, which an "
                                        "unprivileged container can only take with recursive=true")
            if found:
                lines.append(disk.mount_entry(found[0], device["path"], device, found[1]))
        elif kind in ("nic", "infiniband") and device.get("nictype") in nic.NICTYPES:
            lines += _nic_lines(index, name, device, config, used_names, volatile, devices_key)
            index += 1
    return lines, volatile


def nic_name(dev, device, config, used_names):
    """The interface name of a nic in the container: `name`, the one it had, or the first free ethN."""
    ifname = device.get("name") or config.get(f"volatile.{dev}.name")
    if not ifname or (ifname in used_names and not device.get("name")):
        ifname = next(f"eth{i}" for i in range(64) if f"eth{i}" not in used_names)
    used_names.add(ifname)
    return ifname


def _nic_lines(index, dev, device, config, used_names, volatile, devices_key):
    """liblxc lines of one nic or infiniband device; records its volatile keys in `volatile`."""
    ifname = nic_name(dev, device, config, used_names)
    infiniband_device = device.get("type") == "infiniband"
    if infiniband_device:
        hwaddr = device.get("hwaddr", "")  # InfiniBand addresses are 20 bytes: only the one asked for
    else:
        hwaddr = device.get("hwaddr") or config.get(f"volatile.{dev}.hwaddr") or random_hwaddr()
    nictype = device["nictype"]
    host_name = link = None
    if nictype in ("bridged", "p2p"):
        host_name = device.get("host_name") or random_host_name()
    elif nictype == "sriov":
        # The virtual function chosen before the start (lxdtx.network.nics).
        link = host_name = config.get(f"volatile.{dev}.host_name")
    lines = nic.lxc_lines(index, device, ifname, hwaddr, host_name, link)
    if infiniband_device:
        lines += infiniband.device_lines(infiniband.char_devices(infiniband.hca_of(link or device["parent"])),
                                         devices_key)
    volatile[f"volatile.{dev}.name"] = ifname
    if not infiniband_device:
        volatile[f"volatile.{dev}.hwaddr"] = config.get(f"volatile.{dev}.hwaddr") or hwaddr
    if host_name:
        volatile[f"volatile.{dev}.host_name"] = host_name
    return lines


async def hot_add_disk(pools, pid, device, staged=None):
    """Bind-mount a disk device into a running container (`staged`: the directory a block
    device's file system is mounted on)."""
    found = (staged, True) if staged else disk_source(pools, device)
    if found is None:
        return
    argv = [sys.executable, "-I", "-S", _MOUNTNS, "mount", str(pid), found[0], device["path"]]
    if is_true(device.get("readonly", "")):
        argv.append("ro")
    recursive = is_true(device.get("recursive", ""))
    if recursive:
        argv.append("rec")
    # A slave by default: the clone of a shared host mount would stay its peer, and the
    # container's mounts under it would show on the host.
    argv.append("propagation=" + (device.get("propagation") or ("rslave" if recursive else "slave")))
    try:
        await run(argv)
    except ProcessError as e:
        raise errors.InternalError(f"Failed to add disk at {device['path']}: {e}")


async def hot_remove_disk(pid, device):
    try:
        await run([sys.executable, "-I", "-S", _MOUNTNS, "umount", str(pid), device["path"]])
    except ProcessError as e:
        raise errors.InternalError(f"Failed to remove disk at {device['path']}: {e}")
