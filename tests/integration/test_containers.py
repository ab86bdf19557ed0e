"""Containers on liblxc, driven by the real `lxc` client: lifecycle, config, devices, state."""

import json
import os
import subprocess
import tempfile

from tests.daemonproc import wait_until


_wait = wait_until


def _status(daemon, name):
    result = daemon.request("GET", f"/1.0/containers/{name}")
    return result.metadata["status"] if result.status == 200 else None


def test_launch_list_info(busybox_daemon, container):
    """`lxc launch` reaches RUNNING; `lxc list` (default columns) filters by status; `lxc info`
    shows pid, cpu, memory."""
    d = busybox_daemon
    out = d.lxc("list", "--format", "csv", "-c", "ns").stdout
    assert f"{container},RUNNING" in out
    running = d.lxc("list", "status=running", "--format", "csv", "-c", "n").stdout.split()
    assert container in running
    stopped = d.lxc("list", "status=stopped", "--format", "csv", "-c", "n").stdout.split()
    assert container not in stopped
    info = d.lxc("info", container).stdout
    assert "Status: RUNNING" in info
    assert "PID:" in info
    assert "CPU usage" in info
    assert "Memory usage" in info
    state = d.request("GET", f"/1.0/containers/{container}/state").metadata
    assert state["pid"] > 0 and state["processes"] >= 1
    assert state["cpu"]["usage"] > 0
    assert state["network"]["lo"]["addresses"][0]["address"] == "127.0.0.1"
    full = d.request("GET", "/1.0/containers?recursion=2").metadata  # container_full
    mine = next(o for o in full if o["name"] == container)
    assert mine["state"]["pid"] == state["pid"]
    assert mine["snapshots"] == [] and mine["backups"] == []


def test_stop_start_restart_pause_resume(busybox_daemon, container):
    """Every state action of the client works and is reflected in the status."""
    d = busybox_daemon
    d.lxc("stop", container, "--force")
    assert _status(d, container) == "Stopped"
    d.lxc("start", container)
    assert _status(d, container) == "Running"
    pid = d.request("GET", f"/1.0/containers/{container}/state").metadata["pid"]
    d.lxc("restart", container, "--force")
    assert _status(d, container) == "Running"
    assert d.request("GET", f"/1.0/containers/{container}/state").metadata["pid"] != pid
    d.lxc("pause", container)
    assert _status(d, container) == "Frozen"
    d.lxc("start", container)  # the client resumes a frozen container with `unfreeze`
    assert _status(d, container) == "Running"
    d.lxc("stop", container, "--timeout", "20")
    assert _status(d, container) == "Stopped"


def test_init_replaced_from_inside(busybox_daemon, container):
    """A container whose init ends and comes back (a reboot from inside) shows the new init:
    the daemon keeps the old one only while it lives."""
    d = busybox_daemon
    first = d.request("GET", f"/1.0/containers/{container}/state").metadata["pid"]
    d.lxc("exec", container, "--", "reboot", "-f", check=False)

    def new_init():
        state = d.request("GET", f"/1.0/containers/{container}/state").metadata
        return state["status"] == "Running" and state["pid"] not in (first, 0, -1, None)

    assert wait_until(new_init, 30)
    assert d.lxc("exec", container, "--", "echo", "back").stdout == "back\n"


def test_memory_limit_live(busybox_daemon, container):
    """`lxc config set limits.memory` lands in the running container's cgroup."""
    d = busybox_daemon
    d.lxc("config", "set", container, "limits.memory", "64MB")
    path = d.cgroup_file(container, "memory", "memory.limit_in_bytes")
    if not os.path.exists(path):
        path = d.cgroup_file(container, "memory", "memory.max")
    with open(path) as f:
        assert int(f.read().strip()) == 64 * 1024 * 1024


def test_disk_device_hotplug(busybox_daemon, container):
    """A host directory added as a disk device appears live inside the container, and goes away."""
    d = busybox_daemon
    source = tempfile.mkdtemp(prefix="lxdtx-disk-", dir="/var/tmp")
    try:
        with open(os.path.join(source, "hello"), "w") as f:
            f.write("from the host\n")
        d.lxc("config", "device", "add", container, "data", "disk", f"source={source}", "path=/mnt/data")
        pid = d.request("GET", f"/1.0/containers/{container}/state").metadata["pid"]
        assert _wait(lambda: os.path.exists(f"/proc/{pid}/root/mnt/data/hello"), 10)
        with open(f"/proc/{pid}/root/mnt/data/hello") as f:
            assert f.read() == "from the host\n"
        d.lxc("config", "device", "remove", container, "data")
        assert _wait(lambda: not os.path.exists(f"/proc/{pid}/root/mnt/data/hello"), 10)
    finally:
        subprocess.run(["rm", "-rf", source])


def test_unprivileged_by_default(busybox_daemon, container):
    """Init of a default container runs as a high host uid; the rootfs is shifted (by an
    idmapped mount where the kernel can, else on disk)."""
    d = busybox_daemon
    pid = d.request("GET", f"/1.0/containers/{container}/state").metadata["pid"]
    with open(f"/proc/{pid}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    assert int(uid_line.split()[1]) >= 100000
    config = d.request("GET", f"/1.0/containers/{container}").metadata["config"]
    idmap = json.loads(config["volatile.idmap.current"])
    assert config["volatile.last_state.idmap"] in ("[]", config["volatile.idmap.current"])
    assert any(entry["Isuid"] and entry["Nsid"] == 0 and entry["Hostid"] >= 100000 for entry in idmap)
    stat = os.stat(f"/proc/{pid}/root/bin/busybox")
    assert stat.st_uid >= 100000


def test_privileged_container(busybox_daemon):
    """security.privileged=true runs init as host root."""
    d = busybox_daemon
    d.lxc("launch", "busybox", "priv1", "-c", "security.privileged=true")
    try:
        pid = d.request("GET", "/1.0/containers/priv1/state").metadata["pid"]
        with open(f"/proc/{pid}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        assert uid_line.split()[1] == "0"
    finally:
        d.lxc("delete", "-f", "priv1", check=False)


def test_ephemeral_vanishes_on_stop(busybox_daemon):
    """An ephemeral container is deleted when it stops."""
    d = busybox_daemon
    d.lxc("launch", "busybox", "eph1", "--ephemeral")
    d.lxc("stop", "eph1", "--force")
    assert _wait(lambda: d.request("GET", "/1.0/containers/eph1").status == 404, 20)


def test_rename_and_delete(busybox_daemon):
    """A stopped container renames; delete removes its rootfs, config and rows."""
    d = busybox_daemon
    d.lxc("init", "busybox", "ren1")
    d.lxc("move", "ren1", "ren2")
    assert d.request("GET", "/1.0/containers/ren1").status == 404
    assert d.request("GET", "/1.0/containers/ren2").status == 200
    d.lxc("delete", "ren2")
    assert d.request("GET", "/1.0/containers/ren2").status == 404
    pool_dir = os.path.join(d.dir, "storage-pools", "default", "containers")
    assert "ren2" not in os.listdir(pool_dir) and "ren1" not in os.listdir(pool_dir)
    assert not os.path.exists(os.path.join(d.dir, "lxc", "ren2"))


def test_bad_input_leaves_nothing(busybox_daemon):
    """Bad names, unknown images, bad config and devices are clear 4xx errors and create nothing."""
    d = busybox_daemon
    before = d.request("GET", "/1.0/containers").metadata
    cases = [
        ({"name": "9bad", "source": {"type": "image", "alias": "busybox"}}, "name"),
        ({"name": "ok1", "source": {"type": "image", "alias": "nope"}}, "nope"),
        ({"name": "ok1", "source": {"type": "image", "alias": "busybox"}, "config": {"bogus.key": "1"}},
         "bogus.key"),
        ({"name": "ok1", "source": {"type": "image", "alias": "busybox"}, "config": {"limits.memory": "12XB"}},
         "limits.memory"),
        ({"name": "ok1", "source": {"type": "image", "alias": "busybox"},
          "devices": {"d": {"type": "disk", "path": "/x"}}}, "source"),
        ({"name": "ok1", "source": {"type": "image", "alias": "busybox"}, "profiles": ["nope"]}, "nope"),
        ({"name": "ok1", "source": {"type": "wat"}}, "wat"),
    ]
    for body, word in cases:
        result = d.request("POST", "/1.0/containers", body)
        assert 400 <= result.status < 500, (body, result)
        assert word in result.json["error"], (body, result.json)
    assert d.request("GET", "/1.0/containers").metadata == before
    assert not os.path.exists(os.path.join(d.dir, "storage-pools", "default", "containers", "ok1"))


def test_failed_start_leaves_container_stopped(busybox_daemon):
    """A liblxc start failure is reported with its reason and the container stays usable."""
    d = busybox_daemon
    d.lxc("init", "busybox", "bad1", "-c", "raw.lxc=lxc.mount.entry = /nonexistent/lxdtx mnt none bind 0 0")
    try:
        result = d.lxc("start", "bad1", check=False)
        assert result.returncode != 0
        assert _status(d, "bad1") == "Stopped"
        leftover = os.path.dirname(d.cgroup_file("bad1", "pids", "pids.max"))
        assert not os.path.exists(leftover), leftover
        assert not os.path.exists(leftover.replace(".payload.", ".monitor."))
        d.lxc("config", "unset", "bad1", "raw.lxc")
        d.lxc("start", "bad1")
        assert _status(d, "bad1") == "Running"
    finally:
        d.lxc("delete", "-f", "bad1", check=False)


def test_publish_then_launch(busybox_daemon):
    """`lxc publish` of a stopped container makes an image with unshifted ids that launches again."""
    d = busybox_daemon
    d.lxc("launch", "busybox", "pub1")
    try:
        d.lxc("exec", "pub1", "--", "sh", "-c", "echo published > /root/marker", check=False)
        d.lxc("stop", "pub1", "--force")
        d.lxc("publish", "pub1", "--alias", "pubimg")
        images = d.request("GET", "/1.0/images/aliases/pubimg").metadata
        assert images["target"]
        d.lxc("launch", "pubimg", "pub2")
        assert _status(d, "pub2") == "Running"
        # The source container still starts with its ids intact.
        d.lxc("start", "pub1")
        pid = d.request("GET", "/1.0/containers/pub1/state").metadata["pid"]
        assert os.stat(f"/proc/{pid}/root/bin/busybox").st_uid >= 100000
    finally:
        d.lxc("delete", "-f", "pub1", check=False)
        d.lxc("delete", "-f", "pub2", check=False)
        d.lxc("image", "delete", "pubimg", check=False)


def test_logs_api(busybox_daemon, container):
    """Logs: list names lxc.log, lxc.conf and console.log; get returns them; console.log deletes, lxc.log not."""
    d = busybox_daemon
    listed = d.request("GET", f"/1.0/containers/{container}/logs").metadata
    names = {url.rsplit("/", 1)[-1] for url in listed}
    assert {"lxc.log", "lxc.conf", "console.log"} <= names
    conf = d.request("GET", f"/1.0/containers/{container}/logs/lxc.conf")
    assert conf.status == 200 and b"lxc.uts.name" in conf.body
    assert _wait(lambda: b"booted" in d.request("GET", f"/1.0/containers/{container}/logs/console.log").body, 10)
    assert d.request("DELETE", f"/1.0/containers/{container}/logs/lxc.log").status == 400
    assert d.request("GET", f"/1.0/containers/{container}/logs/../../etc").status in (400, 404)
    assert d.lxc("info", "--show-log", container).returncode == 0



def test_log_download_ranges(busybox_daemon, container):
    """Log files stream from disk with byte ranges: 206 for one range, 416 past the end."""
    d = busybox_daemon
    url = f"/1.0/containers/{container}/logs/lxc.conf"
    whole = d.request("GET", url)
    assert whole.status == 200 and whole.headers["Accept-Ranges"] == "bytes"
    assert int(whole.headers["Content-Length"]) == len(whole.body) > 20
    head = d.request("GET", url, headers={"Range": "bytes=0-9"})
    assert (head.status, head.body) == (206, whole.body[:10])
    assert head.headers["Content-Range"] == f"bytes 0-9/{len(whole.body)}"
    tail = d.request("GET", url, headers={"Range": "bytes=-5"})
    assert (tail.status, tail.body) == (206, whole.body[-5:])
    middle = d.request("GET", url, headers={"Range": "bytes=10-"})
    assert (middle.status, middle.body) == (206, whole.body[10:])
    past = d.request("GET", url, headers={"Range": f"bytes={len(whole.body)}-"})
    assert (past.status, past.headers["Content-Range"]) == (416, f"bytes */{len(whole.body)}")
    assert d.request("GET", url, headers={"Range": "lines=1-2"}).body == whole.body

def test_publish_snapshot(busybox_daemon):
    """`lxc publish c/snap` of a running container's snapshot makes a launchable image."""
    d = busybox_daemon
    d.lxc("launch", "busybox", "pubs1")
    try:
        d.lxc("snapshot", "pubs1", "s0")
        d.lxc("publish", "pubs1/s0", "--alias", "pubsnap")
        d.lxc("launch", "pubsnap", "pubs2")
        assert _status(d, "pubs2") == "Running"
        assert _status(d, "pubs1") == "Running"
        leftovers = os.listdir(os.path.join(d.dir, "storage-pools", "default", "containers"))
        assert not [n for n in leftovers if ".publish-" in n]
    finally:
        d.lxc("delete", "-f", "pubs1", check=False)
        d.lxc("delete", "-f", "pubs2", check=False)
        d.lxc("image", "delete", "pubsnap", check=False)
