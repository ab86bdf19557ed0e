# -*- test-case-name: tests.integration.test_container_restart -*-
"""Containers when the daemon starts (autostart, ephemeral cleanup) and on `lxdtx shutdown`."""

from twisted.internet import defer
from twisted.logger import Logger

from lxdtx.asyncutil import sleep
from lxdtx.config.types import is_true, parse_int64
from lxdtx.instance.model import KIND, is_local
from lxdtx.instance.runtime import STOPPED

log = Logger()


async def on_daemon_start(instances):
    """Remove stopped ephemeral containers; start autostart containers that are not running."""
    candidates = []
    for doc in _local(instances):
        if instances.records.status(doc.name) != STOPPED:
            instances.unix_devices.watch(doc.name, instances.records.expanded(doc.value)[1])  # hotplug goes on
            continue
        if doc.value.get("ephemeral"):
            await instances.delete(doc.name)
            continue
        config, _ = instances.records.expanded(doc.value)
        autostart = config.get("boot.autostart", "")
        last = doc.value["config"].get("volatile.last_state.power", "")
        if is_true(autostart) or (autostart == "" and last == "RUNNING"):
            candidates.append((-_int(config.get("boot.autostart.priority")), doc.name,
                               _int(config.get("boot.autostart.delay"))))
    for _, name, delay in sorted(candidates):
        try:
            await instances.start(name)
        except Exception as e:
            log.error("Failed to autostart {name}: {error}", name=name, error=e)
        if delay > 0:
            await sleep(delay, instances.daemon.reactor)

async def shutdown_all(instances):
    """`lxdtx shutdown`: stop containers by descending boot.stop.priority, each group in parallel."""
    groups = {}
    for doc in _local(instances):
        if instances.records.status(doc.name) == STOPPED:
            continue
        config, _ = instances.records.expanded(doc.value)
        groups.setdefault(_int(config.get("boot.stop.priority")), []).append(
            (doc.name, _int(config.get("boot.host_shutdown_timeout"), 30)))
    for priority in sorted(groups, reverse=True):
        await defer.DeferredList(
            [defer.Deferred.fromCoroutine(_shutdown_one(instances, name, timeout))
             for name, timeout in groups[priority]])

async def _shutdown_one(instances, name, timeout):
    async with instances.locks.hold(name, "shutdown"):
        try:
            await instances.liblxc.stop(name, timeout=timeout)
        except Exception:
            pass
        if instances.records.status(name) != STOPPED:
            try:
                await instances.liblxc.stop(name, force=True)
            except Exception:
                log.failure("Could not stop {name}", name=name)
        instances.runtime.forget(name)
    # Remember it was running, so the next daemon start (after a host boot) restarts it.
    doc = instances.store.get(KIND, name)
    if doc is not None:
        doc.value["config"]["volatile.last_state.power"] = "RUNNING"
        await instances.save(name, doc.value, doc.revision)
    instances.events.lifecycle("container-shutdown", f"/1.0/containers/{name}")


def _local(instances):
    """This member's containers (a clustered store holds every member's)."""
    return [doc for doc in instances.store.list(KIND) if is_local(instances.daemon, doc.value)]


def _int(value, default=0):
    try:
        return parse_int64(value) if value else default
    except ValueError:
        return default
