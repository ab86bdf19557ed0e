"""The reference daemon (Debian's `lxd`, 5.0.2) beside ours, for benchmarks run by hand.

It runs in a network namespace of its own (only `lo`): at start it looks up image
servers, and a benchmark sends nothing beyond loopback. It gets a dir pool, a
default profile with only a root disk, and our busybox image (exported from our
daemon), so both run the same container. Install it with `apt-get install lxd`.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

PRESEED = """\
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root: {path: /, pool: default, type: disk}
"""


class ReferenceLXD:
    def __init__(self, netns=None):
        """In network namespace `netns` (made and removed here when None)."""
        self.dir = tempfile.mkdtemp(prefix="lxd-ref-", dir="/var/tmp")
        os.chmod(self.dir, 0o711)
        self.own_netns = netns is None
        self.netns = netns or f"lxdtx-bench-{os.getpid()}"
        self.env = dict(os.environ, LXD_DIR=self.dir, LXD_CONF=tempfile.mkdtemp(prefix="lxc-conf-"))
        self.proc = None

    @property
    def lxcpath(self):
        return os.path.join(self.dir, "containers")

    def lxc(self, *args, **kwargs):
        return subprocess.run(["lxc", *args], env=self.env, check=True, capture_output=True, **kwargs)

    def start(self, image_from_env):
        """Start it and import the image `busybox` of the daemon reached with `image_from_env`."""
        if shutil.which("lxd") is None:
            raise RuntimeError("the reference daemon is not installed: apt-get install lxd")
        if self.own_netns:
            subprocess.run(["ip", "netns", "add", self.netns], check=True)
            subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "lxd", "--group", "root", "--logfile",
             os.path.join(self.dir, "lxd.log")],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        subprocess.run(["lxd", "waitready", "--timeout", "60"], env=self.env, check=True)
        subprocess.run(["lxd", "init", "--preseed"], input=PRESEED.encode(), env=self.env, check=True)
        export = tempfile.mkdtemp(prefix="lxd-ref-image-", dir="/var/tmp")
        try:
            subprocess.run(["lxc", "image", "export", "busybox", os.path.join(export, "busybox")],
                           env=image_from_env, check=True, capture_output=True)
            files = sorted(os.path.join(export, f) for f in os.listdir(export))
            # A split image exports its metadata tarball first by name (`busybox.tar.*`).
            self.lxc("image", "import", *files, "--alias", "busybox")
        finally:
            shutil.rmtree(export, ignore_errors=True)
        return self

    def stop(self):
        if self.proc is not None:
            subprocess.run(["lxd", "shutdown", "--timeout", "60"], env=self.env, capture_output=True)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.own_netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        for _ in range(10):
            try:
                shutil.rmtree(self.dir)
                break
            except OSError:
                time.sleep(0.5)
        shutil.rmtree(self.env["LXD_CONF"], ignore_errors=True)
