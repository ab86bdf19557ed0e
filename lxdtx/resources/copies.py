# -*- test-case-name: tests.integration.test_storage -*-
"""The requests that copy a container on this host (`POST /1.0/containers` with
`source.type: copy`) or move it to another storage pool: checked here, carried out in an
operation by lxdtx.instance.copy."""

from copy import deepcopy

from lxdtx import errors
from lxdtx.instance import copy, model
from lxdtx.operations import container_resources
from lxdtx.response import AsyncResponse


async def create_from_copy(req, name, body):
    """`POST /1.0/containers` with `source.type: copy`: validate, reserve, copy in an operation."""
    instances = req.daemon.instances
    source = body.get("source") or {}
    source_name = source.get("source")
    if not isinstance(source_name, str) or not source_name:
        raise errors.BadRequest("Invalid source: the name of the container (or snapshot) to copy is required")
    parent, _, snapshot = source_name.partition("/")
    source_doc = instances.records.get(parent)
    if snapshot:
        source_value = instances.snapshots.get(parent, snapshot).value
    else:
        source_value = source_doc.value
    container_only = bool(source.get("container_only") or source.get("instance_only"))
    request_config = body.get("config") or {}
    request_devices = body.get("devices") or {}
    if not isinstance(request_config, dict) or not isinstance(request_devices, dict):
        raise errors.BadRequest("config and devices must be maps")
    config = copy.merged_config(request_config, source_value.get("config", {}))
    devices = deepcopy(source_value.get("devices", {}))
    devices.update(request_devices)
    profiles = body.get("profiles")
    if profiles is None:
        profiles = list(source_value.get("profiles", []))
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        raise errors.BadRequest("Invalid value for \"profiles\": must be a list of names")
    params = {
        "architecture": source_value.get("architecture", ""), "config": config, "devices": devices,
        "profiles": profiles, "ephemeral": bool(body.get("ephemeral")),
        "description": body.get("description") if isinstance(body.get("description"), str) else "",
    }
    await instances.validate_new(config=config, devices=devices, profiles=profiles)
    if body.get("stateful") and parent != name:
        raise errors.BadRequest("Stateful copies require the same name")
    instances.reserve(name)

    async def run(op):
        try:
            await copy.copy_container(instances, name, parent, snapshot, params, container_only)
        finally:
            instances.release(name)

    try:
        op = req.daemon.operations.start("Creating container", resources=container_resources(name, parent), run=run)
    except BaseException:
        instances.release(name)
        raise
    return AsyncResponse(op)


def start_pool_move(req, name, body):
    """`POST /1.0/containers/<name>` with `migration` and `pool` (`instance_pool_move`): an operation."""
    instances = req.daemon.instances
    doc = instances.records.get(name)
    pool = body.get("pool")
    if not isinstance(pool, str) or not pool:
        raise errors.BadRequest("Invalid value for \"pool\"")
    req.daemon.pools.get(pool)
    new_name = body.get("name") or name
    if not isinstance(new_name, str):
        raise errors.BadRequest("Invalid value for \"name\"")
    model.check_name(new_name)
    if new_name == name and doc.value["pool"] == pool:
        raise errors.BadRequest(f"Container '{name}' is already in storage pool \"{pool}\"")
    if instances.records.status(name) != "Stopped":
        raise errors.BadRequest("The container must be stopped to move it to another storage pool")
    container_only = bool(body.get("container_only") or body.get("instance_only"))
    if new_name != name:
        instances.reserve(new_name)

    async def run(op):
        try:
            await copy.move_to_pool(instances, name, new_name, pool, container_only)
        finally:
            if new_name != name:
                instances.release(new_name)

    op = req.daemon.operations.start("Moving container", resources=container_resources(name, new_name), run=run)
    return AsyncResponse(op)
