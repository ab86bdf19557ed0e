# -*- test-case-name: tests.unit.test_passthrough_devices -*-
"""`gpu` devices: their keys and the host's GPUs from sysfs (and the NVIDIA driver's /proc).

A `gpu` device passes every host GPU it selects (all of them without a
selector): its DRM nodes (`/dev/dri/cardN`, `/dev/dri/renderDN`) and, for an
NVIDIA card with the proprietary driver, `/dev/nvidiaN` plus the driver's
shared nodes (`nvidiactl`, `nvidia-uvm`...). `id` is the DRM card number, `pci`
the card's PCI address, `vendorid`/`productid` its PCI ids. No GPU selected is
an error, as in LXD.
"""

import os
import re
import stat
from typing import NamedTuple

from lxdtx.config.types import is_int64, is_octal_mode
from lxdtx.device.keys import check_keys
from lxdtx.fsutil import read_text

SYS_DRM = "/sys/class/drm"
PROC_NVIDIA = "/proc/driver/nvidia/gpus"
NVIDIA_VENDOR = "10de"
NVIDIA_MAJOR = 195
NVIDIA_SHARED = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
_NODE = re.compile(r"(card|renderD)(\d+)")


def _is_pci(value):
    if not re.fullmatch(r"([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-9a-fA-F]", value):
        raise ValueError(f"Invalid PCI address: {value}")


def _is_pci_id(value):
    if not re.fullmatch(r"[0-9a-fA-F]{4}", value):
        raise ValueError(f"Invalid PCI id: {value}")


def _is_card_id(value):
    if not value.isdigit():
        raise ValueError(f"Invalid card id: {value}")


KEYS = {
    "vendorid": _is_pci_id,
    "productid": _is_pci_id,
    "id": _is_card_id,
    "pci": _is_pci,
    "uid": is_int64,
    "gid": is_int64,
    "mode": is_octal_mode,
}


def validate(name, config):
    check_keys("gpu", name, config, KEYS)


class Node(NamedTuple):
    """A character node to pass: its path (in the container as on the host) and numbers."""

    path: str
    major: int
    minor: int


class Gpu(NamedTuple):
    """One host GPU: DRM card id, PCI address, PCI ids (lower-case hex) and its nodes."""

    id: str
    pci: str
    vendor: str
    product: str
    nodes: tuple


def _numbers(text):
    major, _, minor = (text or "").strip().partition(":")
    return int(major), int(minor)


def _nvidia_node(pci, proc_root):
    """/dev/nvidiaN of the NVIDIA card at `pci` (its `Device Minor`), or None."""
    info = read_text(os.path.join(proc_root, pci, "information")) or ""
    found = re.search(r"^Device Minor:\s*(\d+)", info, re.M)
    if not found:
        return None
    minor = int(found.group(1))
    return Node(f"/dev/nvidia{minor}", NVIDIA_MAJOR, minor)


def scan(drm_root=SYS_DRM, proc_root=PROC_NVIDIA):
    """The GPUs behind the host's DRM nodes, sorted by card id."""
    cards = {}  # (card id, pci) -> [vendor, product, nodes]
    try:
        names = sorted(os.listdir(drm_root))
    except OSError:
        return []
    for entry in names:
        m = _NODE.fullmatch(entry)
        if not m:
            continue  # connectors (card0-HDMI-A-1), version files
        base = os.path.join(drm_root, entry)
        try:
            major, minor = _numbers(read_text(os.path.join(base, "dev")))
        except ValueError:
            continue
        device = os.path.join(base, "device")
        pci = os.path.basename(os.path.realpath(device))
        card = m.group(2)
        if m.group(1) == "renderD":  # a render node's card is the card of the same device
            siblings = [n for n in _listdir(os.path.join(device, "drm")) if re.fullmatch(r"card\d+", n)]
            if not siblings:
                continue
            card = siblings[0][4:]
        vendor = (read_text(os.path.join(device, "vendor")) or "").strip().lower().removeprefix("0x")
        product = (read_text(os.path.join(device, "device")) or "").strip().lower().removeprefix("0x")
        entry_nodes = cards.setdefault((card, pci), [vendor, product, []])[2]
        entry_nodes.append(Node(f"/dev/dri/{entry}", major, minor))
    gpus = []
    for (card, pci), (vendor, product, nodes) in cards.items():
        if vendor == NVIDIA_VENDOR:
            nvidia = _nvidia_node(pci, proc_root)
            if nvidia:
                nodes.append(nvidia)
        gpus.append(Gpu(card, pci, vendor, product, tuple(sorted(nodes))))
    return sorted(gpus, key=lambda g: (int(g.id), g.pci))


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _pci(value):
    value = value.lower()
    return value if value.count(":") == 2 else "0000:" + value


def matches(config, gpu):
    """Whether host `gpu` is one the `gpu` device `config` selects (every set key must agree)."""
    return ((not config.get("vendorid") or config["vendorid"].lower() == gpu.vendor)
            and (not config.get("productid") or config["productid"].lower() == gpu.product)
            and (not config.get("id") or config["id"] == gpu.id)
            and (not config.get("pci") or _pci(config["pci"]) == gpu.pci))


def shared_nvidia_nodes(dev_root="/dev"):
    """The NVIDIA driver's nodes every NVIDIA card needs, those present on the host."""
    found = []
    for name in NVIDIA_SHARED:
        try:
            st = os.stat(os.path.join(dev_root, name))
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            found.append(Node(f"/dev/{name}", os.major(st.st_rdev), os.minor(st.st_rdev)))
    return found


def nodes_for(config, gpus, dev_root="/dev"):
    """The nodes a `gpu` device passes, or None when it selects no GPU."""
    selected = [g for g in gpus if matches(config, g)]
    if not selected:
        return None
    nodes = [n for g in selected for n in g.nodes]
    if any(g.vendor == NVIDIA_VENDOR and any(n.major == NVIDIA_MAJOR for n in g.nodes) for g in selected):
        nodes += shared_nvidia_nodes(dev_root)
    return sorted(set(nodes))
