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


# The templates of the Ubuntu/Debian images of images.linuxcontainers.org (distrobuilder).
_HOSTNAME = "{{ container.name }}\n"
_HOSTS = """127.0.1.1\t{{ container.name }}
127.0.0.1\tlocalhost
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
"""
_USER_DATA = """{{ config_get("user.user-data", properties.default) }}
"""
_META_DATA = """instance-id: {{ container.name }}
local-hostname: {{ container.name }}
{{ config_get("user.meta-data", "") }}
"""
_NETWORK = """{% if config_get("user.network-config", "") == "" %}version: 1
config:
  - type: physical
    name: {% if instance.type == "virtual-machine" %}enp5s0{% else %}eth0{% endif %}
    subnets:
      - type: {% if config_get("user.network-mode", "") == "link-local" %}manual{% else %}dhcp{% endif %}
        control: auto{% else %}{{ config_get("user.network-config", "") }}{% endif %}
"""


class RealImageTemplateTests(SynchronousTestCase):
    """The templates real LXD images carry render as LXD renders them."""

    def _context(self, config=None, properties=None):
        config = config or {}
        return {"container": {"name": "c1"}, "instance": {"type": "container"}, "config": config,
                "properties": properties or {}, "trigger": "create", "path": "/etc/hostname",
                "config_get": templates._config_getter(config)}

    def test_hostname_and_hosts(self):
        """hostname and hosts carry the container's name."""
        self.assertEqual(templates.render(_HOSTNAME, self._context()), "c1\n")
        self.assertTrue(templates.render(_HOSTS, self._context()).startswith("127.0.1.1\tc1\n127.0.0.1\tlocalhost\n"))

    def test_cloud_init_user_data(self):
        """config_get falls back to the template's property when the key is unset."""
        context = self._context(properties={"default": "#cloud-config\n{}"})
        self.assertEqual(templates.render(_USER_DATA, context), "#cloud-config\n{}\n")
        context = self._context({"user.user-data": "#cloud-config\nx: 1"}, {"default": "#cloud-config\n{}"})
        self.assertEqual(templates.render(_USER_DATA, context), "#cloud-config\nx: 1\n")

    def test_meta_data(self):
        """meta-data names the instance."""
        self.assertEqual(templates.render(_META_DATA, self._context()), "instance-id: c1\nlocal-hostname: c1\n\n")

    def test_network_config(self):
        """Nested ifs with comparisons choose the container's interface and mode."""
        out = templates.render(_NETWORK, self._context())
        self.assertIn("name: eth0", out)
        self.assertIn("type: dhcp", out)
        out = templates.render(_NETWORK, self._context({"user.network-config": "version: 2"}))
        self.assertEqual(out, "version: 2\n")

    def test_pongo_filter_arguments(self):
        """pongo2's `|default:"x"` and an unknown variable render as pongo2 does."""
        self.assertEqual(templates.render('{{ nothing.here|default:"d" }}|{{ nothing.here }}|', {}), "d||")


class HostileTemplateTests(SynchronousTestCase):
    """Templates written to escape or exhaust the daemon fail with a clear error."""

    def _refused(self, text, expect, **kw):
        with self.assertRaises(templates.TemplateError) as e:
            templates.render(text, {"container": {"name": "c1"}, "config": {}}, **kw)
        self.assertIn(expect, str(e.exception))
        return e.exception

    def test_internals(self):
        """Attribute access to Python internals is refused by the sandbox."""
        self._refused("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed")
        self._refused("{{ container.name.__class__ }}|{{ ().__class__.__base__.__subclasses__() }}", "not allowed")
        self._refused("{{ cycler.__init__.__globals__ }}", "not allowed")

    def test_string_format_escape(self):
        """str.format cannot reach attributes the sandbox hides."""
        self._refused("{{ '{0.__class__}'.format(container) }}", "not allowed")

    def test_huge_output(self):
        """Output beyond the bound stops rendering."""
        self._refused("{% for i in range(9999) %}{{ 'x' * 1000 }}{% endfor %}", "larger than", max_output=1 << 20)

    def test_endless_loops(self):
        """Nested loops that would run for ages stop at the time bound, even without output."""
        self._refused("{% for a in range(9999) %}{% for b in range(9999) %}{% for c in range(9999) %}"
                      "{% endfor %}{% endfor %}{% endfor %}", "longer than", max_seconds=0.2)

    def test_huge_range(self):
        """A range past the bound is refused outright."""
        self._refused("{% for i in range(10**9) %}{% endfor %}", "range of more than")

    def test_syntax_error(self):
        """A malformed template names its line."""
        self._refused("a\n{% if x %}", "line")
