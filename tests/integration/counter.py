"""A checkpointable busybox container whose init runs a counter, for the CRIU tests.

The counter is a child of the container's init (an inittab `once` entry): what `lxc
exec` starts is reparented outside the container's process tree and CRIU would not
dump it. It writes an ever larger number to /root/count five times a second. The
container has no nic (tests add one where they need it) and `migration.stateful` set.
"""

import subprocess
import time

import pytest

from lxdtx.instance import checkpoint

COUNTER = """#!/bin/sh
n=0
while true; do n=$((n+1)); echo $n > /root/count.new; mv /root/count.new /root/count; sleep 0.2; done
"""
INITTAB = "::sysinit:/etc/init.d/rcS\n::once:/usr/local/bin/counter\n::ctrlaltdel:/sbin/reboot\n"


def criu_problem():
    """Why CRIU can't run here (the output of a failing `criu check`), or None."""
    binary = checkpoint.Criu().binary
    try:
        done = subprocess.run([binary, "check"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        return f"no CRIU at {binary}: {e.strerror}"
    if done.returncode != 0:
        return f"`criu check` fails on this kernel: {(done.stderr or done.stdout).strip()[-300:]}"
    return None


def skip_without_criu():
    reason = criu_problem()
    if reason:
        pytest.skip(reason)


def make(d, name, start=True):
    """Create (and start) the counter container `name` on daemon `d`."""
    d.lxc("init", "busybox", name, "--no-profiles", "--storage", "default")
    d.lxc("config", "set", name, "migration.stateful", "true")
    d.lxc("file", "push", "-", f"{name}/usr/local/bin/counter", "--mode", "0755", "-p", input=COUNTER)
    d.lxc("file", "push", "-", f"{name}/etc/inittab", input=INITTAB)
    if start:
        d.lxc("start", name)
        wait_counting(d, name)


def count(d, name):
    """The counter's number now (0 before it first wrote)."""
    text = d.lxc("file", "pull", f"{name}/root/count", "-", check=False).stdout.strip()
    return int(text) if text.isdigit() else 0


def wait_counting(d, name, above=0, timeout=30):
    """Wait until the counter shows a number above `above`; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = count(d, name)
        if n > above:
            return n
        time.sleep(0.2)
    raise AssertionError(f"the counter of {name} stayed at or below {above}")
