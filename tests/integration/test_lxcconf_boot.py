"""Real liblxc containers started from configurations render() writes.

Each test makes a busybox container with liblxc's own template under a
throw-away lxcpath, renders its config, starts it with `lxc-start -f`, checks
it from the host and through `lxc-attach`, and removes everything, also on
failure.

Unprivileged containers: liblxc writes their id maps with newuidmap and
newgidmap when those are installed (even as root), and those refuse ranges
/etc/subuid and /etc/subgid do not grant to root. The test never touches the
real files: it starts `lxc-start` in a private mount namespace where
temporary files are bound over them; the container's monitor keeps that
namespace, which goes away when the container stops.
"""

import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from lxdtx.instance import cgroups, idmap, lxcconf

pytestmark = pytest.mark.timeout(240)

TOOL_TIMEOUT = 60


def _require_root():
    if os.geteuid() != 0:
        pytest.skip("starting liblxc containers needs root")
    if shutil.which("lxc-start") is None:
        pytest.skip("liblxc's tools (Debian package lxc) are not installed")


def _host_memory():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _read(path):
    with open(path) as f:
        return f.read()


class Sandbox:
    """A throw-away lxcpath holding busybox containers; cleanup() stops and removes them all."""

    def __init__(self):
        # Traversable by the high uids of unprivileged containers (mkdtemp makes 0700).
        self.lxcpath = tempfile.mkdtemp(prefix="lxdtx-boot-", dir="/tmp")
        os.chmod(self.lxcpath, 0o711)
        self.layout = cgroups.detect()
        self.started = []

    def run(self, argv, check=True, **kw):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, **kw)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def create(self):
        """A new busybox container (liblxc's template, offline); returns (name, rootfs, log_dir)."""
        name = f"lxdtx-boot-{uuid.uuid4().hex[:10]}"
        self.run(["lxc-create", "-t", "busybox", "-n", name, "-P", self.lxcpath])
        directory = os.path.join(self.lxcpath, name)
        os.chmod(directory, 0o711)
        log_dir = os.path.join(directory, "logs")
        os.mkdir(log_dir)
        return name, os.path.join(directory, "rootfs"), log_dir

    def render(self, name, rootfs, log_dir, config, idmap_):
        rendered = lxcconf.render(
            name, rootfs=rootfs, log_dir=log_dir, config=config, idmap=idmap_, device_lines=[],
            layout=self.layout, apparmor=False, host_cpus=os.cpu_count(), host_memory=_host_memory(),
            seccomp_path=os.path.join(self.lxcpath, name, "seccomp"), log_level="info")
        if rendered.seccomp is not None:
            with open(rendered.seccomp_path, "w") as f:
                f.write(rendered.seccomp)
        path = os.path.join(self.lxcpath, name, "lxdtx.conf")
        with open(path, "w") as f:
            f.write(rendered.text)
        return path

    def start(self, name, config_path, subids=None):
        """lxc-start -d; with `subids` (subuid, subgid paths) bound over /etc's in a private mount namespace."""
        argv = ["lxc-start", "-n", name, "-P", self.lxcpath, "-f", config_path, "-d"]
        if subids is not None:
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$1" /etc/subuid && mount --bind "$2" /etc/subgid && shift 2 && exec "$@"',
                    "sh", *subids, *argv]
        self.started.append(name)
        result = self.run(argv, check=False)
        if result.returncode != 0:
            log = os.path.join(self.lxcpath, name, "logs", "lxc.log")
            errors = [line for line in _read(log).splitlines() if "ERROR" in line] if os.path.exists(log) else []
            raise AssertionError(f"lxc-start failed: {result.stderr.strip()}\n" + "\n".join(errors[-10:]))
        return self.init_pid(name)

    def init_pid(self, name):
        return int(self.run(["lxc-info", "-n", name, "-P", self.lxcpath, "-pH"]).stdout.strip())

    def attach(self, name, command):
        return self.run(["lxc-attach", "-n", name, "-P", self.lxcpath, "--", "sh", "-c", command], check=False)

    def stop(self, name):
        self.run(["lxc-stop", "-n", name, "-P", self.lxcpath, "-k"], check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = self.run(["lxc-info", "-n", name, "-P", self.lxcpath, "-sH"], check=False).stdout.strip()
            if state in ("STOPPED", ""):
                return
            time.sleep(0.1)

    def cleanup(self):
        for name in self.started:
            self.stop(name)
        shutil.rmtree(self.lxcpath, ignore_errors=True)


@pytest.fixture
def sandbox():
    _require_root()
    box = Sandbox()
    try:
        yield box
    finally:
        box.cleanup()


def _subids(sandbox):
    """Temporary subuid/subgid files with root's default allocation, and whether they must be bound."""
    subuid = os.path.join(sandbox.lxcpath, "subuid")
    subgid = os.path.join(sandbox.lxcpath, "subgid")
    allocation = idmap.ensure_allocation(subuid, subgid)
    if shutil.which("newuidmap") is None:
        return allocation, None  # liblxc writes the maps itself
    if not (os.path.exists("/etc/subuid") and os.path.exists("/etc/subgid")):
        pytest.skip("newuidmap is installed but /etc/subuid or /etc/subgid is missing to bind over")
    return allocation, (subuid, subgid)


# A privileged container with memory, process and open-file limits.

def test_privileged_limits(sandbox):
    """The cgroup holds the memory and pids limits, init has the prlimit, the environment and seccomp."""
    name, rootfs, log_dir = sandbox.create()
    config = {"security.privileged": "true", "limits.memory": "64MB", "limits.processes": "50",
              "limits.kernel.nofile": "1000", "environment.LXDTX_TEST": "yes"}
    pid = sandbox.start(name, sandbox.render(name, rootfs, log_dir, config, None))
    layout = sandbox.layout

    memory = layout.container_path("memory", name)
    assert memory == layout.process_path("memory", pid)
    limit_file = "memory.limit_in_bytes" if layout.version("memory") == cgroups.V1 else "memory.max"
    assert _read(os.path.join(memory, limit_file)).strip() == str(64 << 20)
    assert _read(os.path.join(layout.container_path("pids", name), "pids.max")).strip() == "50"

    # liblxc sets prlimits on init; lxc-attach'ed processes keep the attaching process's limits.
    limits = sandbox.attach(name, "grep 'Max open files' /proc/1/limits").stdout.split()
    assert limits[3:5] == ["1000", "1000"]
    environ = sandbox.attach(name, "tr '\\0' '\\n' < /proc/1/environ").stdout.splitlines()
    assert "LXDTX_TEST=yes" in environ
    status = sandbox.attach(name, "grep Seccomp: /proc/1/status").stdout.split()
    assert status == ["Seccomp:", "2"]
    uid_line = [line for line in _read(f"/proc/{pid}/status").splitlines() if line.startswith("Uid:")][0]
    assert uid_line.split()[1:] == ["0", "0", "0", "0"]
    assert os.path.exists(os.path.join(log_dir, "console.log"))
    assert os.path.exists(os.path.join(log_dir, "lxc.log"))

    sandbox.stop(name)
    assert not os.path.exists(memory)


# An unprivileged container on a shifted rootfs.

def test_unprivileged_init_runs_as_high_uid(sandbox):
    """Init is host uid 1000000 (root inside), files look root-owned inside, limits apply."""
    allocation, subids = _subids(sandbox)
    name, rootfs, log_dir = sandbox.create()
    config = {"limits.memory": "32MB"}
    map_, base = idmap.compute(config, allocation, [])
    assert base == 0
    idmap.shift_tree(rootfs, None, map_)
    assert os.stat(os.path.join(rootfs, "bin", "busybox")).st_uid == 1000000

    pid = sandbox.start(name, sandbox.render(name, rootfs, log_dir, config, map_), subids)
    status = _read(f"/proc/{pid}/status").splitlines()
    uids = [int(v) for v in next(line for line in status if line.startswith("Uid:")).split()[1:]]
    gids = [int(v) for v in next(line for line in status if line.startswith("Gid:")).split()[1:]]
    assert all(uid >= 1000000 for uid in uids) and uids[0] == 1000000
    assert gids[0] == 1000000
    assert sandbox.attach(name, "id -u").stdout.strip() == "0"
    assert sandbox.attach(name, "stat -c %u:%g /bin/busybox").stdout.strip() == "0:0"
    uid_map = sandbox.attach(name, "cat /proc/1/uid_map").stdout.split()
    assert uid_map == ["0", "1000000", "1000000000"]
    memory = sandbox.layout.process_path("memory", pid)
    limit_file = "memory.limit_in_bytes" if sandbox.layout.version("memory") == cgroups.V1 else "memory.max"
    assert _read(os.path.join(memory, limit_file)).strip() == str(32 << 20)
    assert os.path.exists(os.path.join(log_dir, "console.log"))


# Syscall deny lists reach the container.

def test_blacklisted_syscalls_fail(sandbox):
    """A bare name kills the caller (SIGSYS); `errno N` makes the call fail; LXD's compat list loads."""
    allocation, subids = _subids(sandbox)
    name, rootfs, log_dir = sandbox.create()
    config = {"security.syscalls.blacklist": "mkdir\nmkdirat\nchmod errno 1\nfchmodat errno 1",
              "security.syscalls.blacklist_compat": "true"}
    map_, _ = idmap.compute(config, allocation, [])
    idmap.shift_tree(rootfs, None, map_)
    sandbox.start(name, sandbox.render(name, rootfs, log_dir, config, map_), subids)

    made = sandbox.attach(name, "mkdir /tmp/denied")
    assert made.returncode == 128 + 31, made  # killed by SIGSYS
    assert sandbox.attach(name, "test -e /tmp/denied").returncode != 0
    changed = sandbox.attach(name, "touch /tmp/f && chmod 600 /tmp/f")
    assert changed.returncode != 0
    assert "Operation not permitted" in changed.stderr
    assert sandbox.attach(name, "touch /tmp/ok && rm /tmp/ok").returncode == 0


# The real /etc/subuid and /etc/subgid, read only.

def test_reads_host_subid_files():
    """read_allocation() parses the host's files without error (and never writes them)."""
    _require_root()
    before = {p: os.stat(p).st_mtime_ns for p in ("/etc/subuid", "/etc/subgid") if os.path.exists(p)}
    for path in before:
        found = idmap.read_allocation(path)
        assert found is None or (found.base >= 65536 and found.size > 0)
    idmap.load_allocation()
    assert before == {p: os.stat(p).st_mtime_ns for p in before}
