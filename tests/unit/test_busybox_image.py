"""The busybox image builder: tarball layout, metadata, templates, boot files, failures."""

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import yaml
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import cli
from lxdtx.image import busybox
from lxdtx.image.busybox import ImageBuildError, build_image

HAVE_BUSYBOX = os.path.isfile(busybox.BUSYBOX) and busybox.is_static_elf(busybox.BUSYBOX)
NO_BUSYBOX = "needs Debian's busybox-static (/bin/busybox, statically linked)"


def _members(path):
    """{name: (TarInfo, bytes or None)} of every member of an image file."""
    found = {}
    with tarfile.open(path) as tar:
        for info in tar:
            data = tar.extractfile(info).read() if info.isfile() else None
            found[info.name] = (info, data)
    return found


class _TempDir(SynchronousTestCase):
    """A test case with a scratch directory removed after the test."""

    def setUp(self):
        if not HAVE_BUSYBOX:
            self.skipTest(NO_BUSYBOX)
        self.dir = tempfile.mkdtemp(prefix="lxdtx-bbimage-")
        self.addCleanup(shutil.rmtree, self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)


class BusyboxImageLayoutTests(_TempDir):
    """The layout of a built unified image (built once for the class: it only reads it)."""

    @classmethod
    def setUpClass(cls):
        if not HAVE_BUSYBOX:
            return
        cls.image_dir = tempfile.mkdtemp(prefix="lxdtx-bbimage-")
        cls.image = build_image(os.path.join(cls.image_dir, "bb.tar.xz"), creation_date=1500000000)
        cls.members = _members(cls.image.path)

    @classmethod
    def tearDownClass(cls):
        if HAVE_BUSYBOX:
            shutil.rmtree(cls.image_dir)

    def file(self, name):
        info, data = self.members[name]
        self.assertTrue(info.isfile(), name)
        return info, data.decode()

    def test_top_level(self):
        """metadata.yaml, rootfs/ and templates/ are the only top-level entries."""
        self.assertEqual({name.split("/")[0] for name in self.members},
                         {"metadata.yaml", "rootfs", "templates"})
        self.assertTrue(self.members["rootfs"][0].isdir())
        self.assertTrue(self.members["templates"][0].isdir())

    def test_metadata_first(self):
        """metadata.yaml is the first member, so readers find it without scanning the rootfs."""
        with tarfile.open(self.image.path) as tar:
            self.assertEqual(tar.next().name, "metadata.yaml")

    def test_owned_by_root(self):
        """Every member belongs to uid/gid 0 whoever built the image."""
        owners = {(info.uid, info.gid) for info, _ in self.members.values()}
        self.assertEqual(owners, {(0, 0)})

    def test_every_parent_directory_present(self):
        """Each member's parent directory is itself a directory member."""
        for name in self.members:
            parent = os.path.dirname(name)
            if parent:
                self.assertTrue(self.members[parent][0].isdir(), parent)

    def test_metadata(self):
        """metadata.yaml has architecture, creation date, properties and templates."""
        metadata = yaml.safe_load(self.file("metadata.yaml")[1])
        version = busybox.busybox_version()
        arch = busybox.canonical_architecture(os.uname().machine)
        self.assertEqual(metadata["architecture"], arch)
        self.assertEqual(metadata["creation_date"], 1500000000)
        self.assertEqual(metadata["properties"]["os"], "busybox")
        self.assertEqual(metadata["properties"]["release"], version)
        self.assertIsInstance(metadata["properties"]["release"], str)
        self.assertEqual(metadata["properties"]["architecture"], arch)
        self.assertIn(version, metadata["properties"]["description"])
        self.assertEqual(metadata, self.image.metadata)

    def test_templates(self):
        """hostname and hosts templates exist, render the container name, and are listed."""
        templates = yaml.safe_load(self.file("metadata.yaml")[1])["templates"]
        self.assertEqual(set(templates), {"/etc/hostname", "/etc/hosts"})
        for target, entry in templates.items():
            self.assertEqual(set(entry["when"]), {"create", "copy", "rename"}, target)
            _, text = self.file("templates/" + entry["template"])
            self.assertIn("{{ container.name }}", text)
        _, hosts = self.file("templates/" + templates["/etc/hosts"]["template"])
        self.assertIn("127.0.0.1\tlocalhost", hosts)

    def test_busybox_binary(self):
        """/bin/busybox is the host's binary, byte for byte, executable."""
        info, data = self.members["rootfs/bin/busybox"]
        with open(busybox.BUSYBOX, "rb") as f:
            self.assertEqual(data, f.read())
        self.assertEqual(info.mode, 0o755)

    def test_applet_links(self):
        """Every applet `busybox --list-full` reports links to /bin/busybox."""
        applets = busybox.busybox_applets()
        self.assertIn("sbin/init", applets)
        for path in applets:
            if path == "bin/busybox":
                continue
            info, _ = self.members["rootfs/" + path]
            self.assertTrue(info.issym(), path)
            self.assertEqual(info.linkname, "/bin/busybox", path)

    def test_init(self):
        """/sbin/init is busybox init; the inittab runs rcS, a console shell and reboot on SIGINT."""
        self.assertEqual(self.members["rootfs/sbin/init"][0].linkname, "/bin/busybox")
        _, inittab = self.file("rootfs/etc/inittab")
        entries = [line for line in inittab.splitlines() if line and not line.startswith("#")]
        self.assertIn("::sysinit:/etc/init.d/rcS", entries)
        self.assertIn("console::respawn:-/bin/sh", entries)
        self.assertIn("::ctrlaltdel:/sbin/reboot", entries)

    def test_boot_scripts_executable(self):
        """rcS and the udhcpc script are executable shell scripts."""
        for name in ("rootfs/etc/init.d/rcS", "rootfs/etc/udhcpc/default.script"):
            info, text = self.file(name)
            self.assertEqual(info.mode, 0o755, name)
            self.assertTrue(text.startswith("#!/bin/sh\n"), name)
        link = self.members["rootfs/usr/share/udhcpc/default.script"][0]
        self.assertEqual(link.linkname, "/etc/udhcpc/default.script")

    def test_boot_scripts_parse(self):
        """busybox sh accepts the syntax of every shell script in the image."""
        for name in ("rootfs/etc/init.d/rcS", "rootfs/etc/udhcpc/default.script",
                     "rootfs/etc/profile"):
            script = self.path(os.path.basename(name))
            with open(script, "w") as f:
                f.write(self.file(name)[1])
            done = subprocess.run([busybox.BUSYBOX, "sh", "-n", script],
                                  capture_output=True, text=True, timeout=30)
            self.assertEqual(done.returncode, 0, f"{name}: {done.stderr}")

    def test_rcs_starts_dhcp_and_prints_banner(self):
        """rcS brings up lo, runs udhcpc in the background per interface and prints the banner."""
        _, rcs = self.file("rootfs/etc/init.d/rcS")
        self.assertIn("ip link set lo up", rcs)
        self.assertRegex(rcs, r"udhcpc -b [^\n]*\\\n[^\n]*\n[^\n]*&\n")
        self.assertIn('echo "lxdtx busybox: booted $(hostname)"', rcs)

    def test_accounts(self):
        """root exists with /bin/sh and no password; shadow is private."""
        _, passwd = self.file("rootfs/etc/passwd")
        self.assertIn("root:x:0:0:root:/root:/bin/sh", passwd.splitlines())
        _, group = self.file("rootfs/etc/group")
        self.assertIn("root:x:0:", group.splitlines())
        info, shadow = self.file("rootfs/etc/shadow")
        self.assertTrue(shadow.startswith("root::"))
        self.assertEqual(info.mode, 0o600)
        self.assertEqual(self.file("rootfs/etc/hostname")[1], "busybox\n")
        self.assertIn("127.0.0.1\tlocalhost", self.file("rootfs/etc/hosts")[1])

    def test_standard_directories(self):
        """The usual mount points and directories exist with their usual modes."""
        for name in ("dev", "proc", "sys", "run", "var", "etc", "home", "mnt", "bin", "sbin",
                     "usr/bin", "usr/sbin", "var/log"):
            self.assertTrue(self.members["rootfs/" + name][0].isdir(), name)
        self.assertEqual(self.members["rootfs/tmp"][0].mode, 0o1777)
        self.assertEqual(self.members["rootfs/var/tmp"][0].mode, 0o1777)
        self.assertEqual(self.members["rootfs/root"][0].mode, 0o700)
        self.assertEqual(self.members["rootfs/var/run"][0].linkname, "/run")

    def test_fingerprint(self):
        """The reported fingerprint is the SHA-256 of the file."""
        with open(self.image.path, "rb") as f:
            self.assertEqual(self.image.fingerprint, hashlib.sha256(f.read()).hexdigest())

    def test_file_mode(self):
        """The image file is readable by everyone (the daemon may import it as another user)."""
        self.assertEqual(os.stat(self.image.path).st_mode & 0o777, 0o644)


class BusyboxImageOptionsTests(_TempDir):
    """Compression, architecture, output path and reproducibility."""

    def test_compressions(self):
        """Each compression gives the magic bytes LXD detects, and the same content."""
        magic = {"xz": (0, b"\xfd7zXZ\x00"), "gzip": (0, b"\x1f\x8b"), "none": (257, b"ustar")}
        contents = {}
        for compression, (offset, expected) in magic.items():
            image = build_image(self.path(compression), compression=compression,
                                creation_date=1500000000)
            with open(image.path, "rb") as f:
                head = f.read(512)
            self.assertEqual(head[offset:offset + len(expected)], expected, compression)
            contents[compression] = {
                name: (info.mode, info.linkname, data)
                for name, (info, data) in _members(image.path).items()
            }
        self.assertEqual(contents["xz"], contents["gzip"])
        self.assertEqual(contents["xz"], contents["none"])

    def test_reproducible(self):
        """Two builds with the same creation date are byte-identical."""
        for compression in busybox.COMPRESSIONS:
            first = build_image(self.path("a"), compression=compression, creation_date=1234)
            second = build_image(self.path("b"), compression=compression, creation_date=1234)
            self.assertEqual(first.fingerprint, second.fingerprint, compression)

    def test_source_date_epoch(self):
        """Without a creation date, $SOURCE_DATE_EPOCH stamps the metadata and the members."""
        self.patch(os, "environ", dict(os.environ, SOURCE_DATE_EPOCH="1600000000"))
        image = build_image(self.path("bb"))
        self.assertEqual(image.metadata["creation_date"], 1600000000)
        mtimes = {info.mtime for info, _ in _members(image.path).values()}
        self.assertEqual(mtimes, {1600000000})

    def test_architecture_alias(self):
        """An architecture alias is recorded under LXD's canonical name."""
        image = build_image(self.path("bb"), arch="arm64")
        self.assertEqual(image.metadata["architecture"], "aarch64")
        self.assertEqual(image.metadata["properties"]["architecture"], "aarch64")

    def test_directory_output(self):
        """An existing directory as output gets `busybox-<arch>.tar.<ext>` inside it."""
        image = build_image(self.dir, compression="gzip", arch="amd64")
        self.assertEqual(image.path, self.path("busybox-x86_64.tar.gz"))
        self.assertTrue(os.path.isfile(image.path))

    def test_replaces_existing_file(self):
        """An existing output file is replaced whole."""
        with open(self.path("bb"), "wb") as f:
            f.write(b"old" * 100000)
        image = build_image(self.path("bb"), compression="none")
        self.assertTrue(tarfile.is_tarfile(image.path))


class BusyboxImageErrorTests(_TempDir):
    """Bad input is refused with a clear error and leaves nothing behind."""

    def assertNothingWritten(self):
        self.assertEqual(os.listdir(self.dir), [])

    def test_unknown_architecture(self):
        """An unknown architecture is refused, naming it."""
        e = self.assertRaises(ImageBuildError, build_image, self.path("bb"), arch="pdp11")
        self.assertIn("pdp11", str(e))
        self.assertNothingWritten()

    def test_unknown_compression(self):
        """An unknown compression is refused, naming it."""
        e = self.assertRaises(ImageBuildError, build_image, self.path("bb"), compression="zstd")
        self.assertIn("zstd", str(e))
        self.assertNothingWritten()

    def test_dynamic_busybox(self):
        """A dynamically linked binary is refused: the image has no C library."""
        e = self.assertRaises(ImageBuildError, build_image, self.path("bb"),
                              busybox=os.path.realpath(sys.executable))
        self.assertIn("statically linked", str(e))
        self.assertNothingWritten()

    def test_missing_busybox(self):
        """A missing binary is refused, naming the package to install."""
        e = self.assertRaises(ImageBuildError, build_image, self.path("bb"),
                              busybox=self.path("nope"))
        self.assertIn("busybox-static", str(e))
        self.assertNothingWritten()

    def test_not_elf(self):
        """A file that is not an ELF executable is refused."""
        with open(self.path("script"), "w") as f:
            f.write("#!/bin/sh\n")
        self.assertRaises(ImageBuildError, build_image, self.path("bb"),
                          busybox=self.path("script"))
        self.assertEqual(os.listdir(self.dir), ["script"])

    def test_bad_source_date_epoch(self):
        """A $SOURCE_DATE_EPOCH that is not positive unix seconds is refused."""
        for value in ("yesterday", "0"):
            self.patch(os, "environ", dict(os.environ, SOURCE_DATE_EPOCH=value))
            self.assertRaises(ImageBuildError, build_image, self.path("bb"))
        self.assertNothingWritten()

    def test_missing_directory(self):
        """An output in a directory that does not exist is refused."""
        e = self.assertRaises(ImageBuildError, build_image, self.path("no/such/bb"))
        self.assertIn("no/such", str(e))
        self.assertNothingWritten()


class ImageCommandTests(_TempDir):
    """`lxdtx image busybox OUT`."""

    def run_cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        return cli.main(list(argv)), out.getvalue(), err.getvalue()

    def test_writes_image(self):
        """The command writes the image and prints its path and fingerprint."""
        code, out, _ = self.run_cli("image", "busybox", self.path("bb.tar.gz"),
                                    "--compression", "gzip", "--arch", "x86_64")
        self.assertEqual(code, 0)
        path, fingerprint = out.split()
        self.assertEqual(path, self.path("bb.tar.gz"))
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:2], b"\x1f\x8b")
        self.assertEqual(fingerprint, hashlib.sha256(data).hexdigest())

    def test_error(self):
        """A bad architecture fails with status 1 and a message on stderr."""
        code, out, err = self.run_cli("image", "busybox", self.path("bb"), "--arch", "vax")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("'vax'", err)
        self.assertEqual(os.listdir(self.dir), [])
