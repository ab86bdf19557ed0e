# -*- test-case-name: tests.integration.test_init -*-
"""`lxdtx init --auto`: a usable daemon on a fresh offline machine.

Creates what is missing, never touches what exists: the `default` dir pool, a
root disk in the default profile, and the local busybox image with alias
`busybox`. Later steps (a managed bridge) register themselves in STEPS.
"""

import os
import tempfile

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import profiles
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
    from lxdtx.image.busybox import build_image

    spool = daemon.path("tmp")
    directory = await threads.deferToThread(tempfile.mkdtemp, prefix="busybox-", dir=spool)
    try:
        built = await threads.deferToThread(build_image, directory, "xz")
        path = getattr(built, "path", None) or os.path.join(directory, os.listdir(directory)[0])
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


STEPS = [ensure_pool, ensure_root_disk, ensure_busybox_image]


async def auto_init(daemon):
    for step in STEPS:
        await step(daemon)
