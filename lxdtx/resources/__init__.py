"""REST resources: one module per endpoint family, each declaring ENDPOINTS."""

from lxdtx.resources import (
    backups,
    certificates,
    cluster,
    console,
    containers,
    debug,
    events,
    files,
    host,
    images,
    metadata,
    networks,
    openapi,
    operations,
    profiles,
    root,
    snapshots,
    storage_pools,
    storage_volumes,
)
from lxdtx.resources import exec as exec_

MODULES = [root, certificates, operations, events, profiles, host, containers, storage_pools, storage_volumes,
           snapshots, images, backups, exec_, console, files, metadata, networks, openapi, cluster, debug]


def endpoints(extra_modules=()):
    """Every endpoint of every resource module."""
    found = []
    for module in [*MODULES, *extra_modules]:
        found.extend(module.ENDPOINTS)
    return found
