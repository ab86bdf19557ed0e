"""Id allocations, container id maps and shifting a tree between maps."""

import os
import shutil
import stat
import struct
import subprocess
import tempfile
import unittest

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.config.schema import ConfigError
from lxdtx.instance import idmap
from lxdtx.instance.idmap import Allocation, IdMap, IdmapEntry, Range

ALLOCATION = Allocation(Range(1000000, 1000000000), Range(1000000, 1000000000))


def temp_dir(case):
    path = tempfile.mkdtemp(prefix="lxdtx-idmap-")
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


class AllocationTests(SynchronousTestCase):
    """Reading and adding root's ranges in subuid/subgid files (temporary files only)."""

    def test_read(self):
        """The user's first entry counts; other users, comments and junk are skipped."""
        d = temp_dir(self)
        path = os.path.join(d, "subuid")
        write(path, "# comment\nalice:100000:65536\nbad line\nroot:1000000:1000000000\nroot:5:5\n")
        self.assertEqual(idmap.read_allocation(path), Range(1000000, 1000000000))
        self.assertEqual(idmap.read_allocation(path, "alice"), Range(100000, 65536))
        self.assertIsNone(idmap.read_allocation(path, "bob"))
        self.assertIsNone(idmap.read_allocation(os.path.join(d, "missing")))

    def test_low_ids_trimmed(self):
        """Ids below 65536 are never handed out."""
        d = temp_dir(self)
        path = os.path.join(d, "subuid")
        write(path, "root:0:65536\nroot:1000:100000\n")
        self.assertEqual(idmap.read_allocation(path), Range(65536, 100000 - (65536 - 1000)))

    def test_ensure_creates(self):
        """Missing files are created with root's default range."""
        d = temp_dir(self)
        subuid, subgid = os.path.join(d, "subuid"), os.path.join(d, "subgid")
        allocation = idmap.ensure_allocation(subuid, subgid)
        self.assertEqual(allocation, ALLOCATION)
        self.assertEqual(read(subuid), "root:1000000:1000000000\n")
        self.assertEqual(read(subgid), "root:1000000:1000000000\n")
        self.assertEqual(stat.S_IMODE(os.stat(subuid).st_mode), 0o644)

    def test_ensure_appends_once(self):
        """Only the file without an entry changes; a second call changes nothing."""
        d = temp_dir(self)
        subuid, subgid = os.path.join(d, "subuid"), os.path.join(d, "subgid")
        write(subuid, "root:300000:70000\n")
        write(subgid, "alice:100000:65536")
        os.chmod(subgid, 0o600)
        allocation = idmap.ensure_allocation(subuid, subgid)
        self.assertEqual(allocation, Allocation(Range(300000, 70000), Range(1000000, 1000000000)))
        self.assertEqual(read(subuid), "root:300000:70000\n")
        self.assertEqual(read(subgid), "alice:100000:65536\nroot:1000000:1000000000\n")
        self.assertEqual(stat.S_IMODE(os.stat(subgid).st_mode), 0o600)
        idmap.ensure_allocation(subuid, subgid)
        self.assertEqual(read(subgid), "alice:100000:65536\nroot:1000000:1000000000\n")

    def test_ensure_avoids_other_users(self):
        """A default range overlapping another user's moves past it."""
        d = temp_dir(self)
        subuid, subgid = os.path.join(d, "subuid"), os.path.join(d, "subgid")
        write(subuid, "alice:1000000:100000\n")
        write(subgid, "")
        allocation = idmap.ensure_allocation(subuid, subgid)
        self.assertEqual(allocation.uid, Range(1114112, 1000000000))
        self.assertEqual(allocation.gid, Range(1000000, 1000000000))

    def test_load_needs_both(self):
        """An allocation needs uid and gid ranges."""
        d = temp_dir(self)
        subuid, subgid = os.path.join(d, "subuid"), os.path.join(d, "subgid")
        write(subuid, "root:1000000:65536\n")
        self.assertIsNone(idmap.load_allocation(subuid, subgid))


class IdMapTests(SynchronousTestCase):
    """IdMap's JSON, liblxc lines and id lookups."""

    def setUp(self):
        self.map = IdMap.from_allocation(Allocation(Range(100000, 65536), Range(200000, 65536)))

    def test_json(self):
        """The JSON is LXD's, byte for byte."""
        self.assertEqual(self.map.to_json(),
                         '[{"Isuid":true,"Isgid":false,"Hostid":100000,"Nsid":0,"Maprange":65536},'
                         '{"Isuid":false,"Isgid":true,"Hostid":200000,"Nsid":0,"Maprange":65536}]')
        self.assertEqual(IdMap.from_json(self.map.to_json()), self.map)

    def test_json_both(self):
        """An entry for uids and gids at once (as LXD writes raw `both` entries) splits in two."""
        both = IdMap.from_json('[{"Isuid":true,"Isgid":true,"Hostid":5,"Nsid":0,"Maprange":1}]')
        self.assertEqual(both.entries, (IdmapEntry(True, False, 5, 0, 1), IdmapEntry(False, True, 5, 0, 1)))

    def test_json_empty_and_bad(self):
        """Empty means no map; malformed text is a ValueError."""
        self.assertIsNone(IdMap.from_json(""))
        self.assertIsNone(IdMap.from_json("[]"))
        for bad in ("{", '[{"Isuid":true}]', '[{"Isuid":true,"Isgid":false,"Hostid":1,"Nsid":0,"Maprange":0}]'):
            self.assertRaises(ValueError, IdMap.from_json, bad)

    def test_lxc_lines(self):
        """lxc.idmap lines, uids first."""
        self.assertEqual(self.map.lxc_lines(), ["lxc.idmap = u 0 100000 65536", "lxc.idmap = g 0 200000 65536"])

    def test_lookups(self):
        """Ids translate both ways; ids outside the map are None."""
        self.assertEqual(self.map.host_uid(0), 100000)
        self.assertEqual(self.map.host_gid(10), 200010)
        self.assertEqual(self.map.ns_uid(165535), 65535)
        self.assertEqual(self.map.ns_gid(200000), 0)
        self.assertIsNone(self.map.host_uid(65536))
        self.assertIsNone(self.map.ns_uid(5))

    @given(st.integers(min_value=0, max_value=65535))
    def test_round_trip(self, inside):
        """host_uid and ns_uid are inverse on the map."""
        self.assertEqual(self.map.ns_uid(self.map.host_uid(inside)), inside)
        self.assertEqual(self.map.ns_gid(self.map.host_gid(inside)), inside)


class ComputeTests(SynchronousTestCase):
    """compute() picks a container's map from its config."""

    def test_privileged(self):
        """Privileged containers have no map, allocation or not."""
        self.assertEqual(idmap.compute({"security.privileged": "true"}, None, []), (None, 0))

    def test_no_allocation(self):
        """Without an allocation only privileged containers work."""
        with self.assertRaises(ConfigError) as raised:
            idmap.compute({}, None, [])
        self.assertIn("only privileged containers are supported", str(raised.exception))

    def test_shared(self):
        """A non-isolated container gets the whole allocation from id 0."""
        self.assertEqual(idmap.compute({}, ALLOCATION, []), (IdMap.from_allocation(ALLOCATION), 0))

    def test_isolated_first_gap(self):
        """Isolated maps skip the first 65536 ids and the maps of other isolated containers."""
        first, base = idmap.compute({"security.idmap.isolated": "true"}, ALLOCATION, [])
        self.assertEqual(base, 1065536)
        self.assertEqual(first.lxc_values(), ["u 0 1065536 65536", "g 0 1065536 65536"])
        second, base2 = idmap.compute({"security.idmap.isolated": "true"}, ALLOCATION, [first])
        self.assertEqual(base2, 1131072)
        third, base3 = idmap.compute({"security.idmap.isolated": "true", "security.idmap.size": "100"},
                                     ALLOCATION, [second])
        self.assertEqual((base3, third.host_uid(99)), (1065536, 1065635))

    def test_isolated_no_room(self):
        """A full allocation is an error naming security.idmap.isolated."""
        small = Allocation(Range(100000, 65536 * 2), Range(100000, 65536 * 2))
        first, _ = idmap.compute({"security.idmap.isolated": "true"}, small, [])
        with self.assertRaises(ConfigError) as raised:
            idmap.compute({"security.idmap.isolated": "true"}, small, [first])
        self.assertEqual(raised.exception.problems[0][0], "security.idmap.isolated")
        self.assertIn("Not enough uid/gid", str(raised.exception))

    def test_base(self):
        """security.idmap.base places the map; outside or overlapping bases are refused."""
        config = {"security.idmap.isolated": "true", "security.idmap.base": "2000000"}
        got, base = idmap.compute(config, ALLOCATION, [])
        self.assertEqual((base, got.host_uid(0)), (2000000, 2000000))
        other, _ = idmap.compute({**config, "security.idmap.base": "2060000"}, ALLOCATION, [])
        for value, others, text in [("999999", [], "outside"), ("2000000000", [], "outside"),
                                    ("2000000", [other], "overlaps")]:
            with self.assertRaises(ConfigError) as raised:
                idmap.compute({**config, "security.idmap.base": value}, ALLOCATION, others)
            self.assertEqual(raised.exception.problems[0][0], "security.idmap.base")
            self.assertIn(text, str(raised.exception))

    def test_bad_size(self):
        """A size that is not a positive number names security.idmap.size."""
        for value in ("x", "0"):
            with self.assertRaises(ConfigError) as raised:
                idmap.compute({"security.idmap.isolated": "1", "security.idmap.size": value}, ALLOCATION, [])
            self.assertEqual(raised.exception.problems[0][0], "security.idmap.size")

    def test_raw_punched(self):
        """A raw entry takes over its ids inside; the rest of the range stays mapped around it."""
        got, _ = idmap.compute({"raw.idmap": "both 1000 1000"}, ALLOCATION, [])
        self.assertEqual(got.lxc_values(), [
            "u 0 1000000 1000", "u 1000 1000 1", "u 1001 1001001 999998999",
            "g 0 1000000 1000", "g 1000 1000 1", "g 1001 1001001 999998999",
        ])
        self.assertEqual(got.host_uid(1000), 1000)
        self.assertEqual(got.host_uid(1001), 1001001)
        self.assertEqual(got.host_gid(999), 1000999)

    def test_raw_ranges_and_kinds(self):
        """Ranges `A-B`, uid-only and gid-only entries, and one at id 0."""
        got, _ = idmap.compute({"security.idmap.isolated": "true",
                                "raw.idmap": "uid 5000-5009 0-9\ngid 33 65535"}, ALLOCATION, [])
        self.assertEqual(got.lxc_values(), [
            "u 0 5000 10", "u 10 1065546 65526",
            "g 0 1065536 65535", "g 65535 33 1",
        ])

    def test_raw_errors(self):
        """Bad raw.idmap lines and host ids already in the map name raw.idmap."""
        for value in ("both 1000", "all 1 1", "uid 1-2 1-3", "uid a 1", "uid 5-3 1-3", "both 1000000 0"):
            with self.assertRaises(ConfigError, msg=value) as raised:
                idmap.compute({"raw.idmap": value}, ALLOCATION, [])
            self.assertEqual(raised.exception.problems[0][0], "raw.idmap")


def _require_root(case):
    if os.geteuid() != 0:
        raise unittest.SkipTest("shifting ownership needs root (chown, ACLs, file capabilities)")


def _cap_v2(permitted):
    return struct.pack("<IIIII", 0x02000000 | 1, permitted, 0, 0, 0)


class ShiftTreeTests(SynchronousTestCase):
    """shift_tree() on a real tree: files, dirs, links, setuid, ACLs, capabilities, mounts."""

    def setUp(self):
        _require_root(self)
        self.root = temp_dir(self)
        os.chmod(self.root, 0o755)
        self.outside = os.path.join(temp_dir(self), "outside")
        write(self.outside, "host file")
        r = self.root
        os.mkdir(os.path.join(r, "etc"))
        write(os.path.join(r, "etc", "passwd"), "root:x:0:0::/root:/bin/sh\n")
        os.mkdir(os.path.join(r, "home"))
        os.mkdir(os.path.join(r, "home", "user"))
        os.chown(os.path.join(r, "home", "user"), 1000, 1000)
        os.mkdir(os.path.join(r, "shared"), 0o2775)
        os.chmod(os.path.join(r, "shared"), 0o2775)
        write(os.path.join(r, "su"), "#!/bin/sh\n")
        os.chmod(os.path.join(r, "su"), 0o4755)
        write(os.path.join(r, "sg"), "#!/bin/sh\n")
        os.chown(os.path.join(r, "sg"), 0, 5)
        os.chmod(os.path.join(r, "sg"), 0o2755)
        os.symlink(self.outside, os.path.join(r, "escape"))
        os.link(os.path.join(r, "etc", "passwd"), os.path.join(r, "hardlink"))
        os.mkfifo(os.path.join(r, "fifo"))
        write(os.path.join(r, "ping"), "binary")
        os.setxattr(os.path.join(r, "ping"), "security.capability", _cap_v2(1 << 13))
        write(os.path.join(r, "acl"), "")
        subprocess.run(["setfacl", "-m", "u:1000:rw,g:33:r", os.path.join(r, "acl")], check=True)
        subprocess.run(["setfacl", "-d", "-m", "u:1000:rwx", os.path.join(r, "shared")], check=True)
        self.map = IdMap.from_allocation(Allocation(Range(1000000, 65536), Range(1000000, 65536)))

    def owner(self, *parts):
        st = os.lstat(os.path.join(self.root, *parts))
        return st.st_uid, st.st_gid

    def getfacl(self, *parts, default=False):
        out = subprocess.run(["getfacl", "-n", "-p", "-d" if default else "-a", os.path.join(self.root, *parts)],
                             check=True, capture_output=True, text=True).stdout
        return sorted(line for line in out.splitlines() if line.startswith(("user:", "group:")) and "::" not in line)

    def test_privileged_to_unprivileged_and_back(self):
        """Every inode moves into the map, nothing outside changes, and the way back restores it."""
        outside_before = os.stat(self.outside)
        idmap.shift_tree(self.root, None, self.map)
        self.assertEqual(self.owner(), (1000000, 1000000))
        self.assertEqual(self.owner("etc", "passwd"), (1000000, 1000000))
        self.assertEqual(self.owner("home", "user"), (1001000, 1001000))
        self.assertEqual(self.owner("escape"), (1000000, 1000000))
        self.assertEqual(self.owner("fifo"), (1000000, 1000000))
        self.assertEqual(self.owner("sg"), (1000000, 1000005))
        outside_after = os.stat(self.outside)
        self.assertEqual((outside_after.st_uid, outside_after.st_gid), (outside_before.st_uid, outside_before.st_gid))
        # setuid/setgid bits survive chown.
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.root, "su")).st_mode), 0o4755)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.root, "sg")).st_mode), 0o2755)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.root, "shared")).st_mode), 0o2775)
        # ACL entries follow the map.
        self.assertEqual(self.getfacl("acl"), ["group:1000033:r--", "user:1001000:rw-"])
        self.assertEqual(self.getfacl("shared", default=True), ["user:1001000:rwx"])
        # v2 capabilities become v3 ones owned by the container's root.
        caps = os.getxattr(os.path.join(self.root, "ping"), "security.capability")
        self.assertEqual(len(caps), 24)
        magic, permitted, _, _, _, rootid = struct.unpack("<IIIIII", caps)
        self.assertEqual((magic & 0xFF000000, permitted, rootid), (0x03000000, 1 << 13, 1000000))

        idmap.shift_tree(self.root, self.map, None)
        self.assertEqual(self.owner("etc", "passwd"), (0, 0))
        self.assertEqual(self.owner("home", "user"), (1000, 1000))
        self.assertEqual(self.owner("sg"), (0, 5))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.root, "su")).st_mode), 0o4755)
        self.assertEqual(self.getfacl("acl"), ["group:33:r--", "user:1000:rw-"])
        caps = os.getxattr(os.path.join(self.root, "ping"), "security.capability")
        self.assertEqual(caps, _cap_v2(1 << 13))

    def test_map_to_map(self):
        """Between two maps ids go through their inside value; the hard link is shifted once."""
        idmap.shift_tree(self.root, None, self.map)
        other = IdMap.from_allocation(Allocation(Range(2000000, 65536), Range(3000000, 65536)))
        idmap.shift_tree(self.root, self.map, other)
        self.assertEqual(self.owner("etc", "passwd"), (2000000, 3000000))
        self.assertEqual(self.owner("hardlink"), (2000000, 3000000))
        self.assertEqual(self.owner("home", "user"), (2001000, 3001000))
        caps = os.getxattr(os.path.join(self.root, "ping"), "security.capability")
        self.assertEqual(struct.unpack("<IIIIII", caps)[5], 2000000)

    def test_unmapped_ids_stay(self):
        """Host ids the old map does not cover are left alone."""
        idmap.shift_tree(self.root, None, self.map)
        os.chown(os.path.join(self.root, "etc", "passwd"), 5, 5)
        idmap.shift_tree(self.root, self.map, None)
        self.assertEqual(self.owner("etc", "passwd"), (5, 5))

    def test_same_map_is_a_no_op(self):
        """Equal maps change nothing."""
        idmap.shift_tree(self.root, None, None)
        self.assertEqual(self.owner("home", "user"), (1000, 1000))

    def test_deep_tree(self):
        """Depth beyond Python's recursion limit is walked (iteratively)."""
        # shutil.rmtree recurses too; GNU rm does not.
        self.addCleanup(subprocess.run, ["rm", "-rf", os.path.join(self.root, "d")], check=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        depth = 1500
        try:
            for _ in range(depth):
                os.mkdir("d", dir_fd=fd)
                child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = child
            os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        finally:
            os.close(fd)
        idmap.shift_tree(self.root, None, self.map)
        self.assertEqual(self.owner(*(["d"] * depth), "leaf"), (1000000, 1000000))

    def test_other_mounts_untouched(self):
        """A file system mounted below the tree is not descended into."""
        source = temp_dir(self)
        write(os.path.join(source, "file"), "")
        target = os.path.join(self.root, "mnt")
        os.mkdir(target)
        subprocess.run(["mount", "--bind", source, target], check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", target], check=False)
        idmap.shift_tree(self.root, None, self.map)
        self.assertEqual(self.owner("mnt", "file"), (0, 0))
        self.assertEqual(self.owner("etc", "passwd"), (1000000, 1000000))


class ShiftHelpersTests(SynchronousTestCase):
    """The xattr value rewriters."""

    def test_acl(self):
        """Named user/group entries shift; owner, mask and other entries keep their undefined id."""
        undefined = 0xFFFFFFFF
        value = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in [
            (0x01, 6, undefined), (0x02, 6, 1000), (0x04, 4, undefined), (0x08, 4, 33),
            (0x10, 6, undefined), (0x20, 4, undefined)])
        shifted = idmap.shift_acl(value, lambda u: u + 1, lambda g: g + 2)
        entries = [struct.unpack_from("<HHI", shifted, o) for o in range(4, len(shifted), 8)]
        self.assertEqual([e[2] for e in entries], [undefined, 1001, undefined, 35, undefined, undefined])
        self.assertEqual(idmap.shift_acl(b"junk", None, None), b"junk")

    def test_caps(self):
        """v3 rootid follows the target root; a privileged target gets v2."""
        v3 = struct.pack("<IIIIII", 0x03000000 | 1, 7, 0, 0, 0, 1000000)
        self.assertEqual(struct.unpack("<IIIIII", idmap.shift_caps(v3, 2000000))[5], 2000000)
        self.assertEqual(idmap.shift_caps(v3, None), _cap_v2(7))
        self.assertEqual(idmap.shift_caps(b"\x01\x00\x00\x01", 5), b"\x01\x00\x00\x01")
