"""Storage drivers without a kernel: key validation, defaults, and the commands each driver builds.

Every driver runs its tools through an injected runner; here a recorder answers
them from a script and keeps the command lines, so lvm, zfs and ceph are
checked on a host that has none of device-mapper, zfs or rbd.
"""

import json
import os
import tempfile

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.asyncutil import ProcessError
from lxdtx.config.schema import ConfigError
from lxdtx.storage import block, keys, mounts, rsync
from lxdtx.storage.btrfs import BtrfsDriver
from lxdtx.storage.ceph import CephDriver
from lxdtx.storage.dir import DirDriver
from lxdtx.storage.errors import CannotBeShrunk
from lxdtx.storage.load import DRIVERS
from lxdtx.storage.lvm import LvmDriver, lv_name, parse_lv_name
from lxdtx.storage.zfs import ZfsDriver


class Recorder:
    """A fake `run`: records argv, answers (code, stdout, stderr) from rules matched by prefix."""

    def __init__(self, rules=()):
        self.calls = []
        self.rules = list(rules)
        self.effects = []

    def effect(self, prefix, fn):
        """Call fn(argv) when a command starts with prefix (a tool's effect on the files)."""
        self.effects.append((list(prefix), fn))

    def answer(self, prefix, code=0, out=b"", err=b""):
        self.rules.insert(0, (list(prefix), (code, out, err)))

    async def __call__(self, argv, check=True, **kwargs):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        for prefix, fn in self.effects:
            if argv[:len(prefix)] == prefix:
                fn(argv)
        for prefix, result in self.rules:
            if argv[:len(prefix)] == prefix:
                code, out, err = result
                break
        else:
            code, out, err = 0, b"", b""
        if check and code != 0:
            raise ProcessError(argv, code, out, err)
        return code, out, err

    def commands(self, tool=None):
        return [c for c in self.calls if tool is None or c[0] == tool]


def _inline(fn, *args):
    try:
        return defer.succeed(fn(*args))
    except BaseException:
        return defer.fail()


class DriverTestCase(SynchronousTestCase):
    """A temporary state dir and a recording runner."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lxdtx-unit-storage-")
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, ignore_errors=True))
        self.run = Recorder()

    def make(self, cls, config, pool="p"):
        config = cls(pool, {}, self.dir).fill_defaults(config)
        return cls(pool, config, self.dir, run=self.run, in_thread=_inline)

    def done(self, coroutine):
        return self.successResultOf(defer.Deferred.fromCoroutine(coroutine))

    def refused(self, coroutine, kind=errors.ApiError):
        return self.failureResultOf(defer.Deferred.fromCoroutine(coroutine), kind).value


class KeyValidationTests(SynchronousTestCase):
    """Pool and volume keys per driver, with LXD's messages."""

    def check(self, cls, config):
        keys.check_pool_config(cls, config, DRIVERS.values())

    def message(self, cls, config, volume=False):
        check = keys.check_volume_config if volume else keys.check_pool_config
        with self.assertRaises(ConfigError) as cm:
            check(cls, config, DRIVERS.values())
        return cm.exception.message

    def test_valid_pool_keys(self):
        """Every key of the reference is accepted by the drivers it belongs to."""
        self.check(DirDriver, {"source": "/x", "rsync.bwlimit": "10MB", "user.a": "b"})
        self.check(BtrfsDriver, {"size": "15GB", "btrfs.mount_options": "noatime", "volume.size": "1GB"})
        self.check(LvmDriver, {"size": "5GB", "lvm.vg_name": "vg", "lvm.thinpool_name": "tp",
                               "lvm.use_thinpool": "false", "volume.block.filesystem": "xfs",
                               "volume.block.mount_options": "discard", "volume.size": "2GB"})
        self.check(ZfsDriver, {"size": "5GB", "zfs.pool_name": "tank/lxd", "zfs.clone_copy": "false",
                               "volume.zfs.remove_snapshots": "true", "volume.zfs.use_refquota": "yes"})
        self.check(CephDriver, {"ceph.cluster_name": "c", "ceph.osd.force_reuse": "true", "ceph.osd.pg_num": "64",
                                "ceph.osd.pool_name": "o", "ceph.rbd.clone_copy": "false", "ceph.user.name": "u",
                                "volume.block.filesystem": "btrfs", "volume.size": "1GB"})

    def test_unknown_and_foreign_keys(self):
        """Unknown keys and keys of another driver are named in the error."""
        self.assertEqual(self.message(DirDriver, {"bogus": "1"}), "Invalid storage pool configuration key: bogus")
        self.assertEqual(self.message(DirDriver, {"size": "1GB"}), "the key size cannot be used with DIR storage pools")
        self.assertEqual(self.message(BtrfsDriver, {"lvm.vg_name": "x"}),
                         "the key lvm.vg_name cannot be used with BTRFS storage pools")
        self.assertEqual(self.message(CephDriver, {"size": "1GB"}),
                         "the key size cannot be used with CEPH storage pools")
        self.assertEqual(self.message(LvmDriver, {"zfs.pool_name": "x"}),
                         "the key zfs.pool_name cannot be used with LVM storage pools")

    def test_bad_values(self):
        """Sizes use the binary suffixes of this API level; booleans and filesystems are checked."""
        self.assertIn("Unsupported suffix: GiB", self.message(BtrfsDriver, {"size": "1GiB"}))
        self.assertIn("rsync.bwlimit", self.message(DirDriver, {"rsync.bwlimit": "fast"}))
        self.assertIn("lvm.use_thinpool", self.message(LvmDriver, {"lvm.use_thinpool": "maybe"}))
        self.assertIn("volume.block.filesystem", self.message(LvmDriver, {"volume.block.filesystem": "ntfs"}))
        self.assertIn("ceph.osd.pg_num", self.message(CephDriver, {"ceph.osd.pg_num": "-1"}))
        self.assertIn("must be a string", self.message(DirDriver, {"source": 1}))

    def test_volume_keys(self):
        """`size` is refused on dir volumes, `zfs.*` outside zfs, `block.*` outside lvm/ceph."""
        keys.check_volume_config(BtrfsDriver, {"size": "1GB", "user.x": "y"}, DRIVERS.values())
        keys.check_volume_config(ZfsDriver, {"zfs.use_refquota": "true"}, DRIVERS.values())
        keys.check_volume_config(LvmDriver, {"block.filesystem": "xfs"}, DRIVERS.values())
        self.assertEqual(self.message(DirDriver, {"size": "1GB"}, volume=True),
                         "the key size cannot be used with DIR storage volumes")
        self.assertEqual(self.message(BtrfsDriver, {"zfs.remove_snapshots": "true"}, volume=True),
                         "the key zfs.remove_snapshots cannot be used with BTRFS storage volumes")
        self.assertEqual(self.message(BtrfsDriver, {"nope": "1"}, volume=True),
                         "Invalid storage volume configuration key: nope")

    def test_changed_keys(self):
        """Absent and empty values are the same."""
        self.assertEqual(keys.changed_keys({"a": "", "b": "1"}, {"b": "2", "c": ""}), {"b"})


class RsyncTests(SynchronousTestCase):
    """rsync command lines and `rsync.bwlimit`."""

    def test_argv(self):
        """Contents are copied with ids, links, ACLs, xattrs; the bandwidth limit is in KiB/s."""
        self.assertEqual(rsync.argv("/a/", "/b", 0), [
            "rsync", "-a", "-H", "-A", "-X", "-S", "-x", "--numeric-ids", "--delete", "/a/", "/b/"])
        self.assertIn("--bwlimit=10240", rsync.argv("/a", "/b", 10240))
        self.assertIn("--checksum", rsync.argv("/a", "/b", exact=True))


    def test_bwlimit(self):
        """A size string becomes KiB/s; 0 or unset means no limit."""
        self.assertEqual(DirDriver("p", {"rsync.bwlimit": "10MB"}, "/x").bwlimit(), 10240)
        self.assertEqual(DirDriver("p", {}, "/x").bwlimit(), 0)


class TransferTests(DriverTestCase):
    """Copies between pools go through rsync with the pools' `rsync.bwlimit`."""

    def test_rsync_from_uses_source_limit(self):
        """The source pool's limit applies, else the target's."""
        source = self.make(DirDriver, {"rsync.bwlimit": "2MB"}, pool="a")
        target = self.make(BtrfsDriver, {"size": "1GB", "rsync.bwlimit": "8MB"}, pool="b")
        self.done(target.rsync_from(source, "custom", "v", "w"))
        self.assertEqual(self.run.calls[-1], rsync.argv(source.mount_path("custom", "v"),
                                                        target.mount_path("custom", "w"), 2048))
        unlimited = self.make(DirDriver, {}, pool="c")
        self.done(target.rsync_from(unlimited, "custom", "v", "w"))
        self.assertIn("--bwlimit=8192", self.run.calls[-1])

    def test_restore_compares_contents(self):
        """A generic restore rsyncs over a filled volume: by content, not by size and mtime."""
        driver = self.make(DirDriver, {}, pool="a")
        self.done(driver.restore_snapshot("c", "s"))
        self.assertEqual(self.run.calls[-1], rsync.argv(driver.mount_path("container", "c/s"),
                                                        driver.mount_path("container", "c"), exact=True))

    def test_vanished_source_files_are_not_a_failure(self):
        """Exit 24 (files vanished mid-copy: a running container's temp files) copies the rest;
        any other non-zero exit fails the copy."""
        driver = self.make(DirDriver, {}, pool="a")
        self.run.answer(["rsync"], code=24, err=b"file has vanished")
        self.done(driver.rsync("/a", "/b"))
        self.run.answer(["rsync"], code=23, err=b"some files could not be transferred")
        self.assertIn("exit 23", str(self.refused(driver.rsync("/a", "/b"), ProcessError)))


class HostSupportTests(SynchronousTestCase):
    """`missing()` names the kernel feature a driver lacks."""

    def test_reasons(self):
        """Without device-mapper, zfs or rbd the reason says so."""
        self.patch(mounts, "kernel_has_misc_device", lambda name: False)
        self.patch(mounts, "kernel_has_filesystem", lambda name: False)
        self.patch(os.path, "isdir", lambda path: False)
        self.assertIn("device-mapper", LvmDriver.missing())
        self.assertIn("zfs", ZfsDriver.missing())
        self.assertIn("rbd", CephDriver.missing())
        self.assertIn("btrfs", BtrfsDriver.missing())
        self.assertIsNone(DirDriver.missing())


class AbandonTests(DriverTestCase):
    """Undoing a pool create cut short: what the daemon made goes, a source the user named stays."""

    def test_dir_default_source(self):
        """The default source under the state directory, with its empty layout, goes."""
        driver = self.make(DirDriver, {})
        self.done(driver.create())
        self.done(driver.abandon())
        self.assertFalse(os.path.lexists(driver.mount_point))

    def test_dir_named_source_keeps_files(self):
        """A named source that held files keeps them (and itself); the link to it goes."""
        source = os.path.join(self.dir, "mine")
        os.makedirs(os.path.join(source, "containers", "keep"))
        with open(os.path.join(source, "notes"), "w") as f:
            f.write("mine")
        driver = self.make(DirDriver, {"source": source})
        self.refused(driver.create(), errors.BadRequest)  # not empty: refused, as LXD does
        self.done(driver.mount())
        self.done(driver.abandon())
        self.assertTrue(os.path.isdir(os.path.join(source, "containers", "keep")))
        self.assertTrue(os.path.isfile(os.path.join(source, "notes")))
        self.assertFalse(os.path.lexists(driver.mount_point))

    def test_btrfs_loop_file_goes_named_device_stays(self):
        """A loop-backed pool loses its file; on a named device only the mount goes."""
        driver = self.make(BtrfsDriver, {"size": "1GB"})
        os.makedirs(os.path.dirname(driver.loop_file))
        open(driver.loop_file, "wb").close()
        self.done(driver.abandon())
        self.assertFalse(os.path.exists(driver.loop_file))
        self.run.calls.clear()
        driver = self.make(BtrfsDriver, {"source": "/dev/sdz"})
        self.done(driver.abandon())
        self.assertFalse([c for c in self.run.calls if c[0] in ("mkfs.btrfs", "wipefs", "rm")])


class BtrfsTests(DriverTestCase):
    """Commands of the btrfs driver."""

    def test_defaults(self):
        """No source: a loop file under disks/ with a default size; a source forbids `size`."""
        driver = self.make(BtrfsDriver, {})
        self.assertEqual(driver.config["source"], os.path.join(self.dir, "disks", "p.img"))
        self.assertRegex(driver.config["size"], r"^\d+GB$")
        config = BtrfsDriver("p", {}, self.dir).fill_defaults({"source": "/dev/sdz"})
        self.assertEqual(config["volatile.initial_source"], "/dev/sdz")
        with self.assertRaises(errors.BadRequest):
            BtrfsDriver("p", {}, self.dir).fill_defaults({"source": "/dev/sdz", "size": "1GB"})

    def test_mount_argv(self):
        """A loop file is mounted with `loop` (autoclear) and the pool's mount options."""
        driver = self.make(BtrfsDriver, {"size": "1GB", "btrfs.mount_options": "noatime"})
        self.assertEqual(driver.mount_argv("loop"), ["mount", "-t", "btrfs", "-o", "loop,noatime",
                                                     driver.source, driver.mount_point])
        driver = self.make(BtrfsDriver, {"size": "1GB"})
        self.assertEqual(driver.mount_argv("loop")[4], "loop,user_subvol_rm_allowed")

    def test_too_small(self):
        """A loop file below 128MB is refused before anything is made."""
        driver = self.make(BtrfsDriver, {"size": "1MB"})
        self.refused(driver.create(), errors.BadRequest)
        self.assertFalse(os.path.exists(driver.loop_file))

    def test_volume_snapshot_quota(self):
        """Subvolumes, read-only snapshots, writable restores and qgroup limits."""
        self.run.effect(["btrfs", "subvolume", "create"], lambda argv: os.makedirs(argv[-1]))
        driver = self.make(BtrfsDriver, {"size": "1GB"})
        path = self.done(driver.create_volume("custom", "v", {"size": "10MB"}))
        self.assertEqual(path, os.path.join(driver.mount_point, "custom", "v"))
        self.assertEqual(self.run.commands("btrfs"), [
            ["btrfs", "subvolume", "create", path],
            ["btrfs", "quota", "enable", driver.mount_point],
            ["btrfs", "qgroup", "limit", str(10 << 20), path],
        ])
        self.run.calls.clear()
        self.done(driver.create_snapshot("c", "s1"))
        self.assertEqual(self.run.calls, [["btrfs", "subvolume", "snapshot", "-r",
                                           driver.mount_path("container", "c"),
                                           os.path.join(driver.mount_point, "snapshots", "c", "s1")]])
        self.run.calls.clear()
        self.done(driver.set_quota("container", "c", ""))
        self.assertEqual(self.run.calls, [["btrfs", "qgroup", "limit", "none", driver.mount_path("container", "c")]])

    def test_existing_target_refused(self):
        """A snapshot is never made into an existing directory (btrfs would nest it)."""
        driver = self.make(BtrfsDriver, {"size": "1GB"})
        os.makedirs(driver.mount_path("container", "taken"))
        self.refused(driver.copy_volume("container", "src", "taken"), errors.Conflict)
        self.assertEqual(self.run.calls, [])


class LvmTests(DriverTestCase):
    """Commands of the lvm driver."""

    def test_names(self):
        """LV names escape dashes and turn a snapshot's slash into a dash, reversibly."""
        self.assertEqual(lv_name("container", "web-1/snap-0"), "containers_web--1-snap--0")
        self.assertEqual(lv_name("custom", "data"), "custom_data")
        self.assertEqual(parse_lv_name("containers_web--1-snap--0"), ("container", "web-1/snap-0"))
        self.assertIsNone(parse_lv_name("LXDThinPool"))

    def test_defaults(self):
        """vg_name and thinpool default; use_thinpool=false with a thinpool name is refused."""
        driver = self.make(LvmDriver, {})
        self.assertEqual((driver.config["lvm.vg_name"], driver.config["lvm.thinpool_name"]), ("p", "LXDThinPool"))
        self.assertTrue(driver.config["source"].endswith("/disks/p.img"))
        driver = self.make(LvmDriver, {"source": "existingvg"})
        self.assertEqual(driver.vg, "existingvg")
        with self.assertRaises(errors.BadRequest):
            LvmDriver("p", {}, self.dir).fill_defaults({"lvm.use_thinpool": "false", "lvm.thinpool_name": "x"})
        self.assertIsNone(self.make(LvmDriver, {"lvm.use_thinpool": "false"}).thin)

    def test_create_pool(self):
        """A loop file, a loop device, a PV, the VG and the thin pool."""
        self.run.answer(["losetup", "--show"], out=b"/dev/loop9\n")
        driver = self.make(LvmDriver, {"size": "1GB"})
        self.done(driver.create())
        self.assertTrue(os.path.exists(driver.loop_file))
        self.assertEqual([c for c in self.run.calls if c[0] in ("pvcreate", "vgcreate", "lvcreate")], [
            ["pvcreate", "-y", "/dev/loop9"], ["vgcreate", "p", "/dev/loop9"],
            ["lvcreate", "-Wy", "--yes", "--type", "thin-pool", "-l", "100%FREE", "-n", "LXDThinPool", "p"]])

    def test_failed_create_cleans_up(self):
        """A failing vgcreate leaves no loop file, PV or loop device."""
        self.run.answer(["losetup", "--show"], out=b"/dev/loop9\n")
        self.run.answer(["losetup", "-j"], out=b"/dev/loop9: []: (file)\n")
        self.run.answer(["vgcreate"], code=5, err=b"boom")
        driver = self.make(LvmDriver, {"size": "1GB"})
        self.refused(driver.create(), Exception)
        self.assertFalse(os.path.exists(driver.loop_file))
        self.assertIn(["pvremove", "-f", "/dev/loop9"], self.run.calls)
        self.assertIn(["losetup", "-d", "/dev/loop9"], self.run.calls)

    def test_volumes(self):
        """Thin volumes, plain volumes, snapshots and their filesystems."""
        driver = self.make(LvmDriver, {"size": "1GB", "volume.block.filesystem": "xfs"})
        self.assertEqual(driver.lvcreate_argv("custom", "v", 10 << 30),
                         ["lvcreate", "-Wy", "--yes", "--thin", "-n", "custom_v", "--virtualsize", "10240m",
                          "p/LXDThinPool"])
        plain = self.make(LvmDriver, {"size": "1GB", "lvm.use_thinpool": "false"})
        self.assertEqual(plain.lvcreate_argv("custom", "v", 5 << 20),
                         ["lvcreate", "-Wy", "--yes", "-n", "custom_v", "-L", "8m", "p"])
        self.assertEqual(driver.snapshot_argv("container", "c", "container", "c/s", readonly=True),
                         ["lvcreate", "-s", "-n", "containers_c-s", "-kn", "-pr", "p/containers_c"])
        self.run.answer(["blkid"], out=b"xfs\n")
        self.done(driver.create_volume("custom", "v", {}))
        self.assertIn(["mkfs.xfs", "-q", "-f", "/dev/p/custom_v"], self.run.calls)
        mount = [c for c in self.run.calls if c[0] == "mount"][0]
        self.assertEqual(mount, ["mount", "-t", "xfs", "-o", "discard,nouuid", "/dev/p/custom_v",
                                 driver.mount_path("custom", "v")])

    def test_image_and_clone(self):
        """An image LV is unpacked once and made read-only; containers are thin snapshots of it."""
        driver = self.make(LvmDriver, {"size": "1GB"})
        self.run.answer(["lvs", "p/images_fp"], code=5)
        unpacked = []

        async def unpack(target):
            unpacked.append(target)

        self.done(driver.create_from_image("c", "fp", unpack, {}))
        self.assertEqual(unpacked, [driver.mount_path("image", "fp")])
        self.assertIn(["lvchange", "-pr", "p/images_fp"], self.run.calls)
        self.assertIn(["lvcreate", "-s", "-n", "containers_c", "-kn", "-prw", "p/images_fp"], self.run.calls)

    def test_resize(self):
        """Growing an ext4 LV grows the filesystem; shrinking xfs is refused."""
        driver = self.make(LvmDriver, {"size": "1GB"})
        self.run.answer(["lvs", "--noheadings"], out=b"  1073741824\n")
        self.run.answer(["blkid"], out=b"ext4\n")
        self.done(driver.set_quota("container", "c", "2GB"))
        self.assertIn(["lvresize", "-f", "-L", "2048m", "p/containers_c"], self.run.calls)
        self.assertIn(["resize2fs", "/dev/p/containers_c"], self.run.calls)
        self.run.answer(["blkid"], out=b"xfs\n")
        self.refused(driver.set_quota("container", "c", "512MB"), CannotBeShrunk)

    def test_renames(self):
        """vg_name and thinpool_name changes rename the VG and the thin pool."""
        driver = self.make(LvmDriver, {"size": "1GB"})
        self.done(driver.update({"lvm.vg_name": "newvg"}))
        self.done(driver.update({"lvm.thinpool_name": "tp2"}))
        self.assertEqual(self.run.calls, [["vgrename", "p", "newvg"], ["lvrename", "newvg", "LXDThinPool", "tp2"]])

    def test_rename_container_moves_snapshots(self):
        """Renaming a container renames its snapshot LVs too."""
        driver = self.make(LvmDriver, {"size": "1GB"})
        self.run.answer(["lvs", "--noheadings", "-o", "lv_name"],
                        out=b"  containers_a\n  containers_a-s1\n  containers_a--b\n  images_x\n")
        self.done(driver.rename_volume("container", "a", "z"))
        self.assertEqual([c for c in self.run.calls if c[0] == "lvrename"], [
            ["lvrename", "p", "containers_a", "containers_z"], ["lvrename", "p", "containers_a-s1", "containers_z-s1"]])


class ZfsTests(DriverTestCase):
    """Commands of the zfs driver."""

    def test_create_pool(self):
        """A loop file, a zpool and the top-level datasets."""
        driver = self.make(ZfsDriver, {"size": "1GB"})
        self.done(driver.create())
        self.assertEqual(self.run.calls[0], ["zpool", "create", "-f", "-m", "none", "-O", "compression=on", "p",
                                             driver.loop_file])
        self.assertIn(["zfs", "create", "-p", "-o", "mountpoint=none", "p/containers"], self.run.calls)
        existing = self.make(ZfsDriver, {"source": "tank/lxd"})
        self.assertEqual(existing.zpool, "tank/lxd")
        self.assertEqual(existing.create_argvs()[0], ["zfs", "create", "-p", "-o", "mountpoint=none", "tank/lxd"])

    def test_image_clone_snapshot_restore(self):
        """Image dataset unpacked and snapshotted @readonly; containers are clones; restores roll back."""
        driver = self.make(ZfsDriver, {"size": "1GB"})
        self.run.answer(["zfs", "list", "-H", "-t", "all", "p/images/fp@readonly"], code=1)
        self.run.answer(["zfs", "list", "-H", "-t", "all", "p/images/fp"], code=1)

        async def unpack(target):
            pass

        self.done(driver.create_from_image("c", "fp", unpack, {}))
        self.assertIn(["zfs", "snapshot", "p/images/fp@readonly"], self.run.calls)
        self.assertIn(["zfs", "clone", "-p", "-o", f"mountpoint={driver.mount_path('container', 'c')}",
                       "-o", "canmount=noauto", "p/images/fp@readonly", "p/containers/c"], self.run.calls)
        self.run.calls.clear()
        self.done(driver.create_snapshot("c", "s1"))
        self.done(driver.restore_snapshot("c", "s1"))
        self.assertIn(["zfs", "snapshot", "p/containers/c@snapshot-s1"], self.run.calls)
        self.assertIn(["zfs", "rollback", "p/containers/c@snapshot-s1"], self.run.calls)
        self.assertTrue(driver.info.restore_latest_only)

    def test_remove_snapshots_and_quota(self):
        """`remove_snapshots` and `use_refquota` come from the volume, else the pool."""
        driver = self.make(ZfsDriver, {"size": "1GB", "volume.zfs.remove_snapshots": "true"})
        self.assertTrue(driver.may_remove_snapshots())
        driver = self.make(ZfsDriver, {"size": "1GB"})
        self.assertFalse(driver.may_remove_snapshots())
        driver.lookup_volume = lambda t, n: {"zfs.remove_snapshots": "true", "zfs.use_refquota": "true"}
        self.assertTrue(driver.may_remove_snapshots())
        self.done(driver.set_quota("container", "c", "1GB"))
        self.assertEqual(self.run.calls[-1], ["zfs", "set", f"refquota={1 << 30}", "p/containers/c"])
        self.assertEqual(driver.size_argv("p/x", "", False), ["zfs", "set", "quota=none", "p/x"])

    def test_copies(self):
        """clone_copy (default) clones a temporary snapshot; otherwise send | receive."""
        driver = self.make(ZfsDriver, {"size": "1GB"})
        self.done(driver.copy_volume("custom", "a", "b"))
        clone = [c for c in self.run.calls if c[:2] == ["zfs", "clone"]][0]
        self.assertTrue(clone[-2].startswith("p/custom/a@copy-") and clone[-1] == "p/custom/b")
        self.run.calls.clear()
        driver = self.make(ZfsDriver, {"size": "1GB", "zfs.clone_copy": "false"})
        self.done(driver.copy_volume("custom", "a", "b"))
        sent = [c for c in self.run.calls if c[0] == "sh"][0]
        self.assertRegex(sent[2], r"^zfs send p/custom/a@copy-[0-9a-f]+ \| zfs receive p/custom/b$")
        self.assertEqual(ZfsDriver.send_receive_argv("a b@x", "c")[2], "zfs send 'a b@x' | zfs receive c")

    def test_destroy_with_clones(self):
        """A dataset that clones depend on is parked under deleted/ instead."""
        driver = self.make(ZfsDriver, {"size": "1GB"})
        self.run.answer(["zfs", "destroy", "-r"], code=1, err=b"cannot destroy: filesystem has dependent clones")
        self.done(driver.delete_image("fp"))
        rename = [c for c in self.run.calls if c[:2] == ["zfs", "rename"]][0]
        self.assertEqual(rename[2], "p/images/fp")
        self.assertTrue(rename[3].startswith("p/deleted/"))


class CephTests(DriverTestCase):
    """Commands of the ceph driver."""

    def test_defaults_and_client(self):
        """Cluster, user, pg_num, OSD pool default; every command names the client and cluster."""
        driver = self.make(CephDriver, {"ceph.user.name": "lxd"})
        self.assertEqual((driver.config["ceph.cluster_name"], driver.config["ceph.osd.pg_num"],
                          driver.config["ceph.osd.pool_name"]), ("ceph", "32", "p"))
        self.assertEqual(driver.rbd("ls", "p"), ["rbd", "--name", "client.lxd", "--cluster", "ceph", "ls", "p"])
        self.assertEqual(driver.image("container", "c/s"), "p/container_c@snapshot_s")

    def test_create_new_pool(self):
        """A new OSD pool with pg_num placement groups, and the marker image; pristine recorded."""
        self.run.answer(["ceph", "--name", "client.admin", "--cluster", "ceph", "osd", "pool", "get"], code=2)
        driver = self.make(CephDriver, {"ceph.osd.pg_num": "64"})
        self.done(driver.create())
        self.assertIn(driver.ceph("osd", "pool", "create", "p", "64"), self.run.calls)
        self.assertIn(driver.rbd("create", "--image-feature", "layering", "--size", "0B", "p/lxd_p"), self.run.calls)
        self.assertEqual(driver.config["volatile.pool.pristine"], "true")
        self.run.calls.clear()
        self.done(driver.delete())
        self.assertIn(driver.ceph("osd", "pool", "delete", "p", "p", "--yes-i-really-really-mean-it"), self.run.calls)

    def test_existing_pool_needs_force_reuse(self):
        """An existing OSD pool is refused unless ceph.osd.force_reuse; it is then never deleted."""
        driver = self.make(CephDriver, {})
        self.refused(driver.create(), errors.BadRequest)
        driver = self.make(CephDriver, {"ceph.osd.force_reuse": "true"})
        self.done(driver.create())
        self.assertEqual(driver.config["volatile.pool.pristine"], "false")
        self.assertNotIn("create", [c[5] for c in self.run.calls if c[:1] == ["ceph"] and len(c) > 5])
        self.run.calls.clear()
        self.done(driver.delete())
        self.assertFalse(any("delete" in c for c in self.run.calls))

    def test_volume_lifecycle(self):
        """create, map, mkfs, mount; clone from a protected image snapshot; snapshots roll back."""
        driver = self.make(CephDriver, {})
        self.run.answer(["rbd", "--name", "client.admin", "--cluster", "ceph", "map"], out=b"/dev/rbd3\n")
        self.run.answer(["rbd", "--name", "client.admin", "--cluster", "ceph", "info"], code=2)
        self.run.answer(["blkid"], out=b"ext4\n")

        async def unpack(target):
            pass

        self.done(driver.create_from_image("c", "fp", unpack, {}))
        self.assertIn(driver.rbd("create", "--image-feature", "layering", "--size", "10240M", "p/image_fp"),
                      self.run.calls)
        self.assertIn(["mkfs.ext4", "-q", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", "/dev/rbd3"],
                      self.run.calls)
        self.assertIn(driver.rbd("snap", "protect", "p/image_fp@readonly"), self.run.calls)
        self.assertIn(driver.rbd("clone", "p/image_fp@readonly", "p/container_c"), self.run.calls)
        self.run.calls.clear()
        self.done(driver.restore_snapshot("c", "s1"))
        self.assertIn(driver.rbd("snap", "rollback", "--snap", "snapshot_s1", "p/container_c"), self.run.calls)

    def test_copies(self):
        """clone_copy clones a protected snapshot; without it `rbd cp`."""
        driver = self.make(CephDriver, {})
        self.run.answer(["rbd", "--name", "client.admin", "--cluster", "ceph", "map"], out=b"/dev/rbd4\n")
        self.done(driver.copy_volume("custom", "a", "b"))
        clone = [c for c in self.run.calls if "clone" in c][0]
        self.assertTrue(clone[-2].startswith("p/custom_a@copy_") and clone[-1] == "p/custom_b")
        self.run.calls.clear()
        driver = self.make(CephDriver, {"ceph.rbd.clone_copy": "false"})
        self.run.answer(["rbd", "--name", "client.admin", "--cluster", "ceph", "map"], out=b"/dev/rbd5\n")
        self.done(driver.copy_volume("custom", "a", "b"))
        self.assertIn(driver.rbd("cp", "p/custom_a", "p/custom_b"), self.run.calls)


class BlockTests(SynchronousTestCase):
    """Filesystem commands shared by the block drivers."""

    def test_mkfs_and_mount(self):
        """ext4/xfs/btrfs mkfs; xfs mounts with nouuid; snapshots read-only."""
        self.assertEqual(block.mkfs_argv("btrfs", "/dev/x"), ["mkfs.btrfs", "-q", "-f", "/dev/x"])
        self.assertEqual(block.mount_argv("ext4", "/dev/x", "/m", "discard", readonly=True),
                         ["mount", "-t", "ext4", "-o", "discard,ro", "/dev/x", "/m"])
        with self.assertRaises(ValueError):
            block.mkfs_argv("ntfs", "/dev/x")

    def test_resize(self):
        """ext4 shrinks offline after fsck, btrfs online, xfs never."""
        self.assertEqual(block.shrink_steps("ext4", "/dev/x", "/m", 1 << 30),
                         [["e2fsck", "-f", "-y", "/dev/x"], ["resize2fs", "/dev/x", "1048576K"]])
        self.assertEqual(block.grow_argv("xfs", "/dev/x", "/m"), ["xfs_growfs", "/m"])
        with self.assertRaises(CannotBeShrunk):
            block.shrink_steps("xfs", "/dev/x", "/m", 1)
        self.assertEqual(json.loads(json.dumps(block.FILESYSTEMS)), ["btrfs", "ext4", "xfs"])
