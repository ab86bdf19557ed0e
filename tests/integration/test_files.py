"""The file API with the real `lxc` client and pylxd: push, pull, recursion, symlinks, escapes."""

import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ct(busybox_daemon):
    """A running busybox container."""
    busybox_daemon.lxc("launch", "busybox", "fi1")
    try:
        yield "fi1"
    finally:
        busybox_daemon.lxc("delete", "-f", "fi1", check=False)


@pytest.fixture
def sentinel():
    """A host file that no file API call may reach."""
    directory = tempfile.mkdtemp(prefix="lxdtx-sentinel-", dir="/var/tmp")
    path = os.path.join(directory, "sentinel")
    with open(path, "w") as f:
        f.write("host only\n")
    try:
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _sh(d, ct, script):
    return d.lxc("exec", ct, "--", "sh", "-c", script).stdout


def test_push_pull_with_mode_and_owner(busybox_daemon, ct, workdir):
    """`lxc file push --mode --uid --gid` sets them as seen inside; pull gets the bytes back."""
    d = busybox_daemon
    src = os.path.join(workdir, "hello.txt")
    data = os.urandom(300000)
    with open(src, "wb") as f:
        f.write(data)
    d.lxc("file", "push", src, f"{ct}/root/hello.txt", "--mode", "0604", "--uid", "1000", "--gid", "50")
    assert _sh(d, ct, "stat -c '%a %u %g' /root/hello.txt") == "604 1000 50\n"
    result = d.request("GET", f"/1.0/containers/{ct}/files?path=/root/hello.txt")
    assert result.body == data
    assert (result.headers["X-Lxd-Uid"], result.headers["X-Lxd-Gid"], result.headers["X-Lxd-Mode"],
            result.headers["X-Lxd-Type"]) == ("1000", "50", "0604", "file")
    out = os.path.join(workdir, "back.txt")
    d.lxc("file", "pull", f"{ct}/root/hello.txt", out)
    with open(out, "rb") as f:
        assert f.read() == data
    # On the host the owner is the mapped id.
    pid = d.request("GET", f"/1.0/containers/{ct}/state").metadata["pid"]
    assert os.stat(f"/proc/{pid}/root/root/hello.txt").st_uid >= 100000


def test_recursive_and_parents(busybox_daemon, ct, workdir):
    """`-r` pushes and pulls trees (symlinks stay symlinks); `-p` creates parent directories."""
    d = busybox_daemon
    tree = os.path.join(workdir, "tree")
    os.makedirs(os.path.join(tree, "a", "b"))
    with open(os.path.join(tree, "a", "b", "f"), "w") as f:
        f.write("deep\n")
    os.symlink("../b/f", os.path.join(tree, "a", "link"))
    d.lxc("file", "push", "-r", tree, f"{ct}/root/")
    assert _sh(d, ct, "cat /root/tree/a/b/f; readlink /root/tree/a/link") == "deep\n../b/f\n"
    back = os.path.join(workdir, "back")
    os.makedirs(back)
    d.lxc("file", "pull", "-r", f"{ct}/root/tree", back)
    with open(os.path.join(back, "tree", "a", "b", "f")) as f:
        assert f.read() == "deep\n"
    assert os.readlink(os.path.join(back, "tree", "a", "link")) == "../b/f"
    src = os.path.join(tree, "a", "b", "f")
    d.lxc("file", "push", "-p", src, f"{ct}/opt/x/y/z.txt")
    assert _sh(d, ct, "cat /opt/x/y/z.txt") == "deep\n"


def test_delete(busybox_daemon, ct):
    """`lxc file delete` removes a file; missing paths are 404; a non-empty directory stays."""
    d = busybox_daemon
    _sh(d, ct, "mkdir -p /tmp/del/sub && echo x > /tmp/del/f")
    d.lxc("file", "delete", f"{ct}/tmp/del/f")
    assert _sh(d, ct, "ls /tmp/del") == "sub\n"
    assert d.request("DELETE", f"/1.0/containers/{ct}/files?path=/tmp/del/f").status == 404
    assert d.request("DELETE", f"/1.0/containers/{ct}/files?path=/tmp").status == 400
    assert d.request("DELETE", f"/1.0/containers/{ct}/files?path=/tmp/del/sub").status == 200


def test_symlinks_via_api(busybox_daemon, ct):
    """Symlinks are created with X-LXD-type and read back as symlinks (the body is the target)."""
    d = busybox_daemon
    result = d.request("POST", f"/1.0/containers/{ct}/files?path=/root/passwd-link", raw=b"/etc/passwd",
                       headers={"X-LXD-type": "symlink"})
    assert result.status == 200, result
    assert _sh(d, ct, "readlink /root/passwd-link") == "/etc/passwd\n"
    result = d.request("GET", f"/1.0/containers/{ct}/files?path=/root/passwd-link")
    assert result.headers["X-Lxd-Type"] == "symlink" and result.body == b"/etc/passwd"


def test_directories_via_api(busybox_daemon, ct):
    """Directories are created with their mode and listed (null when empty)."""
    d = busybox_daemon
    result = d.request("POST", f"/1.0/containers/{ct}/files?path=/srv/newdir",
                       headers={"X-LXD-type": "directory", "X-LXD-mode": "0700"})
    assert result.status == 200
    listing = d.request("GET", f"/1.0/containers/{ct}/files?path=/srv/newdir")
    assert listing.headers["X-Lxd-Type"] == "directory" and listing.metadata is None
    assert listing.headers["X-Lxd-Mode"] == "0700"
    assert "newdir" in d.request("GET", f"/1.0/containers/{ct}/files?path=/srv").metadata


def test_append_and_bad_headers(busybox_daemon, ct):
    """X-LXD-write: append appends; unknown types and write modes are 400 and change nothing."""
    d = busybox_daemon
    url = f"/1.0/containers/{ct}/files?path=/root/log.txt"
    assert d.request("POST", url, raw=b"one\n").status == 200
    assert d.request("POST", url, raw=b"two\n", headers={"X-LXD-write": "append"}).status == 200
    assert d.request("GET", url).body == b"one\ntwo\n"
    bad = d.request("POST", url, raw=b"x", headers={"X-LXD-type": "fifo"})
    assert bad.status == 400 and bad.json["error"] == "Bad file type: fifo"
    bad = d.request("POST", url, raw=b"x", headers={"X-LXD-write": "prepend"})
    assert bad.status == 400 and bad.json["error"] == "Bad file write mode: prepend"
    assert d.request("POST", url, raw=b"x", headers={"X-LXD-mode": "0x1"}).status == 400
    assert d.request("GET", f"/1.0/containers/{ct}/files").status == 400
    assert d.request("GET", url).body == b"one\ntwo\n"


def test_escape_attempts_stay_inside(busybox_daemon, ct, sentinel):
    """Symlinks to / or to a host-looking directory, `../..` and symlinked directories never reach the host."""
    d = busybox_daemon
    host_dir = os.path.dirname(sentinel)
    _sh(d, ct, f"ln -sfn / /root/rootlink; ln -sfn {host_dir} /root/hostdir; ln -sfn /etc /root/etclink; "
               f"ln -sfn ../../../../../../../../{host_dir} /root/uplink")
    name = os.path.basename(sentinel)
    for path in [f"/root/rootlink{sentinel}", f"/../../../../..{sentinel}", f"/root/hostdir/{name}",
                 f"/root/uplink/{name}"]:
        result = d.request("GET", f"/1.0/containers/{ct}/files?path={path}")
        assert result.status == 404, (path, result)
        result = d.request("POST", f"/1.0/containers/{ct}/files?path={path}", raw=b"evil\n")
        assert result.status in (200, 404), (path, result)
    with open(sentinel) as f:
        assert f.read() == "host only\n"
    assert os.listdir(host_dir) == [name]
    # Through a symlinked directory the container's own /etc is what is reached.
    token = uuid.uuid4().hex
    assert d.request("POST", f"/1.0/containers/{ct}/files?path=/root/etclink/escape-test",
                     raw=token.encode()).status == 200
    assert _sh(d, ct, "cat /etc/escape-test") == token
    assert not os.path.exists("/etc/escape-test")
    assert d.request("GET", f"/1.0/containers/{ct}/files?path=/root/rootlink/etc/hostname").body == \
        _sh(d, ct, "cat /etc/hostname").encode()
    # Deleting through a symlink removes the link, never its target.
    d.lxc("file", "delete", f"{ct}/root/etclink")
    assert _sh(d, ct, "ls /etc/escape-test") == "/etc/escape-test\n"


def test_stopped_container(busybox_daemon, workdir):
    """Push and pull work on a stopped container (its rootfs), with the id map applied."""
    d = busybox_daemon
    d.lxc("init", "busybox", "fi-stopped")
    try:
        src = os.path.join(workdir, "s.txt")
        with open(src, "w") as f:
            f.write("while stopped\n")
        d.lxc("file", "push", src, "fi-stopped/root/s.txt", "--uid", "7")
        assert d.lxc("file", "pull", "fi-stopped/root/s.txt", "-").stdout == "while stopped\n"
        result = d.request("GET", "/1.0/containers/fi-stopped/files?path=/root/s.txt")
        assert result.headers["X-Lxd-Uid"] == "7"
        d.lxc("start", "fi-stopped")
        out = d.lxc("exec", "fi-stopped", "--", "stat", "-c", "%u %s", "/root/s.txt").stdout
        assert out == "7 14\n"
    finally:
        d.lxc("delete", "-f", "fi-stopped", check=False)


def test_large_file_roundtrip(busybox_daemon, ct, workdir):
    """64 MiB go up and come back intact, streamed."""
    d = busybox_daemon
    src = os.path.join(workdir, "big")
    with open(src, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1024 * 1024))
    d.lxc("file", "push", src, f"{ct}/root/big")
    out = os.path.join(workdir, "big.back")
    d.lxc("file", "pull", f"{ct}/root/big", out)
    assert subprocess.run(["cmp", src, out]).returncode == 0
    _sh(d, ct, "rm /root/big")


def test_pylxd_files(busybox_daemon, ct):
    """pylxd's files.put/get/mk_dir/delete work."""
    import pylxd

    instance = pylxd.Client(endpoint=busybox_daemon.socket_path).instances.get(ct)
    instance.files.put("/root/pylxd.txt", b"from pylxd", mode="0600")
    assert instance.files.get("/root/pylxd.txt") == b"from pylxd"
    instance.files.mk_dir("/root/pylxd-dir")
    instance.files.delete("/root/pylxd.txt")
    assert _sh(busybox_daemon, ct, "ls -d /root/pylxd-dir; ls /root/pylxd.txt 2>&1 || true").startswith(
        "/root/pylxd-dir\n")
