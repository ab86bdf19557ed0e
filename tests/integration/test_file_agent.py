"""The file API works where the container's root would: planted links to kernel files, host
files the container cannot write, and file systems that never answer."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.daemonproc import wait_until

pytestmark = pytest.mark.timeout(300)


def _pid(d, name):
    return d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]


def _sh(d, name, script, check=True):
    return d.lxc("exec", name, "--", "sh", "-c", script, check=check)


@pytest.fixture
def hostname():
    """The host's hostname, put back should a test change it."""
    before = socket.gethostname()
    try:
        yield before
    finally:
        if socket.gethostname() != before:
            subprocess.run(["hostname", before], check=False)


def test_planted_links_to_kernel_files_are_refused(busybox_daemon, container, workdir, hostname):
    """Links into a proc the container mounted itself (its hostname sysctl writes the writer's
    namespace) and to sysrq-trigger: pushes through them are refused, the host unchanged."""
    d = busybox_daemon
    _sh(d, container, "mkdir -p /mnt/p && mount -t proc proc /mnt/p && "
        "ln -s /mnt/p/sys/kernel/hostname /root/hostname && ln -s /proc/sysrq-trigger /root/sysrq && "
        "ln -s /mnt/p/sysrq-trigger /root/sysrq2 && ln -s /proc/sys/kernel/hostname /root/hostname2")
    src = os.path.join(workdir, "payload")
    with open(src, "w") as f:
        f.write("pwned\n")
    for link in ("hostname", "hostname2", "sysrq", "sysrq2"):
        result = d.lxc("file", "push", src, f"{container}/root/{link}", check=False)
        assert result.returncode != 0, link
        assert socket.gethostname() == hostname
    result = d.request("POST", f"/1.0/containers/{container}/files?path=/root/hostname", raw=b"pwned\n")
    assert result.status == 403
    assert "proc file systems are not allowed" in result.json["error"]
    # Reads of kernel files are refused the same way, and a directory of one cannot be made.
    assert d.request("GET", f"/1.0/containers/{container}/files?path=/mnt/p/sys/kernel/hostname").status == 403
    assert d.request("POST", f"/1.0/containers/{container}/files?path=/mnt/p/x",
                     headers={"X-LXD-type": "directory"}).status == 403
    assert socket.gethostname() == hostname
    # Ordinary files still work next to them.
    d.lxc("file", "push", src, f"{container}/root/plain")
    assert _sh(d, container, "cat /root/plain").stdout == "pwned\n"


def test_host_files_mounted_in_keep_their_owner_rights(busybox_daemon, container, workdir):
    """A host directory given to the container holds a file of host root (an id the container
    does not map): the container cannot write it, and neither can a push through its link."""
    d = busybox_daemon
    shared = tempfile.mkdtemp(prefix="lxdtx-shared-", dir="/var/tmp")
    try:
        secret = os.path.join(shared, "secret")
        with open(secret, "w") as f:
            f.write("host only\n")
        os.chmod(secret, 0o666)  # world-writable on the host: only the owner check is left
        os.chmod(shared, 0o755)
        os.chown(shared, 0, 0)
        d.lxc("config", "device", "add", container, "shared", "disk", f"source={shared}", "path=/mnt/shared")
        _sh(d, container, "ln -s /mnt/shared/secret /root/secret")
        src = os.path.join(workdir, "payload")
        with open(src, "w") as f:
            f.write("changed\n")
        # 0666: the container's root may write it like anyone; make it 0644 (owner host root).
        os.chmod(secret, 0o644)
        assert _sh(d, container, "echo x > /mnt/shared/secret", check=False).returncode != 0
        result = d.lxc("file", "push", src, f"{container}/root/secret", check=False)
        assert result.returncode != 0
        with open(secret) as f:
            assert f.read() == "host only\n"
        # A new file in it is the container root's, as one it made itself would be.
        d.lxc("file", "push", src, f"{container}/tmp/new")
        assert os.stat(f"/proc/{_pid(d, container)}/root/tmp/new").st_uid >= 100000
    finally:
        d.lxc("config", "device", "remove", container, "shared", check=False)
        shutil.rmtree(shared, ignore_errors=True)


class _StuckFuse:
    """A FUSE mount inside a container whose server never answers: every look-up below it
    waits until the server's /dev/fuse fd is closed (which aborts the connection)."""

    SCRIPT = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pid, fd, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
if libc.setns(ns, 0x20000) != 0:
    sys.exit("setns: " + os.strerror(ctypes.get_errno()))
options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
if libc.mount(b"stuck", target.encode(), b"fuse", 0, options) != 0:
    sys.exit("mount: " + os.strerror(ctypes.get_errno()))
"""

    def __init__(self, pid, target):
        self.pid = pid
        self.target = target
        self.fd = os.open("/dev/fuse", os.O_RDWR)
        subprocess.run([sys.executable, "-c", self.SCRIPT, str(pid), str(self.fd), target],
                       pass_fds=[self.fd], check=True, timeout=30)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        subprocess.run(["nsenter", "-t", str(self.pid), "-m", "umount", "-l", self.target],
                       capture_output=True, timeout=30)


def _timed(fn):
    start = time.monotonic()
    fn()
    return time.monotonic() - start


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse: the kernel has no FUSE")
def test_stuck_container_files_hold_up_nobody_else(busybox_daemon, workdir):
    """Container A has a FIFO at /etc/hostname and a FUSE mount that never answers, with ten
    file pulls stuck in it: container B's exec, file push and `lxc list` still answer within a
    second, and so do A's other file operations."""
    d = busybox_daemon
    a, b = f"stuck-a{os.getpid() % 1000}", f"stuck-b{os.getpid() % 1000}"
    pulls, fuse = [], None
    try:
        d.lxc("launch", "busybox", a)
        d.lxc("launch", "busybox", b)
        _sh(d, a, "rm -f /etc/hostname && mkfifo /etc/hostname && mkdir -p /mnt/stuck")
        fuse = _StuckFuse(_pid(d, a), "/mnt/stuck")
        for n in range(10):
            pulls.append(subprocess.Popen(["lxc", "file", "pull", f"{a}/mnt/stuck/file{n}",
                                           os.path.join(workdir, f"out{n}")],
                                          env=d.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)
        assert all(p.poll() is None for p in pulls), "the pulls should be waiting on the FUSE mount"
        # The FIFO is no regular file: refused at once, not opened.
        fifo = d.request("GET", f"/1.0/containers/{a}/files?path=/etc/hostname", timeout=5)
        assert fifo.status == 400
        src = os.path.join(workdir, "small")
        with open(src, "w") as f:
            f.write("data\n")
        assert _timed(lambda: d.lxc("exec", b, "--", "true")) < 1
        assert _timed(lambda: d.lxc("file", "push", src, f"{b}/root/small")) < 1
        assert _timed(lambda: d.lxc("list")) < 1
        assert _timed(lambda: d.lxc("file", "push", src, f"{a}/root/small")) < 1
        assert _timed(lambda: d.lxc("file", "pull", f"{a}/root/small", os.path.join(workdir, "back"))) < 1
        # Clients that give up leave nothing of theirs in the agent.
        for p in pulls:
            p.kill()
            p.wait(10)
        assert wait_until(lambda: not _agent_forks(d), timeout=10)
    finally:
        for p in pulls:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if fuse is not None:
            fuse.close()
        d.lxc("delete", "-f", a, check=False)
        d.lxc("delete", "-f", b, check=False)


def _descendants(pid):
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        found += children
        todo += children
    return found


def _agents(d, name):
    """The file agents of the daemon's container `name` (not their forks)."""
    return [pid for pid in _descendants(d.proc.pid)
            if _is_agent(pid, name) and not _is_agent(_parent(pid))]


def _agent_forks(d):
    """Forks of the daemon's file agents serving a request."""
    return [pid for pid in _descendants(d.proc.pid) if _is_agent(pid) and _is_agent(_parent(pid))]


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _is_agent(pid, name=None):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"fileagent.py") for arg in argv) and (name is None or name.encode() in argv)


def test_agent_ends_with_its_container(busybox_daemon, workdir):
    """The agent of a running container goes when the container stops (it must not hold the
    container's mounts), and a stopped container's files are served over its rootfs."""
    d = busybox_daemon
    name = f"agent{os.getpid() % 1000}"
    try:
        d.lxc("launch", "busybox", name)
        src = os.path.join(workdir, "f")
        with open(src, "w") as f:
            f.write("one\n")
        d.lxc("file", "push", src, f"{name}/root/f", "--uid", "1000", "--gid", "1000")
        assert _agents(d, name)
        d.lxc("stop", "-f", name)
        assert wait_until(lambda: not _agents(d, name), timeout=10)
        d.lxc("file", "push", src, f"{name}/root/g", "--uid", "1000", "--gid", "1000")
        result = d.request("GET", f"/1.0/containers/{name}/files?path=/root/g")
        assert (result.body, result.headers["X-Lxd-Uid"]) == (b"one\n", "1000")
        d.lxc("start", name)
        assert _sh(d, name, "stat -c '%u %g' /root/f /root/g").stdout == "1000 1000\n1000 1000\n"
    finally:
        d.lxc("delete", "-f", name, check=False)
