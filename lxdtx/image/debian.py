# -*- test-case-name: tests.unit.test_debian_image,tests.integration.test_debian_image -*-
"""Build a unified LXD image of a minimal Debian system with `debootstrap --variant=minbase`.

The packages come from a Debian mirror: by default the one this host's apt uses (its
sources lists), so building needs no network beyond what `apt-get` already reaches.
debootstrap runs as root into a work directory beside the output, then `tar` packs the
tree with its owners, modes and file capabilities into `metadata.yaml`, `templates/` and
`rootfs/`, compressed by `xz`.

minbase has no init system: the image gets `/sbin/init`, a small POSIX shell script (INIT)
that mounts what liblxc has not, sets the host name, runs `/etc/rc.local` if there is one
and then waits, reaping orphans, until liblxc's halt signal (SIGPWR) or SIGTERM stops the
container. `/dev` is left empty: liblxc fills it, and image import refuses device nodes.

Images are large to build (a minute or more, ~30 MB downloaded): `cached_image` keeps one
per (suite, architecture, mirror, recipe) under a stable directory.
"""

import dataclasses
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

from lxdtx.image.busybox import HOSTNAME_TEMPLATE, HOSTS_TEMPLATE, ImageBuildError, canonical_architecture

SUITE = "bookworm"
RELEASES = {"bookworm": "12", "trixie": "13", "bullseye": "11"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CACHE_DIR = "/var/cache/lxdtx-test"
SOURCES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d")

# Bump when the recipe below changes what an image holds: cached images are keyed by it.
RECIPE = 1

# Debian's name of each LXD architecture (debootstrap --arch).
DEBIAN_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386",
                 "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}

INIT = r"""#!/bin/sh
# PID 1 of a container without an init system (an lxdtx Debian test image).
# liblxc halts with SIGPWR, `lxc stop` may send SIGTERM: both end every process and exit.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

[ -r /proc/self/mounts ] || mount -t proc -o nosuid,nodev,noexec proc /proc
mounted() { grep -q "^[^ ]* $1 " /proc/self/mounts; }
mounted /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys 2>/dev/null
mounted /run || mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run 2>/dev/null
mkdir -p /run/lock
[ -s /etc/hostname ] && hostname "$(cat /etc/hostname)" 2>/dev/null
[ -x /etc/rc.local ] && /etc/rc.local

halt() {
	trap - PWR TERM INT
	kill -TERM -1 2>/dev/null
	sleep 1
	kill -KILL -1 2>/dev/null
	exit 0
}
trap halt PWR TERM INT
echo "Debian $(cat /etc/debian_version) up"
# `wait` returns on each trapped signal; the shell reaps every child meanwhile.
while :; do
	sleep 60 &
	wait
done
"""


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    """A written image file: where, its LXD fingerprint and its `metadata.yaml` content."""

    path: str
    fingerprint: str
    metadata: dict


def _deb_lines(path):
    """(uris, suites) of each `deb` entry of a one-line sources.list file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line.startswith("deb "):
                continue
            rest = line[4:].strip()
            if rest.startswith("["):  # options: `deb [arch=amd64 signed-by=...] URI SUITE ...`
                rest = rest.partition("]")[2]
            words = rest.split()
            if len(words) >= 2:
                yield words[:1], words[1:2]


def _deb822_stanzas(path):
    """(uris, suites) of each `Types: deb` stanza of a deb822 `.sources` file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []):
            yield fields.get("uris", []), fields.get("suites", [])


def host_mirror(suite=SUITE, sources=SOURCES):
    """The first Debian archive this host's apt takes `suite` from (DEFAULT_MIRROR if none)."""
    files = []
    for source in sources:
        if os.path.isdir(source):
            files += sorted(glob.glob(os.path.join(source, "*.list")) + glob.glob(os.path.join(source, "*.sources")))
        elif os.path.isfile(source):
            files.append(source)
    for path in files:
        try:
            entries = list(_deb822_stanzas(path) if path.endswith(".sources") else _deb_lines(path))
        except OSError:
            continue
        for uris, suites in entries:
            if suite not in suites:
                continue
            for uri in uris:
                if urllib.parse.urlsplit(uri).scheme in ("http", "https", "file"):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


def mirror_problem(mirror, suite=SUITE, timeout=10):
    """Why `mirror` cannot serve `suite` (unreachable, no such suite), or None."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except Exception as e:  # any failure means no image can be built from it
        return f"Debian mirror {mirror} cannot be reached ({url}: {e})"


def image_metadata(suite, architecture, creation_date):
    release = RELEASES.get(suite, suite)
    return {
        "architecture": architecture,
        "creation_date": creation_date,
        "properties": {
            "architecture": architecture,
            "description": f"Debian {release} ({suite}) minbase {architecture} (lxdtx)",
            "os": "debian",
            "release": suite,
            "variant": "minbase",
        },
        "templates": {
            "/etc/hostname": {"when": ["create", "copy", "rename"], "template": "hostname.tpl",
                              "create_only": False, "properties": {}},
            "/etc/hosts": {"when": ["create", "copy", "rename"], "template": "hosts.tpl",
                           "create_only": False, "properties": {}},
        },
    }


def _run(argv, what, timeout):
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise ImageBuildError(f"{argv[0]} not found (install Debian's {argv[0]})") from None
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or e.stdout or b"").decode("utf-8", "replace").strip().splitlines()[-5:]
        raise ImageBuildError(f"{what} failed (exit {e.returncode}): {' / '.join(tail)}") from None
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"{what} took longer than {timeout} s") from None


def _finish_rootfs(rootfs):
    """What the image adds to debootstrap's tree: init, an empty /dev, no host leftovers."""
    # Bookworm merges /usr (`/sbin` -> `usr/sbin`): write through no link of the tree.
    sbin = os.path.join(rootfs, "usr", "sbin") if os.path.islink(os.path.join(rootfs, "sbin")) else \
        os.path.join(rootfs, "sbin")
    if os.path.islink(sbin) or not os.path.isdir(sbin):
        raise ImageBuildError(f"debootstrap left no plain directory {sbin}")
    init = os.path.join(sbin, "init")
    if os.path.lexists(init):
        os.unlink(init)
    with open(init, "w") as f:
        f.write(INIT)
    os.chmod(init, 0o755)
    dev = os.path.join(rootfs, "dev")
    for name in os.listdir(dev):
        path = os.path.join(dev, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    with open(os.path.join(rootfs, "etc", "hostname"), "w") as f:
        f.write("debian\n")
    with open(os.path.join(rootfs, "etc", "hosts"), "w") as f:
        f.write(HOSTS_TEMPLATE.replace("{{ container.name }}", "debian"))
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages", "var/log/*.log"):
        for path in glob.glob(os.path.join(rootfs, pattern)):
            os.unlink(path)
    # The host's resolver is nothing a container should inherit.
    resolv = os.path.join(rootfs, "etc", "resolv.conf")
    if os.path.lexists(resolv):
        os.unlink(resolv)


def build_image(out, suite=SUITE, mirror=None, arch=None, creation_date=None, timeout=1800):
    """Write the unified image tarball (xz) to `out`; needs root. Returns a BuiltImage.

    `out` may be an existing directory: the file is `debian-<suite>-<arch>.tar.xz` in it.
    The work tree and the partial file live beside `out` and are removed in any case.
    """
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root to build a Debian image")
    architecture = canonical_architecture(arch or os.uname().machine)
    debian_arch = DEBIAN_ARCHES.get(architecture)
    if debian_arch is None:
        raise ImageBuildError(f"Debian has no port for {architecture}")
    mirror = mirror or host_mirror(suite)
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap not found (install Debian's debootstrap)")
    creation_date = int(time.time()) if creation_date is None else creation_date
    if os.path.isdir(out):
        out = os.path.join(out, f"debian-{suite}-{architecture}.tar.xz")
    directory = os.path.dirname(os.path.abspath(out))
    try:
        work = tempfile.mkdtemp(prefix=".debian-build-", dir=directory)
    except OSError as e:
        raise ImageBuildError(f"Cannot write to {directory}: {e.strerror}") from None
    partial = os.path.join(work, "image.tar.xz")
    try:
        os.chmod(work, 0o700)
        rootfs = os.path.join(work, "rootfs")
        _run(["debootstrap", "--variant=minbase", f"--arch={debian_arch}", suite, rootfs, mirror],
             f"debootstrap of {suite} from {mirror}", timeout)
        _finish_rootfs(rootfs)
        metadata = image_metadata(suite, architecture, creation_date)
        with open(os.path.join(work, "metadata.yaml"), "w") as f:
            yaml.safe_dump(metadata, f, default_flow_style=False)
        os.makedirs(os.path.join(work, "templates"))
        with open(os.path.join(work, "templates", "hostname.tpl"), "w") as f:
            f.write(HOSTNAME_TEMPLATE)
        with open(os.path.join(work, "templates", "hosts.tpl"), "w") as f:
            f.write(HOSTS_TEMPLATE)
        _pack(work, partial, timeout)
        os.chmod(partial, 0o644)
        os.replace(partial, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuiltImage(path=out, fingerprint=_sha256(out), metadata=metadata)


def _pack(work, dest, timeout):
    """tar | xz of the image layout in `work` into `dest` (xz -0: fast, still ~4x smaller)."""
    tar = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--sort=name",
           "-cf", "-", "-C", work, "metadata.yaml", "templates", "rootfs"]
    with open(dest, "wb") as out:
        packer = subprocess.Popen(tar, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            xz = subprocess.run(["xz", "-0", "-T2", "-c"], stdin=packer.stdout, stdout=out,
                                stderr=subprocess.PIPE, timeout=timeout)
        finally:
            packer.stdout.close()
            err = packer.stderr.read()
            packer.stderr.close()
            code = packer.wait()
    if code != 0:
        raise ImageBuildError(f"tar of the image failed: {err.decode('utf-8', 'replace').strip()}")
    if xz.returncode != 0:
        raise ImageBuildError(f"xz of the image failed: {xz.stderr.decode('utf-8', 'replace').strip()}")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(suite, architecture, mirror):
    """What a cached image depends on, hashed: suite, architecture, mirror and recipe."""
    text = "\0".join([suite, architecture, mirror, str(RECIPE), INIT])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_path(suite=SUITE, arch=None, mirror=None, cache_dir=CACHE_DIR):
    """Where `cached_image` keeps the image of these arguments."""
    architecture = canonical_architecture(arch or os.uname().machine)
    mirror = mirror or host_mirror(suite)
    release = RELEASES.get(suite, suite)
    return os.path.join(cache_dir, f"debian{release}-{architecture}-{cache_key(suite, architecture, mirror)}.tar.xz")


def cached_image(suite=SUITE, arch=None, mirror=None, cache_dir=CACHE_DIR):
    """The path of a cached image, built first if there is none (one builder at a time)."""
    mirror = mirror or host_mirror(suite)
    path = cached_path(suite, arch, mirror, cache_dir)
    if os.path.isfile(path):
        return path
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    with open(os.path.join(cache_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(path):
            build_image(path, suite=suite, mirror=mirror, arch=arch)
            for old in glob.glob(os.path.join(cache_dir, f"debian{RELEASES.get(suite, suite)}-*.tar.xz")):
                if old != path:
                    os.unlink(old)
    return path
