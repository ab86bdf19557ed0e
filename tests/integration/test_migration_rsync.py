"""rsync sessions through migration channels, real rsync at both ends (tests.integration.rsyncpair).

Trees with what a container's rootfs has (owners of a shifted id map, modes, hard and
symbolic links, xattrs and ACLs, sparse files, device nodes, fifos, empty directories)
arrive exact, sessions back to back on one channel stay apart, and a link lost
mid-stream fails both ends without hanging.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import pytest


pytestmark = pytest.mark.timeout(120)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def scratch():
    path = tempfile.mkdtemp(prefix="lxdtx-rsync-", dir="/var/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _tree(root, seed):
    os.makedirs(os.path.join(root, "rootfs", "etc", "empty"))
    etc = os.path.join(root, "rootfs", "etc")
    for i in range(50):
        with open(os.path.join(etc, f"f{i}"), "wb") as f:
            f.write(hashlib.sha256(f"{seed}{i}".encode()).digest() * (i * 40 + 1))
    os.link(os.path.join(etc, "f1"), os.path.join(etc, "hard"))
    os.symlink("../../outside", os.path.join(etc, "link"))
    with open(os.path.join(etc, "sparse"), "wb") as f:
        f.seek(64 << 20)
        f.write(b"end")
    os.mkfifo(os.path.join(etc, "fifo"))
    if os.geteuid() == 0:
        os.mknod(os.path.join(etc, "null"), 0o20666, os.makedev(1, 3))
        os.chown(os.path.join(etc, "f2"), 100000, 100005)
        os.lchown(os.path.join(etc, "link"), 100001, 100001)
        os.setxattr(os.path.join(etc, "f3"), "user.migrated", b"yes")
        subprocess.run(["setfacl", "-m", "u:100002:r", os.path.join(etc, "f4")], check=True)
    os.chmod(os.path.join(etc, "f5"), 0o4751)
    with open(os.path.join(root, "metadata.yaml"), "w") as f:
        f.write(f"seed: {seed}\n")


def _differences(a, b):
    """What rsync itself sees differ between two trees, by content (empty: identical)."""
    out = subprocess.run(["rsync", "-n", "-a", "-H", "-A", "-X", "--numeric-ids", "--checksum", "--delete",
                          "-i", a.rstrip("/") + "/", b.rstrip("/") + "/"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def _run(scratch, sources, *extra):
    target = os.path.join(scratch, "target")
    os.makedirs(target, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "tests.integration.rsyncpair", scratch, target, *sources, *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=100), target


def test_trees_arrive_exact_and_sessions_stay_apart(scratch):
    sources = [os.path.join(scratch, f"src{i}") for i in range(3)]
    for i, source in enumerate(sources):
        _tree(source, i)
    result, target = _run(scratch, sources)
    assert result.returncode == 0, result.stderr
    for i, source in enumerate(sources):
        assert _differences(source, os.path.join(target, str(i))) == []
    sparse = os.stat(os.path.join(target, "0", "rootfs", "etc", "sparse"))
    assert sparse.st_blocks * 512 < 1 << 20  # still sparse
    assert [f for f in os.listdir(scratch) if f.endswith(".sock")] == []


def test_lxd_flags_carry_the_files(scratch):
    """With the flags an LXD peer agrees to (no hard links or ACLs, compression on), every file
    and its content still arrive; hard links become copies, as with LXD."""
    source = os.path.join(scratch, "src")
    _tree(source, 3)
    result, target = _run(scratch, [source], "--features", "xattrs,delete,compress")
    assert result.returncode == 0, result.stderr
    got = os.path.join(target, "0")
    different = [line for line in _differences(source, got) if "etc/hard" not in line and "etc/f1" not in line
                 and "etc/f4" not in line]
    assert different == []
    with open(os.path.join(got, "rootfs", "etc", "hard"), "rb") as a, \
            open(os.path.join(source, "rootfs", "etc", "f1"), "rb") as b:
        assert a.read() == b.read()


def test_lost_link_fails_both_ends(scratch):
    source = os.path.join(scratch, "src")
    _tree(source, 7)
    result, _ = _run(scratch, [source], "--lose-after", "200000")
    assert result.returncode == 3, result.stderr
    assert "closed during the transfer" in result.stderr or "rsync of" in result.stderr
