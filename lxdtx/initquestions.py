# -*- test-case-name: tests.integration.test_init_preseed -*-
"""`lxdtx init` without flags: `lxd init`'s questions, answered into a preseed.

The answers become the same document `--preseed` reads, applied the same way
(lxdtx.preseed), so both paths check and undo alike. There is no clustering, so
that question is not asked.
"""

import getpass
import ipaddress
import sys

import yaml

from lxdtx.storage.load import DRIVERS


class Asker:
    """Prompts on stdout and reads answers from stdin; invalid answers are asked again."""

    def __init__(self, read=input, secret=getpass.getpass, out=sys.stdout):
        self._read = read
        self._secret = secret
        self._out = out

    def boolean(self, question, default):
        choices = {"yes": True, "y": True, "no": False, "n": False}
        while True:
            answer = self._read(f"{question} (yes/no) [default={'yes' if default else 'no'}]: ").strip().lower()
            if not answer:
                return default
            if answer in choices:
                return choices[answer]
            print("Invalid input, try again.\n", file=self._out)

    def string(self, question, default=None, check=None):
        suffix = f" [default={default}]" if default is not None else ""
        while True:
            answer = self._read(f"{question}{suffix}: ").strip()
            if not answer and default is not None:
                answer = default
            if not answer:
                print("Invalid input, try again.\n", file=self._out)
                continue
            problem = check(answer) if check else None
            if problem:
                print(f"{problem}\n", file=self._out)
                continue
            return answer

    def password(self, question):
        while True:
            first = self._secret(f"{question}: ")
            if self._secret("Again: ") == first:
                return first
            print("Passwords don't match, try again.\n", file=self._out)


def _address(value):
    if value in ("auto", "none"):
        return None
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return f"\"{value}\" is not a CIDR subnet, \"auto\" or \"none\""
    if "/" not in value:
        return f"\"{value}\" is not a CIDR subnet (it has no prefix length)"
    return None


def _port(value):
    if not value.isdigit() or not 0 < int(value) < 65536:
        return f"\"{value}\" is not a port number"
    return None


def available_drivers():
    return sorted(name for name, cls in DRIVERS.items() if cls.missing() is None)


def ask(asker, exists):
    """The preseed of the answers; `exists(kind, name)` tells whether a pool or network is taken."""
    preseed = {"config": {}, "networks": [], "storage_pools": [], "profiles": []}
    devices = {}

    if asker.boolean("Do you want to configure a new storage pool?", True):
        def free_pool(name):
            if exists("storage-pools", name):
                return f"The requested storage pool \"{name}\" already exists. Please choose another name."
            return None

        name = asker.string("Name of the new storage pool", "default", free_pool)
        drivers = available_drivers()
        driver = asker.string(f"Name of the storage backend to use ({', '.join(drivers)})", "dir",
                              lambda d: None if d in drivers else f"The requested backend '{d}' isn't supported by lxd init.")
        config = {}
        if driver not in ("dir", "ceph"):
            if asker.boolean("Would you like to use an existing empty block device (e.g. a disk or partition)?",
                             False):
                config["source"] = asker.string("Path to the existing block device")
            else:
                size = asker.string("Size in GiB of the new loop device (1GiB minimum)", "5GiB",
                                    lambda s: None if s.removesuffix("GiB").removesuffix("GB").isdigit()
                                    and int(s.removesuffix("GiB").removesuffix("GB")) >= 1
                                    else "The size must be a whole number of GiB, at least 1")
                config["size"] = size.removesuffix("GiB").removesuffix("GB") + "GiB"
        elif driver == "ceph":
            config["ceph.osd.pool_name"] = asker.string("Name of the existing OSD storage pool", "lxd")
        preseed["storage_pools"].append({"name": name, "driver": driver, "config": config})
        devices["root"] = {"type": "disk", "path": "/", "pool": name}

    if asker.boolean("Would you like to create a new local network bridge?", True):
        def free_bridge(name):
            if len(name) > 15:
                return "The name of the bridge must be at most 15 characters long."
            if exists("networks", name):
                return f"The requested network bridge \"{name}\" already exists. Please choose another name."
            return None

        bridge = asker.string("What should the new bridge be called?", "lxdbr0", free_bridge)
        ipv4 = asker.string("What IPv4 address should be used? (CIDR subnet notation, “auto” or “none”)", "auto",
                            _address)
        ipv6 = asker.string("What IPv6 address should be used? (CIDR subnet notation, “auto” or “none”)", "auto",
                            _address)
        preseed["networks"].append({"name": bridge, "type": "bridge",
                                    "config": {"ipv4.address": ipv4, "ipv6.address": ipv6}})
        devices["eth0"] = {"type": "nic", "nictype": "bridged", "parent": bridge, "name": "eth0"}

    if asker.boolean("Would you like the LXD server to be available over the network?", False):
        host = asker.string("Address to bind LXD to (not including port)", "all")
        port = asker.string("Port to bind LXD to", "8443", _port)
        host = "::" if host == "all" else host.strip("[]")
        preseed["config"]["core.https_address"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        password = asker.password("Trust password for new clients")
        if password:
            preseed["config"]["core.trust_password"] = password

    if not asker.boolean("Would you like stale cached images to be updated automatically?", True):
        preseed["config"]["images.auto_update_interval"] = "0"

    if devices:
        preseed["profiles"].append({"name": "default", "devices": devices})
    return preseed


def dump(preseed):
    """The answers as a preseed document (the trust password left out)."""
    shown = dict(preseed, config={k: v for k, v in preseed["config"].items() if k != "core.trust_password"})
    return yaml.safe_dump({k: v for k, v in shown.items() if v}, default_flow_style=False, sort_keys=False)
