# -*- test-case-name: tests.integration.test_containers -*-
"""`GET /1.0/containers/<name>/state`: status, processes, CPU, memory, disk and network."""

from twisted.internet import threads

from lxdtx.instance import netlink
from lxdtx.instance.runtime import STATUS_CODES, STOPPED
from lxdtx.storage.errors import NotSupported


def _int(text, default=0):
    try:
        return int(text.split()[0]) if text else default
    except ValueError:
        return default


def _memory(runtime, name):
    usage = _int(runtime.read_cgroup(name, "memory", "memory.usage_in_bytes"), None)
    if usage is None:  # cgroup v2
        usage = _int(runtime.read_cgroup(name, "memory", "memory.current"))
        peak = _int(runtime.read_cgroup(name, "memory", "memory.peak"))
        swap = _int(runtime.read_cgroup(name, "memory", "memory.swap.current"))
        swap_peak = _int(runtime.read_cgroup(name, "memory", "memory.swap.peak"))
    else:
        peak = _int(runtime.read_cgroup(name, "memory", "memory.max_usage_in_bytes"))
        memsw = _int(runtime.read_cgroup(name, "memory", "memory.memsw.usage_in_bytes"))
        memsw_peak = _int(runtime.read_cgroup(name, "memory", "memory.memsw.max_usage_in_bytes"))
        swap = max(0, memsw - usage) if memsw else 0
        swap_peak = max(0, memsw_peak - peak) if memsw_peak else 0
    return {"usage": usage, "usage_peak": peak, "swap_usage": swap, "swap_usage_peak": swap_peak}


def _cpu(runtime, name):
    usage = runtime.read_cgroup(name, "cpuacct", "cpuacct.usage")
    if usage is not None:
        return _int(usage, -1)
    stat = runtime.read_cgroup(name, "cpu", "cpu.stat")
    for line in (stat or "").splitlines():
        if line.startswith("usage_usec"):
            return _int(line.split()[1], -1) * 1000
    return -1


class NetnsThreads:
    """Threads of our own for reads inside containers' network namespaces: each switches
    namespaces (and back), nothing else runs on them. Started at the first read."""

    def __init__(self, reactor):
        self._reactor = reactor
        self._pool = None

    def _threads(self):
        if self._pool is None:
            from twisted.python.threadpool import ThreadPool

            self._pool = ThreadPool(minthreads=0, maxthreads=4, name="lxdtx-netns")
            self._pool.start()
            self._reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

    async def network(self, pid, host_names):
        """Interfaces inside the container's network namespace, with addresses and counters."""
        try:
            found = await threads.deferToThreadPool(self._reactor, self._threads(), netlink.interfaces, pid)
        except OSError:
            return None
        for name, info in found.items():
            info["host_name"] = host_names.get(name, "")
        return found


async def collect(instances, name, value):
    runtime = instances.runtime
    pid = runtime.init_pid(name)
    status = runtime.status(name, pid)
    state = {
        "status": status, "status_code": STATUS_CODES[status], "pid": 0, "processes": 0,
        "cpu": {"usage": 0}, "disk": None, "network": None,
        "memory": {"usage": 0, "usage_peak": 0, "swap_usage": 0, "swap_usage_peak": 0},
    }
    if status == STOPPED:
        return state
    _config, devices = instances.records.expanded(value)
    host_names = {}
    for dev, cfg in devices.items():
        if cfg.get("type") == "nic":
            ifname = cfg.get("name") or value["config"].get(f"volatile.{dev}.name")
            if ifname:
                host_names[ifname] = value["config"].get(f"volatile.{dev}.host_name", "")
    state.update({
        "pid": pid, "processes": runtime.processes(name, pid), "cpu": {"usage": _cpu(runtime, name)},
        "memory": _memory(runtime, name), "network": await instances.netns_threads.network(pid, host_names) if pid else None,
    })
    try:
        driver = instances.daemon.pools.driver(value["pool"])
        state["disk"] = {"root": {"usage": await driver.volume_usage("container", name)}}
    except (NotSupported, OSError):
        state["disk"] = {}
    return state


