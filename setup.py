"""Packaging for lxdtx: the daemon package, its twistd plugin and the `lxdtx` admin command."""

import os
import shlex
import subprocess

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

SEED = os.path.join("lxdtx", "helpers", "execseed")


def build_seed(target):
    """Compile the exec seed against the host's liblxc (see execseed.c for why it exists)."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "lxc"], check=True,
                           capture_output=True, text=True).stdout
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-o", target, SEED + ".c", *shlex.split(flags)],
                   check=True)


class BuildPyWithSeed(build_py):
    """Ships the compiled seed beside the Python code: without it exec falls back to lxc-attach."""

    def run(self):
        super().run()
        if os.environ.get("LXDTX_NO_EXECSEED"):
            return
        # An editable install runs the package from the source tree, so the seed goes there.
        target = SEED if getattr(self, "editable_mode", False) else os.path.join(self.build_lib, SEED)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        build_seed(target)


def _requirements():
    with open("requirements.txt") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


setup(
    name="lxdtx",
    version="0.1.0",
    description="A container daemon speaking the LXD REST API, on Twisted and liblxc",
    packages=find_packages(include=["lxdtx", "lxdtx.*"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/lxdtx_plugin.py"], "lxdtx.helpers": ["execseed.c"]},
    cmdclass={"build_py": BuildPyWithSeed},
    install_requires=_requirements(),
    python_requires=">=3.11",
    entry_points={"console_scripts": ["lxdtx = lxdtx.cli:main"]},
)
