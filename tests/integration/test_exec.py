"""`lxc exec` on real busybox containers: streams, exit codes, signals, pty, recording, leaks."""

import hashlib
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pexpect
import pytest

from lxdtx.exec.recording import MAX_RECORD
from tests.daemonproc import wait_until
from tests.integration.wsclient import RawWebsocket

pytestmark = pytest.mark.timeout(300)


def _wait(predicate, timeout=20, interval=0.05):
    return wait_until(predicate, timeout, interval)


@pytest.fixture(scope="module")
def ct(busybox_daemon):
    """A running busybox container for the module."""
    busybox_daemon.lxc("launch", "busybox", "ex1", "-c", "environment.FROM_CONFIG=yes")
    try:
        yield "ex1"
    finally:
        busybox_daemon.lxc("delete", "-f", "ex1", check=False)


def test_echo(busybox_daemon, ct):
    """`lxc exec c -- echo hi` prints hi and exits 0."""
    result = busybox_daemon.lxc("exec", ct, "--", "echo", "hi")
    assert result.stdout == "hi\n"


def test_exit_code_and_separate_streams(busybox_daemon, ct):
    """The exit code comes back; stdout and stderr stay separate."""
    result = busybox_daemon.lxc("exec", ct, "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_stdin_10_mib_intact(busybox_daemon, ct):
    """10 MiB piped through stdin arrive intact (checksum inside the container)."""
    data = os.urandom(10 * 1024 * 1024)
    result = subprocess.run(["lxc", "exec", ct, "--", "sha256sum"], input=data, capture_output=True,
                            env=busybox_daemon.env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_large_output_intact(busybox_daemon, ct):
    """Output larger than every buffer arrives whole and in order."""
    result = subprocess.run(["lxc", "exec", ct, "--", "sh", "-c", "seq 1 200000"], capture_output=True,
                            env=busybox_daemon.env(), timeout=120)
    assert result.stdout == "".join(f"{i}\n" for i in range(1, 200001)).encode()


def test_environment(busybox_daemon, ct):
    """--env, environment.* keys and LXD's defaults reach the command; it starts in HOME."""
    out = busybox_daemon.lxc("exec", ct, "--env", "FOO=bar baz", "--", "env").stdout.splitlines()
    assert "FOO=bar baz" in out
    assert "FROM_CONFIG=yes" in out
    assert "HOME=/root" in out and "USER=root" in out and "LANG=C.UTF-8" in out
    assert any(line.startswith("PATH=/usr/local/sbin:") for line in out)
    assert busybox_daemon.lxc("exec", ct, "--", "pwd").stdout == "/root\n"
    assert busybox_daemon.lxc("exec", ct, "--", "id", "-u").stdout == "0\n"


def test_no_daemon_fd_in_command(busybox_daemon, ct):
    """The command holds only its three standard streams (ls adds its own directory fd)."""
    out = busybox_daemon.lxc("exec", ct, "--", "ls", "/proc/self/fd").stdout.split()
    assert sorted(out) == ["0", "1", "2", "3"]


def test_interactive_pty(busybox_daemon, ct):
    """A pty session: arithmetic, stty size follows a resize, the exit code returns."""
    child = pexpect.spawn("lxc", ["exec", ct, "--", "sh"], env=busybox_daemon.env(), dimensions=(24, 80),
                          timeout=20)
    try:
        child.sendline("echo $((6*7))")
        child.expect("42")
        child.sendline("stty size")
        child.expect("24 80")
        child.setwinsize(40, 132)
        assert _wait(lambda: _stty(child) == "40 132", 10)
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 5


def test_interactive_pty_is_the_containers(busybox_daemon, ct):
    """The session's terminal is one of the container's devpts, owned by its root and tty group."""
    child = pexpect.spawn("lxc", ["exec", ct, "--", "sh"], env=busybox_daemon.env(), timeout=20)
    try:
        child.sendline("t=$(tty); echo \"<$t $(stat -c '%u %g %a' $t)>\"; ls /dev/pts")
        child.expect(r"<(/dev/pts/\d+) 0 5 620>")
        number = child.match.group(1).decode().rsplit("/", 1)[1]
        child.expect(rf"\b{number}\b")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def _stty(child):
    child.sendline("stty size")
    index = child.expect([r"\n(\d+ \d+)\r*\n", pexpect.TIMEOUT], timeout=2)
    return child.match.group(1).decode() if index == 0 else None


def test_sigterm_reaches_command(busybox_daemon, ct):
    """SIGTERM to `lxc exec c -- sleep 100` is forwarded: the sleep ends, exit 143."""
    proc = subprocess.Popen(["lxc", "exec", ct, "--", "sleep", "100"], env=busybox_daemon.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _wait(lambda: "sleep 100" in busybox_daemon.lxc("exec", ct, "--", "ps").stdout, 20)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 143
        assert time.monotonic() - started < 10
        assert _wait(lambda: "sleep 100" not in busybox_daemon.lxc("exec", ct, "--", "ps").stdout, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_background_child_does_not_hang(busybox_daemon, ct):
    """A background child holding stdout does not hold the session (bounded drain)."""
    started = time.monotonic()
    result = busybox_daemon.lxc("exec", ct, "--", "sh", "-c", "sleep 100 & echo done", timeout=30)
    assert result.stdout == "done\n"
    assert time.monotonic() - started < 5
    busybox_daemon.lxc("exec", ct, "--", "sh", "-c", "kill $(pidof sleep) 2>/dev/null; true")


def test_parallel_execs(busybox_daemon, ct):
    """50 parallel `lxc exec` all finish with their own output."""
    def one(i):
        return busybox_daemon.lxc("exec", ct, "--", "sh", "-c", f"echo out{i}; echo err{i} >&2", timeout=120)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    for i, result in enumerate(results):
        assert (result.returncode, result.stdout, result.stderr) == (0, f"out{i}\n", f"err{i}\n")


def _fds(pid):
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return found


def _settle(pid, quiet=1.0, timeout=35):
    """Wait until the daemon's fd count stops changing (sockets of earlier tests closing)."""
    deadline = time.monotonic() + timeout
    last, since = _fd_count(pid), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.1)
        now = _fd_count(pid)
        if now != last:
            last, since = now, time.monotonic()


def _fd_count(pid):
    return len(_fds(pid))


def test_no_fd_leak_after_200_execs(busybox_daemon, ct):
    """The daemon's open fd count is the same before and after 200 execs."""
    pid = busybox_daemon.proc.pid
    busybox_daemon.lxc("exec", ct, "--", "true")
    _settle(pid)
    before = _fd_count(pid)
    before_fds = _fds(pid)

    def one(i):
        return busybox_daemon.lxc("exec", ct, "--", "echo", str(i), timeout=120).stdout

    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(one, range(200)))
    assert outputs == [f"{i}\n" for i in range(200)]
    # Sockets a client never closes are dropped by the daemon within 30 s.
    assert _wait(lambda: _fd_count(pid) == before, 35), (before_fds, _fds(pid))


def test_recorded_output(busybox_daemon, ct):
    """record-output without websockets writes log files readable through the logs API."""
    d = busybox_daemon
    result = d.request("POST", f"/1.0/containers/{ct}/exec", {
        "command": ["sh", "-c", "echo recorded-out; echo recorded-err >&2; exit 2"],
        "wait-for-websocket": False, "record-output": True, "interactive": False, "environment": {}})
    op = d.wait_operation(result, timeout=30)
    assert op["status"] == "Success"
    metadata = op["metadata"]
    assert metadata["return"] == 2
    out_url, err_url = metadata["output"]["1"], metadata["output"]["2"]
    assert out_url == f"/1.0/containers/{ct}/logs/exec_{op['id']}.stdout"
    assert d.request("GET", out_url).body == b"recorded-out\n"
    assert d.request("GET", err_url).body == b"recorded-err\n"
    assert out_url in d.request("GET", f"/1.0/containers/{ct}/logs").metadata
    assert d.request("DELETE", out_url).status == 200


def test_recorded_output_bounded(busybox_daemon, ct):
    """record-output keeps the first 16 MiB of each stream: the rest is dropped while the command
    runs on to its end (its exit code comes back), and the daemon log says how much was cut."""
    d = busybox_daemon
    bound = MAX_RECORD
    result = d.request("POST", f"/1.0/containers/{ct}/exec", {
        "command": ["sh", "-c", "head -c 20000000 /dev/zero; head -c 17000000 /dev/zero >&2; echo end >&2; exit 3"],
        "wait-for-websocket": False, "record-output": True, "interactive": False, "environment": {}})
    op = d.wait_operation(result, timeout=120)
    assert op["status"] == "Success", op
    metadata = op["metadata"]
    assert metadata["return"] == 3
    out = d.request("GET", metadata["output"]["1"], timeout=120).body
    err = d.request("GET", metadata["output"]["2"], timeout=120).body
    assert len(out) == bound and len(err) == bound
    assert out.count(b"\0") == bound and b"end" not in err
    log = d.log()
    assert f"cut at {bound} bytes: {20000000 - bound} more bytes not kept" in log
    assert f"cut at {bound} bytes: {17000004 - bound} more bytes not kept" in log
    for url in metadata["output"].values():
        assert d.request("DELETE", url).status == 200


def test_failed_handshake_keeps_secret(busybox_daemon, ct):
    """A websocket handshake that fails (no Upgrade header) with the right secret does not use the
    secret up: the proper handshake then connects, and only once."""
    d = busybox_daemon
    result = d.request("POST", f"/1.0/containers/{ct}/exec", {
        "command": ["sh", "-c", "cat; echo through"], "wait-for-websocket": True, "interactive": False,
        "environment": {}})
    assert result.status == 202
    op = result.json["metadata"]
    fds = op["metadata"]["fds"]
    url = f"/1.0/operations/{op['id']}/websocket?secret="
    garbled = d.request("GET", url + fds["1"])
    assert garbled.status == 400, garbled
    sockets = {name: RawWebsocket(d.socket_path, url + fds[name]) for name in ("control", "0", "1", "2")}
    try:
        with pytest.raises(ConnectionError, match="403"):  # the command waits for stdin meanwhile
            RawWebsocket(d.socket_path, url + fds["1"])
        sockets["0"].send(b"", binary=False)
        assert sockets["1"].read_stream() == b"through\n"
        assert sockets["2"].read_stream() == b""
        final = d.request("GET", f"/1.0/operations/{op['id']}/wait?timeout=30", timeout=40).metadata
        assert final["metadata"]["return"] == 0
    finally:
        for ws in sockets.values():
            ws.abort()


def test_without_websockets_discards_output(busybox_daemon, ct):
    """wait-for-websocket false without recording runs the command and reports its code only."""
    d = busybox_daemon
    result = d.request("POST", f"/1.0/containers/{ct}/exec", {
        "command": ["sh", "-c", "echo x; exit 4"], "wait-for-websocket": False, "interactive": False})
    op = d.wait_operation(result, timeout=30)
    assert op["metadata"] == {"return": 4}


def test_abnormal_control_close_kills(busybox_daemon, ct):
    """Dropping the control socket without a close frame kills the command (128+9)."""
    d = busybox_daemon
    result = d.request("POST", f"/1.0/containers/{ct}/exec", {
        "command": ["sleep", "100"], "wait-for-websocket": True, "interactive": False})
    op = result.metadata
    base = f"/1.0/operations/{op['id']}/websocket?secret="
    sockets = {fd: RawWebsocket(d.socket_path, base + secret) for fd, secret in op["metadata"]["fds"].items()}
    try:
        assert _wait(lambda: "sleep 100" in d.lxc("exec", ct, "--", "ps").stdout, 20)
        sockets["control"].abort()
        assert sockets["1"].read_stream() == b""
        final = d.request("GET", f"/1.0/operations/{op['id']}/wait?timeout=20").metadata
        assert final["status"] == "Success"
        assert final["metadata"]["return"] == 128 + 9
    finally:
        for ws in sockets.values():
            ws.abort()


def test_raw_streams_and_barriers(busybox_daemon, ct):
    """Data frames then an empty text frame on 1 and 2; stdin ends with the client's barrier."""
    d = busybox_daemon
    result = d.request("POST", f"/1.0/containers/{ct}/exec", {
        "command": ["sh", "-c", "cat; echo e >&2"], "wait-for-websocket": True, "interactive": False})
    op = result.metadata
    base = f"/1.0/operations/{op['id']}/websocket?secret="
    fds = op["metadata"]["fds"]
    stdin = RawWebsocket(d.socket_path, base + fds["0"])
    stdin.send(b"early input\n")
    stdin.send(b"", binary=False)
    out = RawWebsocket(d.socket_path, base + fds["1"])
    err = RawWebsocket(d.socket_path, base + fds["2"])
    try:
        assert out.read_stream() == b"early input\n"
        assert err.read_stream() == b"e\n"
        final = d.request("GET", f"/1.0/operations/{op['id']}/wait?timeout=20").metadata
        assert final["metadata"] == {"return": 0}
        with pytest.raises(ConnectionError):
            RawWebsocket(d.socket_path, base + fds["1"])
    finally:
        for ws in (stdin, out, err):
            ws.abort()


@pytest.mark.parametrize("interactive", [False, True])
def test_websockets_never_connected(busybox_daemon, ct, interactive):
    """Without its data sockets the operation fails after a bounded wait, runs nothing and
    keeps nothing open (an interactive session's pty is closed)."""
    d = busybox_daemon
    d.lxc("exec", ct, "--", "true")
    _settle(d.proc.pid)
    before = _fds(d.proc.pid)
    result = d.request("POST", f"/1.0/containers/{ct}/exec", {
        "command": ["touch", "/should-not-exist"], "wait-for-websocket": True, "interactive": interactive})
    final = d.request("GET", f"{result.json['operation']}/wait?timeout=30", timeout=40).metadata
    assert final["status"] == "Failure"
    assert "websockets" in final["err"]
    assert d.lxc("exec", ct, "--", "ls", "/should-not-exist", check=False).returncode != 0
    assert _wait(lambda: _fd_count(d.proc.pid) == len(before), 10), (before, _fds(d.proc.pid))


def test_bad_requests(busybox_daemon, ct):
    """Bad bodies and a stopped or frozen container are clear 400s."""
    d = busybox_daemon
    for body, word in [({"command": "ls"}, "command"), ({"command": []}, "command"),
                       ({"command": ["ls"], "environment": {"A": 1}}, "environment"),
                       ({"command": ["ls"], "interactive": "yes"}, "interactive")]:
        result = d.request("POST", f"/1.0/containers/{ct}/exec", body)
        assert result.status == 400 and word in result.json["error"], (body, result)
    assert d.request("POST", "/1.0/containers/nope/exec", {"command": ["ls"]}).status == 404
    d.lxc("init", "busybox", "ex-stopped")
    try:
        result = d.request("POST", "/1.0/containers/ex-stopped/exec", {"command": ["ls"]})
        assert result.status == 400 and result.json["error"] == "Container is not running."
    finally:
        d.lxc("delete", "-f", "ex-stopped", check=False)
    d.lxc("pause", ct)
    try:
        result = d.request("POST", f"/1.0/containers/{ct}/exec", {"command": ["ls"]})
        assert result.status == 400 and result.json["error"] == "Container is frozen."
    finally:
        d.lxc("start", ct)


def test_pylxd_execute(busybox_daemon, ct):
    """pylxd's execute() returns the exit code, stdout and stderr (and feeds stdin)."""
    import pylxd

    client = pylxd.Client(endpoint=busybox_daemon.socket_path)
    instance = client.instances.get(ct)
    result = instance.execute(["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert (result.exit_code, result.stdout, result.stderr) == (4, "out\n", "err\n")
    result = instance.execute(["cat"], stdin_payload="from pylxd")
    assert (result.exit_code, result.stdout) == (0, "from pylxd")
