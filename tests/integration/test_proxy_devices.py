"""`proxy` devices on real busybox containers: tcp, unix and abstract sockets, both directions, live."""

import array
import ctypes
import os
import socket
import subprocess
import threading
import uuid

import pytest

from tests.daemonproc import wait_until

pytestmark = pytest.mark.timeout(300)

NC_PORT = 7777


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_pid(d, name):
    return d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]


def _listening(pid, port):
    """Something in the network namespace of `pid` listens on tcp `port`."""
    lines = []
    for table in ("tcp", "tcp6"):  # busybox nc listens on the IPv6 wildcard where it can
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                lines += f.readlines()[1:]
        except OSError:
            pass
    return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A" for line in lines)


class Netcat:
    """`nc -l -p 7777` inside the container; what it received is `output()`."""

    def __init__(self, d, name):
        self.proc = subprocess.Popen(["lxc", "exec", name, "--", "nc", "-l", "-p", str(NC_PORT)], env=d.env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if not wait_until(lambda: _listening(_init_pid(d, name), NC_PORT), 30):
            self.close()
            raise AssertionError(f"nc never listened: {self.proc.stderr.read()!r}")

    def output(self):
        out, _ = self.proc.communicate(timeout=30)
        return out

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def nc(busybox_daemon, container):
    n = Netcat(busybox_daemon, container)
    try:
        yield n
    finally:
        n.close()


def _send(family, address, data):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(address)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.recv(100)  # the far end closes once nc has it


def _refused(family, address):
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(address)
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    return False


class HostListener:
    """A one-connection listener on the host; what it received is `data`."""

    def __init__(self, family, address):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(1)
        self.sock.settimeout(30)
        self.data = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            while chunk := conn.recv(4096):
                self.data += chunk

    def result(self):
        self.thread.join(30)
        self.sock.close()
        return self.data


def test_tcp_host_to_container(busybox_daemon, container, nc):
    """A host tcp port forwarded to a busybox `nc -l` in the container; removed live, it stops listening."""
    d = busybox_daemon
    port = _free_port()
    d.lxc("config", "device", "add", container, "p", "proxy",
          f"listen=tcp:127.0.0.1:{port}", f"connect=tcp:127.0.0.1:{NC_PORT}")
    _send(socket.AF_INET, ("127.0.0.1", port), b"hello from the host\n")
    assert nc.output() == b"hello from the host\n"
    d.lxc("config", "device", "remove", container, "p")
    assert wait_until(lambda: _refused(socket.AF_INET, ("127.0.0.1", port)), 10)


def test_tcp_container_to_host(busybox_daemon, container):
    """bind=container: a port inside the container reaches a listener on the host."""
    d = busybox_daemon
    port = _free_port()
    host = HostListener(socket.AF_INET, ("127.0.0.1", port))
    d.lxc("config", "device", "add", container, "p", "proxy", "bind=container",
          "listen=tcp:127.0.0.1:5555", f"connect=tcp:127.0.0.1:{port}")
    d.lxc("exec", container, "--", "sh", "-c", "echo hi from inside | nc 127.0.0.1 5555")
    assert host.result() == b"hi from inside\n"


def test_unix_and_abstract_listen_on_host(busybox_daemon, container, nc):
    """A unix socket path and an abstract socket on the host, both to nc in the container."""
    d = busybox_daemon
    path = f"/var/tmp/lxdtx-proxy-{uuid.uuid4().hex[:8]}.sock"
    try:
        d.lxc("config", "device", "add", container, "u", "proxy",
              f"listen=unix:{path}", f"connect=tcp:127.0.0.1:{NC_PORT}")
        _send(socket.AF_UNIX, path, b"over a unix path\n")
        assert nc.output() == b"over a unix path\n"
        d.lxc("config", "device", "remove", container, "u")
        assert wait_until(lambda: not os.path.exists(path), 10)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    second = Netcat(d, container)
    try:
        abstract = f"lxdtx-proxy-{uuid.uuid4().hex[:8]}"
        d.lxc("config", "device", "add", container, "a", "proxy",
              f"listen=unix:@{abstract}", f"connect=tcp:127.0.0.1:{NC_PORT}")
        _send(socket.AF_UNIX, "\0" + abstract, b"over an abstract socket\n")
        assert second.output() == b"over an abstract socket\n"
    finally:
        second.close()


def test_unix_in_container_to_unix_on_host(busybox_daemon, container):
    """bind=container with a unix path inside the container (its mount namespace) to a unix path on the host."""
    d = busybox_daemon
    host_path = f"/var/tmp/lxdtx-proxy-{uuid.uuid4().hex[:8]}.sock"
    host = HostListener(socket.AF_UNIX, host_path)
    try:
        d.lxc("config", "device", "add", container, "u", "proxy", "bind=container",
              "listen=unix:/tmp/proxied.sock", f"connect=unix:{host_path}")
        inside = f"/proc/{_init_pid(d, container)}/root/tmp/proxied.sock"
        assert d.lxc("exec", container, "--", "ls", "/tmp/proxied.sock").returncode == 0
        _send(socket.AF_UNIX, inside, b"through two unix sockets\n")
        assert host.result() == b"through two unix sockets\n"
        d.lxc("config", "device", "remove", container, "u")
        assert wait_until(lambda: d.lxc("exec", container, "--", "ls", "/tmp/proxied.sock",
                                        check=False).returncode != 0, 10)
    finally:
        os.unlink(host_path)


def test_tcp_in_container_to_unix_on_host(busybox_daemon, container):
    """bind=container: a tcp port inside the container reaches a unix socket on the host."""
    d = busybox_daemon
    host_path = f"/var/tmp/lxdtx-proxy-{uuid.uuid4().hex[:8]}.sock"
    host = HostListener(socket.AF_UNIX, host_path)
    try:
        d.lxc("config", "device", "add", container, "t", "proxy", "bind=container",
              "listen=tcp:127.0.0.1:5556", f"connect=unix:{host_path}")
        d.lxc("exec", container, "--", "sh", "-c", "echo tcp to unix | nc 127.0.0.1 5556")
        assert host.result() == b"tcp to unix\n"
    finally:
        os.unlink(host_path)


_libc = ctypes.CDLL(None, use_errno=True)


def _bind_owned_like_directory(sock, path):
    """Bind a unix socket at `path` as the owner of its directory: inside a container with an
    idmapped rootfs the host's root has no id, and its files could not be made (EOVERFLOW)."""
    owner = os.stat(os.path.dirname(path))
    _libc.setfsgid(owner.st_gid)
    _libc.setfsuid(owner.st_uid)
    try:
        sock.bind(path)
    finally:
        _libc.setfsuid(0)
        _libc.setfsgid(0)


class AncillaryListener:
    """A one-connection unix listener on the host keeping the descriptors and credentials it gets."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        _bind_owned_like_directory(self.sock, path)
        self.sock.listen(1)
        self.sock.settimeout(30)
        self.data, self.fds, self.creds = b"", [], []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            while True:
                data, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(16) + socket.CMSG_SPACE(12))
                for level, kind, payload in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        self.fds += list(array.array("i", payload[:len(payload) - len(payload) % 4]))
                    elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                        self.creds.append(tuple(array.array("i", payload[:12])))
                if not data:
                    return
                self.data += data

    def result(self):
        self.thread.join(30)
        self.sock.close()
        return self.data


def test_unix_to_unix_passes_descriptors_and_credentials(busybox_daemon, container):
    """Unix to unix, a descriptor sent through the proxy arrives usable, and the far end sees
    the credentials of the real sender, not the proxy's."""
    d = busybox_daemon
    host_path = f"/var/tmp/lxdtx-proxy-{uuid.uuid4().hex[:8]}.sock"
    host = AncillaryListener(host_path)
    read_end, write_end = os.pipe()
    try:
        d.lxc("config", "device", "add", container, "u", "proxy", "bind=container",
              "listen=unix:/tmp/fd.sock", f"connect=unix:{host_path}")
        inside = f"/proc/{_init_pid(d, container)}/root/tmp/fd.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(inside)
            s.sendmsg([b"take this"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [read_end]))])
            s.shutdown(socket.SHUT_WR)
            s.recv(10)
        assert host.result() == b"take this"
        assert len(host.fds) == 1, host.fds
        os.write(write_end, b"through the proxy")
        os.close(write_end)
        write_end = None
        with os.fdopen(host.fds.pop(), "rb") as received:
            assert received.read() == b"through the proxy"
        assert host.creds and host.creds[0] == (os.getpid(), 0, 0), host.creds
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)
        for fd in host.fds:
            os.close(fd)
        os.unlink(host_path)


def test_abstract_on_host_to_unix_in_container(busybox_daemon, container):
    """bind=host, an abstract socket on the host to a unix path inside the container (its mount
    namespace), descriptors passed along; the listener is bound from the host through /proc/PID/root."""
    d = busybox_daemon
    inside = AncillaryListener(f"/proc/{_init_pid(d, container)}/root/tmp/in.sock")
    abstract = f"lxdtx-proxy-{uuid.uuid4().hex[:8]}"
    read_end, write_end = os.pipe()
    try:
        d.lxc("config", "device", "add", container, "a", "proxy", f"listen=unix:@{abstract}",
              "connect=unix:/tmp/in.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect("\0" + abstract)
            s.sendmsg([b"inwards"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [write_end]))])
            s.shutdown(socket.SHUT_WR)
            s.recv(10)
        assert inside.result() == b"inwards"
        assert len(inside.fds) == 1, inside.fds
        os.write(inside.fds[0], b"back out")
        os.close(inside.fds.pop())
        os.close(write_end)
        write_end = None
        assert os.read(read_end, 100) == b"back out"
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)
        for fd in inside.fds:
            os.close(fd)


def test_started_with_container_and_survives_daemon_restart(busybox_daemon, container):
    """A proxy in the config starts with the container, keeps forwarding while the daemon restarts."""
    d = busybox_daemon
    port = _free_port()
    d.lxc("stop", container, "--force")
    d.lxc("config", "device", "add", container, "p", "proxy",
          f"listen=tcp:127.0.0.1:{port}", f"connect=tcp:127.0.0.1:{NC_PORT}")
    assert _refused(socket.AF_INET, ("127.0.0.1", port))
    d.lxc("start", container)
    d.stop()
    d.start(timeout=120)
    n = Netcat(d, container)
    try:
        _send(socket.AF_INET, ("127.0.0.1", port), b"after the restart\n")
        assert n.output() == b"after the restart\n"
    finally:
        n.close()
    # The restarted daemon still finds the helper to stop it.
    d.lxc("config", "device", "remove", container, "p")
    assert wait_until(lambda: _refused(socket.AF_INET, ("127.0.0.1", port)), 10)


def test_container_stop_ends_the_proxy(busybox_daemon, container):
    """The helper goes when the container stops."""
    d = busybox_daemon
    port = _free_port()
    d.lxc("config", "device", "add", container, "p", "proxy",
          f"listen=tcp:127.0.0.1:{port}", f"connect=tcp:127.0.0.1:{NC_PORT}")
    assert not _refused(socket.AF_INET, ("127.0.0.1", port))
    d.lxc("stop", container, "--force")
    assert wait_until(lambda: _refused(socket.AF_INET, ("127.0.0.1", port)), 10)


@pytest.mark.parametrize("listen", ["tcp:127.0.0.1", "tcp:127.0.0.1:0", "tcp:127.0.0.1:70000", "udp:1.2.3.4:5",
                                    "unix:", "nonsense"])
def test_bad_listen_address(busybox_daemon, container, listen):
    """A bad listen address is refused with the key named; the container keeps no such device."""
    d = busybox_daemon
    result = d.lxc("config", "device", "add", container, "p", "proxy", f"listen={listen}",
                   "connect=tcp:127.0.0.1:1", check=False)
    assert result.returncode != 0
    assert "listen" in result.stderr
    assert "p" not in d.request("GET", f"/1.0/containers/{container}").metadata["devices"]


def test_listen_in_use_is_refused(busybox_daemon, container):
    """A listen address already taken fails the add, and nothing is recorded."""
    d = busybox_daemon
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = d.lxc("config", "device", "add", container, "p", "proxy",
                       f"listen=tcp:127.0.0.1:{port}", "connect=tcp:127.0.0.1:1", check=False)
    assert result.returncode != 0
    assert "Failed to listen" in result.stderr
    assert "p" not in d.request("GET", f"/1.0/containers/{container}").metadata["devices"]


def test_unknown_proxy_key(busybox_daemon, container):
    """An unknown key of a proxy device is named in the error."""
    result = busybox_daemon.lxc("config", "device", "add", container, "p", "proxy", "listen=tcp:127.0.0.1:1",
                                "connect=tcp:127.0.0.1:2", "bogus=1", check=False)
    assert result.returncode != 0 and "bogus" in result.stderr


def test_changed_live_on_the_same_unix_path(busybox_daemon, container, nc):
    """`lxc config device set` on a unix-listen proxy: the new helper takes over the same path."""
    d = busybox_daemon
    path = f"/var/tmp/lxdtx-proxy-{uuid.uuid4().hex[:8]}.sock"
    try:
        d.lxc("config", "device", "add", container, "u", "proxy", f"listen=unix:{path}", "connect=tcp:127.0.0.1:1")
        d.lxc("config", "device", "set", container, "u", "connect", f"tcp:127.0.0.1:{NC_PORT}")
        _send(socket.AF_UNIX, path, b"to the new target\n")
        assert nc.output() == b"to the new target\n"
    finally:
        d.lxc("config", "device", "remove", container, "u", check=False)
        if os.path.exists(path):
            os.unlink(path)
