"""Other host users reach nothing of the daemon's: not its database, logs or images, not a
container's rootfs (where setuid files are), privileged or not."""

import os
import stat
import subprocess

import pytest

pytestmark = pytest.mark.timeout(300)

NOBODY = 65534


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _as_nobody(*argv):
    """Run argv as an unprivileged host user; its CompletedProcess."""
    return subprocess.run(argv, user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, timeout=30)


def test_state_directory_modes(busybox_daemon):
    """The state dir, the paths liblxc walks and the one dnsmasq walks are 0711; logs and
    images 0700; the database and its journal 0600."""
    d = busybox_daemon
    assert _mode(d.dir) == 0o711
    for name in ("lxc", "storage-pools", "containers", "networks"):
        assert _mode(os.path.join(d.dir, name)) == 0o711, name
    for name in ("logs", "images", "tmp"):
        assert _mode(os.path.join(d.dir, name)) == 0o700, name
    for name in ("lxdtx.db", "lxdtx.db-wal", "lxdtx.db-shm"):
        path = os.path.join(d.dir, name)
        if os.path.exists(path):
            assert _mode(path) == 0o600, name
    assert _as_nobody("cat", os.path.join(d.dir, "lxdtx.db")).returncode != 0


@pytest.mark.parametrize("privileged", [False, True])
def test_container_rootfs_unreachable(busybox_daemon, privileged):
    """A setuid file in a container (stopped or running) cannot even be looked up by another
    host user, while the container itself runs and execs as before."""
    d = busybox_daemon
    name = f"perm{'p' if privileged else 'u'}{os.getpid() % 1000}"
    try:
        d.lxc("init", "busybox", name, "-c", f"security.privileged={str(privileged).lower()}")
        rootfs = os.path.join(d.dir, "containers", name, "rootfs")
        assert _as_nobody("stat", os.path.join(rootfs, "bin")).returncode != 0
        d.lxc("start", name)
        d.lxc("exec", name, "--", "sh", "-c", "cp /bin/busybox /root/suid && chmod 4755 /root/suid")
        pid = d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]
        assert os.stat(f"/proc/{pid}/root/root/suid").st_mode & stat.S_ISUID
        for path in (os.path.join(rootfs, "root", "suid"), os.path.join(rootfs, "bin", "busybox"),
                     os.path.join(d.dir, "logs", name)):
            result = _as_nobody("stat", path)
            assert result.returncode != 0, path
        volume = os.path.realpath(os.path.join(d.dir, "containers", name))
        assert _mode(volume) == 0o100
        d.lxc("restart", "-f", name)
        d.lxc("exec", name, "--", "true")
    finally:
        d.lxc("delete", "-f", name, check=False)
