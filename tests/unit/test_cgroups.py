"""Cgroup layout detection and the translation of limits.* keys to cgroup settings."""

import os
import tempfile

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.config.schema import ConfigError
from lxdtx.instance import cgroups
from lxdtx.instance.cgroups import V1, V2, Layout

GB = 1 << 30
MB = 1 << 20


def hybrid(**overrides):
    """The layout of a v1 host with an empty unified hierarchy (as on this project's host)."""
    values = dict(
        v1={c: f"/sys/fs/cgroup/{c}" for c in
            ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer")},
        unified="/sys/fs/cgroup/unified", unified_controllers=["hugetlb"],
        base={}, swap_accounting=True, blkio_weight="blkio.bfq.weight",
    )
    values.update(overrides)
    return Layout(**values)


def unified(**overrides):
    """The layout of a pure cgroup v2 host."""
    values = dict(unified="/sys/fs/cgroup", unified_controllers=["cpuset", "cpu", "io", "memory", "pids"],
                  base={"": "/"}, swap_accounting=True, blkio_weight="io.weight")
    values.update(overrides)
    return Layout(**values)


class FakeHierarchies:
    """Mount points with the files detect() looks at, in a temporary directory."""

    def __init__(self, case):
        self.root = tempfile.mkdtemp(prefix="lxdtx-cgroups-")
        case.addCleanup(self._remove)

    def _remove(self):
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=False):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                os.rmdir(os.path.join(dirpath, name))
        os.rmdir(self.root)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def file(self, *parts, content=""):
        path = self.path(*parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
        return path


class DetectTests(SynchronousTestCase):
    """detect() reads /proc/mounts-style text and the hierarchies it names."""

    def test_hybrid(self):
        """v1 controllers come from `cgroup` mounts, the rest from the unified mount."""
        fake = FakeHierarchies(self)
        fake.file("memory", "memory.memsw.limit_in_bytes")
        fake.file("blkio", "lxc.pivot", "blkio.bfq.weight")
        fake.file("unified", "cgroup.controllers", content="hugetlb\n")
        for name in ("cpu", "cpuset", "pids", "freezer", "devices"):
            os.makedirs(fake.path(name), exist_ok=True)
        mounts = "\n".join([
            "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0",
            f"cgroup {fake.path('cpu')} cgroup rw,relatime,cpu 0 0",
            f"cgroup {fake.path('cpuset')} cgroup rw,relatime,cpuset 0 0",
            f"cgroup {fake.path('memory')} cgroup rw,relatime,memory 0 0",
            f"cgroup {fake.path('pids')} cgroup rw,relatime,pids 0 0",
            f"cgroup {fake.path('blkio')} cgroup rw,relatime,blkio 0 0",
            f"cgroup {fake.path('freezer')} cgroup rw,relatime,freezer 0 0",
            f"cgroup {fake.path('devices')} cgroup rw,relatime,devices 0 0",
            f"cgroup {fake.path('systemd')} cgroup rw,relatime,name=systemd 0 0",
            f"cgroup2 {fake.path('unified')} cgroup2 rw,relatime 0 0",
            "proc /proc proc rw 0 0",
        ])
        init = "8:pids:/\n4:memory:/init.scope\n1:cpu:/\n0::/\n"
        layout = cgroups.detect(mounts, init_cgroup_text=init)
        self.assertEqual(layout.version("memory"), V1)
        self.assertEqual(layout.version("hugetlb"), V2)
        self.assertEqual(layout.version("net_prio"), None)
        self.assertEqual(layout.version("cpuacct"), None)
        self.assertTrue(layout.has("freezer"))
        self.assertFalse(layout.has("net_prio"))
        self.assertTrue(layout.swap_accounting)
        self.assertEqual(layout.blkio_weight, "blkio.bfq.weight")
        self.assertEqual(layout.container_path("memory", "c1"),
                         fake.path("memory", "init.scope", "lxc.payload.c1"))
        self.assertEqual(layout.container_path("pids", "c1"), fake.path("pids", "lxc.payload.c1"))
        self.assertEqual(layout.container_path("net_prio", "c1"), None)
        self.assertEqual(layout.config_key("memory.limit_in_bytes"), "lxc.cgroup.memory.limit_in_bytes")

    def test_pure_v2(self):
        """On a v2-only host every available controller is v2; io is blkio, devices and freezer built in."""
        fake = FakeHierarchies(self)
        fake.file("cgroup.controllers", content="cpuset cpu io memory hugetlb pids rdma misc\n")
        fake.file("init.scope", "memory.swap.max")
        fake.file("init.scope", "io.weight")
        mounts = f"cgroup2 {fake.root} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
        layout = cgroups.detect(mounts, init_cgroup_text="0::/init.scope\n")
        for controller in ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "freezer", "devices"):
            self.assertEqual(layout.version(controller), V2, controller)
        self.assertEqual(layout.version("net_prio"), None)
        self.assertTrue(layout.swap_accounting)
        self.assertEqual(layout.blkio_weight, "io.weight")
        self.assertEqual(layout.container_path("memory", "c1"),
                         fake.path("init.scope", "lxc.payload.c1"))
        self.assertEqual(layout.config_key("memory.max"), "lxc.cgroup2.memory.max")
        self.assertEqual(layout.config_key("io.weight"), "lxc.cgroup2.io.weight")
        self.assertEqual(layout.file_path("c1", "pids.max"), fake.path("init.scope", "lxc.payload.c1", "pids.max"))

    def test_probe_cgroup(self):
        """With no child cgroup to look at, a probe cgroup is made and removed again."""
        fake = FakeHierarchies(self)
        fake.file("cgroup.controllers", content="memory io\n")
        layout = cgroups.detect(f"cgroup2 {fake.root} cgroup2 rw 0 0\n", init_cgroup_text="0::/\n")
        self.assertFalse(layout.swap_accounting)
        self.assertEqual(layout.blkio_weight, None)
        self.assertEqual([n for n in os.listdir(fake.root) if n.startswith("lxdtx.probe")], [])

    def test_no_swap_accounting(self):
        """Without memory.memsw files, swap limits are not written."""
        fake = FakeHierarchies(self)
        os.makedirs(fake.path("memory"))
        layout = cgroups.detect(f"cgroup {fake.path('memory')} cgroup rw,memory 0 0\n", init_cgroup_text="")
        self.assertFalse(layout.swap_accounting)
        self.assertEqual(layout.version("memory"), V1)
        self.assertEqual(layout.version("pids"), None)

    def test_escaped_mount_point(self):
        """Octal escapes in /proc/mounts are decoded."""
        fake = FakeHierarchies(self)
        os.makedirs(fake.path("with space"))
        text = f"cgroup {fake.path('with space').replace(' ', chr(92) + '040')} cgroup rw,pids 0 0\n"
        layout = cgroups.detect(text, init_cgroup_text="")
        self.assertEqual(layout.mountpoint("pids"), fake.path("with space"))

    def test_live_host(self):
        """The real host's layout has memory and pids somewhere."""
        layout = cgroups.detect()
        self.assertTrue(layout.has("memory"))
        self.assertTrue(layout.has("pids"))


class LayoutTests(SynchronousTestCase):
    """Paths and keys a Layout answers."""

    def test_process_path(self):
        """A process's cgroup directory comes from its /proc/<pid>/cgroup."""
        layout = hybrid()
        text = "8:pids:/lxc.payload.c1-1\n4:memory:/lxc.payload.c1-1\n0::/lxc.payload.c1-1\n"
        self.assertEqual(layout.process_path("memory", 42, text), "/sys/fs/cgroup/memory/lxc.payload.c1-1")
        self.assertEqual(layout.process_path("hugetlb", 42, text), "/sys/fs/cgroup/unified/lxc.payload.c1-1")
        self.assertEqual(layout.process_path("cpu", 42, text), None)

    def test_controller_of(self):
        """File names map to their controller."""
        layout = hybrid()
        self.assertEqual(layout.controller_of("memory.memsw.limit_in_bytes"), "memory")
        self.assertEqual(layout.controller_of("io.weight"), "blkio")
        self.assertEqual(layout.controller_of("cpu.cfs_quota_us"), "cpu")
        self.assertEqual(layout.file_path("c1", "blkio.bfq.weight"),
                         "/sys/fs/cgroup/blkio/lxc.payload.c1/blkio.bfq.weight")

    def test_process_path_live(self):
        """Our own process has a memory cgroup directory that exists."""
        layout = cgroups.detect()
        path = layout.process_path("memory", os.getpid())
        self.assertTrue(path and os.path.isdir(path), path)


class LimitsV1Tests(SynchronousTestCase):
    """limits() on cgroup v1 controllers gives `lxc.cgroup.*` lines."""

    def limits(self, config, layout=None, cpus=4, memory=16 * GB, **kw):
        return cgroups.limits(config, layout or hybrid(), cpus, memory, **kw)

    def test_nothing(self):
        """No limits.* key: no lines."""
        self.assertEqual(self.limits({}), [])

    def test_memory_hard(self):
        """A hard memory limit plus a 90% soft limit; swap stays allowed."""
        self.assertEqual(self.limits({"limits.memory": "64MB"}), [
            ("lxc.cgroup.memory.limit_in_bytes", str(64 * MB)),
            ("lxc.cgroup.memory.soft_limit_in_bytes", str(round(64 * MB * 0.9))),
        ])

    def test_memory_percent(self):
        """`N%` is a share of host memory (LXD's integer arithmetic)."""
        lines = dict(self.limits({"limits.memory": "25%"}, memory=1000001))
        self.assertEqual(lines["lxc.cgroup.memory.limit_in_bytes"], str((1000001 // 100) * 25))

    def test_memory_soft(self):
        """enforce=soft sets only the soft limit."""
        self.assertEqual(self.limits({"limits.memory": "1GB", "limits.memory.enforce": "soft"}), [
            ("lxc.cgroup.memory.soft_limit_in_bytes", str(GB)),
        ])

    def test_memory_no_swap(self):
        """swap=false caps memory+swap at the memory limit and sets swappiness 0."""
        self.assertEqual(self.limits({"limits.memory": "64MB", "limits.memory.swap": "false"}), [
            ("lxc.cgroup.memory.limit_in_bytes", str(64 * MB)),
            ("lxc.cgroup.memory.memsw.limit_in_bytes", str(64 * MB)),
            ("lxc.cgroup.memory.soft_limit_in_bytes", str(round(64 * MB * 0.9))),
            ("lxc.cgroup.memory.swappiness", "0"),
        ])

    def test_memory_no_swap_accounting(self):
        """Without swap accounting no memsw line is written."""
        lines = self.limits({"limits.memory": "64MB", "limits.memory.swap": "no"},
                            layout=hybrid(swap_accounting=False))
        self.assertNotIn("lxc.cgroup.memory.memsw.limit_in_bytes", dict(lines))

    def test_swap_priority(self):
        """Swappiness is 60 - 10 + priority."""
        self.assertEqual(self.limits({"limits.memory.swap.priority": "3"}),
                         [("lxc.cgroup.memory.swappiness", "53")])

    def test_cpu_allowance_percent(self):
        """A percentage is cpu shares (10 per percent + 24)."""
        self.assertEqual(self.limits({"limits.cpu.allowance": "50%"}), [
            ("lxc.cgroup.cpu.shares", "524"), ("lxc.cgroup.cpu.cfs_period_us", "100000"),
        ])

    def test_cpu_allowance_time(self):
        """`Qms/Pms` is a CFS quota and period in microseconds."""
        self.assertEqual(self.limits({"limits.cpu.allowance": "25ms/100ms"}), [
            ("lxc.cgroup.cpu.cfs_period_us", "100000"), ("lxc.cgroup.cpu.cfs_quota_us", "25000"),
        ])

    def test_cpu_priority(self):
        """A lower priority lowers the shares by one per step."""
        self.assertEqual(self.limits({"limits.cpu.priority": "0"})[0], ("lxc.cgroup.cpu.shares", "1014"))
        self.assertEqual(self.limits({"limits.cpu.priority": "5", "limits.cpu.allowance": "10%"})[0],
                         ("lxc.cgroup.cpu.shares", "119"))

    def test_cpu_count(self):
        """A count takes the first CPUs, capped at what the host has."""
        self.assertEqual(self.limits({"limits.cpu": "2"}), [("lxc.cgroup.cpuset.cpus", "0-1")])
        self.assertEqual(self.limits({"limits.cpu": "64"}, cpus=2), [("lxc.cgroup.cpuset.cpus", "0-1")])
        self.assertEqual(self.limits({"limits.cpu": "2"}, cpus=[2, 3, 5]), [("lxc.cgroup.cpuset.cpus", "2-3")])

    def test_cpu_set(self):
        """A set or range pins those CPUs."""
        self.assertEqual(self.limits({"limits.cpu": "1,3"}), [("lxc.cgroup.cpuset.cpus", "1,3")])
        self.assertEqual(self.limits({"limits.cpu": "1-1"}), [("lxc.cgroup.cpuset.cpus", "1")])
        self.assertEqual(self.limits({"limits.cpu": "0-2,3"}), [("lxc.cgroup.cpuset.cpus", "0-3")])

    def test_cpu_set_missing_cpu(self):
        """A CPU the host lacks is an error naming limits.cpu."""
        with self.assertRaises(ConfigError) as raised:
            self.limits({"limits.cpu": "0-7"}, cpus=4)
        self.assertEqual(raised.exception.problems[0][0], "limits.cpu")
        self.assertIn("CPU 4 does not exist", str(raised.exception))

    def test_processes(self):
        """limits.processes is pids.max."""
        self.assertEqual(self.limits({"limits.processes": "50"}), [("lxc.cgroup.pids.max", "50")])

    def test_disk_priority(self):
        """Disk priority is weight 100*P, at least 10, in the file the kernel offers."""
        self.assertEqual(self.limits({"limits.disk.priority": "7"}), [("lxc.cgroup.blkio.bfq.weight", "700")])
        self.assertEqual(self.limits({"limits.disk.priority": "0"}), [("lxc.cgroup.blkio.bfq.weight", "10")])
        self.assertEqual(self.limits({"limits.disk.priority": "7"}, layout=hybrid(blkio_weight=None)), [])

    def test_network_priority(self):
        """With net_prio mounted each host interface gets the priority; without it nothing."""
        self.assertEqual(self.limits({"limits.network.priority": "4"}), [])
        layout = hybrid()
        layout.v1["net_prio"] = "/sys/fs/cgroup/net_prio"
        self.assertEqual(self.limits({"limits.network.priority": "4"}, layout=layout,
                                     host_interfaces=["lo", "eth0"]), [
            ("lxc.cgroup.net_prio.ifpriomap", "lo 4"), ("lxc.cgroup.net_prio.ifpriomap", "eth0 4"),
        ])

    def test_missing_controllers(self):
        """Controllers the host lacks are skipped."""
        layout = Layout(v1={"memory": "/m"})
        self.assertEqual(cgroups.limits({"limits.processes": "5", "limits.cpu": "1", "limits.memory": "1GB"},
                                        layout, 4, GB), [
            ("lxc.cgroup.memory.limit_in_bytes", str(GB)),
            ("lxc.cgroup.memory.soft_limit_in_bytes", str(round(GB * 0.9))),
        ])

    def test_bad_values(self):
        """Values that cannot be applied are errors naming their key."""
        for key, value in [("limits.memory", "12QB"), ("limits.processes", "many"),
                           ("limits.cpu.allowance", "fast"), ("limits.cpu.allowance", "5ms/0ms"),
                           ("limits.cpu", "a-b"), ("limits.cpu", "0"), ("limits.memory", "x%")]:
            with self.assertRaises(ConfigError, msg=f"{key}={value}") as raised:
                self.limits({key: value})
            self.assertEqual(raised.exception.problems[0][0], key)


class LimitsV2Tests(SynchronousTestCase):
    """limits() on the unified hierarchy gives `lxc.cgroup2.*` lines."""

    def test_memory_and_swap(self):
        """memory.max, memory.high at 90%, and memory.swap.max 0 when swap is off."""
        lines = cgroups.limits({"limits.memory": "64MB", "limits.memory.swap": "false",
                                "limits.memory.swap.priority": "2"}, unified(), 4, GB)
        self.assertEqual(lines, [
            ("lxc.cgroup2.memory.max", str(64 * MB)),
            ("lxc.cgroup2.memory.high", str(round(64 * MB * 0.9))),
            ("lxc.cgroup2.memory.swap.max", "0"),
        ])

    def test_memory_soft(self):
        """A soft limit is memory.high."""
        lines = cgroups.limits({"limits.memory": "64MB", "limits.memory.enforce": "soft"}, unified(), 4, GB)
        self.assertEqual(lines, [("lxc.cgroup2.memory.high", str(64 * MB))])

    def test_cpu(self):
        """Shares become cpu.weight; the quota is cpu.max."""
        self.assertEqual(cgroups.limits({"limits.cpu.allowance": "50ms/200ms"}, unified(), 4, GB), [
            ("lxc.cgroup2.cpu.max", "50000 200000"),
        ])
        self.assertEqual(cgroups.limits({"limits.cpu.allowance": "50%", "limits.cpu": "3"}, unified(), 4, GB), [
            ("lxc.cgroup2.cpuset.cpus", "0-2"),
            ("lxc.cgroup2.cpu.weight", "51"), ("lxc.cgroup2.cpu.max", "max 100000"),
        ])

    def test_pids_and_io(self):
        """pids.max and io.weight."""
        self.assertEqual(cgroups.limits({"limits.processes": "9", "limits.disk.priority": "2",
                                         "limits.network.priority": "5"}, unified(), 4, GB), [
            ("lxc.cgroup2.pids.max", "9"), ("lxc.cgroup2.io.weight", "200"),
        ])

    @given(st.integers(min_value=0, max_value=1 << 20))
    def test_weight_range(self, shares):
        """Any shares value maps into cpu.weight's 1..10000, the default 1024 to the default 100."""
        weight = cgroups._shares_to_weight(shares)
        self.assertTrue(1 <= weight <= 10000)
        self.assertEqual(cgroups._shares_to_weight(1024), 100)


class LiveUpdatesTests(SynchronousTestCase):
    """live_updates() writes only what changed, and resets what was removed."""

    def updates(self, old, new, layout=None, **kw):
        return cgroups.live_updates(old, new, layout or hybrid(), 4, 16 * GB, **kw)

    def test_unchanged(self):
        """No limits change: no writes (other keys don't matter)."""
        self.assertEqual(self.updates({"limits.memory": "1GB"}, {"limits.memory": "1GB", "user.x": "1"}), [])

    def test_memory_set(self):
        """A new memory limit resets the three files first, then sets them."""
        self.assertEqual(self.updates({}, {"limits.memory": "64MB"}), [
            ("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1"),
            ("memory.soft_limit_in_bytes", "-1"),
            ("memory.limit_in_bytes", str(64 * MB)), ("memory.soft_limit_in_bytes", str(round(64 * MB * 0.9))),
        ])

    def test_memory_removed(self):
        """A removed memory limit leaves the files unlimited."""
        self.assertEqual(self.updates({"limits.memory": "64MB"}, {}), [
            ("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1"),
            ("memory.soft_limit_in_bytes", "-1"),
        ])

    def test_swap(self):
        """Turning swap off writes memsw and swappiness; removing the key brings swappiness back to 60."""
        off = self.updates({"limits.memory": "64MB"}, {"limits.memory": "64MB", "limits.memory.swap": "false"})
        self.assertIn(("memory.memsw.limit_in_bytes", str(64 * MB)), off)
        self.assertEqual(off[-1], ("memory.swappiness", "0"))
        back = self.updates({"limits.memory.swap": "false"}, {})
        self.assertEqual(back[-1], ("memory.swappiness", "60"))

    def test_cpu(self):
        """Cpu keys write shares, period and quota; removal restores the defaults."""
        self.assertEqual(self.updates({}, {"limits.cpu.allowance": "20ms/50ms"}), [
            ("cpu.shares", "1024"), ("cpu.cfs_period_us", "50000"), ("cpu.cfs_quota_us", "20000"),
        ])
        self.assertEqual(self.updates({"limits.cpu.allowance": "20ms/50ms"}, {}), [
            ("cpu.shares", "1024"), ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "-1"),
        ])

    def test_cpuset(self):
        """limits.cpu changes the cpuset; removal gives back every CPU."""
        self.assertEqual(self.updates({}, {"limits.cpu": "1"}), [("cpuset.cpus", "0")])
        self.assertEqual(self.updates({"limits.cpu": "1"}, {}), [("cpuset.cpus", "0-3")])

    def test_processes_and_disk(self):
        """Removed process and disk limits go to max and the default weight (priority 5)."""
        self.assertEqual(self.updates({"limits.processes": "5", "limits.disk.priority": "1"}, {}), [
            ("pids.max", "max"), ("blkio.bfq.weight", "500"),
        ])

    def test_network(self):
        """Network priority rewrites every interface's priority (0 when removed)."""
        layout = hybrid()
        layout.v1["net_prio"] = "/n"
        self.assertEqual(self.updates({"limits.network.priority": "3"}, {}, layout=layout, host_interfaces=["lo"]),
                         [("net_prio.ifpriomap", "lo 0")])

    def test_v2(self):
        """The unified hierarchy resets to `max`."""
        updates = cgroups.live_updates({"limits.memory": "1GB", "limits.processes": "3"}, {}, unified(), 4, GB)
        self.assertEqual(updates, [
            ("memory.swap.max", "max"), ("memory.max", "max"), ("memory.high", "max"), ("pids.max", "max"),
        ])


class CpuSetTests(SynchronousTestCase):
    """Formatting and parsing CPU sets."""

    @given(st.sets(st.integers(min_value=0, max_value=63), min_size=2))
    def test_round_trip(self, cpus):
        """A formatted set of two or more CPUs parses back to the same CPUs (one bare number is a count)."""
        text = cgroups.format_cpu_set(cpus)
        self.assertEqual(cgroups.cpu_set(text, 64), sorted(cpus))
