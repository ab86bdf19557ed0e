"""Rendering a container's liblxc configuration, and asking liblxc about raw.lxc."""

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.config.schema import ConfigError
from lxdtx.instance import lxcconf
from lxdtx.instance.cgroups import Layout
from lxdtx.instance.idmap import Allocation, IdMap, Range

GB = 1 << 30
MAP = IdMap.from_allocation(Allocation(Range(1000000, 65536), Range(1000000, 65536)))
LAYOUT = Layout(v1={"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids",
                    "devices": "/sys/fs/cgroup/devices"}, swap_accounting=True)


def render(config=None, idmap=MAP, device_lines=(), **kw):
    args = dict(rootfs="/var/lib/lxdtx/containers/c1/rootfs", log_dir="/var/log/lxdtx/c1",
                config=config or {}, idmap=idmap, device_lines=list(device_lines), layout=LAYOUT,
                apparmor=False, host_cpus=4, host_memory=16 * GB, seccomp_path="/var/lib/lxdtx/seccomp/c1")
    args.update(kw)
    return lxcconf.render("c1", **args)


def pairs(text):
    """(key, value) of every config line."""
    out = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def values(text, key):
    return [v for k, v in pairs(text) if k == key]


class RenderTests(SynchronousTestCase):
    """render() output for privileged and unprivileged containers."""

    def test_unprivileged(self):
        """No includes; identity, id map, logs and console, no cap drops, device rules."""
        text = render().text
        self.assertEqual(values(text, "lxc.include"), [])
        self.assertEqual(values(text, "lxc.cgroup.devices.deny"), ["a"])
        self.assertIn("c 136:* rwm", values(text, "lxc.cgroup.devices.allow"))
        self.assertEqual(values(text, "lxc.uts.name"), ["c1"])
        self.assertEqual(values(text, "lxc.rootfs.path"), ["dir:/var/lib/lxdtx/containers/c1/rootfs"])
        self.assertEqual(values(text, "lxc.idmap"), ["u 0 1000000 65536", "g 0 1000000 65536"])
        self.assertEqual(values(text, "lxc.cap.drop"), [""])
        self.assertEqual(values(text, "lxc.apparmor.profile"), ["unconfined"])
        self.assertEqual(values(text, "lxc.log.file"), ["/var/log/lxdtx/c1/lxc.log"])
        self.assertEqual(values(text, "lxc.console.logfile"), ["/var/log/lxdtx/c1/console.log"])
        self.assertEqual(values(text, "lxc.console.buffer.size"), ["auto"])
        self.assertEqual(values(text, "lxc.mount.auto"), ["", "proc:rw sys:rw cgroup:mixed"])

    def test_privileged(self):
        """No id map, LXD's capability drops, /dev/net/tun allowed."""
        text = render(idmap=None).text
        self.assertEqual(values(text, "lxc.include"), [])
        self.assertEqual(values(text, "lxc.idmap"), [])
        self.assertEqual(values(text, "lxc.cap.drop"), ["", "sys_time sys_module sys_rawio mac_admin mac_override"])
        self.assertEqual(values(text, "lxc.mount.auto"), ["", "proc:mixed sys:mixed cgroup:mixed"])
        self.assertIn("c 10:200 rwm", values(text, "lxc.cgroup.devices.allow"))

    def test_seccomp(self):
        """The default policy is returned for the caller to write; the config points at it."""
        rendered = render()
        self.assertEqual(values(rendered.text, "lxc.seccomp.profile"), ["/var/lib/lxdtx/seccomp/c1"])
        self.assertTrue(rendered.seccomp.startswith("2\nblacklist\n"))
        self.assertEqual(rendered.seccomp_path, "/var/lib/lxdtx/seccomp/c1")

    def test_no_seccomp(self):
        """No policy: the profile key is cleared."""
        rendered = render({"security.syscalls.blacklist_default": "false"})
        self.assertEqual(values(rendered.text, "lxc.seccomp.profile"), [""])
        self.assertIsNone(rendered.seccomp)
        self.assertIsNone(rendered.seccomp_path)

    def test_seccomp_path_required(self):
        """A policy without a place to write it is a programming error."""
        self.assertRaises(ValueError, render, seccomp_path=None)

    def test_limits_prlimits_environment(self):
        """Cgroup limits, kernel limits and the environment."""
        text = render({"limits.memory": "64MB", "limits.processes": "50", "limits.kernel.nofile": "1000",
                       "limits.kernel.core": "unlimited", "environment.FOO": "a b=c", "environment.HOME": "/x"}).text
        self.assertEqual(values(text, "lxc.cgroup.memory.limit_in_bytes"), [str(64 << 20)])
        self.assertEqual(values(text, "lxc.cgroup.pids.max"), ["50"])
        self.assertEqual(values(text, "lxc.prlimit.nofile"), ["1000"])
        self.assertEqual(values(text, "lxc.prlimit.core"), ["unlimited"])
        self.assertEqual(values(text, "lxc.environment"), ["FOO=a b=c", "HOME=/x"])

    def test_unknown_prlimit(self):
        """A resource liblxc does not know names the key."""
        with self.assertRaises(ConfigError) as raised:
            render({"limits.kernel.nofiles": "5"})
        self.assertEqual(raised.exception.problems[0][0], "limits.kernel.nofiles")

    def test_line_breaks_refused(self):
        """A value with a line break would inject config lines: refused, naming the key."""
        for key in ("environment.X", "limits.kernel.nofile"):
            with self.assertRaises(ConfigError) as raised:
                render({key: "1\nlxc.hook.pre-start = /bin/evil"})
            self.assertEqual(raised.exception.problems[0][0], key)
        with self.assertRaises(ConfigError):
            render(device_lines=[("lxc.mount.entry", "a b\nlxc.hook.mount = /x")])
        with self.assertRaises(ConfigError):
            render(rootfs="/x\nlxc.hook.mount = /y")

    def test_bad_environment_name(self):
        """Environment names cannot hold `=` or spaces."""
        with self.assertRaises(ConfigError):
            render({"environment.A=B": "1"})

    def test_nesting(self):
        """Nesting mounts uncovered proc and sys; the argument overrides the key."""
        entries = values(render({"security.nesting": "true"}).text, "lxc.mount.entry")
        self.assertIn("proc dev/.lxc/proc proc create=dir,optional 0 0", entries)
        self.assertIn("sys dev/.lxc/sys sysfs create=dir,optional 0 0", entries)
        entries = values(render({"security.nesting": "true"}, nesting=False).text, "lxc.mount.entry")
        self.assertNotIn("proc dev/.lxc/proc proc create=dir,optional 0 0", entries)

    def test_apparmor(self):
        """True uses liblxc's generated profile with raw.apparmor; a name is used as given."""
        text = render({"raw.apparmor": "deny /x rw,\n\n  mount,", "security.nesting": "1"}, apparmor=True).text
        self.assertEqual(values(text, "lxc.apparmor.profile"), ["generated"])
        self.assertEqual(values(text, "lxc.apparmor.raw"), ["deny /x rw,", "mount,"])
        self.assertEqual(values(text, "lxc.apparmor.allow_nesting"), ["1"])
        text = render(apparmor="lxc-container-default").text
        self.assertEqual(values(text, "lxc.apparmor.profile"), ["lxc-container-default"])
        self.assertEqual(values(text, "lxc.apparmor.raw"), [])

    def test_nvidia(self):
        """nvidia.runtime renders LXD's environment and the mount hook."""
        text = render({"nvidia.runtime": "true"}, hook_dir="/hooks").text
        self.assertEqual(values(text, "lxc.environment"),
                         ["NVIDIA_VISIBLE_DEVICES=none", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"])
        self.assertEqual(values(text, "lxc.hook.mount"), ["/hooks/nvidia"])
        self.assertEqual(values(render().text, "lxc.hook.mount"), [])

    def test_nvidia_missing(self):
        """Without the hook or the tools the reason is LXD's message."""
        self.assertEqual(lxcconf.nvidia_runtime_missing("/nonexistent"), "The NVIDIA LXC hook couldn't be found")

    def test_order(self):
        """raw.lxc comes after the daemon's lines, device lines after raw.lxc."""
        text = render({"raw.lxc": "lxc.signal.halt = SIGUSR1\n\nlxc.cap.drop = sys_admin",
                       "limits.kernel.nofile": "10"},
                      device_lines=[("lxc.mount.entry", "/src dst none bind,create=dir 0 0")]).text
        keys = [k for k, _ in pairs(text)]
        self.assertEqual(keys[-3:], ["lxc.signal.halt", "lxc.cap.drop", "lxc.mount.entry"])
        self.assertLess(keys.index("lxc.prlimit.nofile"), keys.index("lxc.signal.halt"))

    def test_raw_lxc_forbidden(self):
        """raw.lxc keys the daemon owns are refused again at render time."""
        with self.assertRaises(ConfigError) as raised:
            render({"raw.lxc": "lxc.log.file = /tmp/x"})
        self.assertEqual(raised.exception.problems[0][0], "raw.lxc")

    def test_bad_device_key(self):
        """Device lines must have liblxc keys."""
        self.assertRaises(ValueError, render, device_lines=[("not a key", "x")])

    def test_liblxc_loads_it(self):
        """liblxc itself parses the rendered text."""
        import lxc

        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        text = render({"limits.memory": "64MB", "limits.kernel.nofile": "100", "environment.A": "1",
                       "security.nesting": "true", "raw.lxc": "lxc.signal.halt = SIGUSR1"},
                      device_lines=[("lxc.mount.entry", "/tmp tmp none bind,create=dir 0 0")]).text
        path = os.path.join(d, "config")
        with open(path, "w") as f:
            f.write(text)
        container = lxc.Container("c1", config_path=d)
        self.assertTrue(container.load_config(path))
        self.assertEqual(container.get_config_item("lxc.prlimit.nofile"), "100")
        self.assertEqual(container.get_config_item("lxc.idmap"), "u 0 1000000 65536\ng 0 1000000 65536")


class ValidateRawLxcTests(SynchronousTestCase):
    """validate_raw_lxc() asks liblxc."""

    def test_valid(self):
        """Known keys pass."""
        lxcconf.validate_raw_lxc("lxc.cap.drop = sys_admin\nlxc.signal.halt = SIGUSR1\n")
        lxcconf.validate_raw_lxc("")

    def test_invalid_key(self):
        """An unknown key is an error naming raw.lxc and the line."""
        with self.assertRaises(ConfigError) as raised:
            lxcconf.validate_raw_lxc("lxc.cap.drop = sys_admin\n# note\nlxc.bogus.key = 1\n")
        self.assertEqual(raised.exception.problems[0][0], "raw.lxc")
        self.assertIn("line 3: lxc.bogus.key = 1", str(raised.exception))

    def test_invalid_value(self):
        """A value liblxc rejects is an error too."""
        with self.assertRaises(ConfigError):
            lxcconf.validate_raw_lxc("lxc.autodev = maybe\n")


class IdmappedRootfsTests(SynchronousTestCase):
    """An unshifted rootfs is mounted idmapped by liblxc; never for a privileged container."""

    def test_idmapped(self):
        """`idmapped_rootfs` adds lxc.rootfs.options = idmap=container beside the id map."""
        text = render(idmapped_rootfs=True).text
        self.assertEqual(values(text, "lxc.rootfs.options"), ["idmap=container"])
        self.assertTrue(values(text, "lxc.idmap"))

    def test_default_and_privileged(self):
        """Shifted on disk (the default) or privileged: no rootfs option."""
        self.assertEqual(values(render().text, "lxc.rootfs.options"), [])
        self.assertEqual(values(render(idmap=None, idmapped_rootfs=True).text, "lxc.rootfs.options"), [])
