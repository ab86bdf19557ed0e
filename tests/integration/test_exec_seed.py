"""The exec seed on real containers: where commands run, what the container sees, and the
seed's end with the container (no process or cgroup left behind)."""

import os
import signal
import subprocess

import pexpect
import pytest

from lxdtx.exec import seeds
from tests.daemonproc import wait_until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not os.access(seeds.BINARY, os.X_OK), reason="execseed not built (make venv)"),
]


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[:-1]
    except OSError:
        return []


def _ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def seed_processes(daemon, name):
    """{pid: 'launcher' | 'seed'} of the execseed processes of `daemon`'s container `name`."""
    lxcpath = os.path.join(daemon.dir, "lxc").encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _cmdline(entry)
        if len(argv) >= 3 and argv[0] == seeds.BINARY.encode() and argv[1] == name.encode() and argv[2] == lxcpath:
            found[int(entry)] = None
    for pid in found:
        try:
            found[pid] = "seed" if _ppid(pid) in found else "launcher"
        except OSError:
            found[pid] = "gone"
    return found


def _seed_pid(daemon, name):
    return next((pid for pid, role in seed_processes(daemon, name).items() if role == "seed"), None)


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _sleeps(seed):
    """The `sleep` commands started by the seed's runners."""
    return [c for runner in _children(seed) for c in _children(runner) if _cmdline(c)[:1] == [b"sleep"]]


def _host_cgroups(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        return [line.split(":", 2)[2].strip() for line in f if line.strip()]


def _payload_dirs(daemon, name):
    cgroup = daemon.cgroup_name(name)
    return [os.path.join(root, entry) for root in _hierarchies() for entry in os.listdir(root)
            if entry == cgroup]


def _hierarchies():
    roots = []
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[2] in ("cgroup", "cgroup2"):
                roots.append(fields[1])
    return roots


def test_commands_run_in_the_container_through_the_seed(busybox_daemon, container):
    """The seed lives in the container's cgroups, in the host's pid namespace; the
    command it starts is in the container's namespaces and under its seccomp policy."""
    script = "cat /proc/self/status | grep -E '^(NSpid|Seccomp):'; readlink /proc/self/ns/pid; readlink /proc/1/ns/pid"
    out = busybox_daemon.lxc("exec", container, "--", "sh", "-c", script).stdout.split("\n")
    seed = _seed_pid(busybox_daemon, container)
    assert seed is not None, seed_processes(busybox_daemon, container)
    assert any(line.startswith("Seccomp:") and line.split()[1] == "2" for line in out), out
    nspid = next(line for line in out if line.startswith("NSpid:")).split()
    assert len(nspid) == 2  # one id: seen from inside, the command is in the only pid namespace
    assert out[2] == out[3]  # the same pid namespace as the container's init

    prefix = os.path.basename(_payload_dirs(busybox_daemon, container)[0])
    assert all(path.lstrip("/").startswith(prefix) for path in _host_cgroups(seed))
    with open(f"/proc/{seed}/status") as f:
        assert next(line for line in f if line.startswith("NSpid:")).split()[1:] == [str(seed)]


def test_the_seed_is_invisible_inside(busybox_daemon, container):
    """`ps` in the container and the processes count of `lxc info` leave the seed out."""
    ps = busybox_daemon.lxc("exec", container, "--", "ps", "-o", "pid,args").stdout
    assert "execseed" not in ps
    seed = _seed_pid(busybox_daemon, container)
    assert seed is not None

    def counted_without_seed():
        with open(busybox_daemon.cgroup_file(container, "pids", "cgroup.procs")) as f:
            procs = {int(p) for p in f.read().split()}
        state = busybox_daemon.request("GET", f"/1.0/containers/{container}/state").metadata
        return seed in procs and state["processes"] == len(procs) - 1

    assert wait_until(counted_without_seed, 10)


def test_commands_get_the_container_limits(busybox_daemon, container):
    """A command started through the seed is in every one of the container's cgroups."""
    proc = subprocess.Popen(["lxc", "exec", container, "--", "sleep", "30"], env=busybox_daemon.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _seed_pid(busybox_daemon, container), 20)
        seed = _seed_pid(busybox_daemon, container)
        assert wait_until(lambda: _sleeps(seed), 20)
        assert _host_cgroups(_sleeps(seed)[0]) == _host_cgroups(seed)
    finally:
        proc.kill()
        proc.wait()
    busybox_daemon.lxc("exec", container, "--", "sh", "-c", "kill $(pidof sleep) 2>/dev/null; true")


def _interactive(daemon, container, script, rows=30, cols=100):
    return pexpect.spawn("lxc", ["exec", container, "--", "sh", "-c", script], env=daemon.env(),
                         dimensions=(rows, cols), timeout=20)


def test_interactive_through_the_seed(busybox_daemon, container):
    """A pty session runs on a pty of the container's own devpts, owned by its root and tty group,
    sized like the client's terminal; the command is started by a runner of the seed."""
    busybox_daemon.lxc("exec", container, "--", "true")
    seed = _seed_pid(busybox_daemon, container)
    child = _interactive(busybox_daemon, container, "tty; stty size; ls -ln $(tty); echo ready; sleep 30")
    try:
        child.expect("ready")
        lines = child.before.decode().split("\r\n")
        tty, size, listing = lines[0].strip(), lines[1].strip(), lines[2].split()
        assert tty.startswith("/dev/pts/") and size == "30 100"
        assert listing[2:4] == ["0", "5"] and listing[-1] == tty
        assert wait_until(lambda: _sleeps(seed), 10)
        assert busybox_daemon.lxc("exec", container, "--", "ls", tty).stdout.strip() == tty
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130  # ^C reached the command: the pty is its controlling terminal


def test_fake_ptmx_is_never_opened(busybox_daemon, container):
    """A container that puts a FIFO at /dev/pts/ptmx gets lxc-attach's session, and the
    daemon opens nothing there (a FIFO opened for writing would block it)."""
    busybox_daemon.lxc("exec", container, "--", "sh", "-c", "mount -t tmpfs tmpfs /dev/pts && mkfifo /dev/pts/ptmx")
    child = _interactive(busybox_daemon, container, "echo works; exit 4")
    child.expect(pexpect.EOF)
    child.close()
    assert "works" in child.before.decode() and child.exitstatus == 4
    assert "is not a ptmx device" in busybox_daemon.log()


def test_requests_too_big_for_the_seed(busybox_daemon, container):
    """More environment than one seed request holds: lxc-attach runs the command instead."""
    d = busybox_daemon
    d.lxc("exec", container, "--", "true")
    env = {f"V{i}": str(i) for i in range(seeds.MAX_FIELDS)}
    result = d.request("POST", f"/1.0/containers/{container}/exec", {
        "command": ["sh", "-c", "echo $V8191"], "wait-for-websocket": False, "record-output": True,
        "interactive": False, "environment": env})
    op = d.wait_operation(result, timeout=30)
    assert op["metadata"]["return"] == 0
    assert d.request("GET", op["metadata"]["output"]["1"]).body == b"8191\n"


def test_seed_holds_steady(busybox_daemon, container):
    """Many commands later the seed holds the same fds and no runner is left."""
    busybox_daemon.lxc("exec", container, "--", "true")
    seed = _seed_pid(busybox_daemon, container)
    fds = len(os.listdir(f"/proc/{seed}/fd"))
    for _ in range(60):
        busybox_daemon.lxc("exec", container, "--", "true")
    assert _seed_pid(busybox_daemon, container) == seed
    assert len(os.listdir(f"/proc/{seed}/fd")) == fds
    assert wait_until(lambda: not _children(seed), 10), _children(seed)


def _nothing_left(daemon, name):
    return not seed_processes(daemon, name) and not _payload_dirs(daemon, name)


def test_stop_ends_the_seed_and_its_cgroups(busybox_daemon, container):
    """A command running at the stop is reported killed (137); the seed and the cgroups go."""
    busybox_daemon.lxc("exec", container, "--", "true")
    seed = _seed_pid(busybox_daemon, container)
    assert seed
    proc = subprocess.Popen(["lxc", "exec", container, "--", "sleep", "60"], env=busybox_daemon.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _sleeps(seed), 20)
        busybox_daemon.lxc("stop", "-f", container)
        assert proc.wait(20) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_until(lambda: _nothing_left(busybox_daemon, container), 10), (
        seed_processes(busybox_daemon, container), _payload_dirs(busybox_daemon, container))
    busybox_daemon.lxc("start", container)
    assert busybox_daemon.lxc("exec", container, "--", "echo", "again").stdout == "again\n"
    assert _seed_pid(busybox_daemon, container)


def test_shutdown_from_inside_ends_the_seed(busybox_daemon, container):
    """A container that powers itself off takes its seed along; no cgroup stays behind."""
    busybox_daemon.lxc("exec", container, "--", "true")
    assert _seed_pid(busybox_daemon, container)
    busybox_daemon.lxc("exec", container, "--", "poweroff", "-f", check=False)
    assert wait_until(lambda: busybox_daemon.request("GET", f"/1.0/containers/{container}").metadata["status"]
                      == "Stopped", 30)
    assert wait_until(lambda: _nothing_left(busybox_daemon, container), 10), (
        seed_processes(busybox_daemon, container), _payload_dirs(busybox_daemon, container))


def test_a_killed_seed_is_replaced(busybox_daemon, container):
    busybox_daemon.lxc("exec", container, "--", "true")
    old = _seed_pid(busybox_daemon, container)
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not seed_processes(busybox_daemon, container), 10)
    assert busybox_daemon.lxc("exec", container, "--", "echo", "ok").stdout == "ok\n"
    assert busybox_daemon.lxc("exec", container, "--", "echo", "ok").stdout == "ok\n"
    new = _seed_pid(busybox_daemon, container)
    assert new is not None and new != old


def test_frozen_and_thawed(busybox_daemon, container):
    busybox_daemon.lxc("exec", container, "--", "true")
    busybox_daemon.lxc("pause", container)
    try:
        assert busybox_daemon.lxc("exec", container, "--", "true", check=False).returncode != 0
    finally:
        busybox_daemon.lxc("start", container)
    assert busybox_daemon.lxc("exec", container, "--", "echo", "thawed").stdout == "thawed\n"


def test_process_limit_uses_lxc_attach(busybox_daemon, container):
    """With limits.processes the seed would take one of the container's processes: it goes
    (the limit applies live), and commands run through lxc-attach."""
    busybox_daemon.lxc("exec", container, "--", "true")
    assert _seed_pid(busybox_daemon, container)
    busybox_daemon.lxc("config", "set", container, "limits.processes", "50")
    assert busybox_daemon.lxc("exec", container, "--", "echo", "ok").stdout == "ok\n"
    assert wait_until(lambda: not seed_processes(busybox_daemon, container), 10)
    busybox_daemon.lxc("restart", "-f", container)
    assert busybox_daemon.lxc("exec", container, "--", "echo", "ok").stdout == "ok\n"
    assert not seed_processes(busybox_daemon, container)


def test_privileged_container(busybox_daemon):
    busybox_daemon.lxc("launch", "busybox", "seedpriv", "-c", "security.privileged=true")
    try:
        out = busybox_daemon.lxc("exec", "seedpriv", "--", "sh", "-c", "id -u; grep Seccomp: /proc/self/status")
        assert out.stdout.split() == ["0", "Seccomp:", "2"]
        assert _seed_pid(busybox_daemon, "seedpriv")
    finally:
        busybox_daemon.lxc("delete", "-f", "seedpriv", check=False)


def test_daemon_restart_replaces_the_seed(busybox_daemon, container):
    """The seed goes with the daemon that made it; the next daemon makes its own."""
    busybox_daemon.lxc("exec", container, "--", "true")
    old = _seed_pid(busybox_daemon, container)
    busybox_daemon.restart()
    assert wait_until(lambda: old not in seed_processes(busybox_daemon, container), 10)
    assert busybox_daemon.lxc("exec", container, "--", "echo", "ok").stdout == "ok\n"
    assert _seed_pid(busybox_daemon, container) not in (None, old)
