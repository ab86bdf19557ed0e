"""Host-path `disk` devices on real busybox containers: live add and remove, mount propagation."""

import os
import shutil
import subprocess
import tempfile

import pytest

pytestmark = pytest.mark.timeout(300)


def _sh(d, name, script, check=True):
    return d.lxc("exec", name, "--", "sh", "-c", script, check=check)


@pytest.fixture
def shared_source():
    """A host directory that is a mount point of its own, shared (a peer group to propagate from);
    everything mounted under it and it itself unmounted afterwards."""
    path = tempfile.mkdtemp(prefix="lxdtx-prop-", dir="/var/tmp")
    os.chmod(path, 0o755)  # the container's root is no host root: it passes as anyone
    mounted = []

    def mount_under(name):
        """A tmpfs at `name` under the source, holding a file `marker-<name>`; returns its path."""
        target = os.path.join(path, name)
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", target], check=True)
        mounted.append(target)
        with open(os.path.join(target, f"marker-{name}"), "w") as f:
            f.write(name)
        return target

    try:
        subprocess.run(["mount", "--bind", path, path], check=True)
        mounted.append(path)
        subprocess.run(["mount", "--make-rshared", path], check=True)
        yield path, mount_under
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(path, ignore_errors=True)


def test_hot_add_and_remove(busybox_daemon, container, workdir):
    """A host directory added live is seen inside (read-only when asked), and is gone once removed."""
    d = busybox_daemon
    os.chmod(workdir, 0o777)  # the container's root is no host root: it writes as anyone
    with open(os.path.join(workdir, "hello"), "w") as f:
        f.write("from the host\n")
    os.chmod(os.path.join(workdir, "hello"), 0o644)
    d.lxc("config", "device", "add", container, "data", "disk", f"source={workdir}", "path=/mnt/data")
    assert _sh(d, container, "cat /mnt/data/hello").stdout == "from the host\n"
    _sh(d, container, "echo back > /mnt/data/written")
    assert os.path.exists(os.path.join(workdir, "written"))
    d.lxc("config", "device", "add", container, "ro", "disk", f"source={workdir}", "path=/mnt/ro", "readonly=true")
    assert "Read-only" in _sh(d, container, "touch /mnt/ro/x", check=False).stderr
    d.lxc("config", "device", "remove", container, "data")
    d.lxc("config", "device", "remove", container, "ro")
    mounts = _sh(d, container, "cat /proc/mounts").stdout
    assert " /mnt/data " not in mounts and " /mnt/ro " not in mounts
    assert _sh(d, container, "test -e /mnt/data/hello", check=False).returncode != 0


@pytest.mark.parametrize("mode", ["rshared", "shared", "rslave", "slave"])
@pytest.mark.parametrize("live", [True, False], ids=["live", "at-start"])
def test_propagation_seen_inside(busybox_daemon, container, shared_source, live, mode):
    """propagation=rshared (and the other modes that receive): a mount made on the host under
    the source after the device is there appears inside the container."""
    d = busybox_daemon
    source, mount_under = shared_source
    if not live:
        d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "s", "disk", f"source={source}", "path=/mnt/s",
          f"propagation={mode}")
    if not live:
        d.lxc("start", container)
    mount_under("late")
    assert _sh(d, container, "cat /mnt/s/late/marker-late").stdout == "late"


@pytest.mark.parametrize("mode", ["private", "rprivate"])
@pytest.mark.parametrize("live", [True, False], ids=["live", "at-start"])
def test_private_propagation_not_seen_inside(busybox_daemon, container, shared_source, live, mode):
    """propagation=private: the same mount on the host stays out of the container."""
    d = busybox_daemon
    source, mount_under = shared_source
    if not live:
        d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "s", "disk", f"source={source}", "path=/mnt/s",
          f"propagation={mode}")
    if not live:
        d.lxc("start", container)
    mount_under("late")
    assert _sh(d, container, "test -e /mnt/s/late/marker-late", check=False).returncode != 0


def test_container_mounts_stay_inside(busybox_daemon, container, shared_source):
    """Without a propagation mode a live disk from a shared host mount is the host's slave:
    what the container mounts under it does not show on the host."""
    d = busybox_daemon
    source, _ = shared_source
    os.makedirs(os.path.join(source, "inner"))
    d.lxc("config", "device", "add", container, "s", "disk", f"source={source}", "path=/mnt/s")
    _sh(d, container, "mount -t tmpfs tmpfs /mnt/s/inner && touch /mnt/s/inner/from-container")
    assert not os.path.ismount(os.path.join(source, "inner"))
    assert not os.path.exists(os.path.join(source, "inner", "from-container"))


def test_bad_propagation(busybox_daemon, container, workdir):
    """An unknown propagation mode is refused, naming the key; the device is not kept."""
    d = busybox_daemon
    result = d.lxc("config", "device", "add", container, "s", "disk", f"source={workdir}", "path=/mnt/s",
                   "propagation=everywhere", check=False)
    assert result.returncode != 0 and "propagation" in result.stderr, result.stderr
    assert "s" not in d.request("GET", f"/1.0/containers/{container}").metadata["devices"]
