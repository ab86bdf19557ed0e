"""Host-path `disk` devices on real busybox containers: live add and remove, mount propagation."""

import os
import shutil
import subprocess
import tempfile
import time

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


# -- limits.read / limits.write / limits.max ---------------------------------------

_V1_FILES = {"rbps": "blkio.throttle.read_bps_device", "riops": "blkio.throttle.read_iops_device",
             "wbps": "blkio.throttle.write_bps_device", "wiops": "blkio.throttle.write_iops_device"}


def _pid(d, name):
    return d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]


def _throttles(d, name):
    """{field: {block: value}} of the container's block io throttles (cgroup v1 or io.max)."""
    with open(f"/proc/{_pid(d, name)}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    result = {field: {} for field in _V1_FILES}
    for _, controllers, path in lines:
        if "blkio" in controllers.split(","):
            for field, filename in _V1_FILES.items():
                with open(f"/sys/fs/cgroup/blkio{path}/{filename}") as f:
                    for line in f.read().split("\n"):
                        if line.strip():
                            block, value = line.split()
                            result[field][block] = int(value)
            return result
    for _, controllers, path in lines:
        if controllers == "":
            with open(f"/sys/fs/cgroup{path}/io.max") as f:
                for line in f.read().split("\n"):
                    if line.strip():
                        block, *pairs = line.split()
                        for pair in pairs:
                            field, _, value = pair.partition("=")
                            if value != "max":
                                result[field][block] = int(value)
            return result
    pytest.skip("no block io controller (blkio or io) for containers on this host")


def _whole_disk(path):
    """`major:minor` of the disk holding `path` (the disk of its partition), or skip."""
    dev = os.stat(path).st_dev
    block = f"{os.major(dev)}:{os.minor(dev)}"
    sysdir = f"/sys/dev/block/{block}"
    if os.major(dev) == 0 or not os.path.isdir(sysdir) or os.listdir(os.path.join(sysdir, "slaves")):
        pytest.skip(f"{path} is not directly on a disk or partition here (btrfs, overlay or device mapper)")
    if os.path.exists(os.path.join(sysdir, "partition")):
        with open(os.path.join(os.path.realpath(sysdir), "..", "dev")) as f:
            block = f.read().strip()
    return block


def _timed_direct_write(d, name, path, mib):
    """Seconds an O_DIRECT write of `mib` MiB to `path` inside the container takes."""
    started = time.monotonic()
    _sh(d, name, f"dd if=/dev/zero of={path} bs=64k count={16 * mib} oflag=direct conv=fsync 2>/dev/null")
    return time.monotonic() - started


def test_io_limits_live(busybox_daemon, container, workdir):
    """limits.read/limits.write on a host-path disk become throttles on its disk, live; a direct
    write is held to the limit; unset or removed, the throttles go."""
    d = busybox_daemon
    os.chmod(workdir, 0o777)
    block = _whole_disk(workdir)
    d.lxc("config", "device", "add", container, "l", "disk", f"source={workdir}", "path=/mnt/l",
          "limits.read=4MB", "limits.write=1MB")
    throttles = _throttles(d, container)
    assert throttles["rbps"].get(block) == 4 << 20 and throttles["wbps"].get(block) == 1 << 20, throttles
    limited = _timed_direct_write(d, container, "/mnt/l/f", 3)
    d.lxc("config", "device", "unset", container, "l", "limits.write")
    throttles = _throttles(d, container)
    assert block not in throttles["wbps"] and throttles["rbps"].get(block) == 4 << 20, throttles
    free = _timed_direct_write(d, container, "/mnt/l/f", 3)
    print(f"3 MiB O_DIRECT write: {limited:.2f}s at limits.write=1MB, {free:.2f}s without")
    assert limited >= 1.5 and free < limited, (limited, free)
    d.lxc("config", "device", "remove", container, "l")
    assert all(block not in values for values in _throttles(d, container).values())


def test_root_disk_limits(busybox_daemon, container):
    """limits.max on the root disk, in iops: both directions throttled from the start; changed live."""
    d = busybox_daemon
    d.lxc("stop", "-f", container)
    d.lxc("config", "device", "override", container, "root", "limits.max=200iops")
    d.lxc("start", container)
    block = _whole_disk(f"/proc/{_pid(d, container)}/root/")
    throttles = _throttles(d, container)
    assert throttles["riops"].get(block) == 200 and throttles["wiops"].get(block) == 200, throttles
    assert block not in throttles["rbps"] and block not in throttles["wbps"]
    d.lxc("config", "device", "set", container, "root", "limits.max", "")
    d.lxc("config", "device", "set", container, "root", "limits.write", "300iops")  # live
    throttles = _throttles(d, container)
    assert throttles["wiops"].get(block) == 300 and block not in throttles["riops"], throttles


def test_io_limits_without_a_block_device(busybox_daemon, container, workdir):
    """A source on tmpfs cannot be throttled: refused with the device named, nothing added."""
    d = busybox_daemon
    target = os.path.join(workdir, "t")
    os.mkdir(target)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", target], check=True)
    try:
        result = d.lxc("config", "device", "add", container, "t", "disk", f"source={target}", "path=/mnt/t",
                       "limits.read=1MB", check=False)
        assert result.returncode != 0 and "block device" in result.stderr and '"t"' in result.stderr, result.stderr
        assert "t" not in d.request("GET", f"/1.0/containers/{container}").metadata["devices"]
        assert " /mnt/t " not in _sh(d, container, "cat /proc/mounts").stdout
    finally:
        subprocess.run(["umount", "-l", target], check=False)


# -- optional, recursive ------------------------------------------------------------

@pytest.mark.parametrize("live", [True, False], ids=["live", "at-start"])
def test_optional_missing_source(busybox_daemon, container, workdir, live):
    """optional=true: a missing source is no error (nothing mounted); without it the add is refused."""
    d = busybox_daemon
    missing = os.path.join(workdir, "not-there")
    if not live:
        d.lxc("stop", "-f", container)
    result = d.lxc("config", "device", "add", container, "m", "disk", f"source={missing}", "path=/mnt/m",
                   check=False)
    if live:
        assert result.returncode != 0 and "not-there" in result.stderr, result.stderr
    else:  # stopped: kept, and the start says what is missing
        result = d.lxc("start", container, check=False)
        assert result.returncode != 0 and "not-there" in result.stderr, result.stderr
        d.lxc("config", "device", "remove", container, "m")
    d.lxc("config", "device", "add", container, "o", "disk", f"source={missing}", "path=/mnt/o", "optional=true")
    if not live:
        d.lxc("start", container)
    assert " /mnt/o " not in _sh(d, container, "cat /proc/mounts").stdout


def test_recursive_live(busybox_daemon, container, shared_source):
    """recursive=true brings the mounts under the source along; without it only the source itself."""
    d = busybox_daemon
    source, mount_under = shared_source
    mount_under("early")
    d.lxc("config", "device", "add", container, "r", "disk", f"source={source}", "path=/mnt/r",
          "recursive=true", "propagation=rprivate")
    d.lxc("config", "device", "add", container, "f", "disk", f"source={source}", "path=/mnt/f",
          "propagation=private")
    assert _sh(d, container, "cat /mnt/r/early/marker-early").stdout == "early"
    assert _sh(d, container, "test -e /mnt/f/early/marker-early", check=False).returncode != 0


def test_recursive_at_start(busybox_daemon, container, shared_source):
    """At start recursive=true brings the mounts under the source along; a plain bind of a source
    with mounts below, which the kernel refuses in the container's user namespace, is refused clearly."""
    d = busybox_daemon
    source, mount_under = shared_source
    mount_under("early")
    d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "r", "disk", f"source={source}", "path=/mnt/r", "recursive=true")
    d.lxc("config", "device", "add", container, "f", "disk", f"source={source}", "path=/mnt/f")
    result = d.lxc("start", container, check=False)
    assert result.returncode != 0 and '"f"' in result.stderr and "recursive=true" in result.stderr, result.stderr
    d.lxc("config", "device", "remove", container, "f")
    d.lxc("start", container)
    assert _sh(d, container, "cat /mnt/r/early/marker-early").stdout == "early"


# -- block device sources -----------------------------------------------------------

@pytest.fixture
def loop_fs(workdir):
    """A loop device holding an ext4 file system with a file `hello` in it; detached afterwards."""
    image = os.path.join(workdir, "fs.img")
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
    loop = subprocess.run(["losetup", "-f", "--show", image], check=True, capture_output=True,
                          text=True).stdout.strip()
    mnt = os.path.join(workdir, "m")
    os.mkdir(mnt)
    try:
        subprocess.run(["mount", loop, mnt], check=True)
        try:
            with open(os.path.join(mnt, "hello"), "w") as f:
                f.write("on the block device\n")
            os.chmod(os.path.join(mnt, "hello"), 0o644)
            os.chmod(mnt, 0o777)
        finally:
            subprocess.run(["umount", mnt], check=True)
        yield loop
    finally:
        for line in open("/proc/self/mountinfo").read().splitlines():
            if f" {loop} " in line:  # what a failed test left mounted
                subprocess.run(["umount", "-l", line.split()[4]], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)


def _host_mounts_of(device):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if f" {device} " in line]


def test_block_device_source_live(busybox_daemon, container, loop_fs):
    """A block device source is its file system, mounted on the host and bound in (read-only when
    asked); removed, it is unmounted on the host as well."""
    d = busybox_daemon
    d.lxc("config", "device", "add", container, "b", "disk", f"source={loop_fs}", "path=/mnt/b")
    assert _sh(d, container, "cat /mnt/b/hello").stdout == "on the block device\n"
    _sh(d, container, "echo from inside > /mnt/b/written")
    d.lxc("config", "device", "remove", container, "b")
    assert " /mnt/b " not in _sh(d, container, "cat /proc/mounts").stdout
    assert _host_mounts_of(loop_fs) == []
    d.lxc("config", "device", "add", container, "r", "disk", f"source={loop_fs}", "path=/mnt/r", "readonly=true")
    assert _sh(d, container, "cat /mnt/r/written").stdout == "from inside\n"
    assert "Read-only" in _sh(d, container, "touch /mnt/r/x", check=False).stderr
    d.lxc("config", "device", "remove", container, "r")
    assert _host_mounts_of(loop_fs) == []


def test_block_device_source_at_start(busybox_daemon, container, loop_fs):
    """Configured while stopped: mounted at the start, unmounted on the host at the stop; its io limits
    apply to the loop device itself."""
    d = busybox_daemon
    d.lxc("stop", "-f", container)
    d.lxc("config", "device", "add", container, "b", "disk", f"source={loop_fs}", "path=/mnt/b",
          "limits.read=2MB")
    d.lxc("start", container)
    assert _sh(d, container, "cat /mnt/b/hello").stdout == "on the block device\n"
    rdev = os.stat(loop_fs).st_rdev
    assert _throttles(d, container)["rbps"].get(f"{os.major(rdev)}:{os.minor(rdev)}") == 2 << 20
    assert len(_host_mounts_of(loop_fs)) == 1
    d.lxc("stop", "-f", container)
    assert _host_mounts_of(loop_fs) == []


def test_block_device_without_file_system(busybox_daemon, container, workdir):
    """A block device with no file system on it is refused with the device named; nothing stays mounted."""
    d = busybox_daemon
    image = os.path.join(workdir, "empty.img")
    with open(image, "wb") as f:
        f.truncate(4 << 20)
    loop = subprocess.run(["losetup", "-f", "--show", image], check=True, capture_output=True,
                          text=True).stdout.strip()
    try:
        result = d.lxc("config", "device", "add", container, "e", "disk", f"source={loop}", "path=/mnt/e",
                       check=False)
        assert result.returncode != 0 and '"e"' in result.stderr and loop in result.stderr, result.stderr
        assert "e" not in d.request("GET", f"/1.0/containers/{container}").metadata["devices"]
        assert _host_mounts_of(loop) == []
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
