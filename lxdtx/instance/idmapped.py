# -*- test-case-name: tests.integration.test_idmapped_rootfs -*-
"""Which container volumes liblxc can idmap instead of having their files chowned.

An idmapped rootfs (`lxc.rootfs.options = idmap=container`, kernel >= 5.12) stays
owned by the container's own ids on disk (`volatile.last_state.idmap` is `[]`) and
the kernel shifts them at the mount: starting a container costs nothing per file,
whatever the size of its image. The filesystem must allow it: a helper process
(helpers/idmapprobe.py) asks the kernel once per filesystem type (statfs f_type).
`LXDTX_IDMAPPED_MOUNTS=off` in the daemon's environment keeps the chown walk for every
container (to compare the two, or where a filesystem misbehaves idmapped).
"""

import ctypes
import os
import sys

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import asyncutil

PROBE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "idmapprobe.py")
SETTING = "LXDTX_IDMAPPED_MOUNTS"

_libc = ctypes.CDLL(None, use_errno=True)


class _Statfs(ctypes.Structure):
    # struct statfs starts with f_type (a long); the rest is not needed here.
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 160)]


def filesystem_type(path):
    """statfs(2) f_type of the filesystem holding `path` (blocking)."""
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return buf.f_type


def enabled(environ=os.environ):
    return environ.get(SETTING, "").lower() not in ("off", "0", "false", "no")


class IdmappedMounts:
    """The answers of the probe, per filesystem type, for one daemon."""

    log = Logger()

    def __init__(self, run=asyncutil.run, environ=os.environ):
        self._run = run
        self._enabled = enabled(environ)
        self._known = {}  # f_type -> True/False

    async def supported(self, path):
        """Whether the filesystem of directory `path` takes an idmapped mount."""
        if not self._enabled:
            return False
        try:
            fs_type = await threads.deferToThread(filesystem_type, path)
        except OSError:
            return False
        answer = self._known.get(fs_type)
        if answer is None:  # two first containers at once may both ask: harmless
            answer = await self._probe(path, fs_type)
            if answer is not None:
                self._known[fs_type] = answer
        return bool(answer)

    async def _probe(self, path, fs_type):
        try:
            code, _, err = await self._run([sys.executable, "-I", "-S", PROBE, path], check=False)
        except OSError as e:
            code, err = 1, str(e).encode()
        if code != 0:
            self.log.info("No idmapped rootfs on filesystem {fs_type:#x} ({reason}): ids are shifted by chown",
                          fs_type=fs_type, reason=err.decode("utf-8", "replace").strip())
        if code == 1:  # the probe failed, not the kernel: ask again next time
            return None
        return code == 0
