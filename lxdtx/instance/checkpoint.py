# -*- test-case-name: tests.unit.test_checkpoint -*-
"""Checkpoint/restore of running containers with CRIU, as liblxc's `lxc-checkpoint` drives it.

CRIU is the one `tools/criu/build-criu.sh` installs under a prefix (default /opt/criu,
`LXDTX_CRIU_PREFIX` in the daemon's environment names another): Debian's own fails
`criu check` on current kernels. liblxc finds `criu` on PATH, and CRIU reads its extra
options from `CRIU_CONFIG_FILE`, one file for dumps and one for restores.

What a container needs to be checkpointed here, each checked before anything is touched
(`problem_with`):

- `migration.stateful` set: such a container runs without a console and, on a host
  without AppArmor, without an AppArmor key, the two things liblxc 5.0's restore cannot
  bring back (it never makes a console for a restored container, and asks CRIU for the
  AppArmor profile it names);
- nics of the veth kinds only (bridged, p2p): their pairs are made before the restore
  (`lxdtx.instance.checkpointnet`, as CRIU can't make them from inside the container's
  user namespace); other kinds (macvlan, physical, sriov) and infiniband are not restored.

Pre-copy (iterative dumps while the container runs) needs the kernel to track dirty
pages (`criu check --feature mem_dirty_track`); `dirty_tracking()` says whether it does.
"""

import os

from lxdtx.asyncutil import ProcessError, run
from lxdtx.config.types import is_true
from lxdtx.instance import checkpointnet

DEFAULT_PREFIX = "/opt/criu"
STATEFUL_KEY = "migration.stateful"

NO_CRIU = "CRIU isn't installed on the server"
NOT_STATEFUL = ("The container can't be checkpointed: set migration.stateful=true while it is stopped "
                "(it then runs without a console, which CRIU can't carry)")
HAS_NIC = ("The container can't be checkpointed: its {} device \"{}\" can't be restored "
           "(only bridged and p2p nics are)")


def prefix_from_environment():
    return os.environ.get("LXDTX_CRIU_PREFIX") or DEFAULT_PREFIX


def stateful(config):
    """Whether an expanded config asks for a checkpointable container."""
    return is_true(config.get(STATEFUL_KEY) or "")


def problem_with(config, devices):
    """Why a container of this expanded config and devices can't be checkpointed, or None."""
    if not stateful(config):
        return NOT_STATEFUL
    for name in sorted(devices):
        device = devices[name]
        if device.get("type") == "infiniband":
            return HAS_NIC.format("infiniband", name)
        if device.get("type") == "nic" and device.get("nictype") not in checkpointnet.VETH_TYPES:
            return HAS_NIC.format(f"{device.get('nictype') or ''} nic".strip(), name)
    return None


class Criu:
    """The CRIU under `prefix`: whether it works, and the environment liblxc runs it with."""

    def __init__(self, prefix=None):
        self.prefix = prefix or prefix_from_environment()
        self.binary = os.path.join(self.prefix, "sbin", "criu")
        self._works = False

    def env(self, action):
        """The environment of `lxc-checkpoint` for `action` ("dump" or "restore")."""
        name = "criu-restore.conf" if action == "restore" else "criu.conf"
        path = os.path.join(self.prefix, "sbin") + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        return {"PATH": path, "LC_ALL": "C", "CRIU_CONFIG_FILE": os.path.join(self.prefix, "etc", name)}

    async def _check(self, *args):
        if not os.access(self.binary, os.X_OK):
            return f"{NO_CRIU} ({self.binary} not found)"
        try:
            await run([self.binary, "check", *args], env=self.env("dump"))
        except ProcessError as e:
            lines = [line for line in (e.stderr or e.stdout).decode("utf-8", "replace").splitlines() if line.strip()]
            return f"CRIU on the server fails its check: {lines[-1] if lines else f'exit {e.code}'}"
        return None

    async def problem(self):
        """Why CRIU can't checkpoint on this host, or None (a pass is remembered)."""
        if self._works:
            return None
        reason = await self._check()
        self._works = reason is None
        return reason

    async def dirty_tracking(self):
        """Whether the kernel tracks dirty pages (pre-copy dumps possible)."""
        return await self._check("--feature", "mem_dirty_track") is None
