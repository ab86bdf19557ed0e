# -*- test-case-name: tests.integration.test_networks -*-
"""The /proc/sys/net knobs a managed bridge needs (this process's network namespace).

Blocking file writes: call from a thread.
"""

import os

ROOT = "/proc/sys/net"


def read(key, root=ROOT):
    """The value of `key` (`ipv4/ip_forward`), or None when it does not exist."""
    try:
        with open(os.path.join(root, key)) as f:
            return f.read().strip()
    except OSError:
        return None


def write(key, value, root=ROOT):
    """Set `key`; a missing key (no IPv6, interface gone) raises FileNotFoundError."""
    with open(os.path.join(root, key), "w") as f:
        f.write(f"{value}\n")


def enable_ipv4_forwarding(root=ROOT):
    if read("ipv4/ip_forward", root) != "1":
        write("ipv4/ip_forward", "1", root)


def prepare_ipv6_bridge(name, root=ROOT):
    """A bridge serving IPv6: no autoconfiguration or DAD of its own, IPv6 on."""
    write(f"ipv6/conf/{name}/autoconf", "0", root)
    write(f"ipv6/conf/{name}/accept_dad", "0", root)
    write(f"ipv6/conf/{name}/disable_ipv6", "0", root)


def enable_ipv6_forwarding(root=ROOT):
    """Forward IPv6 on every interface, keeping router advertisements where they were accepted.

    Forwarding makes the kernel ignore RAs unless accept_ra is 2, so interfaces that
    accepted them (1) are moved to 2 first, as the reference does.
    """
    conf = os.path.join(root, "ipv6", "conf")
    try:
        names = sorted(os.listdir(conf))
    except FileNotFoundError:
        raise FileNotFoundError("The kernel has no IPv6 support") from None
    for name in names:
        if read(f"ipv6/conf/{name}/accept_ra", root) == "1":
            try:
                write(f"ipv6/conf/{name}/accept_ra", "2", root)
            except FileNotFoundError:
                pass
    for name in names:
        try:
            if read(f"ipv6/conf/{name}/forwarding", root) != "1":
                write(f"ipv6/conf/{name}/forwarding", "1", root)
        except FileNotFoundError:
            pass
