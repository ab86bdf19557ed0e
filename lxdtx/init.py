# -*- test-case-name: tests.integration.test_networks -*-
"""`lxdtx init --auto`: a usable daemon on a fresh offline machine.

Creates what is missing, never touches what exists: the `default` dir pool, a
root disk in the default profile, a managed bridge with an `eth0` on it in the
default profile, and the local busybox image with alias `busybox`.
"""

import os
import sys
import tempfile

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import profiles
from lxdtx.asyncutil import run
from lxdtx.network import links
from lxdtx.network.links import run_in_thread
from lxdtx.state import Put

log = Logger()

POOL = "default"
IMAGE_ALIAS = "busybox"


async def ensure_pool(daemon):
    if not daemon.pools.names():
        await daemon.pools.create(POOL, "dir", {}, "")
        log.info("Created storage pool {pool}", pool=POOL)


async def ensure_root_disk(daemon):
    doc = daemon.profiles.get(profiles.DEFAULT)
    devices = doc.value.get("devices", {})
    if any(d.get("type") == "disk" and d.get("path") == "/" for d in devices.values()):
        return
    pool = POOL if daemon.store.exists("pool", POOL) else daemon.pools.names()[0]
    value = dict(doc.value, devices={**devices, "root": {"type": "disk", "path": "/", "pool": pool}})
    await daemon.store.commit([Put(profiles.KIND, profiles.DEFAULT, value, expect=doc.revision)])


async def ensure_busybox_image(daemon):
    if daemon.store.exists("alias", IMAGE_ALIAS):
        return
    spool = daemon.path("tmp")
    directory = await threads.deferToThread(tempfile.mkdtemp, prefix="busybox-", dir=spool)
    try:
        # Built by `lxdtx image busybox` in a child process: the builder runs busybox
        # itself, and the daemon never forks.
        await run([sys.executable, "-m", "lxdtx.cli", "image", "busybox", directory, "--compression", "xz"])
        path = os.path.join(directory, os.listdir(directory)[0])
        with open(path, "rb") as body:
            staged = await daemon.images.stage_upload(body)
        await daemon.images.add(staged, filename=os.path.basename(path),
                                aliases=[{"name": IMAGE_ALIAS, "description": "busybox (local build)"}])
        log.info("Imported the busybox image as {alias}", alias=IMAGE_ALIAS)
    finally:
        await threads.deferToThread(_rmtree, directory)


def _rmtree(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)


async def ensure_network(daemon):
    """A managed bridge (`lxdbr0`, or the next free `lxdbrN`) and an `eth0` on it in the default profile."""
    doc = daemon.profiles.get(profiles.DEFAULT)
    devices = doc.value.get("devices", {})
    if any(d.get("type") == "nic" for d in devices.values()) or "eth0" in devices:
        return
    names = daemon.networks.names()
    network = names[0] if names else await _create_bridge(daemon)
    if network is None:
        return
    doc = daemon.profiles.get(profiles.DEFAULT)
    nic = {"type": "nic", "nictype": "bridged", "parent": network, "name": "eth0"}
    value = dict(doc.value, devices={**doc.value.get("devices", {}), "eth0": nic})
    await daemon.store.commit([Put(profiles.KIND, profiles.DEFAULT, value, expect=doc.revision)])


async def _create_bridge(daemon):
    """Create the first free `lxdbrN`; another daemon on this host may take a name meanwhile."""
    failure = None
    for _ in range(5):
        taken = {link["name"] for link in await run_in_thread(links.links)}
        network = next(f"lxdbr{i}" for i in range(100) if f"lxdbr{i}" not in taken)
        try:
            # Address defaults: a free private IPv4 /24 with NAT (and IPv6 when the host has it).
            await daemon.networks.create(network, config={"ipv4.address": "auto", "ipv4.nat": "true"})
        except Exception as e:
            failure = e
            if await run_in_thread(links.exists, network) and not daemon.networks.is_managed(network):
                continue  # somebody else's now: try the next name
            break
        log.info("Created network {network}", network=network)
        return network
    log.error("Could not create the network {network}: {error}", network=network, error=failure)
    return None


STEPS = [ensure_pool, ensure_root_disk, ensure_network, ensure_busybox_image]


async def auto_init(daemon):
    for step in STEPS:
        await step(daemon)
