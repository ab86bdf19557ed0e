# -*- test-case-name: tests.unit.test_devlxd,tests.integration.test_devlxd -*-
"""Who is calling on the guest socket, and who may: the kernel's word (SO_PEERCRED), never the caller's.

The credentials are read once, when the connection is accepted. The caller's
container is the running one whose init shares a pid namespace with the caller
or with one of its ancestors (a process in a nested pid namespace inside the
container); `lxc exec` commands are in the container's own pid namespace.
"""

import os
import socket
import struct
from typing import NamedTuple

from lxdtx.config.types import is_true
from lxdtx.fsutil import read_text
from lxdtx.instance import idmap as idmaps

_UCRED = struct.Struct("3i")
# How far up its ancestors a caller's container is looked for.
MAX_ANCESTORS = 64


class Credentials(NamedTuple):
    """The peer's pid, uid and gid as the host sees them."""

    pid: int
    uid: int
    gid: int


def enabled(config):
    """Whether an expanded container config allows /dev/lxd (`security.devlxd`, default true)."""
    return is_true(config.get("security.devlxd") or "true")


def root_ids(config):
    """(uid, gid) on the host of a container's root, from its config's id map ((0, 0)
    when privileged); None when the map is unreadable (then nobody is its root)."""
    try:
        idmap = idmaps.running_map(config)
    except ValueError:
        return None
    return (idmap.host_uid(0), idmap.host_gid(0)) if idmap else (0, 0)


def peer_credentials(sock):
    """The Credentials of a connected unix socket's peer."""
    return Credentials(*_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)))


def pid_namespace(pid):
    """The inode of a process's pid namespace, or None when it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def parent_pid(pid):
    """A process's parent pid, or None."""
    for line in (read_text(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("PPid:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def container_of(pid, namespaces):
    """The name in `namespaces` ({pid namespace inode: container}) of the container the
    process `pid` runs in, or None (a host process, or one gone)."""
    for _ in range(MAX_ANCESTORS):
        if pid is None or pid <= 1:
            return None
        name = namespaces.get(pid_namespace(pid))
        if name is not None:
            return name
        pid = parent_pid(pid)
    return None
