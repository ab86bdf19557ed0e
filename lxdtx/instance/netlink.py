# -*- test-case-name: tests.unit.test_netlink -*-
"""A container's network interfaces read over rtnetlink, without spawning a process.

A netlink socket belongs to the network namespace it was created in. So a
dedicated thread joins the container's namespace just long enough to create
the socket (namespaces of the network kind are per thread), goes back to the
host's, and then dumps links and addresses over that socket.
"""

import ctypes
import errno
import os
import socket

from pyroute2.netlink import NETLINK_ROUTE, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE
from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

CLONE_NEWNET = 0x40000000
IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)

_SCOPES = {0: "global", 200: "site", 253: "link", 254: "local"}
_TYPES = {1: "broadcast", 772: "loopback", 65534: "point-to-point", 768: "point-to-point", 776: "point-to-point"}


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _socket_in(pid):
    """A NETLINK_ROUTE socket in the network namespace of `pid` (call from a dedicated thread).

    The calling thread enters that namespace and comes back to the one it was in, held
    open for the call (not a descriptor kept from import time).
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            finally:
                _setns(home)
        finally:
            os.close(target)
    finally:
        os.close(home)


def _dump(sock, request, msg_type, seq):
    """Every answer to a dump `request` (a pyroute2 message) sent over `sock`."""
    request["header"].update(type=msg_type, flags=NLM_F_REQUEST | NLM_F_DUMP, sequence_number=seq)
    request.encode()
    sock.send(request.data)
    marshal = MarshalRtnl()
    messages = []
    while True:
        for msg in marshal.parse(sock.recv(1 << 20)):
            error = msg["header"].get("error")
            if error is not None:
                code = getattr(error, "code", 0) or errno.EIO
                raise OSError(code, os.strerror(code))
            if msg["header"]["type"] == NLMSG_DONE:
                return messages
            messages.append(msg)


def _payload(slot):
    """An attribute's bytes as the kernel sent them (pyroute2's decoders would reshape or
    reject them: link addresses of other lengths than 6, names that are not UTF-8)."""
    cell = slot.cell[1]
    return bytes(cell.data[cell.offset + 4:cell.offset + cell.length])


def interface_name(raw):
    """An interface name as text: the kernel allows any bytes but NUL, '/', ':' and
    whitespace, so one need not be UTF-8; bytes that are not become U+FFFD, as
    LXD's JSON shows them."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _mac(raw):
    return ":".join(f"{b:02x}" for b in raw)


def _link(msg):
    """(raw name, state entry) of one RTM_NEWLINK message: a single pass over its attributes,
    decoding only the ones read (pyroute2 decodes an attribute when its value is asked for)."""
    raw_name, hwaddr, mtu, operstate = b"", b"", 0, "unknown"
    counters = {"bytes_received": 0, "bytes_sent": 0, "packets_received": 0, "packets_sent": 0}
    for slot in msg["attrs"]:
        name = slot.name
        if name == "IFLA_IFNAME":
            raw_name = _payload(slot)
        elif name == "IFLA_ADDRESS":
            hwaddr = _payload(slot)
        elif name == "IFLA_MTU":
            mtu = slot.value
        elif name == "IFLA_OPERSTATE":
            operstate = str(slot.value).lower()
        elif name == "IFLA_STATS64":
            stats = slot.value
            if isinstance(stats, dict):
                counters = {"bytes_received": stats["rx_bytes"], "bytes_sent": stats["tx_bytes"],
                            "packets_received": stats["rx_packets"], "packets_sent": stats["tx_packets"]}
    return raw_name, {
        "addresses": [],
        "counters": counters,
        "hwaddr": _mac(hwaddr),
        "host_name": "",
        "mtu": mtu,
        "state": "up" if msg["flags"] & IFF_UP and operstate in ("up", "unknown") else "down",
        "type": _TYPES.get(msg["ifi_type"], "broadcast"),
    }


def _address(msg):
    """The state entry of one RTM_NEWADDR message, or None for other families."""
    family = msg["family"]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    local = address = None
    for slot in msg["attrs"]:
        if slot.name == "IFA_LOCAL":
            local = slot.value
        elif slot.name == "IFA_ADDRESS":
            address = slot.value
    if not (local or address):
        return None
    return {
        "family": "inet" if family == socket.AF_INET else "inet6",
        "address": local or address,
        "netmask": str(msg["prefixlen"]),
        "scope": _SCOPES.get(msg["scope"], "global"),
    }


def interfaces(pid):
    """{ifname: {...}} as the `network` section of a container's state (blocking)."""
    sock = _socket_in(pid)
    try:
        links = {}
        for msg in _dump(sock, ifinfmsg(), RTM_GETLINK, 1):
            if msg["header"]["type"] == RTM_NEWLINK:
                links[msg["index"]] = _link(msg)
        for msg in _dump(sock, ifaddrmsg(), RTM_GETADDR, 2):
            if msg["header"]["type"] != RTM_NEWADDR or msg["index"] not in links:
                continue
            entry = _address(msg)
            if entry is not None:
                links[msg["index"]][1]["addresses"].append(entry)
        found = {}
        for raw_name, info in links.values():
            name = interface_name(raw_name)
            if name in found:  # two names alike once decoded: the second shows its bytes
                name = raw_name.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
            found[name] = info
        return found
    finally:
        sock.close()
