# -*- test-case-name: tests.integration.test_crash_recovery -*-
"""Start-up after a crash: finish or undo the changes a killed daemon left open, then sweep.

Runs once the pools are mounted and before the networks come up and the daemon
listens. First every open intent of the journal is resolved (`lxdtx.journal`);
then what is on the host that no row owns is removed: container, snapshot and
custom volumes in the pools' directories, the paths of containers (links, lxc
and log directories), network directories and the bridges that came with them,
image files.
The sweep catches what no intent could name: a daemon older than the journal,
or one killed between making a thing and recording it (which the journal's
order rules out for every change that records its intent).

Each item recovered is logged (and so sent as a `logging` event to whoever listens).
"""

import os

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx.instance import model, settle

log = Logger()


async def run(daemon):
    """Resolve the journal and sweep; returns one line per thing recovered."""
    report = [f"{op} of {target}: {outcome}" for op, target, outcome in await daemon.journal.recover()]
    for sweep in (_sweep_volumes, _sweep_container_paths, _sweep_networks, _sweep_images):
        try:
            report += await sweep(daemon)
        except Exception:
            log.failure("Recovery sweep {sweep} failed", sweep=sweep.__name__)
    for line in report:
        log.warn("Recovered after an unclean stop: {line}", line=line)
    return report


async def _sweep_volumes(daemon):
    store, pools, instances = daemon.store, daemon.pools, daemon.instances
    report = []
    for pool in pools.names():
        try:
            driver = pools.driver(pool)
            containers = await threads.deferToThread(driver.names_on_disk, "container")
            with_snapshots = await threads.deferToThread(driver.names_on_disk, "snapshot")
            custom = await threads.deferToThread(driver.names_on_disk, "custom")
        except Exception:
            log.failure("Could not list the volumes of storage pool {pool}", pool=pool)
            continue
        for name in sorted(set(containers) | set(with_snapshots)):
            doc = store.get(model.KIND, name)
            owned = doc is not None and doc.value.get("pool") == pool
            snapshots = await threads.deferToThread(driver.names_on_disk, "container", name)
            stray = [s for s in snapshots if not (owned and store.exists(model.SNAPSHOT_KIND, f"{name}/{s}"))]
            if (owned or name not in containers) and not stray:
                continue
            await settle.container(instances, name, pool)
            what = ", ".join(([] if owned or name not in containers else ["volume"])
                             + [f"snapshot {s}" for s in stray])
            report.append(f"container {name} on pool {pool}: removed unowned {what}")
        for name in custom:
            if pools.volume(pool, "custom", name) is None:
                await pools.custom.settle(pool, name)
                report.append(f"custom volume {name} on pool {pool}: removed, no row owned it")
    return report


async def _sweep_container_paths(daemon):
    instances = daemon.instances
    roots = (daemon.path("containers"), instances.lxcpath, instances.log_root)
    names = await threads.deferToThread(lambda: sorted({n for root in roots for n in _listdir(root)}))
    report = []
    for name in names:
        if not daemon.store.exists(model.KIND, name):
            await instances._remove_links(name)
            report.append(f"container {name}: removed paths no row owned")
    return report


async def _sweep_networks(daemon):
    networks = daemon.networks
    report = []
    for name in await threads.deferToThread(_listdir, networks.root):
        if not daemon.store.exists("network", name):
            await networks.settle(name, {})
            report.append(f"network {name}: removed, no row owned it")
    return report


async def _sweep_images(daemon):
    images = daemon.images
    report = []
    files = await threads.deferToThread(_listdir, images.dir)
    for fingerprint in sorted({f.removesuffix(".rootfs") for f in files}):
        if not daemon.store.exists("image", fingerprint):
            await images._settle(fingerprint)
            report.append(f"image {fingerprint}: removed files no row owned")
    return report


def _listdir(path):
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
