"""The file API's filesystem side: header parsing, id shifting, and paths kept inside the root."""

import io
import os
import shutil
import stat
import tempfile

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.instance import files
from lxdtx.instance.idmap import IdMap


class HeaderTests(SynchronousTestCase):
    """X-LXD-mode, X-LXD-uid and X-LXD-gid."""

    def test_mode(self):
        """A leading 0 means octal, no leading 0 decimal, and 0777 masks (pylxd sends st_mode)."""
        self.assertEqual(files.parse_mode("0644"), 0o644)
        self.assertEqual(files.parse_mode("644"), 644 & 0o777)
        self.assertEqual(files.parse_mode("0100644"), 0o644)
        self.assertIsNone(files.parse_mode(None))
        self.assertIsNone(files.parse_mode("-1"))
        for bad in ("0x1ff", "rwx", "0o644", "09"):
            self.assertRaises(errors.BadRequest, files.parse_mode, bad)

    @given(st.integers(min_value=0, max_value=0o7777777))
    def test_mode_octal_roundtrip(self, value):
        """Any octal rendering with a leading zero parses back to its permission bits."""
        self.assertEqual(files.parse_mode("0" + format(value, "o")), value & 0o777)

    def test_ids(self):
        """Decimal ids; -1 and absence mean the default."""
        self.assertEqual(files.parse_id("1000", "X-LXD-uid"), 1000)
        self.assertIsNone(files.parse_id("-1", "X-LXD-uid"))
        self.assertIsNone(files.parse_id(None, "X-LXD-uid"))
        self.assertRaises(errors.BadRequest, files.parse_id, "abc", "X-LXD-uid")
        self.assertRaises(errors.BadRequest, files.parse_id, "-5", "X-LXD-gid")


class ContainerFilesTests(SynchronousTestCase):
    """Operations on a directory standing in for a container root (as root: chown works)."""

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("chown to mapped ids needs root")
        self.base = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.base)
        self.root = os.path.join(self.base, "rootfs")
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(os.path.join(self.root, "etc"))
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "secret"), "w") as f:
            f.write("host")
        with open(os.path.join(self.root, "etc", "secret"), "w") as f:
            f.write("container")
        idmap = IdMap.from_json('[{"Isuid":true,"Isgid":false,"Hostid":100000,"Nsid":0,"Maprange":65536},'
                                '{"Isuid":false,"Isgid":true,"Hostid":100000,"Nsid":0,"Maprange":65536}]')
        self.files = files.ContainerFiles(self.root, idmap)

    def read(self, path):
        entry = self.files.get(path)
        try:
            return os.read(entry.fd, 100)
        finally:
            os.close(entry.fd)

    def test_write_shifts_ids(self):
        """A pushed file is owned by the mapped host ids and reads back with container ids."""
        self.files.write_file("/etc/new", io.BytesIO(b"data"), uid=1000, gid=50, mode=0o600)
        st_ = os.stat(os.path.join(self.root, "etc", "new"))
        self.assertEqual((st_.st_uid, st_.st_gid, st_.st_mode & 0o777), (101000, 100050, 0o600))
        entry = self.files.get("/etc/new")
        os.close(entry.fd)
        self.assertEqual((entry.kind, entry.uid, entry.gid, entry.mode), ("file", 1000, 50, 0o600))

    def test_defaults_and_append(self):
        """New files get root and 0640; append adds without touching ownership."""
        self.files.write_file("/etc/log", io.BytesIO(b"a"))
        self.files.write_file("/etc/log", io.BytesIO(b"b"), append=True)
        self.assertEqual(self.read("/etc/log"), b"ab")
        st_ = os.stat(os.path.join(self.root, "etc", "log"))
        self.assertEqual((st_.st_uid, st_.st_mode & 0o777), (100000, 0o640))

    def test_large_body_from_file(self):
        """A spooled body is copied by descriptor, whole."""
        with tempfile.TemporaryFile() as body:
            body.write(os.urandom(3 * 1024 * 1024 + 7))
            self.files.write_file("/big", body)
            body.seek(0)
            with open(os.path.join(self.root, "big"), "rb") as f:
                self.assertEqual(f.read(), body.read())

    def test_directories_and_symlinks(self):
        """Directories list, symlinks are created and read as links, delete removes the link only."""
        self.files.make_directory("/d", mode=0o755)
        self.files.make_directory("/d")  # exists: fine
        self.files.make_symlink("/d/link", "/etc/secret")
        entry = self.files.get("/d")
        self.assertEqual((entry.kind, entry.names, entry.mode), ("directory", ["link"], 0o755))
        link = self.files.get("/d/link")
        self.assertEqual((link.kind, link.target), ("symlink", "/etc/secret"))
        self.files.delete("/d/link")
        self.assertTrue(os.path.exists(os.path.join(self.root, "etc", "secret")))
        self.files.delete("/d")
        self.assertRaises(errors.NotFound, self.files.get, "/d")

    def test_escapes_stay_inside(self):
        """`..`, absolute symlinks and symlinked directories resolve inside the root."""
        os.symlink("/", os.path.join(self.root, "rootlink"))
        os.symlink("../../outside", os.path.join(self.root, "up"))
        os.symlink(self.outside, os.path.join(self.root, "abs"))
        self.assertEqual(self.read("/../../etc/secret"), b"container")
        self.assertEqual(self.read("/rootlink/etc/secret"), b"container")
        self.assertRaises(errors.NotFound, self.files.get, "/up/secret")
        self.assertRaises(errors.NotFound, self.files.get, "/abs/secret")
        self.files.write_file("/rootlink/etc/secret", io.BytesIO(b"changed"))
        self.assertRaises(errors.NotFound, self.files.write_file, "/abs/secret", io.BytesIO(b"evil"))
        self.assertRaises(errors.NotFound, self.files.make_directory, "/up/newdir")
        self.assertRaises(errors.NotFound, self.files.delete, "/abs/secret")
        with open(os.path.join(self.outside, "secret")) as f:
            self.assertEqual(f.read(), "host")
        self.assertEqual(os.listdir(self.outside), ["secret"])

    def test_final_symlink_points_inside(self):
        """Writing to a path whose last component is an absolute symlink writes the container's file."""
        os.symlink("/etc/secret", os.path.join(self.root, "shadowlink"))
        self.files.write_file("/shadowlink", io.BytesIO(b"via link"))
        with open(os.path.join(self.root, "etc", "secret")) as f:
            self.assertEqual(f.read(), "via link")

    def test_bad_paths(self):
        """The root itself cannot be written or deleted; special files are refused."""
        self.assertRaises(errors.BadRequest, self.files.delete, "/")
        self.assertRaises(errors.BadRequest, self.files.make_symlink, "/x", "")
        os.mkfifo(os.path.join(self.root, "fifo"))
        self.assertRaises(errors.BadRequest, self.files.get, "/fifo")

    def test_unmapped_id_refused(self):
        """An id outside the map is a 400, and nothing is created."""
        self.assertRaises(errors.BadRequest, self.files.make_directory, "/d2", uid=70000)
        self.assertRaises(errors.BadRequest, self.files.write_file, "/f2", io.BytesIO(b"x"), gid=70000)
        self.assertFalse(os.path.exists(os.path.join(self.root, "d2")))
        self.assertFalse(os.path.exists(os.path.join(self.root, "f2")))

    def test_special_files_never_opened(self):
        """A fifo or a device at the path is refused before it is opened (opening either can
        block or act); the write does not hang."""
        os.mkfifo(os.path.join(self.root, "etc", "hostname"))
        os.mknod(os.path.join(self.root, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        self.assertRaises(errors.BadRequest, self.files.write_file, "/etc/hostname", io.BytesIO(b"x"))
        self.assertRaises(errors.BadRequest, self.files.write_file, "/null", io.BytesIO(b"x"))
        self.assertRaises(errors.BadRequest, self.files.get, "/null")


class KernelFilesystemTests(SynchronousTestCase):
    """Nothing on proc, sysfs and their kin is read, written, created or deleted."""

    def test_proc_and_sys_refused(self):
        """A root whose paths lead into proc or sysfs (as a link into a proc the container
        mounted would) gets 403 for every operation."""
        proc = files.ContainerFiles("/proc", None)
        self.assertRaises(errors.Forbidden, proc.get, "/sys/kernel/hostname")
        self.assertRaises(errors.Forbidden, proc.write_file, "/sys/kernel/hostname", io.BytesIO(b"x"))
        self.assertRaises(errors.Forbidden, proc.make_directory, "/sys/newdir")
        self.assertRaises(errors.Forbidden, proc.delete, "/sys/kernel/hostname")
        sysfs = files.ContainerFiles("/sys", None)
        self.assertRaises(errors.Forbidden, sysfs.get, "/kernel")
        self.assertRaises(errors.Forbidden, sysfs.make_symlink, "/kernel/x", "/etc/passwd")
