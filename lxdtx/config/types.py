# -*- test-case-name: tests.unit.test_config -*-
"""Value validators and parsers shared by every key schema.

A validator takes the string value and raises ValueError with the reason; the
empty string means "unset" and passes every validator (checked by the schema).
"""

import ipaddress
import re

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}

# Size suffixes at this API level are binary multiples; KiB/MiB/... and KB are refused.
_SIZE_SUFFIXES = {"": 1, "B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30,
                  "TB": 1 << 40, "PB": 1 << 50, "EB": 1 << 60}
_BIT_SUFFIXES = {"kbit": 10**3, "Mbit": 10**6, "Gbit": 10**9, "Tbit": 10**12,
                 "Pbit": 10**15, "Ebit": 10**18}


def parse_bool(value):
    """True/False for the boolean spellings LXD accepts."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"Invalid value for a boolean: {value}")


def is_true(value):
    """A key's value read as a boolean, "" and invalid spellings being false."""
    return (value or "").lower() in _TRUE


def is_bool(value):
    parse_bool(value)


def parse_int64(value):
    try:
        number = int(value, 10)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid value for an integer: {value}")
    if not -(1 << 63) <= number < (1 << 63):
        raise ValueError(f"Invalid value for an integer: {value}")
    return number


def is_int64(value):
    parse_int64(value)


def is_uint32(value):
    number = parse_int64(value)
    if not 0 <= number < (1 << 32):
        raise ValueError(f"Invalid value for uint32: {value}")


def is_priority(value):
    number = parse_int64(value)
    if not 0 <= number <= 10:
        raise ValueError(f"Invalid value for a limit '{value}'. Must be between 0 and 10")


def parse_size(value):
    """Bytes for a size string (`10GB`, `512MB`, `4096`)."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value or "")
    if not m:
        raise ValueError(f"Invalid value for a size: {value}")
    number, suffix = int(m.group(1)), m.group(2)
    if suffix not in _SIZE_SUFFIXES:
        raise ValueError(f"Unsupported suffix: {suffix}")
    return number * _SIZE_SUFFIXES[suffix]


def is_size(value):
    parse_size(value)


def parse_bit_rate(value):
    """Bits per second for `100Mbit` and friends (a bare number is refused)."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]+)\s*", value or "")
    if not m or m.group(2) not in _BIT_SUFFIXES:
        raise ValueError(f"Invalid value for a bit rate: {value}")
    return int(m.group(1)) * _BIT_SUFFIXES[m.group(2)]


def is_bit_rate(value):
    parse_bit_rate(value)


def is_percent_or_size(value):
    if value.endswith("%"):
        parse_int64(value[:-1])
    else:
        parse_size(value)


def is_any(value):
    pass


def one_of(*choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"Invalid value: {value} (must be one of {', '.join(choices)})")

    return check


def is_cidr(value):
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"Invalid CIDR: {value}")
    if "/" not in value:
        raise ValueError(f"Invalid CIDR: {value}")


def is_ipv4(value):
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"Invalid IPv4 address: {value}")


def is_ipv6(value):
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        raise ValueError(f"Invalid IPv6 address: {value}")


def is_host_port(value):
    """`host[:port]`, `[v6]:port`, `0.0.0.0`, `[::]`."""
    parse_host_port(value, 8443)


def parse_host_port(value, default_port):
    """(host, port) from `host[:port]`; IPv6 may be bracketed."""
    value = value.strip()
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", value)
    if m:
        host, port = m.group(1), m.group(2)
    elif value.count(":") > 1:
        host, port = value, None
    else:
        host, _, port = value.partition(":")
        port = port or None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Invalid port: {port}")
        port = int(port)
    else:
        port = default_port
    if not host:
        raise ValueError(f"Invalid address: {value}")
    return host, port


def is_mac(value):
    if not re.fullmatch(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}", value):
        raise ValueError(f"Invalid MAC address: {value}")


def is_octal_mode(value):
    try:
        mode = int(value, 8)
    except ValueError:
        raise ValueError(f"Invalid mode: {value}")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"Invalid mode: {value}")
