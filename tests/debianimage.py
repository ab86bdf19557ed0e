"""The Debian 12 test image (lxdtx.image.debian), built once and cached between runs."""

import os
import shutil

import pytest

from lxdtx.image import debian
from lxdtx.image.busybox import ImageBuildError

ALIAS = "debian12"


def cached_image():
    """Path of the cached image, built first if needed; skips when it cannot be had."""
    if os.geteuid() != 0:
        pytest.skip("building the Debian image needs root (debootstrap)")
    mirror = debian.host_mirror()
    path = debian.cached_path(mirror=mirror)
    if os.path.isfile(path):
        return path
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (Makefile TEST_PACKAGES)")
    problem = debian.mirror_problem(mirror)
    if problem:
        pytest.skip(problem)
    try:
        return debian.cached_image(mirror=mirror)
    except ImageBuildError as e:
        pytest.skip(f"the Debian image cannot be built here: {e}")


def import_into(daemon, alias=ALIAS):
    """Import the cached image into `daemon` under `alias`; returns its fingerprint."""
    path = cached_image()
    daemon.lxc("image", "import", path, "--alias", alias, timeout=600)
    return daemon.request("GET", f"/1.0/images/aliases/{alias}").metadata["target"]
