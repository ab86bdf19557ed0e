#!/bin/sh
# Build a CRIU that works on this machine's kernel and install it under $PREFIX
# (default /opt/criu), leaving Debian's own criu and libc alone.
#
# Why: Debian 12's criu 3.17 fails `criu check` on kernels >= 6.x here (vDSO layout).
# CRIU 4.1.1 (Debian trixie's source tarball) handles the vDSO; on kernels >= 6.16 it
# also needs the small socket-options fix in the .patch beside this script (dump only
# SO_PASSCRED/SO_PASSSEC for unix and netlink sockets), which upstream CRIU 4.2 has.
#
# Idempotent: exits at once when $PREFIX/sbin/criu already passes `criu check`.
# Takes about 20 s of compiling plus the apt installs. Run as root.
#
# After it: put $PREFIX/sbin first in PATH for liblxc, and
#   dump:    CRIU_CONFIG_FILE=$PREFIX/etc/criu.conf          (network-lock nftables)
#   restore: CRIU_CONFIG_FILE=$PREFIX/etc/criu-restore.conf  (mntns-compat-mode: /lib is a symlink)
# Dumping a network namespace runs iptables-save, hence the iptables package.
# Containers to checkpoint need lxc.tty.max = 0 and no lxc.apparmor.* keys on this kernel,
# and processes started in them must not hold host file descriptors.
# Pre-dump (iterative memory copy) needs CONFIG_MEM_SOFT_DIRTY, which this kernel lacks:
# `criu check --feature mem_dirty_track` says so, and callers must fall back to one dump.
set -eu
PREFIX=${PREFIX:-/opt/criu}
HERE=$(cd "$(dirname "$0")" && pwd)
W=${W:-/tmp/criu-build}

if [ -x "$PREFIX/sbin/criu" ] && "$PREFIX/sbin/criu" check >/dev/null 2>&1; then
  echo "criu at $PREFIX already passes check"; exit 0
fi

# A deb-src entry for trixie, on the same mirror as the machine's own Debian sources.
if ! grep -rqs "deb-src" /etc/apt/sources.list.d/ || ! grep -rqs "trixie" /etc/apt/sources.list.d/; then
  uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
  [ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" > /etc/apt/sources.list.d/criu-trixie-src.sources
fi
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends build-essential pkg-config \
  libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler python3-protobuf \
  libnl-3-dev libnl-route-3-dev libnet1-dev libbsd-dev libcap-dev libgnutls28-dev \
  libnftables-dev libnftnl-dev libmnl-dev uuid-dev libaio-dev nftables iproute2 iptables >/dev/null

mkdir -p "$W" && cd "$W"
[ -f criu_4.1.1.orig.tar.xz ] || apt-get source --download-only criu/trixie >/dev/null 2>&1 || true
echo "f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe  criu_4.1.1.orig.tar.xz" | sha256sum -c -
rm -rf criu-4.1.1 && tar xf criu_4.1.1.orig.tar.xz && cd criu-4.1.1
patch -p1 < "$HERE/criu-4.1.1-sockopts-linux-6.16.patch"
make -j"$(nproc)" criu lib >/dev/null
make install-criu install-lib PREFIX="$PREFIX" SKIP_PIP_INSTALL=1 >/dev/null
mkdir -p "$PREFIX/etc"
printf 'network-lock nftables\n' > "$PREFIX/etc/criu.conf"
printf 'mntns-compat-mode\n' > "$PREFIX/etc/criu-restore.conf"
"$PREFIX/sbin/criu" check
