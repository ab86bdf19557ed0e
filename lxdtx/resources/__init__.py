"""REST resources: one module per endpoint family, each declaring ENDPOINTS."""

from lxdtx.resources import certificates, events, host, images, operations, profiles, root

MODULES = [root, certificates, operations, events, profiles, host, images]


def endpoints(extra_modules=()):
    """Every endpoint of every resource module."""
    found = []
    for module in [*MODULES, *extra_modules]:
        found.extend(module.ENDPOINTS)
    return found
