#!/usr/bin/env python3
"""Pull a large image from a simplestreams server on loopback: time and the daemon's peak memory.

    PYTHONPATH=. bench/image_pull.py [--mib 256]

Builds a split image whose rootfs tarball holds one file of random bytes, serves it
over TLS (a throw-away CA the daemon trusts through SSL_CERT_FILE) with Twisted's
static web server, starts a fresh daemon with a dir pool and has it pull the image.
Prints the time taken and the daemon's peak resident memory (VmHWM) before and
after: the download streams to disk, so the growth stays far below the image size.
Everything lives in a scratch directory under /var/tmp, removed at the end. Root only.
"""

import argparse
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import time

from tests import imagefiles, pki
from tests.daemonproc import Daemon
from tests.integration.streamtree import StreamTree


class _Random(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = os.urandom(n)
        self.left -= n
        return n


def _sha256(path):
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha


def _tree(work, size):
    tree = StreamTree(os.path.join(work, "tree"))
    files = os.path.join(tree.dir, "images", "big")
    os.makedirs(files)
    meta = imagefiles.tarball([("metadata.yaml", imagefiles.metadata_yaml())], "none")
    with open(os.path.join(files, "lxd.tar"), "wb") as f:
        f.write(meta)
    root = os.path.join(files, "root.tar")
    with open(root, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("./big")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Random(size), 1 << 20))
    combined = hashlib.sha256(meta)
    with open(root, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            combined.update(chunk)
    tree.versions["20260101_00:00"] = {"items": {
        "lxd.tar.xz": {"ftype": "lxd.tar.xz", "path": "images/big/lxd.tar", "size": len(meta),
                       "sha256": hashlib.sha256(meta).hexdigest(), "combined_rootxz_sha256": combined.hexdigest()},
        "root.tar.xz": {"ftype": "root.tar.xz", "path": "images/big/root.tar", "size": os.path.getsize(root),
                        "sha256": _sha256(root).hexdigest()}}}
    tree._write_index("big")
    return tree, len(meta) + os.path.getsize(root)


def _peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the random file in the rootfs")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="lxdtx-bench-pull-", dir="/var/tmp")
    tree = daemon = None
    try:
        ca = pki.certificate_authority()
        ca_path = os.path.join(work, "ca.crt")
        with open(ca_path, "wb") as f:
            f.write(ca.cert_pem)
        tree, total = _tree(work, args.mib << 20)
        url = tree.serve(*pki.server_cert("127.0.0.1", issuer=ca).write(work, "server"))
        daemon = Daemon()
        daemon.extra_env = {"SSL_CERT_FILE": ca_path}
        daemon.start(timeout=60)
        daemon.lxc("storage", "create", "default", "dir")
        before = _peak_kib(daemon.proc.pid)
        start = time.monotonic()
        op = daemon.wait_operation(daemon.request("POST", "/1.0/images", {"source": {
            "type": "image", "mode": "pull", "server": url, "protocol": "simplestreams", "alias": "big"}}),
            timeout=900)
        elapsed = time.monotonic() - start
        if op["status"] != "Success":
            raise SystemExit(f"pull failed: {op['err']}")
        print(f"pulled {total} bytes in {elapsed:.2f}s ({total / elapsed / 1e6:.0f} MB/s); daemon peak RSS "
              f"{before} KiB before, {_peak_kib(daemon.proc.pid)} KiB after")
    finally:
        if daemon is not None:
            daemon.cleanup()
        if tree is not None:
            tree.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
