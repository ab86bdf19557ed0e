# -*- test-case-name: tests.integration.test_proxy_devices -*-
"""One `proxy` device: listen in one namespace set, connect in another, forward.

    python3 -I -S proxy.py PIDFILE WATCH_PID LISTEN_PID LISTEN CONNECT_PID CONNECT

LISTEN and CONNECT are `tcp:HOST:PORT`, `unix:/path` or `unix:@abstract`; a *_PID
of 0 means the host's namespaces (this process's own), otherwise the network
and mount namespaces of that process (the container's init). The listener is
bound before this process goes to the background, so a bad address fails the
command; then it detaches, writes PIDFILE and forwards until it is told to stop
(SIGTERM) or WATCH_PID (the container's init) exits; the pid file is the
daemon's to remove. Unix to unix, descriptors and credentials pass too (Pair). Single-threaded on purpose:
setns into a mount namespace refuses a multi-threaded caller, and every outgoing
socket is made inside the connect side's namespaces (a socket keeps the
namespace it was created in).
"""

import array
import ctypes
import errno
import os
import selectors
import signal
import socket
import sys

CLONE_NEWNS = 0x20000
CLONE_NEWNET = 0x40000000
CHUNK = 1 << 16

libc = ctypes.CDLL(None, use_errno=True)


def fail(message):
    sys.stderr.write(message + "\n")
    sys.exit(1)


class Namespaces:
    """Open handles on the host's and a process's namespaces, to switch between them."""

    def __init__(self, pid):
        self.fds = None
        if pid:
            try:
                self.fds = [os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY) for ns in ("net", "mnt")]
            except OSError as e:
                fail(f"Failed to open the namespaces of the container: {e.strerror}")
        self.home = [os.open(f"/proc/self/ns/{ns}", os.O_RDONLY) for ns in ("net", "mnt")]

    def enter(self):
        if self.fds:
            _setns(self.fds)

    def leave(self):
        if self.fds:
            _setns(self.home)


def _setns(fds):
    for fd, kind in zip(fds, (CLONE_NEWNET, CLONE_NEWNS), strict=False):
        if libc.setns(fd, kind) != 0:
            fail(f"Failed to join a namespace: {os.strerror(ctypes.get_errno())}")


def parse(value):
    """(family, address) of a listen/connect value."""
    kind, _, rest = value.partition(":")
    if kind == "unix":
        if rest.startswith("@"):
            return socket.AF_UNIX, "\0" + rest[1:]
        return socket.AF_UNIX, rest
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def make_listener(namespaces, value):
    family, address = parse(value)
    namespaces.enter()
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_UNIX:
            if not address.startswith("\0") and os.path.exists(address):
                fail(f"Failed to listen on {value}: the path exists")
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            _bind(sock, address, inside=bool(namespaces.fds))
            sock.listen(64)
        except OSError as e:
            fail(f"Failed to listen on {value}: {e.strerror}")
    finally:
        namespaces.leave()
    sock.setblocking(False)
    return sock


def _bind(sock, address, inside):
    """Bind `sock`; a socket file inside a container is made owned like its directory: an
    idmapped rootfs has no id for the host's root (EOVERFLOW), and elsewhere the socket
    then belongs to the container's own root rather than to an id it has no name for."""
    if not inside or not isinstance(address, str) or address.startswith("\0"):
        sock.bind(address)
        return
    owner = os.stat(os.path.dirname(address) or ".")
    libc.setfsgid(owner.st_gid)
    libc.setfsuid(owner.st_uid)
    try:
        sock.bind(address)
    finally:
        libc.setfsuid(0)
        libc.setfsgid(0)


def connect(namespaces, value):
    """A non-blocking socket connecting to `value`, made inside the connect side's namespaces."""
    family, address = parse(value)
    namespaces.enter()
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(address)
    finally:
        namespaces.leave()
    if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
        sock.close()
        return None
    return sock


# Room for the ancillary data of one read: a full SCM_RIGHTS array and one SCM_CREDENTIALS.
ANCILLARY = socket.CMSG_SPACE(253 * 4) + socket.CMSG_SPACE(12)


class Segment:
    """Bytes waiting to be written, and the ancillary data that goes with their first byte."""

    def __init__(self, data, ancillary=(), fds=()):
        self.data = data
        self.ancillary = list(ancillary)
        self.fds = list(fds)  # received descriptors, ours to close once passed on

    def release(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.ancillary = []


def _ancillary(ancdata):
    """(ancillary to pass on, descriptors received) of what recvmsg gave: SCM_RIGHTS and
    SCM_CREDENTIALS, the rest dropped."""
    out, fds = [], []
    for level, kind, data in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_RIGHTS:
            received = list(array.array("i", data[:len(data) - len(data) % 4]))
            fds += received
            out.append((level, kind, array.array("i", received).tobytes()))
        elif kind == socket.SCM_CREDENTIALS:
            out.append((level, kind, data[:12]))
    return out, fds


class Pair:
    """Two joined sockets; each direction closes its half when its source ends.

    Between two unix sockets the ancillary data goes along: descriptors passed
    (SCM_RIGHTS) and the sender's credentials (SCM_CREDENTIALS, read with
    SO_PASSCRED), so the far end sees who is really talking.
    """

    def __init__(self, selector, a, b):
        self.selector = selector
        self.socks = (a, b)
        self.pending = {a: [], b: []}  # Segments waiting to be written to that socket
        self.eof = {a: False, b: False}  # that socket has no more to read
        self.unix = a.family == socket.AF_UNIX and b.family == socket.AF_UNIX
        if self.unix:
            for s in self.socks:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.registered = set(self.socks)
        for s in self.socks:
            selector.register(s, selectors.EVENT_READ, self)

    def peer(self, s):
        return self.socks[1] if s is self.socks[0] else self.socks[0]

    def _read(self, s):
        if not self.unix:
            data = s.recv(CHUNK)
            return Segment(data) if data else None
        data, ancdata, _, _ = s.recvmsg(CHUNK, ANCILLARY, socket.MSG_CMSG_CLOEXEC)
        ancillary, fds = _ancillary(ancdata)
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        return Segment(data, ancillary, fds)

    def ready(self, s, mask):
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(s)
            if mask & selectors.EVENT_READ and not self.eof[s]:
                segment = self._read(s)
                other = self.peer(s)
                if segment is not None:
                    self.pending[other].append(segment)
                    self._flush(other)
                else:
                    self.eof[s] = True
                    if not self.pending[other]:
                        other.shutdown(socket.SHUT_WR)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close()
            return
        if all(self.eof.values()) and not any(self.pending.values()):
            self.close()
            return
        self._update()

    def _send(self, s, segment):
        if not segment.ancillary:
            return s.send(segment.data)
        try:
            sent = s.sendmsg([segment.data], segment.ancillary)
        except (ProcessLookupError, PermissionError):
            # The credentials name a process that has gone: pass the rest without them.
            segment.ancillary = [a for a in segment.ancillary if a[1] != socket.SCM_CREDENTIALS]
            sent = s.sendmsg([segment.data], segment.ancillary)
        segment.release()  # the ancillary data went with the first byte
        return sent

    def _flush(self, s):
        queue = self.pending[s]
        while queue:
            segment = queue[0]
            sent = self._send(s, segment)
            segment.data = segment.data[sent:]
            if segment.data:
                break
            queue.pop(0)
        if not queue and self.eof[self.peer(s)]:
            s.shutdown(socket.SHUT_WR)

    def _queued(self, s):
        return sum(len(segment.data) for segment in self.pending[s])

    def _update(self):
        for s in self.socks:
            events = 0 if self.eof[s] or self._queued(self.peer(s)) > CHUNK * 4 else selectors.EVENT_READ
            if self.pending[s]:
                events |= selectors.EVENT_WRITE
            if events and s in self.registered:
                self.selector.modify(s, events, self)
            elif events:
                self.selector.register(s, events, self)
                self.registered.add(s)
            elif s in self.registered:
                self.selector.unregister(s)  # at its end and nothing to write: it would only spin
                self.registered.discard(s)

    def close(self):
        for s in self.socks:
            if s in self.registered:
                self.selector.unregister(s)
            s.close()
            for segment in self.pending[s]:
                segment.release()
            self.pending[s] = []
        self.registered.clear()


def detach(pidfile):
    """Go to the background; the parent exits once the pid file is written."""
    read, write = os.pipe()
    if os.fork():
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    os.close(read)
    os.setsid()
    if os.fork():
        os._exit(0)
    tmp = pidfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(tmp, pidfile)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.write(write, b"x")
    os.close(write)


class Stop(Exception):
    """SIGTERM: the device or the container goes."""


def _stop(*_):
    # Raised, not recorded: Python restarts an interrupted select by itself.
    raise Stop()


def serve(selector, listener, connect_ns, target):
    while True:
        for key, mask in selector.select():
            if key.data == "gone":
                return
            if key.data == "accept":
                try:
                    incoming, _ = listener.accept()
                except OSError:
                    continue
                incoming.setblocking(False)
                outgoing = connect(connect_ns, target)
                if outgoing is None:
                    incoming.close()
                    continue
                Pair(selector, incoming, outgoing)
            else:
                key.data.ready(key.fileobj, mask)


def main(argv):
    pidfile, watch_pid = argv[0], int(argv[1])
    listen_ns, listen = Namespaces(int(argv[2])), argv[3]
    connect_ns, target = Namespaces(int(argv[4])), argv[5]
    try:
        watch = os.pidfd_open(watch_pid)
    except OSError:
        fail("The container is not running")
    listener = make_listener(listen_ns, listen)
    detach(pidfile)

    signal.signal(signal.SIGTERM, _stop)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(watch, selectors.EVENT_READ, "gone")
    try:
        serve(selector, listener, connect_ns, target)
    except Stop:
        connect_ns.leave()  # the signal may have come while a socket was being made over there
        listen_ns.leave()
    family, address = parse(listen)
    if family == socket.AF_UNIX and not address.startswith("\0"):
        listen_ns.enter()
        try:
            os.unlink(address)
        except OSError:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
