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

Pre-copy (`migration_pre_copy`, `lxdtx.migration.precopy`): with
`migration.incremental.memory` set, where the source's kernel tracks dirty pages (`criu
check --feature mem_dirty_track`), the header offers `predump`; a sink answers it when
offered, and the memory goes in rounds over `criu` before the final dump. Elsewhere there is
one final dump and the header never offers `predump`.

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
from lxdtx.migration import precopy, rsyncstream

PREFIX = "Unable to perform container live migration. "
CHANNELS = ("control", "fs", "criu")
# Pre-copy rounds a sink takes at most: a source that never says the last is broken.
MAX_ROUNDS = 1000

log = Logger()


async def preflight(instances, name):
    """Source: raise naming why the running container `name` can't migrate live."""
    reason = await instances.checkpoint_problem(name, instances.records.get(name).value)
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
        reason = checkpoint.problem_with(*instances.records.expanded({"config": config, "devices": devices,
                                                              "profiles": profiles}))
    if reason is not None:
        if reason.startswith(checkpoint.NO_CRIU):
            reason = reason.replace("on the server", "on the target server", 1)
        raise errors.InternalError(PREFIX + reason)


def check_answer(reply):
    if not reply.HasField("criu") or reply.criu != m.CRIU_RSYNC:
        raise errors.InternalError(PREFIX + "The target doesn't take a live migration")


async def pre_copy(instances, name):
    """Source: the pre-copy Settings of the running container `name` when it asks for pre-copy
    and this kernel tracks dirty pages, else None (one final dump)."""
    settings = precopy.Settings(instances.records.expanded(instances.records.get(name).value)[0])
    if not settings.enabled or not await instances.criu.dirty_tracking():
        return None
    return settings


def offer_pre_copy(header, settings):
    if settings is not None:
        header.predump = True


def answer_pre_copy(header, reply):
    """Sink: pre-copy rounds are taken whenever offered (restoring from them needs no dirty
    tracking here)."""
    if header.HasField("predump") and header.predump:
        reply.predump = True


def agreed_pre_copy(settings, reply):
    """Source: the Rounds to make, when both ends agreed on pre-copy."""
    if settings is None or not (reply.HasField("predump") and reply.predump):
        return None
    return precopy.Rounds(settings)


async def _pre_dump_rounds(daemon, name, directory, channels, socket_dir, features, bwlimit, rounds):
    """Source: pre-dump and send until a round is the last; the final dump's directory and parent."""
    reactor, instances = daemon.reactor, daemon.instances
    criu = channels["criu"]
    await threads.deferToThread(os.makedirs, directory, 0o700)
    while True:
        sub, parent = rounds.next_directory()
        await instances.liblxc.predump(name, os.path.join(directory, sub), instances.criu.env("dump"), parent)
        await rsyncstream.send(reactor, criu, directory, f"pre-dump {name}", socket_dir, features, bwlimit)
        written, skipped = await threads.deferToThread(precopy.read_stats, os.path.join(directory, sub))
        last = rounds.done(written, skipped)
        log.info("Live migration of {name}: pre-dump {n} wrote {written} pages, {skipped} unchanged",
                 name=name, n=rounds.count, written=written, skipped=skipped)
        criu.send(m.MigrationSync(finalPreDump=last).SerializeToString())
        if last:
            return os.path.join(directory, precopy.FINAL), rounds.final_parent()


async def send(daemon, name, path, channels, socket_dir, features, bwlimit, dumped, rounds=None):
    """Source, after the snapshots and the running pass: the pre-copy `rounds` if any, the dump,
    send the images, send the last changes. `dumped` gets the checkpoint directory before
    anything is dumped into it."""
    reactor, instances = daemon.reactor, daemon.instances
    directory = os.path.join(socket_dir, f"checkpoint-{uuid.uuid4().hex[:12]}")
    dumped.append(directory)
    final, parent = directory, None
    if rounds is not None:
        final, parent = await _pre_dump_rounds(daemon, name, directory, channels, socket_dir, features, bwlimit,
                                               rounds)
    started = time.monotonic()
    await instances.dump(name, final, stop=True, parent=parent)
    log.info("Live migration of {name}: dumped in {ms} ms", name=name, ms=int((time.monotonic() - started) * 1000))
    await rsyncstream.send(reactor, channels["criu"], directory, f"checkpoint {name}", socket_dir, features,
                           bwlimit)
    await rsyncstream.send(reactor, channels["fs"], path, name, socket_dir, features, bwlimit)


async def resume(instances, name, directory):
    """Source, after a failure past the dump: the container comes back from its own dump."""
    if instances.records.status(name) != "Stopped" or not await threads.deferToThread(os.path.isdir, directory):
        return
    value = instances.records.get(name).value
    state = instances.state_dir(name, value["pool"])
    await threads.deferToThread(_replace, directory, state)
    try:
        await instances.restore_from(name, value, await threads.deferToThread(_final_dump, state))
    except Exception:
        log.failure("Could not restore {name} from its dump after a failed live migration", name=name)
    finally:
        await threads.deferToThread(shutil.rmtree, state, True)


async def remove(directory):
    await threads.deferToThread(shutil.rmtree, directory, True)


async def receive(daemon, name, path, channels, features, pre_copy=False):
    """Sink, after the snapshots: the running pass, the pre-copy rounds if agreed, the images,
    the last pass. Returns the images directory (the caller removes it)."""
    reactor = daemon.reactor
    await rsyncstream.receive(reactor, channels["fs"], path, name, features)
    images = os.path.join(daemon.path("migration"), f"images-{uuid.uuid4().hex[:12]}")
    await threads.deferToThread(os.makedirs, images, 0o700)
    try:
        if pre_copy:
            await receive_rounds(reactor, channels["criu"], images, name, features)
        await rsyncstream.receive(reactor, channels["criu"], images, f"checkpoint {name}", features)
        await rsyncstream.receive(reactor, channels["fs"], path, name, features)
    except BaseException:
        await remove(images)
        raise
    return images


async def receive_rounds(reactor, criu, images, name, features):
    """Sink: the pre-dumps into `images`, each followed by the source's MigrationSync, until
    one says it was the last."""
    for _ in range(MAX_ROUNDS):
        await rsyncstream.receive(reactor, criu, images, f"pre-dump {name}", features)
        sync = m.decode(m.MigrationSync, await criu.next_message())
        if sync.finalPreDump:
            return
    raise errors.InternalError(f"The source sent more than {MAX_ROUNDS} pre-copy rounds")


def _final_dump(state):
    """The directory CRIU restores from: `final` after a pre-copy, whose parents (the pre-dumps
    beside it) the restored container's root must read too; else the whole of `state`."""
    final = os.path.join(state, precopy.FINAL)
    if not os.path.isdir(final):
        return state
    os.chmod(state, 0o711)
    for entry in os.scandir(state):
        if entry.name != precopy.FINAL and entry.is_dir(follow_symlinks=False):
            os.chmod(entry.path, 0o711)
            for image in os.scandir(entry.path):
                if image.is_file(follow_symlinks=False):
                    os.chmod(image.path, 0o644)
    return final


async def restore(instances, name, value, images):
    """Sink: restore the arrived container from `images`, beside its rootfs for CRIU."""
    state = instances.state_dir(name, value["pool"])
    try:
        await threads.deferToThread(_replace, images, state)
        started = time.monotonic()
        await instances.restore_from(name, value, await threads.deferToThread(_final_dump, state))
        log.info("Live migration of {name}: restored in {ms} ms", name=name,
                 ms=int((time.monotonic() - started) * 1000))
    finally:
        await threads.deferToThread(shutil.rmtree, state, True)
        await remove(images)


def _replace(source, target):
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(source, target)
