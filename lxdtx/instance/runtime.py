# -*- test-case-name: tests.integration.test_containers -*-
"""What a container is doing right now, read from its cgroups and /proc (no liblxc call).

liblxc puts a container's processes in `lxc.payload.<name>` under each cgroup
hierarchy. Its init is the process whose pid inside the container is 1.
"""

import os

STOPPED, RUNNING, FROZEN = "Stopped", "Running", "Frozen"
STATUS_CODES = {STOPPED: 102, RUNNING: 103, FROZEN: 110, "Error": 112}

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_dir(name, controller):
    """The container's cgroup directory for a v1 controller, or the unified one."""
    v1 = os.path.join(CGROUP_ROOT, controller, f"lxc.payload.{name}")
    if os.path.isdir(v1):
        return v1
    for unified in (os.path.join(CGROUP_ROOT, "unified"), CGROUP_ROOT):
        path = os.path.join(unified, f"lxc.payload.{name}")
        if os.path.isdir(path):
            return path
    return None


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _is_init_of(pid, name):
    status = _read(f"/proc/{pid}/status")
    if not status:
        return False
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            if line.split()[-1] != "1":
                return False
            break
    cgroups = _read(f"/proc/{pid}/cgroup") or ""
    return f"lxc.payload.{name}" in cgroups


class Runtime:
    """Init pids and states of running containers; pids are cached and re-checked."""

    def __init__(self):
        self._pids = {}

    def forget(self, name):
        self._pids.pop(name, None)

    def init_pid(self, name):
        """The host pid of the container's init, or None when it is not running."""
        pid = self._pids.get(name)
        # A remembered init is still it while it lives in the container's cgroup:
        # should init die, the whole container goes with it.
        if pid and f"lxc.payload.{name}" in (_read(f"/proc/{pid}/cgroup") or ""):
            return pid
        self._pids.pop(name, None)
        path = cgroup_dir(name, "pids") or cgroup_dir(name, "memory")
        if path is None:
            return None
        procs = _read(os.path.join(path, "cgroup.procs")) or ""
        for line in procs.split():
            if _is_init_of(int(line), name):
                self._pids[name] = int(line)
                return int(line)
        return None

    def status(self, name):
        """Stopped, Running or Frozen."""
        if self.init_pid(name) is None:
            return STOPPED
        freezer = cgroup_dir(name, "freezer")
        if freezer:
            state = (_read(os.path.join(freezer, "freezer.state")) or "").strip()
            if state in ("FROZEN", "FREEZING"):
                return FROZEN
            frozen = _read(os.path.join(freezer, "cgroup.freeze"))
            if frozen and frozen.strip() == "1":
                return FROZEN
        return RUNNING

    def processes(self, name):
        path = cgroup_dir(name, "pids") or cgroup_dir(name, "memory")
        procs = _read(os.path.join(path, "cgroup.procs")) if path else None
        return len(procs.split()) if procs else 0

    def read_cgroup(self, name, controller, filename):
        path = cgroup_dir(name, controller)
        return _read(os.path.join(path, filename)) if path else None
