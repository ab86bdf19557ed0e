# -*- test-case-name: tests.integration.test_server -*-
"""Facts about the host: kernel, architectures, addresses, CPU and memory."""

import fcntl
import ipaddress
import os
import socket
import struct

_SIOCGIFADDR = 0x8915

def _ipv4_addresses():
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            found.append(ipaddress.IPv4Address(raw[20:24]))
    return found


def _ipv6_addresses():
    found = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                found.append(ipaddress.IPv6Address(int(line.split()[0], 16)))
    except OSError:
        pass
    return found


def listen_addresses(host, port):
    """`host:port` strings a client can reach for a listener on host:port.

    A wildcard host expands to every global address of the host (IPv6 only for `::`).
    """
    wildcard_v4 = host in ("0.0.0.0", "")
    wildcard_v6 = host in ("::", "[::]")
    if not (wildcard_v4 or wildcard_v6):
        return [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    result = [f"{a}:{port}" for a in _ipv4_addresses() if not (a.is_loopback or a.is_link_local)]
    if wildcard_v6:
        result += [f"[{a}]:{port}" for a in _ipv6_addresses() if not (a.is_loopback or a.is_link_local)]
    return result


def cpu():
    """The `cpu` object of /1.0/resources."""
    sockets = {}
    vendor = name = ""
    frequency = 0
    current = {}
    with open("/proc/cpuinfo") as f:
        for line in f.read().splitlines() + [""]:
            if not line.strip():
                if current:
                    socket_id = int(current.get("physical id", "0"))
                    entry = sockets.setdefault(socket_id, {"cores": set(), "threads": 0})
                    entry["cores"].add(current.get("core id", current.get("processor")))
                    entry["threads"] += 1
                    vendor = current.get("vendor_id", vendor)
                    name = current.get("model name", name)
                    frequency = int(float(current.get("cpu MHz", frequency) or 0))
                current = {}
                continue
            key, _, value = line.partition(":")
            current[key.strip()] = value.strip()
    result = []
    for socket_id in sorted(sockets):
        entry = sockets[socket_id]
        result.append({
            "cores": len(entry["cores"]), "frequency": frequency, "frequency_turbo": frequency,
            "name": vendor, "vendor": name, "threads": entry["threads"],
        })
    return {"sockets": result, "total": sum(s["threads"] for s in result)}


def memory():
    """The `memory` object of /1.0/resources (bytes)."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            info[key] = int(value.split()[0]) * 1024
    total = info.get("MemTotal", 0)
    return {"used": total - info.get("MemAvailable", info.get("MemFree", 0)), "total": total}


def apparmor_enabled():
    """Whether AppArmor confines processes on this host."""
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y" and os.path.exists("/sys/kernel/security/apparmor")
    except OSError:
        return False
