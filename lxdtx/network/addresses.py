# -*- test-case-name: tests.unit.test_network_addresses -*-
"""Subnets of networks: parsing, overlap checks, and picking a free one for `auto`.

`auto` follows the reference: a random `10.X.Y.1/24`, or `fd42:X:Y:Z::1/64`,
that overlaps neither a route of the host nor another managed network. Default
routes (`0.0.0.0/0`, `::/0`) overlap everything and are ignored.
"""

import ipaddress
import secrets

NONE_VALUES = ("", "none")


def interface(value):
    """The ip_interface of an `ipv4.address`/`ipv6.address` value, or None for ""/none/auto."""
    if value in NONE_VALUES or value == "auto":
        return None
    return ipaddress.ip_interface(value)


def subnet(value):
    """The network of an address key's value, or None."""
    found = interface(value)
    return found.network if found else None


def host(network, index):
    """The index-th address of a network; negative counts back from the end (-1: broadcast)."""
    if index >= 0:
        return network.network_address + index
    return network.broadcast_address + index + 1


def overlapping(candidate, taken):
    """The first network in `taken` that overlaps `candidate`, or None."""
    for other in taken:
        if other.version == candidate.version and other.prefixlen > 0 and candidate.overlaps(other):
            return other
    return None


def random_ipv4(randbelow=secrets.randbelow):
    return ipaddress.ip_interface(f"10.{randbelow(256)}.{randbelow(256)}.1/24")


def random_ipv6(randbelow=secrets.randbelow):
    return ipaddress.ip_interface(
        f"fd42:{randbelow(65536):x}:{randbelow(65536):x}:{randbelow(65536):x}::1/64")


def pick_free(version, taken, randbelow=secrets.randbelow, attempts=100):
    """A random free subnet's first address (`10.X.Y.1/24` or `fd42:...::1/64`) as a string.

    Raises ValueError when none was found in `attempts` tries.
    """
    make = random_ipv4 if version == 4 else random_ipv6
    for _ in range(attempts):
        candidate = make(randbelow)
        if overlapping(candidate.network, taken) is None:
            return str(candidate)
    raise ValueError(f"Failed to automatically find an unused IPv{version} subnet, manual configuration required")


def parse_ranges(value, version):
    """[(first, last)] of a `first-last[,first-last]` value; ValueError names the bad part."""
    ranges = []
    for part in value.split(","):
        part = part.strip()
        first, sep, last = part.partition("-")
        try:
            first_ip = ipaddress.ip_address(first.strip())
            last_ip = ipaddress.ip_address(last.strip())
        except ValueError:
            raise ValueError(f"Invalid IPv{version} range: {part!r} (want first-last)") from None
        if not sep or first_ip.version != version or last_ip.version != version:
            raise ValueError(f"Invalid IPv{version} range: {part!r} (want first-last)")
        if last_ip < first_ip:
            raise ValueError(f"Invalid IPv{version} range: {part!r} (last before first)")
        ranges.append((first_ip, last_ip))
    return ranges


def parse_routes(value, version):
    """The networks of a comma-separated `ipv4.routes`/`ipv6.routes` value."""
    routes = []
    for part in value.split(","):
        part = part.strip()
        try:
            network = ipaddress.ip_network(part, strict=True)
        except ValueError:
            raise ValueError(f"Invalid IPv{version} route: {part!r} (want a network in CIDR notation)") from None
        if network.version != version or "/" not in part:
            raise ValueError(f"Invalid IPv{version} route: {part!r} (want a network in CIDR notation)")
        routes.append(network)
    return routes
