# -*- test-case-name: tests.unit.test_netlink -*-
"""A container's network interfaces read over rtnetlink, without spawning a process.

A netlink socket belongs to the network namespace it was created in. So a
dedicated thread joins the container's namespace just long enough to create
the socket (namespaces of the network kind are per thread), goes back to the
host's, and then dumps links and addresses over that socket.
"""

import ctypes
import os
import socket
import struct

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_OPERSTATE, IFLA_STATS64 = 1, 3, 4, 16, 23
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_HOST_NETNS = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

_SCOPES = {0: "global", 200: "site", 253: "link", 254: "local"}
_TYPES = {1: "broadcast", 772: "loopback", 65534: "point-to-point", 768: "point-to-point", 776: "point-to-point"}
_OPERSTATES = {0: "unknown", 1: "notpresent", 2: "down", 3: "lowerlayerdown", 4: "testing", 5: "dormant", 6: "up"}


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _socket_in(pid):
    """A NETLINK_ROUTE socket in the network namespace of `pid` (call from a dedicated thread)."""
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        finally:
            _setns(_HOST_NETNS)
    finally:
        os.close(target)


def _attributes(data, offset):
    attrs = {}
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, offset)
        if length < 4:
            break
        attrs[kind & 0x3FFF] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return attrs


def _dump(sock, msg_type, payload, seq):
    header = struct.pack("IHHII", 16 + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    sock.send(header + payload)
    messages = []
    while True:
        data = sock.recv(1 << 20)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _, _, _ = struct.unpack_from("IHHII", data, offset)
            if kind == NLMSG_DONE:
                return messages
            if kind == NLMSG_ERROR:
                code = struct.unpack_from("i", data, offset + 16)[0]
                raise OSError(-code, os.strerror(-code))
            messages.append((kind, data[offset + 16:offset + length]))
            offset += (length + 3) & ~3


def interface_name(raw):
    """An interface name as text: the kernel allows any bytes but NUL, '/', ':' and
    whitespace, so one need not be UTF-8; bytes that are not become U+FFFD, as
    LXD's JSON shows them."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _mac(raw):
    return ":".join(f"{b:02x}" for b in raw)


def interfaces(pid):
    """{ifname: {...}} as the `network` section of a container's state (blocking)."""
    sock = _socket_in(pid)
    try:
        links = {}
        for kind, body in _dump(sock, RTM_GETLINK, struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0), 1):
            if kind != RTM_NEWLINK:
                continue
            _, arp_type, index, flags, _ = struct.unpack_from("BxHiII", body)
            attrs = _attributes(body, 16)
            raw_name = attrs.get(IFLA_IFNAME, b"")
            counters = {"bytes_received": 0, "bytes_sent": 0, "packets_received": 0, "packets_sent": 0}
            stats = attrs.get(IFLA_STATS64)
            if stats and len(stats) >= 32:
                rx_packets, tx_packets, rx_bytes, tx_bytes = struct.unpack_from("QQQQ", stats)
                counters = {"bytes_received": rx_bytes, "bytes_sent": tx_bytes,
                            "packets_received": rx_packets, "packets_sent": tx_packets}
            operstate = _OPERSTATES.get(attrs.get(IFLA_OPERSTATE, b"\0")[0], "unknown")
            links[index] = (raw_name, {
                "addresses": [],
                "counters": counters,
                "hwaddr": _mac(attrs.get(IFLA_ADDRESS, b"")),
                "host_name": "",
                "mtu": struct.unpack("I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0,
                "state": "up" if flags & IFF_UP and operstate in ("up", "unknown") else "down",
                "type": _TYPES.get(arp_type, "broadcast"),
            })
        for kind, body in _dump(sock, RTM_GETADDR, struct.pack("BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0), 2):
            if kind != RTM_NEWADDR:
                continue
            family, prefix, _, scope, index = struct.unpack_from("BBBBI", body)
            attrs = _attributes(body, 8)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if index not in links or raw is None or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            links[index][1]["addresses"].append({
                "family": "inet" if family == socket.AF_INET else "inet6",
                "address": socket.inet_ntop(family, raw),
                "netmask": str(prefix),
                "scope": _SCOPES.get(scope, "global"),
            })
        found = {}
        for raw_name, info in links.values():
            name = interface_name(raw_name)
            if name in found:  # two names alike once decoded: the second shows its bytes
                name = raw_name.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
            found[name] = info
        return found
    finally:
        sock.close()
