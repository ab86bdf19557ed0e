"""Image file formats: compression by magic bytes, and the safe look inside tarballs."""

import os
import shutil
import tempfile

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.image import formats
from lxdtx.image.invalid import ImageFormatError
from tests import imagefiles


class DetectTests(SynchronousTestCase):
    """`detect` tells formats by their first bytes, never by name."""

    def test_compressions(self):
        """Each compression the tests can make is recognised as itself."""
        expected = {"gzip": "gzip", "bzip2": "bzip2", "xz": "xz", "lzma": "lzma", "none": "tar"}
        for compression, name in expected.items():
            head = imagefiles.unified(compression)[:formats.HEAD_SIZE]
            self.assertEqual(formats.detect(head).name, name, compression)

    def test_magic_table(self):
        """The magic numbers of the reference table, and their tar flags and extensions."""
        cases = {
            b"BZh91AY": ("bzip2", ("-j",), ".tar.bz2"),
            b"\x1f\x8b\x08": ("gzip", ("-z",), ".tar.gz"),
            b"\xfd7zXZ\x00\x00": ("xz", ("-J",), ".tar.xz"),
            b"\xff7zXZ": ("lzma", ("--lzma",), ".tar.lzma"),
            b"\x5d\x00\x00\x80": ("lzma", ("--lzma",), ".tar.lzma"),
            b"hsqs\x00\x00": ("squashfs", (), ".squashfs"),
            b"\x28\xb5\x2f\xfd": ("zstd", ("--zstd",), ".tar.zst"),
        }
        for head, (name, flags, ext) in cases.items():
            fmt = formats.detect(head)
            self.assertEqual((fmt.name, fmt.tar_flags, fmt.extension), (name, flags, ext))

    def test_plain_tar(self):
        """`ustar` at offset 257 is a plain tarball."""
        self.assertEqual(formats.detect(b"\0" * 257 + b"ustar").name, "tar")

    def test_squashfs_is_not_a_tarball(self):
        """Only squashfs is not read with tar."""
        self.assertFalse(formats.FORMATS["squashfs"].is_tarball)
        self.assertTrue(formats.FORMATS["xz"].is_tarball)

    @given(st.binary(max_size=300).filter(lambda b: not b.startswith((b"BZh", b"\x1f\x8b", b"hsqs"))))
    def test_unknown(self, head):
        """Anything else is `Unsupported compression` (or a format whose magic it happens to have)."""
        try:
            fmt = formats.detect(head)
        except ImageFormatError as e:
            self.assertEqual(str(e), "Unsupported compression")
        else:
            self.assertIn(fmt.name, ("xz", "lzma", "zstd", "tar"))


class MemberPathTests(SynchronousTestCase):
    """Member names are normalised; absolute and `..` names are refused."""

    def test_normalised(self):
        """`./`, empty components and trailing slashes go."""
        self.assertEqual(formats.member_path("./rootfs//etc/"), "rootfs/etc")
        self.assertEqual(formats.member_path("."), "")

    def test_refused(self):
        """A leading `/` or any `..` component is an error naming the member."""
        for name in ("/etc/passwd", "rootfs/../../x", ".."):
            with self.assertRaises(ImageFormatError) as cm:
                formats.member_path(name)
            self.assertIn(repr(name), str(cm.exception))

    def test_dots_inside_names_are_fine(self):
        """`..` only matters as a whole component."""
        self.assertEqual(formats.member_path("rootfs/a..b/..c"), "rootfs/a..b/..c")


class InspectTests(SynchronousTestCase):
    """One pass over a tarball: its metadata.yaml, rootfs presence and member checks."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lxdtx-unit-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write(self, data):
        path = os.path.join(self.dir, "image")
        with open(path, "wb") as f:
            f.write(data)
        return path, formats.detect_file(path)

    def test_unified(self):
        """A unified image yields its parsed metadata and has a rootfs, in every compression."""
        for compression in imagefiles.COMPRESSIONS:
            meta, info = formats.read_metadata(*self.write(imagefiles.unified(compression)))
            self.assertEqual(meta.architecture, "x86_64")
            self.assertEqual(meta.properties["os"], "testos")
            self.assertTrue(info.has_rootfs)

    def test_dot_slash_names(self):
        """`./metadata.yaml` is metadata.yaml."""
        data = imagefiles.tarball([("./metadata.yaml", imagefiles.metadata_yaml()), ("./rootfs", None)], "gzip")
        meta, info = formats.read_metadata(*self.write(data))
        self.assertTrue(info.has_rootfs)

    def test_missing_metadata(self):
        """No metadata.yaml: the reference's message."""
        path, fmt = self.write(imagefiles.tarball(imagefiles.rootfs_entries(), "xz"))
        with self.assertRaises(ImageFormatError) as cm:
            formats.read_metadata(path, fmt)
        self.assertIn("Could not extract image metadata.yaml from tar", str(cm.exception))

    def test_corrupt(self):
        """A truncated stream is an `Invalid image` error, not a crash."""
        for compression in ("gzip", "bzip2", "xz", "lzma"):
            path, fmt = self.write(imagefiles.unified(compression)[:150])
            with self.assertRaises(ImageFormatError) as cm:
                formats.inspect_tarball(path, fmt)
            self.assertIn("Invalid image", str(cm.exception))

    def test_below_symlink(self):
        """A member placed below an earlier symlink member is refused."""
        data = imagefiles.tarball([("rootfs", None), ("rootfs/lib", ("symlink", "/usr/lib")),
                                   ("rootfs/lib/x", b"x")])
        with self.assertRaises(ImageFormatError) as cm:
            formats.inspect_tarball(*self.write(data))
        self.assertIn("below the symlink 'rootfs/lib'", str(cm.exception))

    def test_symlink_replaced_by_directory(self):
        """A symlink later replaced by a real directory no longer counts."""
        data = imagefiles.tarball([("rootfs", None), ("rootfs/lib", ("symlink", "x")), ("rootfs/lib", None),
                                   ("rootfs/lib/x", b"x")])
        info = formats.inspect_tarball(*self.write(data))
        self.assertEqual(info.members, 4)

    def test_absolute_symlink_targets_allowed(self):
        """Symlinks may point anywhere (they are resolved inside the container)."""
        data = imagefiles.tarball([("rootfs", None), ("rootfs/sh", ("symlink", "/bin/busybox"))])
        self.assertEqual(formats.inspect_tarball(*self.write(data)).members, 2)

    def test_hard_link_out(self):
        """A hard link whose target climbs out is refused."""
        data = imagefiles.tarball([("rootfs", None), ("rootfs/l", ("hardlink", "/etc/shadow"))])
        with self.assertRaises(ImageFormatError):
            formats.inspect_tarball(*self.write(data))

    def test_squashfs_is_not_inspected(self):
        """Asking for a tarball pass over squashfs is an error."""
        path, _ = self.write(b"hsqs" + b"\0" * 300)
        with self.assertRaises(ImageFormatError):
            formats.inspect_tarball(path, formats.FORMATS["squashfs"])
