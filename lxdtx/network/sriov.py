# -*- test-case-name: tests.unit.test_network_sriov -*-
"""SR-IOV virtual functions of a host interface, for `nictype=sriov` nics (`network_sriov`).

A virtual function (VF) is free while its network interface is still in this
network namespace (sysfs lists it under the VF's PCI device); one in use sits in
a container. As the reference does, a parent with SR-IOV support but no VFs
enabled gets all of them enabled on first use. The chosen VF takes the nic's MAC
through the parent (`ip link set PARENT vf N mac M`), so the MAC survives the
VF driver re-initialising.
"""

import os
import re

SYSFS_NET = "/sys/class/net"


class SriovError(Exception):
    """No usable virtual function."""


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def counts(parent, sysfs=SYSFS_NET):
    """(enabled VFs, total VFs) of an interface, or None when it has no SR-IOV."""
    device = os.path.join(sysfs, parent, "device")
    total = _read_int(os.path.join(device, "sriov_totalvfs"))
    if total is None:
        return None
    return _read_int(os.path.join(device, "sriov_numvfs")) or 0, total


def enable_all(parent, sysfs=SYSFS_NET):
    """Enable every VF of `parent` (blocking sysfs write)."""
    found = counts(parent, sysfs)
    if found is None:
        raise SriovError(f"Parent device '{parent}' isn't SR-IOV enabled")
    with open(os.path.join(sysfs, parent, "device", "sriov_numvfs"), "w") as f:
        f.write(f"{found[1]}\n")


def virtual_functions(parent, sysfs=SYSFS_NET):
    """[(VF index, [interface names in this namespace])] of `parent`, by index."""
    device = os.path.join(sysfs, parent, "device")
    found = []
    try:
        entries = os.listdir(device)
    except OSError:
        return found
    for entry in entries:
        m = re.fullmatch(r"virtfn(\d+)", entry)
        if not m:
            continue
        try:
            names = sorted(os.listdir(os.path.join(device, entry, "net")))
        except OSError:
            names = []
        found.append((int(m.group(1)), names))
    return sorted(found)


def pick(parent, taken=(), sysfs=SYSFS_NET):
    """(VF index, interface name) of a free VF of `parent`; enables VFs when none are.

    `taken`: interface names other containers are about to use (not yet moved).
    Blocking; call from a thread.
    """
    found = counts(parent, sysfs)
    if found is None:
        raise SriovError(f"Parent device '{parent}' isn't SR-IOV enabled")
    if found[0] == 0:
        if found[1] == 0:
            raise SriovError(f"Parent device '{parent}' has no virtual functions")
        enable_all(parent, sysfs)
    for index, names in virtual_functions(parent, sysfs):
        free = [name for name in names if name not in taken]
        if free:
            return index, free[0]
    raise SriovError(f"All virtual functions of sriov device '{parent}' seem to be in use")


def set_mac_argv(parent, index, hwaddr):
    return ["ip", "link", "set", "dev", parent, "vf", str(index), "mac", hwaddr]


def reset_mac_argv(parent, index):
    return set_mac_argv(parent, index, "00:00:00:00:00:00")
