"""Container backups with the real client: `lxc export`, `lxc import`, the backups API."""

import hashlib
import os
import re
import subprocess
import time

import pytest


def test_export_import_roundtrip(busybox_daemon, workdir):
    """`lxc export` writes a tarball that `lxc import` turns back into a working container."""
    d = busybox_daemon
    d.lxc("launch", "busybox", "bk1")
    tarball = os.path.join(workdir, "bk1.tar.gz")
    try:
        # Written from inside: host root has no id on an idmapped rootfs (EOVERFLOW).
        d.lxc("exec", "bk1", "--", "sh", "-c", "echo kept > /root/marker")
        d.lxc("export", "bk1", tarball)
        assert os.path.getsize(tarball) > 0
        # gzip by default, as LXD does today: readable with plain tar.
        listing = subprocess.run(["tar", "-tzf", tarball], capture_output=True, text=True, check=True, timeout=60)
        assert "backup/index.yaml" in listing.stdout.split()
        assert d.request("GET", "/1.0/containers/bk1/backups").metadata == []  # lxc export cleans up
        d.lxc("delete", "-f", "bk1")
        d.lxc("import", tarball)
        d.lxc("start", "bk1")
        pid = d.request("GET", "/1.0/containers/bk1/state").metadata["pid"]
        with open(f"/proc/{pid}/root/root/marker") as f:
            assert f.read() == "kept\n"
        assert os.stat(f"/proc/{pid}/root/bin/busybox").st_uid >= 100000
    finally:
        d.lxc("delete", "-f", "bk1", check=False)


def test_backups_api(busybox_daemon):
    """Create, list, get, rename, export and delete backups through the REST API."""
    d = busybox_daemon
    d.lxc("init", "busybox", "bk2")
    try:
        result = d.request("POST", "/1.0/containers/bk2/backups", {"name": "", "container_only": True})
        op = d.wait_operation(result)
        assert op["status"] == "Success", op
        assert op["resources"]["backups"] == ["/1.0/backups/backup0"]
        listed = d.request("GET", "/1.0/containers/bk2/backups?recursion=1").metadata
        assert [b["name"] for b in listed] == ["bk2/backup0"]
        assert listed[0]["container_only"] is True
        assert d.request("POST", "/1.0/containers/bk2/backups", {"name": "backup0"}).status == 409
        op = d.wait_operation(d.request("POST", "/1.0/containers/bk2/backups/backup0", {"name": "b1"}))
        assert op["status"] == "Success", op
        export = d.request("GET", "/1.0/containers/bk2/backups/b1/export")
        assert export.status == 200 and export.body[:2] == b"\x1f\x8b"  # gzip by default
        assert hashlib.sha256(export.body).hexdigest()
        op = d.wait_operation(d.request("DELETE", "/1.0/containers/bk2/backups/b1"))
        assert op["status"] == "Success", op
        assert d.request("GET", "/1.0/containers/bk2/backups/b1").status == 404
        assert not os.listdir(os.path.join(d.dir, "backups", "bk2"))
    finally:
        d.lxc("delete", "-f", "bk2", check=False)


def test_bad_import_leaves_nothing(busybox_daemon):
    """A body that is not a backup is refused and creates nothing."""
    d = busybox_daemon
    before = d.request("GET", "/1.0/containers").metadata
    result = d.request("POST", "/1.0/containers", raw=b"not a tarball at all",
                       headers={"Content-Type": "application/octet-stream"})
    op = d.wait_operation(result)
    assert op["status"] == "Failure"
    assert "Invalid backup" in op["err"] or "index.yaml" in op["err"]
    assert d.request("GET", "/1.0/containers").metadata == before
    assert not [n for n in os.listdir(os.path.join(d.dir, "tmp")) if n.startswith("import-")]


def test_backup_with_snapshots(busybox_daemon, workdir):
    """A backup carries the container's snapshots; the import restores them, restorable."""
    d = busybox_daemon
    d.lxc("init", "busybox", "bks")
    tarball = os.path.join(workdir, "bks.tar.xz")
    try:
        d.lxc("snapshot", "bks", "first")
        d.lxc("snapshot", "bks", "second")
        d.lxc("export", "bks", tarball)
        d.lxc("delete", "bks")
        d.lxc("import", tarball)
        names = [s["name"] for s in d.request("GET", "/1.0/containers/bks/snapshots?recursion=1").metadata]
        assert names == ["bks/first", "bks/second"]
        d.lxc("restore", "bks", "first")
        d.lxc("start", "bks")
        assert d.request("GET", "/1.0/containers/bks").metadata["status"] == "Running"
    finally:
        d.lxc("delete", "-f", "bks", check=False)


@pytest.mark.parametrize("compression, magic", [("xz", b"\xfd7zXZ\x00"), ("none", None)])
def test_export_compression_roundtrip(busybox_daemon, workdir, compression, magic):
    """`lxc export --compression` picks the compressor; `lxc import` reads it back with snapshots."""
    d = busybox_daemon
    d.lxc("init", "busybox", "bkc")
    tarball = os.path.join(workdir, "bkc.tar")
    try:
        d.lxc("snapshot", "bkc", "first")
        d.lxc("export", "bkc", tarball, "--compression", compression)
        with open(tarball, "rb") as f:
            head = f.read(512)
        if magic:
            assert head.startswith(magic)
        else:
            assert head[257:262] == b"ustar"
        d.lxc("delete", "bkc")
        d.lxc("import", tarball)
        names = [s["name"] for s in d.request("GET", "/1.0/containers/bkc/snapshots?recursion=1").metadata]
        assert names == ["bkc/first"]
    finally:
        d.lxc("delete", "-f", "bkc", check=False)


def test_bad_compression_refused(busybox_daemon):
    d = busybox_daemon
    d.lxc("init", "busybox", "bkbad")
    try:
        r = d.request("POST", "/1.0/containers/bkbad/backups", {"compression_algorithm": "nosuch"})
        assert r.status == 400 and "compression_algorithm" in r.json["error"]
        assert d.request("GET", "/1.0/containers/bkbad/backups").metadata == []
    finally:
        d.lxc("delete", "-f", "bkbad", check=False)


def test_server_compression_key(busybox_daemon, workdir):
    """`backups.compression_algorithm` applies when the request names no algorithm."""
    d = busybox_daemon
    d.lxc("init", "busybox", "bkk")
    tarball = os.path.join(workdir, "bkk.tar.xz")
    try:
        d.lxc("config", "set", "backups.compression_algorithm", "xz")
        d.lxc("export", "bkk", tarball)
        with open(tarball, "rb") as f:
            assert f.read(6) == b"\xfd7zXZ\x00"
    finally:
        d.lxc("config", "unset", "backups.compression_algorithm", check=False)
        d.lxc("delete", "-f", "bkk", check=False)


_PROGRESS = re.compile(r"\d+(\.\d\d)?[kMGTPE]?B \(\d+(\.\d\d)?[kMGTPE]?B/s\)")


def test_backup_progress(busybox_daemon, workdir):
    """A backup that takes a while tells its progress in `create_backup_progress`, a string
    as LXD writes it (`12.34MB (5.67MB/s)`), which `lxc export` shows."""
    d = busybox_daemon
    d.lxc("init", "busybox", "bkp")
    try:
        rootfs = os.path.join(d.dir, "storage-pools", "default", "containers", "bkp", "rootfs")
        with open(os.path.join(rootfs, "noise"), "wb") as f:
            for _ in range(160):
                f.write(os.urandom(1 << 20))  # random: gzip cannot make it small or fast
        answer = d.request("POST", "/1.0/containers/bkp/backups", {"name": "slow", "compression_algorithm": "gzip"})
        assert answer.status == 202, answer
        url = answer.headers["Location"]
        seen, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline:
            op = d.request("GET", url).metadata
            value = (op.get("metadata") or {}).get("create_backup_progress")
            if value is not None:
                seen.append(value)
            if op["status_code"] >= 200:
                break
            time.sleep(0.2)
        assert op["status"] == "Success", op
        assert seen, "no progress reported"
        assert all(isinstance(v, str) and _PROGRESS.fullmatch(v) for v in seen), seen
        result = d.lxc("export", "bkp", os.path.join(workdir, "bkp.tar.gz"), "--instance-only")
        assert "Backing up instance:" in result.stdout + result.stderr, result
    finally:
        d.lxc("delete", "-f", "bkp", check=False)
