# -*- test-case-name: tests.unit.test_busybox_image -*-
"""Build a unified LXD image of a small busybox system from Debian's `busybox-static`.

Everything comes from the local, statically linked `/bin/busybox`: nothing is downloaded and
nothing needs root, because the tarball is written with explicit owners and modes.

The system inside boots with busybox init (`/sbin/init`), which already handles liblxc's
halt signal: SIGPWR and SIGUSR1 halt, SIGUSR2 powers off, SIGTERM reboots and SIGINT runs the
inittab `ctrlaltdel` entry (here: reboot). `/etc/init.d/rcS` mounts whatever liblxc has not
mounted, brings up `lo`, starts `udhcpc` in the background on every ethernet interface and
prints a boot banner; init then keeps a root shell on the console.
"""

import dataclasses
import gzip
import hashlib
import io
import lzma
import os
import re
import struct
import subprocess
import tarfile
import tempfile
import time

import yaml

from lxdtx import architectures

BUSYBOX = "/bin/busybox"
COMPRESSIONS = ("xz", "gzip", "none")
EXTENSIONS = {"xz": ".tar.xz", "gzip": ".tar.gz", "none": ".tar"}

# xz preset 0 packs busybox in well under a second; higher presets save ~10% for 5x the time.
XZ_PRESET = 0

# Applets the boot scripts below call: a busybox without them would not boot properly.
REQUIRED_APPLETS = (
    "sh", "init", "reboot", "mount", "mkdir", "ln", "grep", "awk", "mv", "id", "hostname", "ip",
    "udhcpc",
)

UDHCPC_SCRIPT = "/etc/udhcpc/default.script"  # compiled-in default of Debian's udhcpc

HOSTNAME_TEMPLATE = "{{ container.name }}\n"

HOSTS_TEMPLATE = """\
127.0.0.1	localhost
127.0.1.1	{{ container.name }}
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
"""

DEFAULT_HOSTNAME = "busybox"

INITTAB = """\
# busybox init: SIGPWR/SIGUSR1 halt, SIGUSR2 powers off, SIGTERM reboots,
# SIGINT (liblxc's reboot signal) runs the ctrlaltdel entry.
::sysinit:/etc/init.d/rcS
# A root login shell on /dev/console (lxc-console, `lxc console`); the dash makes the
# console its controlling tty.
console::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
"""

RCS = r"""#!/bin/sh
# System start-up, run once by init before the console shell.
PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH

# liblxc usually mounts these already; mount only what is missing.
[ -r /proc/self/mounts ] || mount -t proc -o nosuid,nodev,noexec proc /proc
mount_missing() {  # FSTYPE DIR OPTIONS
	grep -q "^[^ ]* $2 " /proc/self/mounts && return 0
	mkdir -p "$2"
	mount -t "$1" -o "$3" "$1" "$2" 2>/dev/null
}
mount_missing sysfs /sys nosuid,nodev,noexec
mount_missing devpts /dev/pts newinstance,ptmxmode=0666,mode=0620,gid=5
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx 2>/dev/null
mount_missing tmpfs /dev/shm nosuid,nodev,mode=1777
mount_missing tmpfs /run nosuid,nodev,mode=0755

[ -s /etc/hostname ] && hostname -F /etc/hostname
ip link set lo up

# A DHCP client per ethernet interface (veth, macvlan, physical), in the background so a
# missing DHCP server never delays boot. /proc and netlink see this container's network
# namespace even when /sys does not.
for iface in $(ip link show | awk -F': ' '
	/^[0-9]+:/ { name = $2; sub(/@.*/, "", name) }
	/link\/ether/ { print name }'); do
	ip link set "$iface" up
	udhcpc -b -i "$iface" -p "/run/udhcpc.$iface.pid" -s /etc/udhcpc/default.script \
		-x "hostname:$(hostname)" -t 5 -T 2 -A 5 \
		</dev/null >"/run/udhcpc.$iface.log" 2>&1 &
done

echo "lxdtx busybox: booted $(hostname)"
"""

DHCP_SCRIPT = r"""#!/bin/sh
# udhcpc event script: applies a lease to $interface (address, default routes, DNS).
# udhcpc exports ip, mask (prefix length), subnet, broadcast, router, dns, domain.
PATH=/sbin:/bin:/usr/sbin:/usr/bin
RESOLV_CONF=/etc/resolv.conf

case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound|renew)
	prefix=${mask:-24}  # udhcpc exports mask whenever the server sent a subnet mask
	# Keep the address (and the routes on it) when a renewal hands out the same one.
	if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$prefix "; then
		ip -4 addr flush dev "$interface"
		ip addr add "$ip/$prefix" broadcast "${broadcast:-+}" dev "$interface"
	fi
	if [ -n "$router" ]; then
		while ip route del default dev "$interface" 2>/dev/null; do :; done
		metric=0
		for gateway in $router; do
			ip route add default via "$gateway" dev "$interface" metric "$metric"
			metric=$((metric + 1))
		done
	fi
	if [ -n "$dns" ]; then
		tmp="$RESOLV_CONF.$$"
		{
			[ -n "$domain" ] && echo "search $domain"
			for server in $dns; do echo "nameserver $server"; done
		} >"$tmp" && mv "$tmp" "$RESOLV_CONF"
	fi
	;;
esac
exit 0
"""

PROFILE = r"""export PATH=/sbin:/bin:/usr/sbin:/usr/bin
[ "$(id -u)" = 0 ] && export HOME=/root
PS1='\u@\h:\w\$ '
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"
# An empty password field: root logs in without a password.
SHADOW = "root::0:0:99999:7:::\nnobody:*:0:0:99999:7:::\n"
SHELLS = "/bin/sh\n/bin/ash\n"

# (path, mode) of the directories every image has, besides the parents of its files.
DIRECTORIES = (
    ("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("etc/init.d", 0o755),
    ("etc/udhcpc", 0o755), ("home", 0o755), ("lib", 0o755), ("media", 0o755),
    ("mnt", 0o755), ("opt", 0o755), ("proc", 0o555), ("root", 0o700), ("run", 0o755),
    ("sbin", 0o755), ("srv", 0o755), ("sys", 0o555), ("tmp", 0o1777), ("usr", 0o755),
    ("usr/bin", 0o755), ("usr/sbin", 0o755), ("usr/share", 0o755),
    ("usr/share/udhcpc", 0o755), ("var", 0o755), ("var/log", 0o755), ("var/tmp", 0o1777),
)

# (path, content, mode) of the files written into the root filesystem.
FILES = (
    ("etc/inittab", INITTAB, 0o644),
    ("etc/init.d/rcS", RCS, 0o755),
    (UDHCPC_SCRIPT.lstrip("/"), DHCP_SCRIPT, 0o755),
    ("etc/passwd", PASSWD, 0o644),
    ("etc/group", GROUP, 0o644),
    ("etc/shadow", SHADOW, 0o600),
    ("etc/shells", SHELLS, 0o644),
    ("etc/profile", PROFILE, 0o644),
    ("etc/hostname", DEFAULT_HOSTNAME + "\n", 0o644),
    ("etc/hosts", HOSTS_TEMPLATE.replace("{{ container.name }}", DEFAULT_HOSTNAME), 0o644),
)

# (path, target) of symlinks besides the applet links.
SYMLINKS = (
    ("var/run", "/run"),
    ("etc/mtab", "/proc/self/mounts"),
    # Where upstream busybox looks for the udhcpc script.
    ("usr/share/udhcpc/default.script", UDHCPC_SCRIPT),
)

# Templates LXD renders into the container: (target path, template file name, triggers).
TEMPLATES = (
    ("/etc/hostname", "hostname.tpl", HOSTNAME_TEMPLATE, ("create", "copy", "rename")),
    ("/etc/hosts", "hosts.tpl", HOSTS_TEMPLATE, ("create", "copy", "rename")),
)


class ImageBuildError(Exception):
    """The image cannot be built (bad option, unusable busybox binary, unwritable output)."""


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    """A written image file: where, its LXD fingerprint and its `metadata.yaml` content."""

    path: str
    fingerprint: str
    metadata: dict


def canonical_architecture(name):
    """LXD's canonical name for an architecture name or alias."""
    canonical = architectures.canonical(name)
    if canonical is None:
        known = ", ".join(sorted(architectures.ALIASES))
        raise ImageBuildError(f"Unknown architecture {name!r} (known: {known})")
    return canonical


def _run_busybox(busybox, *args):
    try:
        done = subprocess.run(
            [busybox, *args], capture_output=True, check=True, timeout=30, text=True
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise ImageBuildError(f"Cannot run {busybox}: {e}") from None
    return done.stdout


def is_static_elf(path):
    """Whether path is an ELF executable without a program interpreter (statically linked)."""
    try:
        return _is_static_elf(path)
    except (OSError, struct.error):
        return False


def _is_static_elf(path):
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2):
            return False
        wide = ident[4] == 2
        order = "<" if ident[5] == 1 else ">"
        header = f.read(48 if wide else 36)
        if wide:
            phoff, = struct.unpack_from(order + "Q", header, 16)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 38)
        else:
            phoff, = struct.unpack_from(order + "I", header, 12)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 26)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, = struct.unpack_from(order + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader the image does not have
            return False
    return len(table) == phentsize * phnum


def busybox_version(busybox=BUSYBOX):
    """The version busybox reports, like `1.35.0`."""
    found = re.search(r"BusyBox v(\d+(?:\.\d+)*)", _run_busybox(busybox, "--help"))
    if not found:
        raise ImageBuildError(f"{busybox} does not report a BusyBox version")
    return found.group(1)


def busybox_applets(busybox=BUSYBOX):
    """Installation paths of every applet, relative to / (`bin/ash`, `usr/bin/awk`...)."""
    applets = []
    for line in _run_busybox(busybox, "--list-full").splitlines():
        path = os.path.normpath(line.strip()).lstrip("/")
        # Paths come from the binary: refuse anything that would leave the rootfs.
        if not path or path == "." or path.startswith(".."):
            continue
        applets.append(path)
    missing = set(REQUIRED_APPLETS) - {os.path.basename(path) for path in applets}
    if missing:
        raise ImageBuildError(f"{busybox} lacks applets: {', '.join(sorted(missing))}")
    return applets


def image_metadata(architecture, version, creation_date):
    """The `metadata.yaml` document of the image."""
    return {
        "architecture": architecture,
        "creation_date": creation_date,
        "properties": {
            "architecture": architecture,
            "description": f"BusyBox {version} {architecture} (lxdtx)",
            "os": "busybox",
            "release": version,
        },
        "templates": {
            path: {
                "when": list(when),
                "template": name,
                "create_only": False,
                "properties": {},
            }
            for path, name, _, when in TEMPLATES
        },
    }


class _Members:
    """Tar members by name, written sorted so every directory precedes its content."""

    def __init__(self, mtime):
        self._mtime = mtime
        self._members = {}

    def _info(self, name, kind, mode):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = self._mtime
        return info

    def _parents(self, name):
        parent = os.path.dirname(name)
        if parent and parent not in self._members:
            self.directory(parent)

    def directory(self, name, mode=0o755):
        self._parents(name)
        self._members[name] = (self._info(name, tarfile.DIRTYPE, mode), None)

    def file(self, name, data, mode=0o644):
        self._parents(name)
        info = self._info(name, tarfile.REGTYPE, mode)
        if isinstance(data, str):
            data = data.encode()
        info.size = len(data)
        self._members[name] = (info, data)

    def symlink(self, name, target):
        self._parents(name)
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._members[name] = (info, None)

    def write(self, tar):
        for name in sorted(self._members):
            info, data = self._members[name]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _members(busybox, applets, metadata, mtime):
    members = _Members(mtime)
    members.file("metadata.yaml", yaml.safe_dump(metadata, default_flow_style=False))
    members.directory("templates")
    for _, name, text, _ in TEMPLATES:
        members.file(f"templates/{name}", text)
    members.directory("rootfs")
    for path, mode in DIRECTORIES:
        members.directory(f"rootfs/{path}", mode)
    with open(busybox, "rb") as f:
        members.file("rootfs/bin/busybox", f.read(), 0o755)
    for path in applets:
        if path != "bin/busybox":
            members.symlink(f"rootfs/{path}", "/bin/busybox")
    for path, content, mode in FILES:
        members.file(f"rootfs/{path}", content, mode)
    for path, target in SYMLINKS:
        members.symlink(f"rootfs/{path}", target)
    return members


def _compressed(raw, compression, mtime):
    if compression == "xz":
        return lzma.LZMAFile(raw, "wb", format=lzma.FORMAT_XZ, preset=XZ_PRESET)
    if compression == "gzip":
        # No file name and a fixed time in the header, so equal inputs give equal bytes.
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime)
    return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_image(out, compression="xz", arch=None, busybox=BUSYBOX, creation_date=None):
    """Write the unified image tarball to out and return it as a BuiltImage.

    out may be an existing directory, then the file is `busybox-<arch>.tar.<ext>` in it.
    creation_date (unix seconds) also stamps every member; it defaults to
    $SOURCE_DATE_EPOCH or now. The file appears only complete: it is written under a
    temporary name in the same directory and renamed.
    """
    if compression not in COMPRESSIONS:
        raise ImageBuildError(
            f"Unknown compression {compression!r} (use one of {', '.join(COMPRESSIONS)})"
        )
    architecture = canonical_architecture(arch or os.uname().machine)
    if not os.path.isfile(busybox):
        raise ImageBuildError(f"{busybox} not found (install Debian's busybox-static)")
    if not is_static_elf(busybox):
        raise ImageBuildError(
            f"{busybox} is not a statically linked executable (install busybox-static)"
        )
    if creation_date is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        if epoch is not None and not epoch.isdigit():
            raise ImageBuildError(f"SOURCE_DATE_EPOCH is not unix seconds: {epoch!r}")
        creation_date = int(epoch) if epoch else int(time.time())
    if creation_date <= 0:
        raise ImageBuildError("The creation date must be after 1970 (LXD refuses 0)")
    if os.path.isdir(out):
        out = os.path.join(out, f"busybox-{architecture}{EXTENSIONS[compression]}")

    metadata = image_metadata(architecture, busybox_version(busybox), creation_date)
    members = _members(busybox, busybox_applets(busybox), metadata, creation_date)

    directory = os.path.dirname(os.path.abspath(out))
    try:
        fd, partial = tempfile.mkstemp(prefix=".busybox-", dir=directory)
    except OSError as e:
        raise ImageBuildError(f"Cannot write to {directory}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as raw:
            stream = _compressed(raw, compression, creation_date)
            target = raw if stream is None else stream
            with tarfile.open(fileobj=target, mode="w", format=tarfile.GNU_FORMAT) as tar:
                members.write(tar)
            if stream is not None:
                stream.close()
        os.chmod(partial, 0o644)
        os.replace(partial, out)
    except BaseException as e:
        os.unlink(partial)
        if isinstance(e, OSError):
            raise ImageBuildError(f"Cannot write {out}: {e.strerror or e}") from None
        raise
    return BuiltImage(path=out, fingerprint=_sha256(out), metadata=metadata)
