"""Network namespaces for network tests: a daemon in its own namespace, veth pairs, commands inside.

Everything a network test touches lives in namespaces it creates: the daemon runs
under `nsenter --net=` (same mounts, so cgroups and the state directory are the
usual ones), its bridges, nft tables, sysctls and dnsmasq stay in that
namespace, and deleting the namespace removes whatever a failed test left.
"""

import gzip
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import time

import pytest

from tests.daemonproc import Daemon


def run(*argv, check=True, input=None, timeout=60):
    result = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result


def wait_for(predicate, timeout=30, interval=0.2, what="condition"):
    """Poll until predicate() is truthy; returns its value or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def unique(prefix, length=4):
    """A name unlikely to collide with anything else on the host (interface names: 15 chars at most)."""
    return prefix + secrets.token_hex(length // 2 + 1)[:length]


def kernel_config(option):
    """Whether the running kernel was built with CONFIG_<option> (y or m), None if unknown."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        return None
    return re.search(rf"^CONFIG_{option}=[ym]$", text, re.M) is not None


_SYSFS_SCRIPT = ('d=$(mktemp -d) && mount --rbind /sys/fs/cgroup "$d" && mount -t sysfs sysfs /sys '
                 '&& mount --move "$d" /sys/fs/cgroup && rmdir "$d" && exec "$@"')


class Netns:
    """A network namespace of the test's own, removed with everything left in it."""

    def __init__(self, prefix="lxdtxt"):
        self.name = unique(prefix, 6)
        run("ip", "netns", "add", self.name)
        self.path = f"/run/netns/{self.name}"
        self.ip("link", "set", "lo", "up")

    def exec(self, *argv, check=True, input=None, timeout=60):
        return run("ip", "netns", "exec", self.name, *argv, check=check, input=input, timeout=timeout)

    def ip(self, *args, check=True):
        return self.exec("ip", *args, check=check)

    def links(self):
        return {link["ifname"]: link for link in json.loads(self.ip("-j", "-d", "link", "show").stdout)}

    def addresses(self, name):
        found = json.loads(self.ip("-j", "addr", "show", "dev", name).stdout)
        return [f"{a['local']}/{a['prefixlen']}" for link in found for a in link.get("addr_info", [])]

    def nft_tables(self):
        return self.exec("nft", "list", "tables").stdout.split("\n")

    def nft_table(self, family, name):
        result = self.exec("nft", "list", "table", family, name, check=False)
        return result.stdout if result.returncode == 0 else None

    def wrapper(self):
        """A command prefix running a program in this namespace with a sysfs of its own.

        liblxc reads /sys/class/net (a bridge without /sys/class/net/NAME/bridge is taken
        for Open vSwitch), so the program gets a private mount namespace with a sysfs
        mounted from inside the network namespace, the cgroup mounts moved over to it.
        """
        return ["nsenter", f"--net={self.path}", "unshare", "--mount", "--propagation", "slave",
                "sh", "-c", _SYSFS_SCRIPT, "sh"]

    def delete(self):
        pids = run("ip", "netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        run("ip", "netns", "del", self.name, check=False)


def veth(ns, name, peer_ns=None, peer=None):
    """A veth pair `name` (in `ns`) / `peer` (in `peer_ns`, or `ns` too); returns the peer name."""
    peer = peer or unique("tvp", 6)
    temp = unique("tvt", 6) if peer_ns is not None else peer
    ns.ip("link", "add", name, "type", "veth", "peer", "name", temp)
    if peer_ns is not None:
        ns.ip("link", "set", temp, "netns", peer_ns.name, "name", peer)
    return peer


def ping(ns, address, count=1, wait=1):
    """True when `address` answers a ping from namespace `ns` (busybox's ping: iputils may be absent)."""
    return ns.exec("busybox", "ping", "-c", str(count), "-W", str(wait), address, check=False).returncode == 0


def alive(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def daemon_in(ns, auto_init=False, timeout=120):
    """A test daemon running inside network namespace `ns`."""
    d = Daemon(auto_init=auto_init)
    d.wrapper = ns.wrapper()
    try:
        return d.start(timeout=timeout)
    except Exception:
        d.cleanup()
        raise


def free_subnet(taken=()):
    """A random 10.x.y.0/24 not in `taken` (namespaces of our own: only collisions among ours matter)."""
    while True:
        net = ipaddress.ip_network(f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(256)}.0/24")
        if net not in taken:
            return net


def container_pid(d, name):
    return d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]


def in_container(d, name, *argv, check=True):
    """A command in the container's network namespace (host tools, the container's interfaces)."""
    return run("nsenter", "-t", str(container_pid(d, name)), "-n", *argv, check=check)


def container_ipv4(d, name, ifname="eth0"):
    """The container's global IPv4 address on `ifname` from the state API, or None."""
    state = d.request("GET", f"/1.0/containers/{name}/state").metadata
    for address in ((state.get("network") or {}).get(ifname) or {}).get("addresses", []):
        if address["family"] == "inet" and address["scope"] == "global":
            return address["address"]
    return None


# -- fixtures shared by the network test modules ------------------------------------------------
@pytest.fixture(scope="module")
def ns():
    if os.geteuid() != 0:
        pytest.skip("network tests run as root (namespaces, bridges)")
    namespace = Netns()
    try:
        yield namespace
    finally:
        namespace.delete()


@pytest.fixture(scope="module")
def d(ns):
    """A daemon initialised like `lxdtx init --auto`, inside the namespace `ns`."""
    daemon = daemon_in(ns, auto_init=True)
    try:
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture
def network(d, ns):
    """A managed network created with the lxc client: (name, subnet); removed afterwards."""
    created = []

    def make(**config):
        name = unique("n", 6)
        subnet = free_subnet()
        config.setdefault("ipv4.address", f"{subnet.network_address + 1}/24")
        d.lxc("network", "create", name, *[f"{k}={v}" for k, v in config.items()])
        created.append(name)
        return name, subnet

    yield make
    for name in created:
        d.lxc("network", "delete", name, check=False)


@pytest.fixture
def containers(d):
    """Launch busybox containers (removed afterwards)."""
    names = []

    def launch(*args, start=True):
        name = unique("nc", 6)
        d.lxc("launch" if start else "init", "busybox", name, *args)
        names.append(name)
        return name

    yield launch
    for name in names:
        d.lxc("delete", "-f", name, check=False)
