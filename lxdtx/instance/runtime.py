# -*- test-case-name: tests.integration.test_containers -*-
"""What a container is doing right now, read from its cgroups and /proc (no liblxc call).

Each container's processes live in a cgroup named by `cgroup_name` under every
hierarchy (set with `lxc.cgroup.dir.container`, unique per daemon, so two
daemons on one host never mistake each other's containers). Its init is the
process whose pid inside the container is 1.
"""

import hashlib
import os
import select

from lxdtx.fsutil import read_text
from lxdtx.instance.cgroups import V1

STOPPED, RUNNING, FROZEN = "Stopped", "Running", "Frozen"
STATUS_CODES = {STOPPED: 102, RUNNING: 103, FROZEN: 110, "Error": 112}



def scope_of(state_dir):
    """A short id of a daemon (by its state directory) for the names of its cgroups."""
    return hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:8]


def cgroup_prefixes(scope):
    """(container, monitor) cgroup name prefixes of a daemon's containers."""
    return f"lxdtx.{scope}.payload.", f"lxdtx.{scope}.monitor."


def _is_init_of(pid, cgroup):
    status = read_text(f"/proc/{pid}/status")
    if not status:
        return False
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            if line.split()[-1] != "1":
                return False
            break
    return _in_cgroup(pid, cgroup)


def _in_cgroup(pid, cgroup):
    return f"/{cgroup}\n" in (read_text(f"/proc/{pid}/cgroup") or "")


class Runtime:
    """Init pids and states of running containers; pids are cached and re-checked.

    `layout` is the host's cgroups.Layout (set once at daemon start); its
    `payload_prefix` names our containers' cgroups.
    """

    def __init__(self):
        self._inits = {}  # name -> (pid, pidfd, poll object) of the init found last
        self.layout = None

    def cgroup_name(self, name):
        return self.layout.payload_prefix + name

    def cgroup_dir(self, name, controller):
        path = self.layout.container_path(controller, name)
        return path if path and os.path.isdir(path) else None

    def forget(self, name):
        known = self._inits.pop(name, None)
        if known is not None:
            os.close(known[1])

    def init_pid(self, name):
        """The host pid of the container's init, or None when it is not running."""
        known = self._inits.get(name)
        # A pidfd is the process itself, never a reused pid: while it does not read
        # as ended, the init found before is still the container's (which dies with it).
        if known is not None:
            if not known[2].poll(0):
                return known[0]
            self.forget(name)
        cgroup = self.cgroup_name(name)
        path = self.cgroup_dir(name, "pids") or self.cgroup_dir(name, "memory")
        if path is None:
            return None
        procs = read_text(os.path.join(path, "cgroup.procs")) or ""
        for line in procs.split():
            pid = int(line)
            if not _is_init_of(pid, cgroup):
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                return None  # ended meanwhile
            except OSError:
                return pid  # no fd to spare: found again next time
            if not _is_init_of(pid, cgroup):  # the pid was reused before the pidfd was had
                os.close(pidfd)
                return None
            ended = select.poll()
            ended.register(pidfd, select.POLLIN)
            self._inits[name] = (pid, pidfd, ended)
            return pid
        return None

    def init(self, name):
        """(host pid, pidfd) of the container's init, or None when it is not running.

        The pidfd stays the Runtime's: a caller that keeps it beyond this turn dups it.
        """
        pid = self.init_pid(name)
        known = self._inits.get(name)
        if pid is None or known is None or known[0] != pid:
            return None
        return pid, known[1]

    def status(self, name, pid=0):
        """Stopped, Running or Frozen (`pid`: the init pid when the caller just read it)."""
        if (pid if pid != 0 else self.init_pid(name)) is None:
            return STOPPED
        freezer = self.layout.container_path("freezer", name)
        if freezer is None:
            return RUNNING
        if self.layout.version("freezer") == V1:
            frozen = (read_text(os.path.join(freezer, "freezer.state")) or "").strip() in ("FROZEN", "FREEZING")
        else:
            frozen = (read_text(os.path.join(freezer, "cgroup.freeze")) or "").strip() == "1"
        return FROZEN if frozen else RUNNING

    def processes(self, name, pid=None):
        """How many processes live in the container: in its cgroup and its pid namespace
        (the daemon's exec helpers share the cgroup, not the namespace). `pid`: the init
        pid when the caller just read it."""
        path = self.cgroup_dir(name, "pids") or self.cgroup_dir(name, "memory")
        procs = read_text(os.path.join(path, "cgroup.procs")) if path else None
        pid = pid or self.init_pid(name)
        if not procs or pid is None:
            return 0
        try:
            namespace = os.stat(f"/proc/{pid}/ns/pid").st_ino
        except OSError:
            return 0
        count = 0
        for proc in procs.split():
            try:
                count += os.stat(f"/proc/{int(proc)}/ns/pid").st_ino == namespace
            except OSError:
                continue  # gone meanwhile
        return count

    def read_cgroup(self, name, controller, filename):
        path = self.cgroup_dir(name, controller)
        return read_text(os.path.join(path, filename)) if path else None
