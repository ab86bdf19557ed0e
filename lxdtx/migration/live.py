# -*- test-case-name: tests.integration.test_migration_live -*-
"""Live migration with CRIU (criu type CRIU_RSYNC), both ends.

Source: the snapshots and one rsync pass of the container while it runs, then the final
CRIU dump (the container stops), the dump directory as one rsync session over `criu`, a
last rsync pass of the container over `fs`; the sink's outcome on `control` decides. If
anything fails after the dump, the source container is restored from its own dump, so it
keeps running; on success it stays stopped (a move then deletes it).

Sink: receives in the same order, the images into a directory of its own (the last fs
pass would delete anything of ours in the volume), moves them beside the new rootfs,
restores the container from them before its row is committed, and drops them. A failure
anywhere leaves nothing: the restored container is killed and the intent undone.

Pre-copy (`migration_pre_copy`) needs the kernel to track dirty pages; where it doesn't
(`criu check --feature mem_dirty_track`) there is one final dump, and the header never
offers `predump`.

Either end refuses a live migration at once, naming the cause, unless its CRIU passes
its check and the container can be checkpointed (`lxdtx.instance.checkpoint`).
"""

import os
import shutil
import time
import uuid

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import errors
from lxdtx.instance import checkpoint
from lxdtx.migration import messages as m
from lxdtx.migration import rsyncstream

PREFIX = "Unable to perform container live migration. "
CHANNELS = ("control", "fs", "criu")

log = Logger()


async def preflight(instances, name):
    """Source: raise naming why the running container `name` can't migrate live."""
    reason = await instances.checkpoint_problem(name, instances.get(name).value)
    if reason is not None:
        if reason.startswith(checkpoint.NO_CRIU):
            reason = reason.replace("on the server", "on the source server", 1)
        raise errors.InternalError(PREFIX + reason)


async def sink_preflight(instances, config, devices, profiles, secrets):
    """Sink: raise naming why a container of this config can't arrive live."""
    if secrets is not None and not (isinstance(secrets.get("criu"), str) and secrets["criu"]):
        raise errors.BadRequest("Missing secret \"criu\" in \"source.secrets\" of a live migration")
    reason = await instances.criu.problem()
    if reason is None:
        reason = checkpoint.problem_with(*instances.expanded({"config": config, "devices": devices,
                                                              "profiles": profiles}))
    if reason is not None:
        if reason.startswith(checkpoint.NO_CRIU):
            reason = reason.replace("on the server", "on the target server", 1)
        raise errors.InternalError(PREFIX + reason)


def check_answer(reply):
    if not reply.HasField("criu") or reply.criu != m.CRIU_RSYNC:
        raise errors.InternalError(PREFIX + "The target doesn't take a live migration")


async def send(daemon, name, path, channels, socket_dir, features, bwlimit, dumped):
    """Source, after the snapshots and the running pass: dump, send the images, send the
    last changes. `dumped` gets the dump directory as soon as the container is stopped."""
    reactor, instances = daemon.reactor, daemon.instances
    directory = os.path.join(socket_dir, f"checkpoint-{uuid.uuid4().hex[:12]}")
    dumped.append(directory)
    started = time.monotonic()
    await instances.dump(name, directory, stop=True)
    log.info("Live migration of {name}: dumped in {ms} ms", name=name, ms=int((time.monotonic() - started) * 1000))
    await rsyncstream.send(reactor, channels["criu"], directory, f"checkpoint {name}", socket_dir, features,
                           bwlimit)
    await rsyncstream.send(reactor, channels["fs"], path, name, socket_dir, features, bwlimit)


async def resume(instances, name, directory):
    """Source, after a failure past the dump: the container comes back from its own dump."""
    if instances.status(name) != "Stopped" or not await threads.deferToThread(os.path.isdir, directory):
        return
    value = instances.get(name).value
    state = instances.state_dir(name, value["pool"])
    await threads.deferToThread(_replace, directory, state)
    try:
        await instances.restore_from(name, value, state)
    except Exception:
        log.failure("Could not restore {name} from its dump after a failed live migration", name=name)
    finally:
        await threads.deferToThread(shutil.rmtree, state, True)


async def remove(directory):
    await threads.deferToThread(shutil.rmtree, directory, True)


async def receive(daemon, name, path, channels, features):
    """Sink, after the snapshots: the running pass, the images, the last pass. Returns the
    images directory (the caller removes it)."""
    reactor = daemon.reactor
    await rsyncstream.receive(reactor, channels["fs"], path, name, features)
    images = os.path.join(daemon.path("migration"), f"images-{uuid.uuid4().hex[:12]}")
    await threads.deferToThread(os.makedirs, images, 0o700)
    try:
        await rsyncstream.receive(reactor, channels["criu"], images, f"checkpoint {name}", features)
        await rsyncstream.receive(reactor, channels["fs"], path, name, features)
    except BaseException:
        await remove(images)
        raise
    return images


async def restore(instances, name, value, images):
    """Sink: restore the arrived container from `images`, beside its rootfs for CRIU."""
    state = instances.state_dir(name, value["pool"])
    try:
        await threads.deferToThread(_replace, images, state)
        started = time.monotonic()
        await instances.restore_from(name, value, state)
        log.info("Live migration of {name}: restored in {ms} ms", name=name,
                 ms=int((time.monotonic() - started) * 1000))
    finally:
        await threads.deferToThread(shutil.rmtree, state, True)
        await remove(images)


def _replace(source, target):
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(source, target)
