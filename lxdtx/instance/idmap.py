# -*- test-case-name: tests.unit.test_idmap -*-
"""User namespace id maps: the host's allocation, a container's map, shifting a tree.

An unprivileged container maps ids 0..N-1 inside to a range of host ids taken
from root's allocation in /etc/subuid and /etc/subgid. liblxc writes the maps
with shadow's newuidmap/newgidmap whenever those are installed (Debian's
`uidmap` package), even when it runs as root, and newuidmap refuses any range
root has no /etc/subuid (/etc/subgid) entry for; without them liblxc, as root,
writes /proc/<pid>/uid_map itself. Either way the allocation must be recorded
there, which `ensure_allocation()` does; host ids given in `raw.idmap` must be
in those files too when newuidmap is used.

Maps are stored the way LXD keeps them in `volatile.last_state.idmap`:
`[{"Isuid":true,"Isgid":false,"Hostid":1000000,"Nsid":0,"Maprange":65536},...]`.
"""

import errno
import json
import os
import re
import stat
import struct
import tempfile
from typing import NamedTuple

from lxdtx import fsutil
from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_true

DEFAULT_BASE = 1000000
DEFAULT_SIZE = 1000000000
ISOLATED_SIZE = 65536
# Isolated maps start above the first 65536 ids of the allocation, the ids every
# non-isolated container uses for its own 0..65535.
RESERVED = 65536

_NO_ALLOCATION = ("LXD doesn't have a uid/gid allocation. In this mode, only privileged "
                  "containers are supported.")


class Range(NamedTuple):
    """`size` host ids from `base`."""

    base: int
    size: int

    @property
    def end(self):
        """First id after the range."""
        return self.base + self.size


class Allocation(NamedTuple):
    """The host ids the daemon may hand to containers: uid and gid ranges."""

    uid: Range
    gid: Range


class IdmapEntry(NamedTuple):
    """`maprange` ids from `nsid` inside map to ids from `hostid` on the host."""

    isuid: bool
    isgid: bool
    hostid: int
    nsid: int
    maprange: int

    def to_dict(self):
        """LXD's JSON object for the entry."""
        return {"Isuid": self.isuid, "Isgid": self.isgid, "Hostid": self.hostid,
                "Nsid": self.nsid, "Maprange": self.maprange}


def _split(entry):
    """Entries with one kind each (a `both` entry becomes a uid and a gid one)."""
    out = []
    if entry.isuid:
        out.append(entry._replace(isgid=False))
    if entry.isgid:
        out.append(entry._replace(isuid=False))
    return out


def _overlaps(a_start, a_size, b_start, b_size):
    return a_start < b_start + b_size and b_start < a_start + a_size


class IdMap:
    """A container's uid and gid maps (each entry maps one kind)."""

    def __init__(self, entries=()):
        split = [part for e in entries for part in _split(IdmapEntry(*e))]
        self.entries = tuple(sorted(split, key=lambda e: (not e.isuid, e.nsid, e.hostid)))

    def __eq__(self, other):
        return isinstance(other, IdMap) and self.entries == other.entries

    def __hash__(self):
        return hash(self.entries)

    def __repr__(self):
        return f"IdMap({list(self.entries)!r})"

    @classmethod
    def from_allocation(cls, allocation, nsid=0):
        """The whole allocation mapped from `nsid` (the non-isolated map)."""
        return cls([
            IdmapEntry(True, False, allocation.uid.base, nsid, allocation.uid.size),
            IdmapEntry(False, True, allocation.gid.base, nsid, allocation.gid.size),
        ])

    def to_json(self):
        """LXD's JSON form of the map."""
        return json.dumps([e.to_dict() for e in self.entries], separators=(",", ":"))

    @classmethod
    def from_json(cls, text):
        """The map of `volatile.last_state.idmap` (None for "" or `[]`: a privileged container)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            entries = [IdmapEntry(bool(d["Isuid"]), bool(d["Isgid"]), int(d["Hostid"]),
                                  int(d["Nsid"]), int(d["Maprange"])) for d in data]
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"Invalid id map: {e}")
        for entry in entries:
            if entry.maprange <= 0 or entry.hostid < 0 or entry.nsid < 0:
                raise ValueError(f"Invalid id map entry: {entry.to_dict()}")
        return cls(entries) if entries else None

    def lxc_values(self):
        """Values of `lxc.idmap` lines: `u 0 1000000 65536`."""
        return [f"{'u' if e.isuid else 'g'} {e.nsid} {e.hostid} {e.maprange}" for e in self.entries]

    def lxc_lines(self):
        """liblxc config lines: `lxc.idmap = u 0 1000000 65536`."""
        return [f"lxc.idmap = {value}" for value in self.lxc_values()]

    def _of(self, uid):
        return [e for e in self.entries if e.isuid == uid]

    def _to_host(self, uid, nsid):
        for e in self._of(uid):
            if e.nsid <= nsid < e.nsid + e.maprange:
                return e.hostid + nsid - e.nsid
        return None

    def _to_ns(self, uid, hostid):
        for e in self._of(uid):
            if e.hostid <= hostid < e.hostid + e.maprange:
                return e.nsid + hostid - e.hostid
        return None

    def host_uid(self, ns_uid):
        """Host uid of uid `ns_uid` inside (None when unmapped)."""
        return self._to_host(True, ns_uid)

    def ns_uid(self, host_uid):
        """Uid inside of host uid `host_uid` (None when unmapped)."""
        return self._to_ns(True, host_uid)

    def host_gid(self, ns_gid):
        """Host gid of gid `ns_gid` inside (None when unmapped)."""
        return self._to_host(False, ns_gid)

    def ns_gid(self, host_gid):
        """Gid inside of host gid `host_gid` (None when unmapped)."""
        return self._to_ns(False, host_gid)

    def host_ranges(self):
        """[Range] of host ids the map uses (uid and gid ranges alike)."""
        return [Range(e.hostid, e.maprange) for e in self.entries]


# ---------------------------------------------------------------------------
# The host's allocation (/etc/subuid, /etc/subgid)

def _read_entries(path):
    """[(name, start, count)] of a subid file (missing file: none)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        entries.append((parts[0], int(parts[1]), int(parts[2])))
    return entries


def read_allocation(path="/etc/subuid", user="root"):
    """`user`'s range in a subuid/subgid file, as LXD picks it, or None.

    The first entry of the user counts, minus any ids below 65536 (kept for
    the host's own users).
    """
    for name, start, count in _read_entries(path):
        if name != user:
            continue
        if start < RESERVED:
            count -= RESERVED - start
            start = RESERVED
        if count > 0:
            return Range(start, count)
    return None


def load_allocation(subuid="/etc/subuid", subgid="/etc/subgid", user="root"):
    """The Allocation of `user`, or None when either file lacks an entry."""
    uid, gid = read_allocation(subuid, user), read_allocation(subgid, user)
    if uid is None or gid is None:
        return None
    return Allocation(uid, gid)


def _free_base(entries, base, size):
    """`base`, or the first 65536-aligned id after the entries it would overlap."""
    moved = True
    while moved:
        moved = False
        for _, start, count in entries:
            if _overlaps(base, size, start, count):
                base = -(-(start + count) // RESERVED) * RESERVED
                moved = True
    return base


def _append_entry(path, user, base, size):
    try:
        with open(path) as f:
            text = f.read()
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        text, mode = "", 0o644
    if text and not text.endswith("\n"):
        text += "\n"
    text += f"{user}:{base}:{size}\n"
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".lxdtx-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def ensure_allocation(subuid="/etc/subuid", subgid="/etc/subgid", user="root",
                      base=DEFAULT_BASE, size=DEFAULT_SIZE):
    """`user`'s Allocation, first adding `user:base:size` to a file that has no entry for it.

    The files are created when missing. A base overlapping other users'
    entries moves past them. Blocking (file I/O): run it off the reactor.
    """
    for path in (subuid, subgid):
        if read_allocation(path, user) is None:
            _append_entry(path, user, _free_base(_read_entries(path), base, size), size)
    return load_allocation(subuid, subgid, user)


# ---------------------------------------------------------------------------
# A container's map

def _config_error(key, message):
    return ConfigError([(key, message)])


def parse_raw_idmap(value):
    """[IdmapEntry] of `raw.idmap` lines `both|uid|gid HOST[-HOST] NS[-NS]`."""
    def bounds(text, line):
        parts = text.split("-")
        if len(parts) > 2 or not all(p.isdigit() for p in parts):
            raise _config_error("raw.idmap", f"Invalid raw.idmap range: {text} (line: {line})")
        low = int(parts[0])
        high = int(parts[-1])
        if high < low:
            raise _config_error("raw.idmap", f"Invalid raw.idmap range: {text} (line: {line})")
        return low, high - low + 1

    entries = []
    for line in (value or "").splitlines():
        line = line.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3 or fields[0] not in ("both", "uid", "gid"):
            raise _config_error("raw.idmap", f"Invalid raw.idmap line: {line}")
        host, host_size = bounds(fields[1], line)
        ns, ns_size = bounds(fields[2], line)
        if host_size != ns_size:
            raise _config_error("raw.idmap", f"raw.idmap ranges of different sizes: {line}")
        entries.append(IdmapEntry(fields[0] in ("both", "uid"), fields[0] in ("both", "gid"),
                                  host, ns, host_size))
    return entries


def _punch(entries, new):
    """Entries (one kind, new's kind) with new's ns range taken over by new."""
    out = []
    new_end = new.nsid + new.maprange
    for e in entries:
        if _overlaps(e.hostid, e.maprange, new.hostid, new.maprange):
            raise _config_error(
                "raw.idmap",
                f"raw.idmap host {'uid' if new.isuid else 'gid'} range {new.hostid}-"
                f"{new.hostid + new.maprange - 1} is already mapped in the container's map")
        if not _overlaps(e.nsid, e.maprange, new.nsid, new.maprange):
            out.append(e)
            continue
        if e.nsid < new.nsid:
            out.append(e._replace(maprange=new.nsid - e.nsid))
        e_end = e.nsid + e.maprange
        if e_end > new_end:
            out.append(e._replace(hostid=e.hostid + new_end - e.nsid, nsid=new_end, maprange=e_end - new_end))
    out.append(new)
    return out


def _with_raw(idmap, raw_entries):
    uids = [e for e in idmap.entries if e.isuid]
    gids = [e for e in idmap.entries if e.isgid]
    for raw in raw_entries:
        for part in _split(raw):
            if part.isuid:
                uids = _punch(uids, part)
            else:
                gids = _punch(gids, part)
    return IdMap(uids + gids)


def compute(config, allocation, others):
    """(IdMap or None, base) for a container's expanded config.

    `allocation`: the host's Allocation (None when there is none); `others`:
    maps (IdMap) of the other isolated containers. Privileged containers get
    no map; others the whole allocation from id 0, or with
    `security.idmap.isolated` a range of their own of `security.idmap.size`
    ids (65536 by default), placed at `security.idmap.base` or in the first
    gap after the allocation's first 65536 ids. `raw.idmap` entries are
    punched into the map. `base` is the first host id of an isolated map, else 0.
    Raises ConfigError naming the offending key.
    """
    if is_true(config.get("security.privileged") or ""):
        return None, 0
    if allocation is None:
        raise _config_error("security.privileged", _NO_ALLOCATION)
    raw = parse_raw_idmap(config.get("raw.idmap") or "")
    if not is_true(config.get("security.idmap.isolated") or ""):
        return _with_raw(IdMap.from_allocation(allocation), raw), 0

    size = ISOLATED_SIZE
    if config.get("security.idmap.size"):
        try:
            size = int(config["security.idmap.size"], 10)
        except ValueError:
            raise _config_error("security.idmap.size", f"Invalid security.idmap.size: {config['security.idmap.size']}")
        if size <= 0:
            raise _config_error("security.idmap.size", "security.idmap.size must be positive")
    low = max(allocation.uid.base, allocation.gid.base)
    high = min(allocation.uid.end, allocation.gid.end)
    taken = sorted({r for m in others if m is not None for r in m.host_ranges()})

    if config.get("security.idmap.base"):
        try:
            base = int(config["security.idmap.base"], 10)
        except ValueError:
            raise _config_error("security.idmap.base", f"Invalid security.idmap.base: {config['security.idmap.base']}")
        if base < low or base + size > high:
            raise _config_error(
                "security.idmap.base",
                f"security.idmap.base {base} with size {size} is outside the uid/gid allocation "
                f"{low}-{high - 1}")
        for r in taken:
            if _overlaps(base, size, r.base, r.size):
                raise _config_error(
                    "security.idmap.base",
                    f"security.idmap.base {base} with size {size} overlaps the map of another "
                    f"isolated container ({r.base}-{r.end - 1})")
    else:
        base = low + RESERVED
        for r in taken:
            if _overlaps(base, size, r.base, r.size):
                base = r.end
        if base + size > high:
            raise _config_error("security.idmap.isolated", "Not enough uid/gid available for the container")
    isolated = IdMap.from_allocation(Allocation(Range(base, size), Range(base, size)))
    return _with_raw(isolated, raw), base


# ---------------------------------------------------------------------------
# Shifting a tree from one map to another

_ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
_CAP_XATTR = "security.capability"
_ACL_VERSION = 2
_ACL_USER, _ACL_GROUP = 0x02, 0x08
_CAP_REVISION_MASK = 0xFF000000
_CAP_V2, _CAP_V3 = 0x02000000, 0x03000000
_CAP_V2_SIZE, _CAP_V3_SIZE = 20, 24


def _id_shifter(old, new, uid):
    """host id under `old` -> host id under `new` (None map: ids inside are host ids).

    Ids the old map does not cover, or whose inside id the new map does not
    cover, stay as they are.
    """
    def shift(host_id):
        if old is None:
            inside = host_id
        else:
            inside = old.ns_uid(host_id) if uid else old.ns_gid(host_id)
        if inside is None:
            return host_id
        if new is None:
            return inside
        target = new.host_uid(inside) if uid else new.host_gid(inside)
        return host_id if target is None else target
    return shift


def shift_acl(value, shift_uid, shift_gid):
    """A `system.posix_acl_*` xattr value with its named user and group entries shifted."""
    if len(value) < 4 or (len(value) - 4) % 8:
        return value
    (version,) = struct.unpack_from("<I", value)
    if version != _ACL_VERSION:
        return value
    out = bytearray(value)
    for offset in range(4, len(value), 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, offset)
        if tag == _ACL_USER:
            struct.pack_into("<HHI", out, offset, tag, perm, shift_uid(ident))
        elif tag == _ACL_GROUP:
            struct.pack_into("<HHI", out, offset, tag, perm, shift_gid(ident))
    return bytes(out)


def shift_caps(value, root_uid):
    """A `security.capability` value for a file whose owning namespace root is `root_uid`.

    v3 capabilities carry the host uid of the root of the user namespace they
    apply in; v2 ones apply to the host's root. `root_uid` None (privileged
    target) gives v2; otherwise v3 with that root, so capabilities that came
    with an image keep working once the tree is shifted.
    """
    if len(value) not in (_CAP_V2_SIZE, _CAP_V3_SIZE):
        return value
    (magic,) = struct.unpack_from("<I", value)
    revision = magic & _CAP_REVISION_MASK
    if revision not in (_CAP_V2, _CAP_V3):
        return value
    flags = magic & ~_CAP_REVISION_MASK
    data = value[4:20]
    if root_uid is None:
        return struct.pack("<I", _CAP_V2 | flags) + data
    return struct.pack("<I", _CAP_V3 | flags) + data + struct.pack("<I", root_uid)


def _mount_points_below(root):
    """Mount points strictly below `root` (another file system's tree: not ours to shift)."""
    found = set()
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    prefix = root.rstrip("/") + "/"
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point.startswith(prefix):
            found.add(point.rstrip("/"))
    return found


def _names(dir_fd):
    """Names in an open directory, in reverse order (popped from the end)."""
    with os.scandir(dir_fd) as entries:
        return sorted((e.name for e in entries), reverse=True)


class _Shifter:
    """One shift of one tree: the id functions, the mounts to skip, the hard links seen."""

    def __init__(self, root, old, new):
        self.root = root
        self.uid = _id_shifter(old, new, True)
        self.gid = _id_shifter(old, new, False)
        self.root_uid = None if new is None else new.host_uid(0)
        self.mounts = _mount_points_below(root)
        self.seen = set()

    def inode(self, st, chown, xattr_path, chmod):
        """Shift one inode: owner, lost setuid/setgid bits, ACLs, file capabilities."""
        uid, gid = self.uid(st.st_uid), self.gid(st.st_gid)
        is_link = stat.S_ISLNK(st.st_mode)
        xattrs = {}
        if not is_link:
            try:
                names = os.listxattr(xattr_path)
            except OSError:
                names = []
            for name in names:
                if name in _ACL_XATTRS or name == _CAP_XATTR:
                    try:
                        xattrs[name] = os.getxattr(xattr_path, name)
                    except OSError:
                        pass
        changed_owner = (uid, gid) != (st.st_uid, st.st_gid)
        if changed_owner:
            chown(uid, gid)
            # chown clears setuid/setgid on non-directories; put them back.
            if not is_link and not stat.S_ISDIR(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                chmod(stat.S_IMODE(st.st_mode))
        caps = xattrs.get(_CAP_XATTR)
        if caps is not None:
            shifted = shift_caps(caps, self.root_uid)
            # chown also removes file capabilities, so write them back even when unchanged.
            if changed_owner or shifted != caps:
                os.setxattr(xattr_path, _CAP_XATTR, shifted)
        for name in _ACL_XATTRS:
            acl = xattrs.get(name)
            if acl is not None:
                shifted = shift_acl(acl, self.uid, self.gid)
                if shifted != acl:
                    os.setxattr(xattr_path, name, shifted)

    def walk(self, root_fd, root_path):
        """Shift everything below the open directory `root_fd`, depth first.

        Iterative, holding one descriptor per level of the current path, so a
        deep tree fails with EMFILE rather than exhausting the Python stack.
        """
        stack = [(root_fd, _names(root_fd), root_path)]
        try:
            while stack:
                dir_fd, names, path = stack[-1]
                if not names:
                    stack.pop()
                    if dir_fd != root_fd:
                        os.close(dir_fd)
                    continue
                name = names.pop()
                child_fd = self.entry(dir_fd, name, path)
                if child_fd is not None:
                    try:
                        names_below = _names(child_fd)
                    except BaseException:
                        os.close(child_fd)
                        raise
                    stack.append((child_fd, names_below, os.path.join(path, name)))
        finally:
            for dir_fd, _, _ in stack:
                if dir_fd != root_fd:
                    os.close(dir_fd)

    def entry(self, dir_fd, name, path):
        """Shift `name` in `dir_fd`; for a directory to descend into, return it opened."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            if os.path.join(path, name) in self.mounts:
                return None
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                fst = os.fstat(fd)
                if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                    os.close(fd)  # replaced under us: not the directory we looked at
                    return None
                self.fd_inode(fd, fst)
            except BaseException:
                os.close(fd)
                raise
            return fd
        if st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in self.seen:
                return None  # another name of an inode already shifted
            self.seen.add((st.st_dev, st.st_ino))

        def chown(uid, gid):
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

        if stat.S_ISLNK(st.st_mode):
            self.inode(st, chown, None, None)
            return None
        # An O_PATH descriptor pins the inode without opening devices or fifos.
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
                proc = f"/proc/self/fd/{fd}"
                self.inode(fst, chown, proc, lambda mode: os.chmod(proc, mode))
        finally:
            os.close(fd)
        return None

    def fd_inode(self, fd, st):
        """Shift the directory open as `fd`."""
        self.inode(st, lambda u, g: os.chown(fd, u, g), f"/proc/self/fd/{fd}", lambda mode: os.chmod(fd, mode))


def shift_tree(path, old, new):
    """Re-own every file under `path` from map `old` to map `new` (None: privileged, no map).

    Blocking: the caller runs it in a thread. Never follows symlinks, does not
    descend into other mounts below `path`, shifts each hard-linked inode
    once, restores setuid/setgid bits chown clears, shifts POSIX ACLs and
    file capabilities (v3 rootid; v2 ones become v3 for an unprivileged
    target). Ids outside the old map are left alone. Not atomic: an error
    (say EMFILE on an absurdly deep tree) leaves the tree partly shifted;
    running the same shift again completes it only when the two maps' host
    ranges are disjoint (already shifted ids are then outside the old map).
    """
    if old == new:
        return
    root, fd = _open_tree(path)
    try:
        shifter = _Shifter(root, old, new)
        shifter.fd_inode(fd, os.fstat(fd))
        shifter.walk(fd, root)
    finally:
        os.close(fd)


def _open_tree(path):
    """(real path, open directory) of the tree `path`, its last component never followed.

    The parent is the daemon's own directory and may be reached through links; the
    last component (a rootfs) came from an image or a backup, and a `rootfs -> /`
    there must not turn a shift into a chown of the host.
    """
    parent, leaf = os.path.split(os.path.abspath(path))
    parent = os.path.realpath(parent)
    parent_fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "refusing to shift what is not a directory", path)
            return os.path.join(parent, leaf), fsutil.reopen(fd, os.O_RDONLY | os.O_DIRECTORY)
        finally:
            os.close(fd)
    finally:
        os.close(parent_fd)


def running_map(config):
    """The id map a container runs with (None: privileged). With an idmapped rootfs its
    files stay unshifted on disk (`volatile.last_state.idmap` is `[]`) and
    `volatile.idmap.current` holds the map; otherwise the two are the same."""
    return IdMap.from_json(config.get("volatile.idmap.current") or config.get("volatile.last_state.idmap") or "")
