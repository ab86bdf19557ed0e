"""Image templates: rendering, and applying them into a rootfs planted with fifos and links."""

import os
import shutil
import tempfile
import threading

import yaml
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.instance import templates

# Longer than any apply takes; a hang shows as a failure, not a stuck test run.
_BOUND = 10


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _read(path):
    with open(path) as f:
        return f.read()


class RenderTests(SynchronousTestCase):
    """The pongo2 subset images use."""

    def test_values_and_default(self):
        """Dotted lookups, and `default` for empty values."""
        context = {"container": {"name": "c1"}, "properties": {}}
        self.assertEqual(templates.render("{{ container.name }}|{{ properties.x|default:\"d\" }}", context), "c1|d")

    def test_if_else(self):
        """`if`/`else`/`endif` with comparisons."""
        text = "{% if trigger == \"create\" %}new{% else %}old{% endif %}"
        self.assertEqual(templates.render(text, {"trigger": "create"}), "new")
        self.assertEqual(templates.render(text, {"trigger": "copy"}), "old")

    def test_unbalanced(self):
        """An `if` without `endif` is an error."""
        with self.assertRaises(templates.TemplateError):
            templates.render("{% if x %}", {})


class ApplyTests(SynchronousTestCase):
    """apply() writes regular files inside the rootfs and nowhere else."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lxdtx-templates-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.container = os.path.join(self.dir, "container")
        self.rootfs = os.path.join(self.container, "rootfs")
        os.makedirs(os.path.join(self.rootfs, "etc"))
        os.makedirs(os.path.join(self.container, "templates"))
        _write(os.path.join(self.container, "templates", "hostname.tpl"), "{{ container.name }}\n")
        self.host = os.path.join(self.dir, "host")
        os.mkdir(self.host)
        self.sentinel = os.path.join(self.host, "sentinel")
        _write(self.sentinel, "host sentinel\n")
        self.metadata({"/etc/hostname": {"when": ["create", "start"], "template": "hostname.tpl"}})

    def metadata(self, entries):
        _write(os.path.join(self.container, "metadata.yaml"), yaml.safe_dump({"templates": entries}))

    def apply(self, trigger="start"):
        """apply() in a thread, failing (and unblocking it) if it does not finish in time."""
        failure = []

        def target():
            try:
                templates.apply(self.container, trigger, {"container": {"name": "c1"}}, os.getuid(), os.getgid())
            except BaseException as e:
                failure.append(e)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(_BOUND)
        if thread.is_alive():
            self._unblock()
            thread.join(_BOUND)
            self.fail(f"templates.apply still running after {_BOUND}s")
        if failure:
            raise failure[0]

    def _unblock(self):
        """Open every fifo of the rootfs for reading once, so a writer blocked on one returns."""
        for directory, _, names in os.walk(self.rootfs):
            for name in names:
                path = os.path.join(directory, name)
                if os.path.exists(path) and not os.path.isfile(path):
                    try:
                        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
                    except OSError:
                        pass

    def assert_sentinel(self):
        self.assertEqual(_read(self.sentinel), "host sentinel\n")
        self.assertEqual(os.listdir(self.host), ["sentinel"])

    def test_renders_and_creates(self):
        """A missing target is created, an existing one replaced; other triggers do nothing."""
        self.apply("copy")
        self.assertFalse(os.path.exists(os.path.join(self.rootfs, "etc", "hostname")))
        self.apply()
        self.assertEqual(_read(os.path.join(self.rootfs, "etc", "hostname")), "c1\n")
        _write(os.path.join(self.rootfs, "etc", "hostname"), "old name, longer than the new\n")
        self.apply()
        self.assertEqual(_read(os.path.join(self.rootfs, "etc", "hostname")), "c1\n")

    def test_missing_directory_skipped(self):
        """A target whose directory does not exist in the rootfs is skipped."""
        self.metadata({"/nope/hostname": {"when": ["start"], "template": "hostname.tpl"}})
        self.apply()
        self.assertFalse(os.path.exists(os.path.join(self.rootfs, "nope")))

    def test_fifo_target(self):
        """A fifo planted at /etc/hostname is skipped at once, not opened (which would hang)."""
        fifo = os.path.join(self.rootfs, "etc", "hostname")
        os.mkfifo(fifo)
        with _Warnings(self) as warnings:
            self.apply()
        self.assertTrue(os.path.exists(fifo) and not os.path.isfile(fifo))
        self.assertIn("/etc/hostname", warnings.text())

    def test_directory_target(self):
        """A directory target is skipped with a warning."""
        os.mkdir(os.path.join(self.rootfs, "etc", "hostname"))
        with _Warnings(self) as warnings:
            self.apply()
        self.assertIn("not a regular file", warnings.text())

    def test_absolute_symlink_to_host(self):
        """`/etc/hostname -> <host sentinel>` resolves inside the rootfs: the host file is untouched."""
        os.symlink(self.sentinel, os.path.join(self.rootfs, "etc", "hostname"))
        self.apply()
        self.assert_sentinel()

    def test_relative_symlink_climbing_out(self):
        """`..` past the rootfs stops at the rootfs: the host file is untouched."""
        os.symlink("../../host/sentinel", os.path.join(self.rootfs, "etc", "hostname"))
        self.apply()
        self.assert_sentinel()

    def test_symlink_inside_rootfs_followed(self):
        """A link to a file inside the rootfs is written through, as in the container."""
        os.makedirs(os.path.join(self.rootfs, "run"))
        _write(os.path.join(self.rootfs, "run", "hostname"), "old\n")
        os.symlink("/run/hostname", os.path.join(self.rootfs, "etc", "hostname"))
        self.apply()
        self.assertEqual(_read(os.path.join(self.rootfs, "run", "hostname")), "c1\n")

    def test_rootfs_symlink(self):
        """A container whose rootfs is a link to a host directory gets no template written there."""
        shutil.rmtree(self.rootfs)
        os.mkdir(os.path.join(self.host, "etc"))
        os.symlink(self.host, self.rootfs)
        with self.assertRaises(OSError):
            self.apply()
        self.assertEqual(os.listdir(os.path.join(self.host, "etc")), [])

    def test_template_file_symlink(self):
        """A template file that is a link to a host file is not read into the container."""
        os.unlink(os.path.join(self.container, "templates", "hostname.tpl"))
        os.symlink(self.sentinel, os.path.join(self.container, "templates", "hostname.tpl"))
        with _Warnings(self):
            self.apply()
        self.assertFalse(os.path.exists(os.path.join(self.rootfs, "etc", "hostname")))

    def test_metadata_symlink(self):
        """A metadata.yaml that is a link is not read: no templates apply."""
        os.unlink(os.path.join(self.container, "metadata.yaml"))
        _write(os.path.join(self.host, "metadata.yaml"),
               yaml.safe_dump({"templates": {"/etc/hostname": {"when": ["start"], "template": "hostname.tpl"}}}))
        os.symlink(os.path.join(self.host, "metadata.yaml"), os.path.join(self.container, "metadata.yaml"))
        with _Warnings(self):
            self.apply()
        self.assertFalse(os.path.exists(os.path.join(self.rootfs, "etc", "hostname")))

    def test_kernel_filesystem_target(self):
        """A target on a kernel file system (a mounted proc, say) is skipped."""
        _write(os.path.join(self.rootfs, "etc", "hostname"), "kept\n")
        self.patch(templates, "kernel_filesystem", lambda fd: "proc")
        with _Warnings(self) as warnings:
            self.apply()
        self.assertEqual(_read(os.path.join(self.rootfs, "etc", "hostname")), "kept\n")
        self.assertIn("proc", warnings.text())

    def test_create_only(self):
        """`create_only` leaves an existing file alone, and never opens a fifo."""
        self.metadata({"/etc/hostname": {"when": ["start"], "template": "hostname.tpl", "create_only": True}})
        _write(os.path.join(self.rootfs, "etc", "hostname"), "kept\n")
        self.apply()
        self.assertEqual(_read(os.path.join(self.rootfs, "etc", "hostname")), "kept\n")


class _Warnings:
    """Collects what templates logs while in use (a Logger of its own, no global observer)."""

    def __init__(self, case):
        self._case = case
        self.events = []

    def __enter__(self):
        self._case.patch(templates, "log", Logger(observer=self.events.append))
        return self

    def __exit__(self, *exc):
        return False

    def text(self):
        return "\n".join(formatEvent(e) for e in self.events)
