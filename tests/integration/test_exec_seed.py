"""The exec seed on real containers: where commands run, what the container sees, and the
end of the seed and its zygote with the container (no process or cgroup left behind)."""

import os
import signal
import subprocess
import sys

import pexpect
import pytest

from lxdtx.exec import seeds
from tests.daemonproc import wait_until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not os.access(seeds.BINARY, os.X_OK), reason="execseed not built (make venv compiles it through setup.py)"),
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
    """{pid: 'launcher' | 'seed' | 'zygote'} of the execseed processes of `daemon`'s container `name`."""
    lxcpath = os.path.join(daemon.dir, "lxc").encode()
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _cmdline(entry)
        if len(argv) >= 3 and argv[0] == seeds.BINARY.encode() and argv[1] == name.encode() and argv[2] == lxcpath:
            try:
                parents[int(entry)] = _ppid(entry)
            except OSError:
                pass  # gone meanwhile

    def depth(pid):
        """0 for the launcher (the daemon's child), 1 for the seed, 2 for the zygote."""
        n = 0
        while parents.get(pid) in parents and n < 2:
            pid, n = parents[pid], n + 1
        return n

    return {pid: ("launcher", "seed", "zygote")[depth(pid)] for pid in parents}


def _seed_pid(daemon, name, role="seed"):
    return next((pid for pid, found in seed_processes(daemon, name).items() if found == role), None)


def _zygote_pid(daemon, name):
    return _seed_pid(daemon, name, "zygote")


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _sleeps(zygote):
    """The `sleep` commands started by the zygote."""
    return [c for c in _children(zygote) if _cmdline(c)[:1] == [b"sleep"]]


def _namespace(pid, kind):
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def _nspid(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(line for line in f if line.startswith("NSpid:")).split()[1:]


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
    """The seed and its zygote live in the container's cgroups, in the host's pid namespace;
    the zygote has the container's other namespaces; the commands it forks are in the
    container's pid namespace too and under its seccomp policy."""
    script = "cat /proc/self/status | grep -E '^(NSpid|Seccomp):'; readlink /proc/self/ns/pid; readlink /proc/1/ns/pid"
    out = busybox_daemon.lxc("exec", container, "--", "sh", "-c", script).stdout.split("\n")
    seed, zygote = _seed_pid(busybox_daemon, container), _zygote_pid(busybox_daemon, container)
    assert seed is not None and zygote is not None, seed_processes(busybox_daemon, container)
    assert any(line.startswith("Seccomp:") and line.split()[1] == "2" for line in out), out
    nspid = next(line for line in out if line.startswith("NSpid:")).split()
    assert len(nspid) == 2  # one id: seen from inside, the command is in the only pid namespace
    assert out[2] == out[3]  # the same pid namespace as the container's init

    prefix = os.path.basename(_payload_dirs(busybox_daemon, container)[0])
    assert all(path.lstrip("/").startswith(prefix) for path in _host_cgroups(seed))
    assert _host_cgroups(zygote) == _host_cgroups(seed)
    assert _nspid(seed) == [str(seed)] and _nspid(zygote) == [str(zygote)]
    init = busybox_daemon.request("GET", f"/1.0/containers/{container}/state").metadata["pid"]
    for kind in ("mnt", "net", "uts", "ipc", "user", "cgroup"):
        assert _namespace(zygote, kind) == _namespace(init, kind), kind
        assert _namespace(seed, kind) == _namespace(os.getpid(), kind), kind
    assert _namespace(zygote, "pid") == _namespace(os.getpid(), "pid")
    assert _namespace(zygote, "pid_for_children") == _namespace(init, "pid")
    with open(f"/proc/{zygote}/status") as f:
        assert any(line.split() == ["Seccomp:", "2"] for line in f)


def test_the_seed_is_invisible_inside(busybox_daemon, container):
    """`ps` in the container and the processes count of `lxc info` leave the seed and the zygote out."""
    ps = busybox_daemon.lxc("exec", container, "--", "ps", "-o", "pid,args").stdout
    assert "execseed" not in ps
    helpers = {_seed_pid(busybox_daemon, container), _zygote_pid(busybox_daemon, container)}
    assert None not in helpers

    def counted_without_helpers():
        with open(busybox_daemon.cgroup_file(container, "pids", "cgroup.procs")) as f:
            procs = {int(p) for p in f.read().split()}
        state = busybox_daemon.request("GET", f"/1.0/containers/{container}/state").metadata
        return helpers <= procs and state["processes"] == len(procs) - 2

    assert wait_until(counted_without_helpers, 10)


def test_commands_get_the_container_limits(busybox_daemon, container):
    """A command started through the seed is in every one of the container's cgroups."""
    proc = subprocess.Popen(["lxc", "exec", container, "--", "sleep", "30"], env=busybox_daemon.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _zygote_pid(busybox_daemon, container), 20)
        zygote = _zygote_pid(busybox_daemon, container)
        assert wait_until(lambda: _sleeps(zygote), 20)
        assert _host_cgroups(_sleeps(zygote)[0]) == _host_cgroups(_seed_pid(busybox_daemon, container))
    finally:
        proc.kill()
        proc.wait()
    busybox_daemon.lxc("exec", container, "--", "sh", "-c", "kill $(pidof sleep) 2>/dev/null; true")


def _interactive(daemon, container, script, rows=30, cols=100):
    return pexpect.spawn("lxc", ["exec", container, "--", "sh", "-c", script], env=daemon.env(),
                         dimensions=(rows, cols), timeout=20)


def test_interactive_through_the_seed(busybox_daemon, container):
    """A pty session runs on a pty of the container's own devpts, owned by its root and tty group,
    sized like the client's terminal; the command is started by the seed's zygote."""
    busybox_daemon.lxc("exec", container, "--", "true")
    zygote = _zygote_pid(busybox_daemon, container)
    child = _interactive(busybox_daemon, container, "tty; stty size; ls -ln $(tty); echo ready; sleep 30")
    try:
        child.expect("ready")
        lines = child.before.decode().split("\r\n")
        tty, size, listing = lines[0].strip(), lines[1].strip(), lines[2].split()
        assert tty.startswith("/dev/pts/") and size == "30 100"
        assert listing[2:4] == ["0", "5"] and listing[-1] == tty
        assert wait_until(lambda: _sleeps(zygote), 10)
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
    """Many commands later the seed and the zygote hold the same fds and no command is left."""
    busybox_daemon.lxc("exec", container, "--", "true")
    seed, zygote = _seed_pid(busybox_daemon, container), _zygote_pid(busybox_daemon, container)
    fds = {pid: len(os.listdir(f"/proc/{pid}/fd")) for pid in (seed, zygote)}
    for _ in range(60):
        busybox_daemon.lxc("exec", container, "--", "true")
    assert (_seed_pid(busybox_daemon, container), _zygote_pid(busybox_daemon, container)) == (seed, zygote)
    assert {pid: len(os.listdir(f"/proc/{pid}/fd")) for pid in (seed, zygote)} == fds
    assert _children(seed) == [zygote]
    assert wait_until(lambda: not _children(zygote), 10), _children(zygote)


def _nothing_left(daemon, name):
    return not seed_processes(daemon, name) and not _payload_dirs(daemon, name)


def test_stop_ends_the_seed_and_its_cgroups(busybox_daemon, container):
    """A command running at the stop is reported killed (137); the seed and the cgroups go."""
    busybox_daemon.lxc("exec", container, "--", "true")
    zygote = _zygote_pid(busybox_daemon, container)
    assert zygote
    proc = subprocess.Popen(["lxc", "exec", container, "--", "sleep", "60"], env=busybox_daemon.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _sleeps(zygote), 20)
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


@pytest.mark.parametrize("role", ["seed", "zygote"])
def test_a_killed_seed_is_replaced(busybox_daemon, container, role):
    """Killing the seed or its zygote takes the other and the launcher along (each dies with
    its parent; the seed waits for its zygote); the next exec makes new ones."""
    busybox_daemon.lxc("exec", container, "--", "true")
    old = _seed_pid(busybox_daemon, container, role)
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not seed_processes(busybox_daemon, container), 10)
    assert busybox_daemon.lxc("exec", container, "--", "echo", "ok").stdout == "ok\n"
    assert busybox_daemon.lxc("exec", container, "--", "echo", "ok").stdout == "ok\n"
    assert _seed_pid(busybox_daemon, container, role) not in (None, old)


def test_path_rule_applied_inside(busybox_daemon, container):
    """With no PATH asked for, the zygote applies LXD's rule in the container: the default
    PATH, with /snap/bin once the container has a /snap directory."""
    default = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    def path(*env):
        return busybox_daemon.lxc("exec", container, *env, "--", "sh", "-c", "echo $PATH").stdout.strip()

    assert path() == default
    busybox_daemon.lxc("exec", container, "--", "mkdir", "/snap")
    try:
        assert path() == default + ":/snap/bin"
        assert path("--env", "PATH=/bin") == "/bin"
    finally:
        busybox_daemon.lxc("exec", container, "--", "rmdir", "/snap")
    busybox_daemon.lxc("exec", container, "--", "ln", "-s", "/nowhere", "/snap")
    try:
        assert path() == default  # not a directory
    finally:
        busybox_daemon.lxc("exec", container, "--", "rm", "/snap")


def test_frozen_and_thawed(busybox_daemon, container):
    busybox_daemon.lxc("exec", container, "--", "true")
    busybox_daemon.lxc("pause", container)
    try:
        assert busybox_daemon.lxc("exec", container, "--", "true", check=False).returncode != 0
    finally:
        busybox_daemon.lxc("start", container)
    assert busybox_daemon.lxc("exec", container, "--", "echo", "thawed").stdout == "thawed\n"


def test_process_limit_uses_lxc_attach(busybox_daemon, container):
    """With limits.processes the seed and its zygote would take two of the container's
    processes: they go once the running command is done (the limit applies live), and
    commands run through lxc-attach."""
    busybox_daemon.lxc("exec", container, "--", "true")
    assert _seed_pid(busybox_daemon, container)
    running = subprocess.Popen(["lxc", "exec", container, "--", "sh", "-c", "sleep 2; echo done"],
                               env=busybox_daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _children(_zygote_pid(busybox_daemon, container)), 20)
        busybox_daemon.lxc("config", "set", container, "limits.processes", "50")
        assert busybox_daemon.lxc("exec", container, "--", "echo", "ok").stdout == "ok\n"
        # The seed takes no more commands but lets the running one finish and report.
        assert running.communicate(timeout=20)[0] == b"done\n" and running.returncode == 0
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
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


def test_daemon_says_which_exec_path_it_uses(daemon):
    assert f"exec runs through the exec seed {seeds.BINARY}" in daemon.log()


def test_setup_build_ships_the_compiled_seed(workdir):
    """`pip install .` runs setup.py's build: the seed lands beside the Python code it serves."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    build = os.path.join(workdir, "build")
    subprocess.run([sys.executable, "setup.py", "-q", "build", "-b", build], cwd=root, check=True,
                   capture_output=True, timeout=120)
    helpers = os.path.join(build, "lib", "lxdtx", "helpers")
    binary = os.path.join(helpers, "execseed")
    assert os.access(binary, os.X_OK)
    with open(binary, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert os.path.exists(os.path.join(helpers, "execseed.c"))
