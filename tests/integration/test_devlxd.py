"""/dev/lxd on real busybox containers: a static guest client pushed in asks the daemon."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

from tests.daemonproc import wait_until

pytestmark = pytest.mark.timeout(300)

CLIENT_SOURCE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "devlxd_client.c")
CLIENT = "/bin/devlxd-client"


@pytest.fixture(scope="module")
def client_binary():
    """The guest client, compiled static (busybox has no libc to link against)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the guest client")
    directory = tempfile.mkdtemp(prefix="lxdtx-devlxd-", dir="/var/tmp")
    try:
        path = os.path.join(directory, "devlxd-client")
        subprocess.run(["gcc", "-static", "-O2", "-o", path, CLIENT_SOURCE], check=True, timeout=120)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _push_client(d, name, binary):
    d.lxc("file", "push", "--mode", "0755", binary, f"{name}{CLIENT}")


def _guest(d, name, path, user=None):
    """(status, body bytes) of `GET path` asked from inside container `name`."""
    as_user = ["-u", str(user)] if user is not None else []
    proc = subprocess.run(["lxc", "exec", name, "--", CLIENT, *as_user, path], env=d.env(), capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc
    status, _, body = proc.stdout.partition(b"\n")
    return int(status), body


@pytest.fixture
def guest(busybox_daemon, container, client_binary):
    """A running container with the client in it."""
    _push_client(busybox_daemon, container, client_binary)
    return container


def _sock_present(d, name):
    return d.lxc("exec", name, "--", "test", "-S", "/dev/lxd/sock", check=False).returncode == 0


class Watcher:
    """`devlxd-client -w /1.0/events...` inside a container, read line by line."""

    def __init__(self, d, name, path, count):
        self.proc = subprocess.Popen(["lxc", "exec", name, "--", CLIENT, "-w", path, str(count)], env=d.env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = self.proc.stdout.readline()
        if first != b"open\n":
            self.close()
            raise AssertionError(f"no event stream: {first!r} {self.proc.stderr.read()!r}")

    def messages(self):
        out, err = self.proc.communicate(timeout=40)
        assert self.proc.returncode == 0, (out, err)
        return [json.loads(line) for line in out.splitlines()]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_guest_api(busybox_daemon, guest):
    """`/`, `/1.0`, only `user.*` keys (expanded), meta-data; no write, no unknown path."""
    d = busybox_daemon
    d.lxc("config", "set", guest, "user.foo", "bar 100%")
    d.lxc("config", "set", guest, "user.meta-data", "answer: 42")
    assert _guest(d, guest, "/") == (200, b'["/1.0"]\n')
    assert _guest(d, guest, "/1.0") == (200, b'{"api_version":"1.0"}\n')
    status, body = _guest(d, guest, "/1.0/config")
    assert status == 200
    assert sorted(json.loads(body)) == ["/1.0/config/user.foo", "/1.0/config/user.meta-data"]
    assert _guest(d, guest, "/1.0/config/user.foo") == (200, b"bar 100%")
    assert _guest(d, guest, "/1.0/config/security.devlxd") == (403, b"not authorized\n")
    assert _guest(d, guest, "/1.0/config/volatile.eth0.hwaddr") == (403, b"not authorized\n")
    assert _guest(d, guest, "/1.0/config/user.nothing") == (404, b"not found\n")
    assert _guest(d, guest, "/1.0/meta-data") == (
        200, f"#cloud-config\ninstance-id: {guest}\nlocal-hostname: {guest}\nanswer: 42".encode())
    assert _guest(d, guest, "/1.0/nothing")[0] == 404
    assert _guest(d, guest, "/1.0/")[0] == 404


def test_profile_keys_are_expanded(busybox_daemon, guest):
    """A `user.*` key of a profile is the container's too."""
    d = busybox_daemon
    d.lxc("profile", "create", "devlxdp")
    try:
        d.lxc("profile", "set", "devlxdp", "user.from-profile", "yes")
        d.lxc("profile", "add", guest, "devlxdp")
        assert _guest(d, guest, "/1.0/config/user.from-profile") == (200, b"yes")
        d.lxc("profile", "remove", guest, "devlxdp")
    finally:
        d.lxc("profile", "delete", "devlxdp", check=False)


def test_non_root_refused(busybox_daemon, guest):
    """A guest process not run by the container's root is refused (401)."""
    assert _guest(busybox_daemon, guest, "/1.0", user=1000) == (401, b"Access denied for non-root user\n")


def test_nested_pid_namespace_is_its_container(busybox_daemon, guest):
    """A guest process in a pid namespace of its own inside the container is still that container's."""
    d = busybox_daemon
    d.lxc("config", "set", guest, "user.nested", "yes")
    proc = subprocess.run(["lxc", "exec", guest, "--", "unshare", "-p", "-f", "--mount-proc",
                           CLIENT, "/1.0/config/user.nested"], env=d.env(), capture_output=True, timeout=60)
    assert proc.stdout == b"200\nyes", proc


def test_privileged_container(busybox_daemon, client_binary):
    """In a privileged container the guest's root is host uid 0, and is served."""
    d = busybox_daemon
    name = "devlxd-priv"
    d.lxc("launch", "busybox", name, "-c", "security.privileged=true", "-c", "user.p=1")
    try:
        _push_client(d, name, client_binary)
        assert _guest(d, name, "/1.0/config/user.p") == (200, b"1")
        assert _guest(d, name, "/1.0", user=1000)[0] == 401
    finally:
        d.lxc("delete", "-f", name, check=False)


def test_host_caller_refused(busybox_daemon):
    """A process on the host (not in any container) gets a plain 500."""
    path = os.path.join(busybox_daemon.dir, "devlxd", "sock")
    assert os.stat(path).st_mode & 0o777 == 0o666
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"GET /1.0 HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 500")
    assert body.endswith(b"is not in a container\n")


def test_events(busybox_daemon, guest, workdir):
    """Config and device events of its own container reach a guest; `type=` filters them."""
    d = busybox_daemon
    both = Watcher(d, guest, "/1.0/events", 4)
    devices_only = Watcher(d, guest, "/1.0/events?type=device", 2)
    try:
        d.lxc("config", "set", guest, "user.x", "1")
        d.lxc("config", "set", guest, "volatile.ignored.thing", "2", check=False)
        d.lxc("config", "device", "add", guest, "share", "disk", f"source={workdir}", "path=/mnt/share")
        d.lxc("config", "device", "set", guest, "share", "limits.read", "10MB")
        d.lxc("config", "set", guest, "user.x", "2")
        events = both.messages()
        only = devices_only.messages()
    finally:
        both.close()
        devices_only.close()
    assert [e["type"] for e in events] == ["config", "device", "device", "config"]
    assert events[0]["metadata"] == {"key": "user.x", "old_value": "", "value": "1"}
    assert events[1]["metadata"] == {"action": "added", "name": "share", "config": {
        "type": "disk", "source": workdir, "path": "/mnt/share"}}
    assert events[2]["metadata"] == {"action": "updated", "name": "share", "config": {
        "type": "disk", "source": workdir, "path": "/mnt/share", "limits.read": "10MB"}}
    assert events[3]["metadata"] == {"key": "user.x", "old_value": "1", "value": "2"}
    assert events[0]["timestamp"]
    assert [e["metadata"]["action"] for e in only] == ["added", "updated"]


def test_profile_change_is_an_event(busybox_daemon, guest):
    """A `user.*` key changed on a profile the running container uses is told to its guests."""
    d = busybox_daemon
    d.lxc("profile", "create", "devlxdev")
    try:
        d.lxc("profile", "add", guest, "devlxdev")
        watcher = Watcher(d, guest, "/1.0/events?type=config", 1)
        try:
            d.lxc("profile", "set", "devlxdev", "user.shared", "v")
            events = watcher.messages()
        finally:
            watcher.close()
        assert events[0]["metadata"] == {"key": "user.shared", "old_value": "", "value": "v"}
        d.lxc("profile", "remove", guest, "devlxdev")
    finally:
        d.lxc("profile", "delete", "devlxdev", check=False)


def test_events_of_other_containers_not_seen(busybox_daemon, guest, client_binary):
    """A change to another container is not told to this one's guests."""
    d = busybox_daemon
    other = guest + "o"
    d.lxc("launch", "busybox", other)
    try:
        watcher = Watcher(d, guest, "/1.0/events", 1)
        try:
            d.lxc("config", "set", other, "user.secret", "theirs")
            d.lxc("config", "set", guest, "user.mine", "ours")
            events = watcher.messages()
        finally:
            watcher.close()
        assert [e["metadata"]["key"] for e in events] == ["user.mine"]
        _push_client(d, other, client_binary)
        assert _guest(d, other, "/1.0/config/user.mine") == (404, b"not found\n")
        assert _guest(d, other, "/1.0/config/user.secret") == (200, b"theirs")
    finally:
        d.lxc("delete", "-f", other, check=False)


def test_disabled_and_toggled_live(busybox_daemon, client_binary):
    """security.devlxd=false: no /dev/lxd; set true live it appears and answers; false again, gone."""
    d = busybox_daemon
    name = "devlxd-off"
    d.lxc("launch", "busybox", name, "-c", "security.devlxd=false")
    try:
        assert not _sock_present(d, name)
        _push_client(d, name, client_binary)
        d.lxc("config", "set", name, "security.devlxd", "true")
        assert _sock_present(d, name)
        assert _guest(d, name, "/1.0")[0] == 200
        d.lxc("config", "set", name, "security.devlxd", "false")
        assert not _sock_present(d, name)
        d.lxc("restart", "-f", name)
        assert not _sock_present(d, name)
    finally:
        d.lxc("delete", "-f", name, check=False)


def test_streams_end_when_disallowed(busybox_daemon, guest):
    """An open event stream is closed once its container no longer allows /dev/lxd."""
    d = busybox_daemon
    watcher = Watcher(d, guest, "/1.0/events", 1)
    try:
        d.lxc("config", "set", guest, "security.devlxd", "false")
        out, _ = watcher.proc.communicate(timeout=40)
        assert watcher.proc.returncode != 0 and out == b""  # ended before any message
    finally:
        watcher.close()


def test_refused_through_a_kept_mount(busybox_daemon, guest):
    """A guest that kept the socket reachable (its own bind mount) is refused once disallowed."""
    d = busybox_daemon
    d.lxc("exec", guest, "--", "sh", "-c", "mkdir -p /kept && mount -o bind /dev/lxd /kept")
    d.lxc("config", "set", guest, "security.devlxd", "false")
    assert not _sock_present(d, guest)
    proc = subprocess.run(["lxc", "exec", guest, "--env", "DEVLXD_SOCKET=/kept/sock", "--", CLIENT, "/1.0"],
                          env=d.env(), capture_output=True, timeout=60)
    assert proc.stdout == b"403\nnot authorized\n", proc


def test_image_export(busybox_daemon, guest):
    """`/1.0/images/FP/export` only with security.devlxd.images=true, only public images, full fingerprints."""
    d = busybox_daemon
    fingerprint = d.request("GET", "/1.0/images").metadata[0].rsplit("/", 1)[-1]
    url = f"/1.0/images/{fingerprint}/export"
    assert _guest(d, guest, url) == (403, b"not authorized\n")
    d.lxc("config", "set", guest, "security.devlxd.images", "true")
    d.request("PATCH", f"/1.0/images/{fingerprint}", {"public": False})
    status, body = _guest(d, guest, url)
    assert status == 404 and json.loads(body)["error_code"] == 404
    d.request("PATCH", f"/1.0/images/{fingerprint}", {"public": True})
    try:
        assert _guest(d, guest, f"/1.0/images/{fingerprint[:12]}/export")[0] == 404
        status, body = _guest(d, guest, url)
        host = d.request("GET", url)
        assert status == 200 and host.status == 200
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(host.body).hexdigest()
    finally:
        d.request("PATCH", f"/1.0/images/{fingerprint}", {"public": False})


def test_survives_daemon_restart(busybox_daemon, guest):
    """The socket a restarted daemon makes is the one the running container's /dev/lxd shows."""
    d = busybox_daemon
    d.lxc("config", "set", guest, "user.kept", "yes")
    d.stop()
    assert not os.path.exists(os.path.join(d.dir, "devlxd", "sock"))  # no socket left without a daemon
    d.start(timeout=120)
    assert wait_until(lambda: _sock_present(d, guest), 30)
    assert _guest(d, guest, "/1.0/config/user.kept") == (200, b"yes")
