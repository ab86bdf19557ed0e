# -*- test-case-name: tests.integration.test_crash_recovery -*-
"""Start-up after a crash: finish or undo the changes a killed daemon left open, then sweep.

Runs once the pools are mounted and before the networks come up and the daemon
listens. First every open intent of the journal is resolved (`lxdtx.journal`);
then what is on the host that no row owns is removed: pool mount points and loop
files (with their mounts and loop devices), container, snapshot and custom
volumes in the pools' directories, the paths (links, lxc and log directories)
and cgroups of containers, network directories with the bridge, dnsmasq and
firewall table of each, and image files.
The sweep catches what no intent could name: a daemon older than the journal,
or one killed between making a thing and recording it (which the journal's
order rules out for every change that records its intent).

Each item recovered is logged (and so sent as a `logging` event to whoever listens).
"""

import os

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import asyncutil
from lxdtx.instance import model, settle
from lxdtx.network import firewall, links
from lxdtx.storage import mounts

log = Logger()


async def run(daemon):
    """Resolve the journal and sweep; returns one line per thing recovered."""
    report = [f"{op} of {target}: {outcome}" for op, target, outcome in await daemon.journal.recover()]
    for sweep in (_sweep_pools, _sweep_volumes, _sweep_container_paths, _sweep_cgroups, _sweep_networks,
                  _sweep_images):
        try:
            report += await sweep(daemon)
        except Exception:
            log.failure("Recovery sweep {sweep} failed", sweep=sweep.__name__)
    for line in report:
        log.warn("Recovered after an unclean stop: {line}", line=line)
    return report


async def _sweep_pools(daemon):
    """Mount points and loop files of pools no row names: unmounted, detached, removed.

    Only paths under the state directory: a source the user named is never touched.
    """
    mount_root, disk_root = daemon.path("storage-pools"), daemon.path("disks")
    names = set(await threads.deferToThread(_listdir, mount_root))
    names |= {f.removesuffix(".img") for f in await threads.deferToThread(_listdir, disk_root) if f.endswith(".img")}
    report = []
    for name in sorted(names):
        if daemon.store.exists("pool", name):
            continue
        mount_point, disk = os.path.join(mount_root, name), os.path.join(disk_root, f"{name}.img")
        done = []
        if await threads.deferToThread(mounts.is_mounted, mount_point):
            await asyncutil.run(["umount", mount_point])
            done.append("unmounted")
        if await threads.deferToThread(os.path.isfile, disk):
            _, out, _ = await asyncutil.run(["losetup", "-j", disk], check=False)
            for line in out.decode().splitlines():
                device = line.split(":", 1)[0].strip()
                if device:
                    await asyncutil.run(["losetup", "-d", device], check=False)
                    done.append(f"detached {device}")
            await threads.deferToThread(mounts.remove_file, disk)
            done.append("removed its loop file")
        if await threads.deferToThread(_remove_mount_point, mount_point):
            done.append("removed its mount point")
        if done:
            report.append(f"storage pool {name}, which no row names: {', '.join(done)}")
    return report


def _remove_mount_point(path):
    """Blocking: unlink a dir pool's link or remove an empty directory; True if one went."""
    if os.path.islink(path):
        os.unlink(path)
        return True
    if not os.path.isdir(path):
        return False
    mounts.rmdir_if_empty(path)
    return not os.path.lexists(path)


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
            owned = doc is not None and doc.value.get("pool") == pool and model.is_local(daemon, doc.value)
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
        if not _local_row(daemon, name):
            await instances.remove_links(name)
            report.append(f"container {name}: removed paths no row owned")
    return report


async def _sweep_cgroups(daemon):
    """Empty cgroups of containers no row names (their names carry this daemon's scope, so
    another daemon's are never touched); one with processes in it is left and logged."""
    instances = daemon.instances
    prefixes = (instances.cgroup_prefix, instances.monitor_prefix)

    def ours():
        found = set()
        for parent in instances.layout.parents:
            for entry in _listdir(parent):
                found.update(entry[len(p):] for p in prefixes if entry.startswith(p))
        return found

    report = []
    for name in sorted(await threads.deferToThread(ours)):
        if _local_row(daemon, name):
            continue
        if not await threads.deferToThread(instances.remove_cgroups, name):
            log.warn("The cgroups of container {name}, which no row names, still hold processes", name=name)
        else:
            report.append(f"container {name}: removed cgroups no row owned")
    return report


async def _sweep_networks(daemon):
    networks = daemon.networks
    report = []
    for name in await threads.deferToThread(_listdir, networks.root):
        if not daemon.store.exists("network", name):
            await networks.settle(name, {})
            report.append(f"network {name}: removed, no row owned it")
    # A network's table with neither a row here nor its bridge on the host belongs to no
    # daemon (every daemon's network has its bridge while its table exists).
    prefix, mac_prefix = firewall.table_name(""), firewall.mac_table_name("")
    for family, table in await firewall.tables():
        name = table[len(prefix):]
        if family != "inet" or table.startswith(mac_prefix) or daemon.store.exists("network", name):
            continue
        if not await threads.deferToThread(links.exists, name):
            await firewall.remove_network(name)
            report.append(f"network {name}: removed its firewall table, no bridge or row owned it")
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


def _local_row(daemon, name):
    """Whether a row owns container `name` on this daemon (a cluster's store holds every
    member's containers: another member's row owns nothing here)."""
    value = daemon.store.value(model.KIND, name)
    return value is not None and model.is_local(daemon, value)


def _listdir(path):
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
