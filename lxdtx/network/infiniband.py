# -*- test-case-name: tests.unit.test_network_infiniband -*-
"""InfiniBand devices (`infiniband`): the IPoIB interface plus the verbs/MAD character devices.

A container using an InfiniBand port needs its IPoIB interface (moved in like a
physical nic, or a virtual function for `nictype=sriov`) and the character
devices under /dev/infiniband that belong to the same HCA: `uverbsN` (verbs),
`umadN` and `issmN` (management datagrams), plus the shared `rdma_cm`.
sysfs says which belong to which HCA: `/sys/class/net/IF/device/infiniband/HCA`
and `/sys/class/infiniband_{verbs,mad}/*/ibdev`.
"""

import os
import stat

from lxdtx.fsutil import read_text

SYSFS_CLASS = "/sys/class"
DEV_DIR = "/dev/infiniband"


class InfinibandError(Exception):
    """The parent is not an InfiniBand interface."""


def hca_of(interface, sysfs=SYSFS_CLASS):
    """The HCA (`mlx4_0`...) an IPoIB interface belongs to."""
    path = os.path.join(sysfs, "net", interface, "device", "infiniband")
    try:
        names = sorted(os.listdir(path))
    except OSError:
        raise InfinibandError(f"'{interface}' is not an InfiniBand interface (no {path})") from None
    if not names:
        raise InfinibandError(f"'{interface}' is not an InfiniBand interface")
    return names[0]


def char_devices(hca, sysfs=SYSFS_CLASS, dev_dir=DEV_DIR):
    """/dev paths of the verbs and MAD devices of `hca`, and rdma_cm when present."""
    found = []
    for klass in ("infiniband_verbs", "infiniband_mad"):
        directory = os.path.join(sysfs, klass)
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.startswith(("uverbs", "umad", "issm")) and (read_text(os.path.join(directory, entry, "ibdev")) or "").strip() == hca:
                found.append(os.path.join(dev_dir, entry))
    rdma_cm = os.path.join(dev_dir, "rdma_cm")
    if os.path.exists(rdma_cm):
        found.append(rdma_cm)
    return found


def device_lines(paths, devices_key="lxc.cgroup.devices.allow"):
    """liblxc lines that let the container open `paths` (character devices) at the same place."""
    lines = []
    for path in paths:
        st = os.stat(path)
        if not stat.S_ISCHR(st.st_mode):
            raise InfinibandError(f"{path} is not a character device")
        lines.append((devices_key, f"c {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rwm"))
        lines.append(("lxc.mount.entry", f"{path} {path.lstrip('/')} none bind,create=file 0 0"))
    return lines
