"""Packaging for lxdtx: the daemon package, its twistd plugin and the `lxdtx` admin command."""

from setuptools import find_packages, setup


def _requirements():
    with open("requirements.txt") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


setup(
    name="lxdtx",
    version="0.1.0",
    description="A container daemon speaking the LXD REST API, on Twisted and liblxc",
    packages=find_packages(include=["lxdtx", "lxdtx.*"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/lxdtx_plugin.py"]},
    install_requires=_requirements(),
    python_requires=">=3.11",
    entry_points={"console_scripts": ["lxdtx = lxdtx.cli:main"]},
)
