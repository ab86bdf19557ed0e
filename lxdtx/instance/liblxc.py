# -*- test-case-name: tests.integration.test_containers -*-
"""liblxc's own tools as helper processes: everything that forks runs outside the daemon.

`lxc-start -d` daemonizes the container's monitor, so containers are not our
children and outlive the daemon (a SIGTERM of the daemon leaves them running).
"""

import os

from twisted.internet import threads

from lxdtx import errors
from lxdtx.asyncutil import ProcessError, run, run_to_file

# The pre-copy dumps through liblxc's migrate API (helpers/predump.c, built by setup.py).
PREDUMP = os.path.join(os.path.dirname(os.path.dirname(__file__)), "helpers", "predump")


class LiblxcError(errors.InternalError):
    """A liblxc tool failed; the message carries its complaint and the log tail."""


class Liblxc:
    """Runs liblxc tools for containers under one lxcpath."""

    def __init__(self, lxcpath, log_dir):
        self.lxcpath = lxcpath
        self.log_dir = log_dir

    def config_path(self, name):
        return os.path.join(self.lxcpath, name, "config")

    def _log_tail(self, name, lines=8):
        try:
            with open(os.path.join(self.log_dir, name, "lxc.log"), errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(line for line in tail if "ERROR" in line) or "\n".join(tail[-3:])

    async def _tool(self, tool, name, *args, env=None):
        argv = [tool, "-n", name, "-P", self.lxcpath, *args]
        try:
            return await run(argv, env=env)
        except ProcessError as e:
            detail = e.stderr.decode("utf-8", "replace").strip()
            raise LiblxcError(f"{tool} failed for {name}: {detail}")

    async def start(self, name):
        try:
            await self._tool("lxc-start", name, "-d")
        except LiblxcError as e:
            log = self._log_tail(name)
            raise LiblxcError(f"Failed to start container {name}: {e.message}" + (f"\n{log}" if log else ""))

    async def stop(self, name, timeout=-1, force=False):
        """Kill (force) or ask init to halt and wait `timeout` seconds (-1: forever)."""
        if force:
            await self._tool("lxc-stop", name, "-k")
        else:
            await self._tool("lxc-stop", name, "--nokill", "-t", str(int(timeout)))

    async def freeze(self, name):
        await self._tool("lxc-freeze", name)

    async def unfreeze(self, name):
        await self._tool("lxc-unfreeze", name)

    async def set_cgroup(self, name, key, value):
        """Set a cgroup item of a running container (`devices.allow` also on cgroup2, where
        liblxc's monitor updates the container's device program)."""
        await self._tool("lxc-cgroup", name, key, value)

    async def checkpoint(self, name, directory, env, stop=True, parent=None):
        """CRIU-dump the running container into `directory` (a fresh one); `stop`: it stops
        once dumped, else it runs on. `env`: `checkpoint.Criu.env("dump")`. `parent`: the
        last pre-dump (relative to `directory`), for the final dump of a pre-copy (it stops)."""
        try:
            if parent is not None:
                await self._predump(name, "dump", directory, parent, env)
            else:
                await self._tool("lxc-checkpoint", name, "-D", directory, *(["-s"] if stop else []), env=env)
        except LiblxcError as e:
            log = await threads.deferToThread(_criu_log, directory, "dump")
            raise LiblxcError(f"Failed to checkpoint container {name}: {e.message}{log}")

    async def predump(self, name, directory, env, parent=None):
        """A pre-dump of the running container's memory into `directory` (it runs on), only
        the pages dirtied since `parent` (the previous one, relative to `directory`)."""
        try:
            await self._predump(name, "pre-dump", directory, parent, env)
        except LiblxcError as e:
            log = await threads.deferToThread(_criu_log, directory, "pre-dump")
            raise LiblxcError(f"Failed to pre-dump container {name}: {e.message}{log}")

    async def _predump(self, name, action, directory, parent, env):
        argv = [PREDUMP, name, self.lxcpath, action, directory, *([parent] if parent else [])]
        try:
            await run(argv, env=env)
        except ProcessError as e:
            raise LiblxcError(e.stderr.decode("utf-8", "replace").strip() or f"exit {e.code}")
        except FileNotFoundError:
            raise LiblxcError("the pre-copy helper is not built (setup.py's build step makes it)")

    async def restore(self, name, directory, env):
        """Restore the container from the CRIU dump in `directory` (its monitor daemonizes)."""
        # Its output to a file: the restored container's monitor inherits what it had.
        output = os.path.join(directory, "lxc-checkpoint.out")
        code = await run_to_file(["lxc-checkpoint", "-n", name, "-P", self.lxcpath, "-r", "-D", directory],
                                 output, env=env)
        if code != 0:
            detail = await threads.deferToThread(_restore_complaint, output, directory)
            raise LiblxcError(f"Failed to restore container {name}: {detail}")


def _restore_complaint(output, directory):
    try:
        with open(output, errors="replace") as f:
            detail = f.read().strip()
    except OSError:
        detail = ""
    return detail + _criu_log(directory, "restore")


def _criu_log(directory, action, lines=4):
    """The last error lines of CRIU's own log of `action` in a dump directory."""
    try:
        with open(os.path.join(directory, f"{action}.log"), errors="replace") as f:
            found = [line.strip() for line in f if "Error" in line and "RLIMIT_NOFILE" not in line]
    except OSError:
        return ""
    return ("\n" + "\n".join(found[-lines:])) if found else ""
