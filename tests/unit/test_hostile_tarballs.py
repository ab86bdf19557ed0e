"""Hostile image and backup tarballs: every shape that could reach the host is refused
before anything is extracted, naming the member, leaving nothing behind.

Link targets such as `/` or `/etc/shadow` only ever reach the checker here; tests
that extract, shift or write point their links at sentinels of their own.
"""

import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import unittest

from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.image import formats, store, unpack
from lxdtx.image.invalid import ImageFormatError
from lxdtx.instance import backups, idmap
from tests import imagefiles

_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
          "fifo": tarfile.FIFOTYPE}


def member(name, kind="file", data=b"", link="", mode=None, **attrs):
    """(TarInfo, data) of one member; `attrs` set further TarInfo fields."""
    info = tarfile.TarInfo(name)
    info.type = _TYPES[kind]
    info.mtime = 1500000000
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    info.linkname = link
    if kind == "file":
        info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data if kind == "file" else None


def tar_bytes(members, format=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def image(*extra, compression="none"):
    """A valid unified image with `extra` members appended."""
    base = [member("metadata.yaml", data=imagefiles.metadata_yaml()), member("templates", "dir"),
            member("templates/hostname.tpl", data=b"{{ container.name }}\n"), member("rootfs", "dir"),
            member("rootfs/etc", "dir"), member("rootfs/etc/hostname", data=b"image\n")]
    return imagefiles.compress(tar_bytes(base + list(extra)), compression)


def backup(*extra):
    """A valid backup tarball (one snapshot) with `extra` members appended."""
    base = [member("backup", "dir"), member("backup/index.yaml", data=b"name: c\nsnapshots: [s]\n"),
            member("backup/container", "dir"), member("backup/container/backup.yaml", data=b"{}\n"),
            member("backup/container/rootfs", "dir"), member("backup/container/rootfs/etc", "dir"),
            member("backup/snapshots", "dir"), member("backup/snapshots/s", "dir"),
            member("backup/snapshots/s/rootfs", "dir")]
    return tar_bytes(base + list(extra))


def temp_dir(case):
    path = tempfile.mkdtemp(prefix="lxdtx-hostile-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def sentinel(case, text="host sentinel\n"):
    """A host file outside every tree under test; (path, its lstat)."""
    path = os.path.join(temp_dir(case), "sentinel")
    with open(path, "w") as f:
        f.write(text)
    return path, os.lstat(path)


class _Checking(SynchronousTestCase):
    """Writes archives to a private directory and checks them."""

    def setUp(self):
        self.dir = temp_dir(self)

    def write(self, data, name="archive"):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path, formats.detect_file(path)

    def check(self, data, layout=formats.IMAGE, **kwargs):
        return formats.check_tarball(*self.write(data), layout, **kwargs)

    def refused(self, data, layout=formats.IMAGE, **kwargs):
        with self.assertRaises(ImageFormatError) as cm:
            self.check(data, layout, **kwargs)
        return str(cm.exception)


class LinkShapeTests(_Checking):
    """Links outside rootfs, and members reached through links, are refused by name."""

    def test_valid_image_passes(self):
        """The base image of these tests is accepted in every compression."""
        for compression in imagefiles.COMPRESSIONS:
            info = self.check(image(compression=compression))
            self.assertTrue(info.has_rootfs)
            self.assertEqual(info.size, len(imagefiles.metadata_yaml()) + 21 + 6)

    def test_rootfs_symlink_to_root(self):
        """`rootfs -> /`: the member replacing the rootfs directory."""
        data = tar_bytes([member("metadata.yaml", data=imagefiles.metadata_yaml()),
                          member("rootfs", "symlink", link="/")])
        self.assertEqual(self.refused(data), "Invalid image tarball: member 'rootfs' is a symlink, not a directory")

    def test_rootfs_symlink_after_directory(self):
        """A later `rootfs` symlink is refused even after a real rootfs directory."""
        message = self.refused(image(member("rootfs", "symlink", link="/")))
        self.assertIn("member 'rootfs' is a symlink", message)

    def test_rootfs_regular_file(self):
        """`rootfs` must be a directory, not a file either."""
        self.assertIn("member './rootfs' is a regular file, not a directory",
                      self.refused(image(member("./rootfs", data=b"x"))))

    def test_template_symlink(self):
        """`templates/x -> /etc/shadow` would read a host file into the container."""
        message = self.refused(image(member("templates/x", "symlink", link="/etc/shadow")))
        self.assertIn("member 'templates/x' is a symlink: only regular files and directories may lie "
                      "outside rootfs", message)

    def test_metadata_symlink(self):
        """`metadata.yaml -> file` is refused."""
        data = tar_bytes([member("metadata.yaml", "symlink", link="/etc/passwd"), member("rootfs", "dir")])
        self.assertIn("member 'metadata.yaml' is a symlink", self.refused(data))

    def test_backup_yaml_symlink_in_image(self):
        """An image's top may not plant `backup.yaml -> file` for a later export to write through."""
        self.assertIn("member 'backup.yaml' is a symlink",
                      self.refused(image(member("backup.yaml", "symlink", link="/etc/shadow"))))

    def test_templates_directory_symlink(self):
        """`templates -> /etc` is refused too."""
        data = tar_bytes([member("metadata.yaml", data=imagefiles.metadata_yaml()),
                          member("templates", "symlink", link="/etc"), member("rootfs", "dir")])
        self.assertIn("member 'templates' is a symlink", self.refused(data))

    def test_member_below_symlink_in_rootfs(self):
        """`rootfs/a -> /etc` then `rootfs/a/passwd` would write the host's passwd."""
        message = self.refused(image(member("rootfs/a", "symlink", link="/etc"),
                                     member("rootfs/a/passwd", data=b"root::0:0::/:/bin/sh\n")))
        self.assertIn("member 'rootfs/a/passwd' lies below the symlink 'rootfs/a'", message)

    def test_member_deep_below_symlink(self):
        """Any depth below the link counts, and a relative link is no different."""
        message = self.refused(image(member("rootfs/a", "symlink", link="../../.."),
                                     member("rootfs/a/b/c", data=b"x")))
        self.assertIn("below the symlink 'rootfs/a'", message)

    def test_symlinks_inside_rootfs_are_data(self):
        """Inside rootfs a symlink may point anywhere: it is resolved in the container."""
        info = self.check(image(member("rootfs/escape", "symlink", link="/"),
                                member("rootfs/up", "symlink", link="../../../etc/shadow")))
        self.assertEqual(info.members, 8)


class HardLinkTests(_Checking):
    """Hard links name earlier regular members of the same rootfs, nothing else."""

    def test_to_earlier_regular_member(self):
        """The one accepted shape."""
        self.check(image(member("rootfs/etc/name", "hardlink", link="rootfs/etc/hostname")))

    def test_to_outside_rootfs(self):
        """A link into the image's metadata, or to a host path, is refused."""
        for target in ("metadata.yaml", "/etc/shadow", "rootfs/../../etc/shadow"):
            message = self.refused(image(member("rootfs/l", "hardlink", link=target)))
            self.assertIn(f"hard link 'rootfs/l' points to {target!r}", message)

    def test_to_later_member(self):
        """The target must already exist when the link is extracted."""
        message = self.refused(image(member("rootfs/l", "hardlink", link="rootfs/later"),
                                     member("rootfs/later", data=b"x")))
        self.assertIn("which is not an earlier regular file of the same rootfs", message)

    def test_to_symlink(self):
        """A hard link to a symlink member is a second symlink in disguise."""
        message = self.refused(image(member("rootfs/s", "symlink", link="/etc/shadow"),
                                     member("rootfs/l", "hardlink", link="rootfs/s")))
        self.assertIn("hard link 'rootfs/l' points to 'rootfs/s'", message)

    def test_to_directory(self):
        """Directories cannot be hard link targets."""
        self.assertIn("hard link 'rootfs/l'", self.refused(image(member("rootfs/l", "hardlink", link="rootfs/etc"))))

    def test_to_file_below_a_later_symlink(self):
        """A target whose directory became a symlink since would be reached through it."""
        message = self.refused(image(member("rootfs/d", "dir"), member("rootfs/d/f", data=b"x"),
                                     member("rootfs/d", "symlink", link="/etc"),
                                     member("rootfs/l", "hardlink", link="rootfs/d/f")))
        self.assertIn("hard link 'rootfs/l'", message)

    def test_outside_rootfs(self):
        """Outside rootfs a hard link is refused whatever it names."""
        message = self.refused(image(member("templates/l", "hardlink", link="templates/hostname.tpl")))
        self.assertIn("member 'templates/l' is a hard link", message)

    def test_across_backup_rootfs(self):
        """A snapshot's file may not link to the container's: each rootfs stands alone."""
        data = backup(member("backup/container/rootfs/etc/f", data=b"x"),
                      member("backup/snapshots/s/rootfs/f", "hardlink", link="backup/container/rootfs/etc/f"))
        self.assertIn("same rootfs", self.refused(data, formats.BACKUP))


class SpecialMemberTests(_Checking):
    """Devices, setuid bits, sparse and oversized members."""

    def test_device_nodes_refused(self):
        """Character and block devices are refused, inside rootfs too, with a clear reason."""
        for kind, word in (("chr", "character device"), ("blk", "block device")):
            message = self.refused(image(member("rootfs/dev", "dir"),
                                         member("rootfs/dev/sda", kind, devmajor=8, devminor=0)))
            self.assertIn(f"member 'rootfs/dev/sda' is a {word}: device nodes are not supported", message)

    def test_fifo_in_rootfs_accepted(self):
        """A fifo inside rootfs is data."""
        self.check(image(member("rootfs/etc/initctl", "fifo")))

    def test_fifo_outside_rootfs_refused(self):
        """Outside rootfs only regular files and directories."""
        self.assertIn("member 'templates/f' is a fifo", self.refused(image(member("templates/f", "fifo"))))

    def test_setuid_outside_rootfs(self):
        """A setuid template, or a setgid directory, outside rootfs is refused."""
        self.assertIn("setuid or setgid", self.refused(image(member("templates/x", data=b"x", mode=0o4755))))
        self.assertIn("member 'templates/d' has the setuid or setgid bit",
                      self.refused(image(member("templates/d", "dir", mode=0o2755))))

    def test_setuid_inside_rootfs(self):
        """Images carry setuid binaries in their rootfs."""
        self.check(image(member("rootfs/su", data=b"x", mode=0o4755)))

    def test_oversized_metadata(self):
        """metadata.yaml, a template or backup.yaml over 1 MiB is refused before being read."""
        big = b"#" * (formats.MAX_METADATA_SIZE + 1)
        data = tar_bytes([member("metadata.yaml", data=big), member("rootfs", "dir")])
        self.assertIn("member 'metadata.yaml' is larger than 1048576 bytes", self.refused(data))
        self.assertIn("templates/big", self.refused(image(member("templates/big", data=big))))
        self.assertIn("backup/container/backup.yaml",
                      self.refused(backup(member("backup/container/backup.yaml", data=big)), formats.BACKUP))

    def test_large_rootfs_member_accepted(self):
        """The bound is for the daemon's small files; rootfs files are any size."""
        self.check(image(member("rootfs/big", data=b"\0" * (formats.MAX_METADATA_SIZE + 1))))

    def test_sparse_outside_rootfs(self):
        """A sparse member (pax GNU.sparse map) outside rootfs is refused, inside it is fine."""
        def sparse(name):
            return member(name, data=b"abcd", pax_headers={"GNU.sparse.map": "0,4", "GNU.sparse.size": "4096"})

        base = [member("metadata.yaml", data=imagefiles.metadata_yaml()), member("rootfs", "dir")]
        refused = tar_bytes(base + [sparse("templates.sparse")], format=tarfile.PAX_FORMAT)
        self.assertIn("member 'templates.sparse' is a sparse file", self.refused(refused))
        self.check(tar_bytes(base + [sparse("rootfs/sparse")], format=tarfile.PAX_FORMAT))

    def test_unknown_member_type(self):
        """A GNU volume header or other unknown type is refused."""
        volume = member("rootfs/v")[0]
        volume.type = b"V"
        self.assertIn("member of unknown type", self.refused(image((volume, None))))


class ArchiveEndTests(_Checking):
    """The archive is complete: no member overruns, no trailing data, no truncation."""

    def test_more_data_than_declared(self):
        """A header declaring fewer bytes than follow: the rest is no member header."""
        raw = bytearray(image(member("rootfs/big", data=b"A" * 2048)))
        offset = raw.index(b"rootfs/big\0")
        raw[offset + 124:offset + 136] = b"%011o\0" % 10
        raw[offset + 148:offset + 156] = b" " * 8
        raw[offset + 148:offset + 156] = b"%06o\0 " % tarfile.calc_chksums(bytes(raw[offset:offset + 512]))[0]
        self.assertIn("is no member header", self.refused(bytes(raw)))

    def test_trailing_garbage_after_end_of_archive(self):
        """Non-zero bytes after the end-of-archive blocks."""
        self.assertIn("trailing data after the end of the archive", self.refused(image() + b"garbage"))
        padded = bytearray(image())
        padded[-1] = 1  # inside the zero padding of the last record
        self.assertIn("trailing data after the end of the archive", self.refused(bytes(padded)))

    def test_trailing_zeros_accepted(self):
        """More zero padding is harmless (GNU tar pads to a record)."""
        self.check(image() + b"\0" * 20480)

    def test_trailing_garbage_after_compressed_stream(self):
        """Bytes after the gzip or xz stream: GNU tar's decompressor fails on them."""
        for compression in ("gzip", "xz", "bzip2"):
            message = self.refused(image(compression=compression) + b"trailing garbage")
            self.assertIn(f"trailing data after the {compression} stream", message)

    def test_concatenated_streams_and_padding(self):
        """Further streams of the same format, and zero padding, are what the tools accept."""
        raw = image()
        self.check(gzip.compress(raw[:3000]) + gzip.compress(raw[3000:]) + b"\0" * 8)
        self.check(lzma.compress(raw[:700]) + b"\0" * 4 + lzma.compress(raw[700:]))

    def test_truncated_member_data(self):
        """A cut inside a member's data."""
        raw = image(member("rootfs/big", data=b"A" * 4096))
        cut = raw.index(b"A" * 512) + 1000
        self.assertIn("Invalid image tarball: truncated archive", self.refused(raw[:cut]))

    def test_truncated_before_end_marker(self):
        """All members complete but no end-of-archive blocks."""
        raw = image()
        end = len(raw.rstrip(b"\0"))
        end += -end % 512
        self.assertIn("ends without an end-of-archive marker", self.refused(raw[:end]))

    def test_truncated_compressed(self):
        """A compressed stream that stops early."""
        for compression in ("gzip", "xz", "bzip2", "lzma"):
            data = image(member("rootfs/r", data=os.urandom(8192)), compression=compression)
            self.assertIn("truncated archive", self.refused(data[:len(data) // 2]))

    def test_members_larger_than_free_space(self):
        """Members summing to more than the target's free space are refused before extraction."""
        data = image(member("rootfs/big", data=b"x" * 5000))
        message = self.refused(data, free_space=4096)
        self.assertIn("are free where it is extracted", message)
        self.check(data, free_space=1 << 20)

    def test_more_members_than_free_inodes(self):
        """An archive of more members than the target has free inodes is refused; hard links
        take no inode of their own."""
        data = image(*[member(f"rootfs/f{i}") for i in range(5)])  # 6 members of its own, and these 5
        self.assertIn("inodes are free where it is extracted", self.refused(data, free_inodes=10))
        self.check(data, free_inodes=11)
        linked = image(member("rootfs/a"), *[member(f"rootfs/l{i}", "hardlink", link="rootfs/a") for i in range(9)])
        self.check(linked, free_inodes=7)
        self.refused(linked, free_inodes=6)

    def test_unpack_check_uses_target_free_inodes(self):
        """`unpack.check` counts the inodes of the extraction target where it has a count."""
        path, fmt = self.write(image(*[member(f"rootfs/f{i}") for i in range(5)]))
        self.patch(unpack, "free_inodes", lambda target: 3)
        with self.assertRaises(ImageFormatError):
            unpack.check(path, fmt, formats.IMAGE, self.dir)
        self.assertIsInstance(unpack.free_inodes(self.dir), (int, type(None)))

    def test_unpack_check_uses_target_free_space(self):
        """`unpack.check` measures the file system of the extraction target."""
        path, fmt = self.write(image(member("rootfs/big", data=b"x" * 5000)))
        self.patch(unpack, "free_bytes", lambda target: 100)
        with self.assertRaises(ImageFormatError):
            unpack.check(path, fmt, formats.IMAGE, self.dir)


class RootfsTarballTests(_Checking):
    """A split image's rootfs tarball is all rootfs: links are data, its top a directory."""

    def test_top_symlink_refused(self):
        """`.` as a symlink would make the extraction target a link."""
        data = tar_bytes([member(".", "symlink", link="/")])
        self.assertIn("member '.' is a symlink, not a directory", self.refused(data, formats.ROOTFS))

    def test_below_symlink_and_devices(self):
        """The rootfs rules apply from the top."""
        below = tar_bytes([member("etc", "symlink", link="/etc"), member("etc/passwd", data=b"x")])
        self.assertIn("below the symlink 'etc'", self.refused(below, formats.ROOTFS))
        device = tar_bytes([member("null", "chr", devmajor=1, devminor=3)])
        self.assertIn("Invalid image rootfs tarball: member 'null' is a character device",
                      self.refused(device, formats.ROOTFS))

    def test_valid_rootfs(self):
        """imagefiles' split rootfs passes."""
        _, rootfs = imagefiles.split("gzip")
        self.check(rootfs, formats.ROOTFS)


class BackupTarballTests(_Checking):
    """Backups follow the same rules, with a rootfs per container and snapshot."""

    def test_valid_backup(self):
        """The base backup, with links and setuid files in both root filesystems."""
        self.check(backup(member("backup/container/rootfs/sh", "symlink", link="/bin/busybox"),
                          member("backup/snapshots/s/rootfs/su", data=b"x", mode=0o4755)), formats.BACKUP)

    def test_backup_yaml_symlink(self):
        """`backup.yaml -> file` is refused."""
        data = backup(member("backup/container/backup.yaml", "symlink", link="/etc/shadow"))
        self.assertEqual(self.refused(data, formats.BACKUP),
                         "Invalid backup tarball: member 'backup/container/backup.yaml' is a symlink: only "
                         "regular files and directories may lie outside rootfs")

    def test_index_and_rootfs_symlinks(self):
        """index.yaml, the container's and a snapshot's rootfs may not be links."""
        for name in ("backup/index.yaml", "backup/container/rootfs", "backup/snapshots/s/rootfs",
                     "backup/container/templates"):
            self.assertIn(f"member {name!r} is a symlink",
                          self.refused(backup(member(name, "symlink", link="/")), formats.BACKUP))

    def test_optimized_streams_may_be_large(self):
        """An optimized backup's send streams may exceed the small-file bound; other files may not,
        nor may a stream be a link."""
        big = b"x" * (formats.MAX_METADATA_SIZE + 1)
        self.check(tar_bytes([member("backup", "dir"), member("backup/index.yaml", data=b"name: c\n"),
                              member("backup/container.bin", data=big), member("backup/snapshots", "dir"),
                              member("backup/snapshots/s.bin", data=big)]), formats.BACKUP)
        for name in ("backup/other.bin", "backup/snapshots/s.yaml", "backup/snapshots/s/x.bin"):
            data = tar_bytes([member("backup", "dir"), member("backup/snapshots", "dir"),
                              member("backup/snapshots/s", "dir"), member(name, data=big)])
            self.assertIn("is larger than", self.refused(data, formats.BACKUP))
        data = tar_bytes([member("backup", "dir"), member("backup/container.bin", "symlink", link="/dev/sda")])
        self.assertIn("is a symlink", self.refused(data, formats.BACKUP))

    def test_snapshot_device(self):
        """Devices in a snapshot's rootfs are refused too."""
        data = backup(member("backup/snapshots/s/rootfs/null", "chr", devmajor=1, devminor=3))
        self.assertIn("character device", self.refused(data, formats.BACKUP))


class StagingTests(SynchronousTestCase):
    """An upload refused by the rules leaves no file in the spool directory."""

    def setUp(self):
        self.spool = os.path.join(temp_dir(self), "tmp")

    def stage(self, body, boundary=None, room=store.UNBOUNDED):
        with self.assertRaises(ImageFormatError) as cm:
            store._stage_upload(self.spool, io.BytesIO(body), boundary, None, room)
        self.assertEqual(os.listdir(self.spool), [])
        return str(cm.exception)

    def test_bomb_larger_than_room(self):
        """A small upload whose members unpack to more than the room left is refused at
        upload, at the member that no longer fits."""
        zeros = imagefiles.tarball([("metadata.yaml", imagefiles.metadata_yaml()), ("rootfs", None),
                                    ("rootfs/zeros", bytes(4 << 20))], "xz")
        self.assertLess(len(zeros), 64 * 1024)
        message = self.stage(zeros, room=store.Room(space=1 << 20))
        self.assertIn("need more than", message)
        self.assertIn(f"only {1 << 20} are free", message)
        staged = store._stage_upload(self.spool, io.BytesIO(zeros), None, None, store.Room(space=8 << 20))
        shutil.rmtree(staged.tmpdir)

    def test_too_many_members_for_the_inodes_left(self):
        """More members than free inodes is refused; hard links take none of their own."""
        entries = [("metadata.yaml", imagefiles.metadata_yaml()), ("rootfs", None), ("rootfs/f", b"x")]
        links = [(f"rootfs/l{i}", ("hardlink", "rootfs/f")) for i in range(50)]
        many = imagefiles.tarball(entries + [(f"rootfs/f{i}", b"x") for i in range(50)])
        self.assertIn("inodes are free", self.stage(many, room=store.Room(inodes=20)))
        staged = store._stage_upload(self.spool, io.BytesIO(imagefiles.tarball(entries + links)), None, None,
                                     store.Room(inodes=20))
        shutil.rmtree(staged.tmpdir)

    def test_split_rootfs_counts_after_the_metadata(self):
        """A split image's two tarballs share the room."""
        meta, rootfs = imagefiles.split("none")
        body = (b"--B\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"m\"\r\n\r\n" + meta
                + b"\r\n--B\r\nContent-Disposition: form-data; name=\"rootfs\"; filename=\"r\"\r\n\r\n"
                + rootfs + b"\r\n--B--\r\n")
        self.assertIn("inodes are free", self.stage(body, "B", room=store.Room(inodes=4)))

    def test_unified(self):
        """A unified image with `rootfs -> /` is refused at upload."""
        data = tar_bytes([member("metadata.yaml", data=imagefiles.metadata_yaml()),
                          member("rootfs", "symlink", link="/")])
        self.assertIn("member 'rootfs' is a symlink", self.stage(data))

    def test_split(self):
        """A split image whose metadata tarball has `rootfs -> /`, or whose rootfs plants a
        member below a link, is refused at upload."""
        good_meta, good_rootfs = imagefiles.split("none")
        bad_meta = tar_bytes([member("metadata.yaml", data=imagefiles.metadata_yaml()),
                              member("rootfs", "symlink", link="/")])
        bad_rootfs = tar_bytes([member("etc", "symlink", link="/etc"), member("etc/shadow", data=b"x")])
        for meta, rootfs, word in ((bad_meta, good_rootfs, "member 'rootfs' is a symlink"),
                                   (good_meta, bad_rootfs, "below the symlink 'etc'")):
            body = (b"--B\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"m\"\r\n\r\n" + meta
                    + b"\r\n--B\r\nContent-Disposition: form-data; name=\"rootfs\"; filename=\"r\"\r\n\r\n"
                    + rootfs + b"\r\n--B--\r\n")
            self.assertIn(word, self.stage(body, "B"))


class ExtractedLayoutTests(SynchronousTestCase):
    """What tar made is looked at with lstat: a link at the top is refused, not followed."""

    def setUp(self):
        self.target = temp_dir(self)
        self.host, self.before = sentinel(self)

    def test_rootfs_link_after_extraction(self):
        """A `rootfs` that is a link to a host directory is refused."""
        os.symlink(os.path.dirname(self.host), os.path.join(self.target, "rootfs"))
        with self.assertRaises(ImageFormatError) as cm:
            unpack._expect(self.target, unpack.IMAGE_TOP)
        self.assertIn("'rootfs' is a symlink after extraction", str(cm.exception))

    def test_metadata_link_not_read(self):
        """A metadata.yaml link is refused by the layout check and by read_beneath."""
        os.mkdir(os.path.join(self.target, "rootfs"))
        os.symlink(self.host, os.path.join(self.target, "metadata.yaml"))
        with self.assertRaises(ImageFormatError):
            unpack._expect(self.target, unpack.IMAGE_TOP)
        fd = os.open(self.target, os.O_PATH | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)
        with self.assertRaises(ImageFormatError) as cm:
            unpack.read_beneath(fd, "metadata.yaml")
        self.assertEqual(str(cm.exception), "metadata.yaml is a symlink")

    def test_fifo_not_read(self):
        """read_beneath does not open a fifo (which would block)."""
        os.mkfifo(os.path.join(self.target, "metadata.yaml"))
        fd = os.open(self.target, os.O_PATH | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)
        with self.assertRaises(ImageFormatError):
            unpack.read_beneath(fd, "metadata.yaml")

    def test_publish_source_with_links(self):
        """Publishing a directory whose rootfs or metadata.yaml is a link is refused, unread."""
        os.symlink(os.path.dirname(self.host), os.path.join(self.target, "rootfs"))
        with self.assertRaises(ImageFormatError) as cm:
            store._read_publish_source(self.target)
        self.assertIn("has no rootfs directory", str(cm.exception))
        os.unlink(os.path.join(self.target, "rootfs"))
        os.mkdir(os.path.join(self.target, "rootfs"))
        os.symlink(self.host, os.path.join(self.target, "metadata.yaml"))
        with self.assertRaises(ImageFormatError) as cm:
            store._read_publish_source(self.target)
        self.assertIn("'metadata.yaml' is a symlink", str(cm.exception))


class BackupImportTests(SynchronousTestCase):
    """An extracted backup is checked before backup.yaml or index.yaml is read."""

    def setUp(self):
        self.stage = temp_dir(self)
        self.host, self.before = sentinel(self, "name: host\nsnapshots: []\n")
        self.addCleanup(self.assert_host_unchanged)
        for path in ("backup/container/rootfs", "backup/snapshots/s/rootfs"):
            os.makedirs(os.path.join(self.stage, path))
        self.index("name: c\nsnapshots: [s]\n")

    def index(self, text):
        with open(os.path.join(self.stage, "backup", "index.yaml"), "w") as f:
            f.write(text)

    def refused(self):
        with self.assertRaises(errors.BadRequest) as cm:
            backups._read_extracted(self.stage)
        return cm.exception.message

    def test_valid(self):
        """A plain tree gives index and (empty) backup documents."""
        index, backup_doc, optimized = backups._read_extracted(self.stage)
        self.assertEqual((index["name"], backup_doc, optimized), ("c", {}, False))

    def test_backup_yaml_link(self):
        """`backup.yaml -> host file` is refused and not read."""
        os.symlink(self.host, os.path.join(self.stage, "backup", "container", "backup.yaml"))
        self.assertIn("'backup/container/backup.yaml' is a symlink", self.refused())

    def test_index_link(self):
        """`index.yaml -> host file` is refused, not read as the backup's index."""
        os.unlink(os.path.join(self.stage, "backup", "index.yaml"))
        os.symlink(self.host, os.path.join(self.stage, "backup", "index.yaml"))
        self.assertIn("'backup/index.yaml' is a symlink", self.refused())

    def test_snapshot_rootfs_link(self):
        """A snapshot rootfs that is a link is refused."""
        path = os.path.join(self.stage, "backup", "snapshots", "s", "rootfs")
        os.rmdir(path)
        os.symlink(os.path.dirname(self.host), path)
        self.assertIn("'backup/snapshots/s/rootfs' is a symlink", self.refused())

    def test_snapshot_names(self):
        """Snapshot names in index.yaml and backup.yaml must pass LXD's name rules."""
        self.index("name: c\nsnapshots: ['../../x']\n")
        self.assertIn("invalid snapshot name '../../x'", self.refused())
        self.index("name: c\nsnapshots: [s]\n")
        with open(os.path.join(self.stage, "backup", "container", "backup.yaml"), "w") as f:
            f.write("snapshots: [{name: 'a b'}]\n")
        self.assertIn("invalid snapshot name 'a b'", self.refused())

    def test_index_not_a_map(self):
        """index.yaml must be a map."""
        self.index("- a\n")
        self.assertIn("index.yaml is not a map", self.refused())

    def assert_host_unchanged(self):
        after = os.lstat(self.host)
        self.assertEqual((after.st_ino, after.st_mtime_ns, after.st_size),
                         (self.before.st_ino, self.before.st_mtime_ns, self.before.st_size))


class BackupYamlWriteTests(SynchronousTestCase):
    """Export writes backup.yaml through the container directory's fd, never through a link."""

    def setUp(self):
        self.dir = temp_dir(self)
        self.host, self.before = sentinel(self)
        self.path = os.path.join(self.dir, "backup.yaml")

    def written(self):
        backups._replace_file(self.dir, "backup.yaml", b"container: {}\n")
        st = os.lstat(self.path)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"container: {}\n")
        with open(self.host) as f:
            self.assertEqual(f.read(), "host sentinel\n")

    def test_planted_symlink(self):
        """A `backup.yaml -> host file` is replaced; the host file is unchanged."""
        os.symlink(self.host, self.path)
        self.written()

    def test_planted_fifo(self):
        """A fifo is replaced rather than opened (which would block)."""
        os.mkfifo(self.path)
        self.written()

    def test_existing_file(self):
        """An existing backup.yaml is rewritten in place."""
        with open(self.path, "w") as f:
            f.write("old: true\n" * 100)
        self.written()


class ShiftTests(SynchronousTestCase):
    """The id shift never follows a link out of the tree, least of all the tree's own top."""

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("shifting ownership needs root")
        self.container = temp_dir(self)
        self.rootfs = os.path.join(self.container, "rootfs")
        self.host, self.before = sentinel(self)
        self.host_dir = os.path.dirname(self.host)
        self.host_dir_before = os.lstat(self.host_dir)
        self.map = idmap.IdMap.from_allocation(
            idmap.Allocation(idmap.Range(1000000, 65536), idmap.Range(1000000, 65536)))

    def assert_host_unchanged(self):
        for path, before in ((self.host, self.before), (self.host_dir, self.host_dir_before)):
            after = os.lstat(path)
            self.assertEqual((after.st_uid, after.st_gid, after.st_mode), (before.st_uid, before.st_gid, before.st_mode))

    def test_symlink_to_host_file(self):
        """A link to a host file is shifted itself; the file keeps its owner."""
        os.mkdir(self.rootfs)
        os.symlink(self.host, os.path.join(self.rootfs, "escape"))
        os.symlink(self.host_dir, os.path.join(self.rootfs, "escape-dir"))
        idmap.shift_tree(self.rootfs, None, self.map)
        self.assertEqual(os.lstat(os.path.join(self.rootfs, "escape")).st_uid, 1000000)
        self.assertEqual(os.lstat(os.path.join(self.rootfs, "escape-dir")).st_uid, 1000000)
        self.assert_host_unchanged()

    def test_rootfs_is_a_symlink(self):
        """`rootfs -> host directory` is refused rather than resolved and shifted."""
        os.symlink(self.host_dir, self.rootfs)
        with self.assertRaises(OSError):
            idmap.shift_tree(self.rootfs, None, self.map)
        self.assert_host_unchanged()

    def test_parent_may_be_a_link(self):
        """The daemon's own directories above the tree may be reached through a link."""
        os.mkdir(self.rootfs)
        write_path = os.path.join(self.rootfs, "f")
        with open(write_path, "w"):
            pass
        alias = os.path.join(temp_dir(self), "alias")
        os.symlink(self.container, alias)
        idmap.shift_tree(os.path.join(alias, "rootfs"), None, self.map)
        self.assertEqual(os.lstat(write_path).st_uid, 1000000)
