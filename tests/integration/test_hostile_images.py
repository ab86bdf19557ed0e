"""Hostile images and backups through the real `lxc` client: refused, the host untouched,
nothing left behind; and a container with a fifo at /etc/hostname that still stops,
copies, moves and starts.

Every link in these archives points at a sentinel directory of the test's own,
never at `/`: should a check regress, the damage stays in the scratch directory.
"""

import io
import json
import os
import subprocess
import tarfile

import pytest
import yaml

from tests import imagefiles

# Each lxc step must finish well within this (a hang fails the test instead of the run).
_STEP = 60


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
          "block": tarfile.BLKTYPE, "char": tarfile.CHRTYPE}


def _info(name, kind="file", data=b"", link="", size=None):
    """(header, data) of one member; `size` is what the header declares when it is to lie."""
    info = tarfile.TarInfo(name)
    info.mtime = 1500000000
    info.type = _TYPES[kind]
    info.mode = 0o755 if kind == "dir" else 0o644
    info.linkname = link
    if kind in ("block", "char"):
        info.devmajor, info.devminor = (8, 0) if kind == "block" else (1, 3)
    info.size = len(data) if kind == "file" else 0
    if size is not None:
        info.size = size
    return info, data if kind == "file" else None


def _tarball(members, compression="gzip"):
    """The archive of `members` written block by block, so a header may declare another size
    than the data that follows it (tarfile itself would refuse to write that)."""
    out = bytearray()
    for info, data in members:
        out += info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        if data:
            out += data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    out += b"\0" * (2 * tarfile.BLOCKSIZE)
    return imagefiles.compress(bytes(out), compression)


def _write(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


class Sentinel:
    """A host directory with one file; `unchanged()` says whether anything touched them."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "host")
        os.mkdir(self.dir)
        self.file = _write(self.dir, "sentinel", b"host sentinel\n")
        self._state = self._snapshot()

    def _snapshot(self):
        entries = {}
        for name in sorted(os.listdir(self.dir)):
            st = os.lstat(os.path.join(self.dir, name))
            entries[name] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
        st = os.lstat(self.dir)
        with open(self.file, "rb") as f:
            return entries, (st.st_mode, st.st_uid, st.st_gid), f.read()

    def unchanged(self):
        return self._snapshot() == self._state


@pytest.fixture
def sentinel(workdir):
    return Sentinel(workdir)


def _leftovers(d):
    """What an import could leave behind: image files, spool and import directories, containers."""
    images = os.path.join(d.dir, "images")
    tmp = os.path.join(d.dir, "tmp")
    pool = os.path.join(d.dir, "storage-pools", "default")
    return {
        "images": sorted(os.listdir(images)) if os.path.isdir(images) else [],
        "spool": sorted(n for n in os.listdir(tmp) if n.startswith(("image-", "import-", "backup-")))
        if os.path.isdir(tmp) else [],
        "records": sorted(i["fingerprint"] for i in d.request("GET", "/1.0/images?recursion=1").metadata),
        "containers": sorted(d.request("GET", "/1.0/containers").metadata),
        "tmp": sorted(os.listdir(tmp)) if os.path.isdir(tmp) else [],
        "volumes": {sub: sorted(os.listdir(os.path.join(pool, sub))) for sub in ("containers", "snapshots")
                    if os.path.isdir(os.path.join(pool, sub))},
    }


def _refused(d, args, message):
    result = d.lxc(*args, check=False, timeout=_STEP)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
    return result.stderr


def _meta(*extra):
    return [_info("metadata.yaml", data=imagefiles.metadata_yaml()), _info("templates", "dir"),
            _info("templates/hostname.tpl", data=b"{{ container.name }}\n"), *extra]


def _unified_cases(host):
    rootfs = [_info("rootfs", "dir"), _info("rootfs/etc", "dir"), _info("rootfs/etc/hostname", data=b"x\n")]
    return {
        "rootfs link": (_tarball(_meta(_info("rootfs", "symlink", link=host.dir))),
                        "member 'rootfs' is a symlink"),
        "template link": (_tarball(_meta(_info("templates/hosts.tpl", "symlink", link=host.file), *rootfs)),
                          "member 'templates/hosts.tpl' is a symlink"),
        "backup.yaml link": (_tarball(_meta(_info("backup.yaml", "symlink", link=host.file), *rootfs)),
                             "member 'backup.yaml' is a symlink"),
        "below a link": (_tarball(_meta(*rootfs, _info("rootfs/out", "symlink", link=host.dir),
                                        _info("rootfs/out/evil", data=b"evil\n"))),
                         "member 'rootfs/out/evil' lies below the symlink 'rootfs/out'"),
    }


@pytest.mark.parametrize("case", ["rootfs link", "template link", "backup.yaml link", "below a link"])
def test_hostile_unified_image_refused(busybox_daemon, workdir, sentinel, case):
    """`lxc image import` of a unified image with a link where it could reach the host."""
    d = busybox_daemon
    before = _leftovers(d)
    data, message = _unified_cases(sentinel)[case]
    path = _write(workdir, "hostile.tar.gz", data)
    _refused(d, ["image", "import", path, "--alias", "hostile"], f"Invalid image tarball: {message}")
    assert _leftovers(d) == before
    assert d.request("GET", "/1.0/images/aliases/hostile").status == 404
    assert sentinel.unchanged()


def test_hostile_split_image_refused(busybox_daemon, workdir, sentinel):
    """`lxc image import meta rootfs`: a `rootfs` link in the metadata tarball, or a member
    below a link in the rootfs tarball, is refused."""
    d = busybox_daemon
    before = _leftovers(d)
    good_meta, good_rootfs = imagefiles.split("gzip")
    bad_meta = _tarball(_meta(_info("rootfs", "symlink", link=sentinel.dir)))
    bad_rootfs = _tarball([_info("etc", "symlink", link=sentinel.dir), _info("etc/evil", data=b"evil\n")])
    cases = [(bad_meta, good_rootfs, "Invalid image tarball: member 'rootfs' is a symlink"),
             (good_meta, bad_rootfs, "Invalid image rootfs tarball: member 'etc/evil' lies below the symlink 'etc'")]
    for meta, rootfs, message in cases:
        meta_path = _write(workdir, "meta.tar.gz", meta)
        rootfs_path = _write(workdir, "rootfs.tar.gz", rootfs)
        _refused(d, ["image", "import", meta_path, rootfs_path], message)
        assert _leftovers(d) == before
    assert sentinel.unchanged()


def _backup(*, backup_yaml=None, container_rootfs=None, snapshots=(), extra=()):
    index = yaml.safe_dump({"name": "hostile", "backend": "dir", "pool": "default", "privileged": False,
                            "snapshots": list(snapshots)}).encode()
    members = [_info("backup", "dir"), _info("backup/index.yaml", data=index), _info("backup/container", "dir"),
               backup_yaml or _info("backup/container/backup.yaml", data=b"container: {name: hostile}\n"),
               _info("backup/container/metadata.yaml", data=imagefiles.metadata_yaml())]
    members += [container_rootfs] if container_rootfs else [_info("backup/container/rootfs", "dir"),
                                                           _info("backup/container/rootfs/etc", "dir")]
    members += extra
    for name in snapshots:
        members += [_info("backup/snapshots", "dir"), _info(f"backup/snapshots/{name}", "dir"),
                    _info(f"backup/snapshots/{name}/rootfs", "dir")]
    return _tarball(members, "xz")


def test_hostile_backup_refused(busybox_daemon, workdir, sentinel):
    """`lxc import` of a backup with `backup.yaml` or `rootfs` a link, or a snapshot name
    LXD refuses: no container, no staging directory, the host unchanged."""
    d = busybox_daemon
    before = _leftovers(d)
    cases = [
        (_backup(backup_yaml=_info("backup/container/backup.yaml", "symlink", link=sentinel.file)),
         "Invalid backup tarball: member 'backup/container/backup.yaml' is a symlink"),
        (_backup(container_rootfs=_info("backup/container/rootfs", "symlink", link=sentinel.dir)),
         "Invalid backup tarball: member 'backup/container/rootfs' is a symlink"),
        (_backup(snapshots=["bad name"]), "invalid snapshot name 'bad name'"),
    ]
    try:
        for data, message in cases:
            path = _write(workdir, "hostile.tar.xz", data)
            _refused(d, ["import", path], message)
            assert _leftovers(d) == before
        assert sentinel.unchanged()
    finally:
        d.lxc("delete", "-f", "hostile", check=False)


# A header claiming more than any disk holds: refused from the header, before its data is read.
_BOMB_SIZE = 1 << 50


def _hostile_members(rootfs, host, other):
    """{case: (members inside the tarball at `rootfs`, the error)}: what no import may extract.

    `other` is a regular member of the same tarball outside that rootfs.
    """
    def refused(member, text):
        return f"member {member!r} {text}"

    return {
        "dotdot": ([_info(f"{rootfs}/etc/../../../../escape", data=b"evil\n")],
                   refused(f"{rootfs}/etc/../../../../escape", "contains '..'")),
        "absolute": ([_info(f"/{rootfs}/etc/evil", data=b"evil\n")], refused(f"/{rootfs}/etc/evil", "has an absolute path")),
        "below a symlink": ([_info(f"{rootfs}/etc/out", "symlink", link=host.dir),
                             _info(f"{rootfs}/etc/out/evil", data=b"evil\n")],
                            refused(f"{rootfs}/etc/out/evil", f"lies below the symlink '{rootfs}/etc/out'")),
        "hardlink out of rootfs": ([_info(f"{rootfs}/etc/index", "hardlink", link=other)],
                                   f"hard link '{rootfs}/etc/index' points to '{other}', which is not an earlier "
                                   "regular file of the same rootfs"),
        "hardlink to host": ([_info(f"{rootfs}/etc/shadow", "hardlink", link=host.file)],
                             f"hard link '{rootfs}/etc/shadow' points to '{host.file}', which has an absolute path"),
        "hardlink outside the archive": ([_info(f"{rootfs}/etc/missing", "hardlink", link=f"{rootfs}/etc/nowhere")],
                                         "which is not an earlier regular file of the same rootfs"),
        "block device": ([_info(f"{rootfs}/dev", "dir"), _info(f"{rootfs}/dev/sda", "block")],
                         refused(f"{rootfs}/dev/sda", "is a block device: device nodes are not supported")),
        "char device": ([_info(f"{rootfs}/dev", "dir"), _info(f"{rootfs}/dev/mem", "char")],
                        refused(f"{rootfs}/dev/mem", "is a character device: device nodes are not supported")),
        "more data than declared": ([_info(f"{rootfs}/etc/short", data=b"x" * 1500, size=5)],
                                    "is no member header (a member holds more data than it declares"),
        "bomb": ([_info(f"{rootfs}/etc/huge", data=b"\0" * 4096, size=_BOMB_SIZE)],
                 "are free where it is extracted"),
    }


_HOSTILE_CASES = [
    "dotdot", "absolute", "below a symlink", "hardlink out of rootfs", "hardlink to host",
    "hardlink outside the archive", "block device", "char device", "more data than declared", "bomb"]


@pytest.mark.parametrize("case", _HOSTILE_CASES)
def test_hostile_backup_members_refused(busybox_daemon, workdir, sentinel, case):
    """`lxc import` of a backup with a member that would leave the rootfs or the host's
    control, more data than declared, or more than the disk holds: refused with the member
    named; no container row, no volume, no staging file; the host unchanged."""
    d = busybox_daemon
    members, message = _hostile_members("backup/container/rootfs", sentinel, "backup/index.yaml")[case]
    before = _leftovers(d)
    data = _backup(extra=members)
    path = _write(workdir, "hostile.tar.xz", data)
    try:
        _refused(d, ["import", path], message)
        assert "Invalid backup tarball" in _refused(d, ["import", path], "Invalid backup tarball")
        assert _leftovers(d) == before
        assert sentinel.unchanged()
        assert not os.path.exists(os.path.join(workdir, "escape"))
    finally:
        d.lxc("delete", "-f", "hostile", check=False)


# An image is stored as uploaded and sized against the pool it is unpacked into, at launch.
@pytest.mark.parametrize("case", [c for c in _HOSTILE_CASES if c != "bomb"])
def test_hostile_image_members_refused(busybox_daemon, workdir, sentinel, case):
    """`lxc image import` of a unified image with the same members: refused by the same checks."""
    d = busybox_daemon
    members, message = _hostile_members("rootfs", sentinel, "metadata.yaml")[case]
    before = _leftovers(d)
    data = _tarball(_meta(_info("rootfs", "dir"), _info("rootfs/etc", "dir"), *members))
    path = _write(workdir, "hostile.tar.gz", data)
    _refused(d, ["image", "import", path, "--alias", "hostile"], message)
    assert _leftovers(d) == before
    assert d.request("GET", "/1.0/images/aliases/hostile").status == 404
    assert sentinel.unchanged()


def _rootfs(d, name):
    return os.path.join(d.dir, "storage-pools", "default", "containers", name, "rootfs")


def _plant_fifo(d, name):
    """Replace the container's /etc/hostname by a fifo owned by its root."""
    path = os.path.join(_rootfs(d, name), "etc", "hostname")
    owner = os.lstat(os.path.dirname(path))
    os.unlink(path)
    os.mkfifo(path, 0o644)
    os.chown(path, owner.st_uid, owner.st_gid)
    return path


def _status(d, name):
    return d.request("GET", f"/1.0/containers/{name}").metadata["status"]


def test_fifo_hostname_does_not_hang(busybox_daemon):
    """A fifo at /etc/hostname (busybox renders it on copy and rename): stop, copy, move and
    start each finish, the fifo stays a fifo, and the daemon logs why it skipped it."""
    d = busybox_daemon
    d.lxc("launch", "busybox", "fifo1", timeout=_STEP)
    try:
        d.lxc("stop", "fifo1", "--force", timeout=_STEP)
        fifo = _plant_fifo(d, "fifo1")
        d.lxc("start", "fifo1", timeout=_STEP)
        d.lxc("stop", "fifo1", "--force", timeout=_STEP)
        d.lxc("copy", "fifo1", "fifo2", timeout=_STEP)
        d.lxc("start", "fifo2", timeout=_STEP)
        assert _status(d, "fifo2") == "Running"
        d.lxc("move", "fifo1", "fifo3", timeout=_STEP)
        d.lxc("start", "fifo3", timeout=_STEP)
        assert _status(d, "fifo3") == "Running"
        d.lxc("stop", "fifo3", "--force", timeout=_STEP)
        moved = os.path.join(_rootfs(d, "fifo3"), "etc", "hostname")
        assert not os.path.exists(fifo)
        assert os.path.exists(moved) and not os.path.isfile(moved)
        assert "/etc/hostname is not a regular file" in d.log()
    finally:
        for name in ("fifo1", "fifo2", "fifo3"):
            d.lxc("delete", "-f", name, check=False, timeout=_STEP)
    left = json.dumps(d.request("GET", "/1.0/containers").metadata)
    assert "fifo" not in left


@pytest.fixture
def tiny_pool(daemon, workdir):
    """The daemon's only storage pool: a dir pool on a 4 MiB tmpfs with 300 inodes."""
    source = os.path.join(workdir, "tiny")
    os.mkdir(source)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=300", "tmpfs", source], check=True)
    try:
        daemon.lxc("storage", "create", "tiny", "dir", f"source={source}", timeout=_STEP)
        try:
            yield daemon
        finally:
            daemon.lxc("storage", "delete", "tiny", check=False, timeout=_STEP)
    finally:
        subprocess.run(["umount", "-l", source], check=False)


def test_image_bomb_refused_at_import(tiny_pool, workdir):
    """An image that unpacks to more bytes, or more inodes, than any pool has free is refused
    by `lxc image import` (not first at launch), and leaves nothing behind; one that fits imports."""
    d = tiny_pool
    before = _leftovers(d)
    zeros = imagefiles.tarball([("metadata.yaml", imagefiles.metadata_yaml()), ("rootfs", None),
                                ("rootfs/zeros", bytes(16 << 20))], "xz")
    assert len(zeros) < 64 * 1024
    _refused(d, ["image", "import", _write(workdir, "bomb.tar.xz", zeros)], "need more than")
    many = imagefiles.tarball([("metadata.yaml", imagefiles.metadata_yaml()), ("rootfs", None)]
                              + [(f"rootfs/f{i}", b"x") for i in range(400)], "gzip")
    _refused(d, ["image", "import", _write(workdir, "many.tar.gz", many)], "inodes are free")
    assert _leftovers(d) == before
    d.lxc("image", "import", _write(workdir, "fits.tar.xz", imagefiles.unified("xz")), timeout=_STEP)
