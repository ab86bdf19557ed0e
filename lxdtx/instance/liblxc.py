# -*- test-case-name: tests.integration.test_containers -*-
"""liblxc's own tools as helper processes: everything that forks runs outside the daemon.

`lxc-start -d` daemonizes the container's monitor, so containers are not our
children and outlive the daemon (a SIGTERM of the daemon leaves them running).
"""

import os

from lxdtx import errors
from lxdtx.asyncutil import ProcessError, run


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
