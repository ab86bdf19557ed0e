"""A simplestreams tree for tests, served over TLS on 127.0.0.1 by Twisted's static web server.

`StreamTree.publish(...)` splits a busybox image built by the project's image helper
into `lxd.tar.xz` (metadata.yaml, templates/) and `root.tar.xz` (the rootfs) and
writes `streams/v1/index.json` and `streams/v1/images.json` naming every version
published so far, as images.linuxcontainers.org lays them out.
"""

import hashlib
import io
import json
import lzma
import os
import signal
import subprocess
import tarfile
import time

from lxdtx.image import busybox
from tests.daemonproc import TWISTD
from tests.integration.net import free_port, port_open

PRODUCT = "busybox:edge:amd64:default"


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _xz_tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return lzma.compress(buf.getvalue(), preset=0)


def split_unified(path):
    """(metadata tarball bytes, rootfs tarball bytes) of a unified image file."""
    meta, root = [], []
    with tarfile.open(path) as tar:
        for info in tar:
            data = tar.extractfile(info).read() if info.isfile() else None
            name = info.name[2:] if info.name.startswith("./") else info.name
            if name == "rootfs" or name.startswith("rootfs/"):
                info.name = "." + name[len("rootfs"):] if name != "rootfs" else "."
                if info.islnk() and info.linkname.lstrip("./").startswith("rootfs/"):
                    info.linkname = "./" + info.linkname.lstrip("./")[len("rootfs/"):]
                root.append((info, data))
            else:
                meta.append((info, data))
    return _xz_tar(meta), _xz_tar(root)


_SITE = """
from twisted.web.resource import Resource
from twisted.web.static import File


class _Redirect(Resource):
    isLeaf = True

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def render_GET(self, request):
        request.redirect(self.prefix + b"/".join(request.postpath))
        return b""


resource = File({tree!r})
resource.putChild(b"moved", _Redirect(b"/"))
resource.putChild(b"insecure", _Redirect(b"http://127.0.0.1:9/"))
"""


class StreamTree:
    """A simplestreams tree in `directory`; `serve(cert, key)` starts the TLS server."""

    def __init__(self, directory):
        self.dir = directory
        self.versions = {}
        self.proc = None
        self.port = None

    def publish(self, version, creation_date, aliases="busybox/edge,bb"):
        """Add a version (name `YYYYMMDD_HH:MM`) of a busybox image; its fingerprint."""
        work = os.path.join(self.dir, "build")
        os.makedirs(work, exist_ok=True)
        image = busybox.build_image(work, compression="xz", creation_date=creation_date)
        meta, root = split_unified(image.path)
        os.unlink(image.path)
        images = os.path.join(self.dir, "images", version.replace(":", ""))
        os.makedirs(images, exist_ok=True)
        items = {}
        for ftype, name, data in (("lxd.tar.xz", "lxd.tar.xz", meta), ("root.tar.xz", "root.tar.xz", root)):
            with open(os.path.join(images, name), "wb") as f:
                f.write(data)
            items[ftype] = {"ftype": ftype, "path": f"images/{version.replace(':', '')}/{name}",
                            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        fingerprint = hashlib.sha256(meta + root).hexdigest()
        items["lxd.tar.xz"]["combined_rootxz_sha256"] = fingerprint
        self.versions[version] = {"items": items}
        self._write_index(aliases)
        return fingerprint

    def _write_index(self, aliases):
        streams = os.path.join(self.dir, "streams", "v1")
        os.makedirs(streams, exist_ok=True)
        products = {"content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
                    "products": {PRODUCT: {"aliases": aliases, "arch": "amd64", "os": "Busybox",
                                           "release": "edge", "variant": "default",
                                           "versions": self.versions}}}
        index = {"format": "index:1.0", "index": {"images": {
            "datatype": "image-downloads", "format": "products:1.0", "path": "streams/v1/images.json",
            "products": [PRODUCT]}}}
        for name, doc in (("images.json", products), ("index.json", index)):
            tmp = os.path.join(streams, name + ".tmp")
            with open(tmp, "w") as f:
                json.dump(doc, f)
            os.rename(tmp, os.path.join(streams, name))

    def serve(self, cert_path, key_path):
        """Serve the tree at https://127.0.0.1:PORT (Twisted's static file server); the URL.

        Below `/moved/` every path redirects to the same path at the top; below
        `/insecure/` to plain http.
        """
        self.port = free_port()
        listen = f"ssl:{self.port}:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
        script = self.dir.rstrip("/") + "-site.rpy"
        with open(script, "w") as f:
            f.write(_SITE.format(tree=self.dir))
        log = open(os.path.join(os.path.dirname(self.dir), "streams-server.log"), "ab")
        self.proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "web", "--listen", listen,
                                      "--resource-script", script],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(self.dir))
        log.close()
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simplestreams test server did not start")
            time.sleep(0.1)
        return f"https://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def sha256_file(path):
    return _sha256(path)
