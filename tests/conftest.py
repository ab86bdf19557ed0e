"""Shared fixtures: a real daemon per test module or test, cleaned up also on failure."""

import os

import pytest

from tests.daemonproc import Daemon


def _require_root():
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")


@pytest.fixture
def daemon():
    """A fresh daemon for one test."""
    _require_root()
    d = Daemon().start()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="module")
def shared_daemon():
    """One daemon for a whole test module (tests must not depend on each other's state)."""
    _require_root()
    d = Daemon().start()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="module")
def busybox_daemon():
    """A daemon initialised like `lxdtx init --auto` (dir pool, busybox image), for a module."""
    _require_root()
    d = Daemon(auto_init=True).start(timeout=120)
    try:
        yield d
    finally:
        d.cleanup()
