# -*- test-case-name: tests.unit.test_image_metadata -*-
"""Architecture names as LXD knows them: canonical names, accepted aliases, host personalities."""

import os

# Canonical name -> the aliases LXD accepts for it (Debian and Go names).
ALIASES = {
    "i686": ("i386", "386"),
    "x86_64": ("amd64",),
    "armv7l": ("armel", "armhf", "arm"),
    "aarch64": ("arm64",),
    "ppc": ("powerpc",),
    "ppc64": ("powerpc64",),
    "ppc64le": ("ppc64el",),
    "s390x": (),
}

_CANONICAL = {alias: name for name, aliases in ALIASES.items() for alias in (name, *aliases)}

# Architectures a host of each kernel architecture can run containers of.
_PERSONALITIES = {
    "x86_64": ["x86_64", "i686"],
    "aarch64": ["aarch64", "armv7l"],
    "ppc64le": ["ppc64le"],
    "s390x": ["s390x"],
}


def canonical(name):
    """The canonical name of an architecture or alias, or None if unknown."""
    return _CANONICAL.get(name) if isinstance(name, str) else None


def host():
    """The canonical name of this host's architecture."""
    machine = os.uname().machine
    return _CANONICAL.get(machine, machine)


def supported():
    """What the host runs, its own architecture first (`environment.architectures`)."""
    machine = os.uname().machine
    return _PERSONALITIES.get(machine, [host()])
