# -*- test-case-name: tests.integration.test_proxy_devices -*-
"""`proxy` devices of running containers: one helper process each (lxdtx/helpers/proxy.py).

A helper runs in its own session, so it outlives a daemon restart; it ends by
itself when the container's init does. Its pid file (in the container's log
directory) is how a later daemon finds it to stop it.
"""

import os
import signal
import sys

from lxdtx import errors
from lxdtx.asyncutil import ProcessError, run, sleep

_HELPER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "proxy.py")


def pid_file(log_dir, dev_name):
    # Hex: a device name may hold characters a file name should not.
    return os.path.join(log_dir, f"proxy.{dev_name.encode().hex()}.pid")


def _helper_pid(path):
    """The pid in `path` if it is still one of our proxy helpers, else None."""
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if _HELPER.encode() in argv and path.encode() in argv else None


async def start(log_dir, pid, dev_name, device):
    """Start the helper of one proxy device of the container whose init is `pid`."""
    path = pid_file(log_dir, dev_name)
    await stop(log_dir, dev_name)
    os.makedirs(log_dir, exist_ok=True)
    in_container = device.get("bind", "host") == "container"
    listen_pid, connect_pid = (pid, 0) if in_container else (0, pid)
    argv = [sys.executable, "-I", "-S", _HELPER, path, str(pid),
            str(listen_pid), device["listen"], str(connect_pid), device["connect"]]
    try:
        await run(argv)
    except ProcessError as e:
        detail = e.stderr.decode("utf-8", "replace").strip()
        raise errors.BadRequest(f"Failed to start device \"{dev_name}\": {detail}")


async def stop(log_dir, dev_name, timeout=5.0):
    """Stop the helper of one proxy device, if it runs, and wait until it has gone.

    Waiting matters when the device is changed live: the helper removes its unix
    socket as it ends, and the new one wants the same path.
    """
    path = pid_file(log_dir, dev_name)
    pid = _helper_pid(path)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        waited = 0.0
        while waited < timeout and _helper_pid(path) == pid:
            await sleep(0.05)
            waited += 0.05
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def start_all(log_dir, pid, devices):
    for dev_name in sorted(devices):
        if devices[dev_name].get("type") == "proxy":
            await start(log_dir, pid, dev_name, devices[dev_name])


async def stop_all(log_dir, devices):
    for dev_name in sorted(devices):
        if devices[dev_name].get("type") == "proxy":
            await stop(log_dir, dev_name)
