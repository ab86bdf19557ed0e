"""Shared fixtures: a real daemon per test module or test, cleaned up also on failure."""

import os
import shutil
import tempfile
import time

import pytest

from tests.daemonproc import Daemon


def _running_daemon(**kwargs):
    """Start a daemon (root only), hand it out, and clean it up whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    d = Daemon(**kwargs).start(timeout=120)
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def daemon():
    """A fresh daemon for one test."""
    yield from _running_daemon()


@pytest.fixture(scope="module")
def shared_daemon():
    """One daemon for a whole test module (tests must not depend on each other's state)."""
    yield from _running_daemon()


@pytest.fixture(scope="module")
def busybox_daemon():
    """A daemon initialised like `lxdtx init --auto` (pool, bridge, busybox image), for a module."""
    yield from _running_daemon(auto_init=True)


@pytest.fixture
def workdir():
    """A scratch directory on the host (files to push, certificates, images), removed after."""
    path = tempfile.mkdtemp(prefix="lxdtx-work-", dir="/var/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def container(busybox_daemon):
    """A running busybox container of the module's daemon, removed afterwards."""
    name = f"c{os.getpid() % 1000}-{int(time.time() * 1000) % 100000}"
    busybox_daemon.lxc("launch", "busybox", name)
    try:
        yield name
    finally:
        busybox_daemon.lxc("delete", "-f", name, check=False)
